"""Interop with Mosquitto's command-line clients (``mosquitto_pub`` / ``mosquitto_sub``, libmosquitto),
at MQTT 3.1.1 and 5.0, against the in-thread ``broker`` fixture."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import time
from typing import Any

import paho.mqtt.client as paho
import pytest

from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")

pytestmark = pytest.mark.skipif(
    MOSQUITTO_PUB is None or MOSQUITTO_SUB is None, reason="mosquitto_pub/mosquitto_sub are not installed"
)

VERSIONS = ["mqttv311", "mqttv5"]
TIMEOUT = 5.0


def _common(broker: Any, version: str) -> list[str]:
    # -h 127.0.0.1: "localhost" may resolve to ::1, where the broker does not listen.
    return ["-h", "127.0.0.1", "-p", str(broker.port), "-V", version]


def mosquitto_pub(broker: Any, version: str, *args: str, stdin: bytes | None = None) -> str:
    """Run mosquitto_pub to completion (it exits after its QoS flow ends); returns its -d log."""
    assert MOSQUITTO_PUB is not None
    done = subprocess.run(
        [MOSQUITTO_PUB, *_common(broker, version), "-d", *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return done.stdout.decode()


async def _subscription_count(broker: Any) -> int:
    return broker.router.count


def subscriptions(broker: Any) -> int:
    return broker.call(_subscription_count(broker.broker))


def wait_for_subscriptions(broker: Any, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while subscriptions(broker) < count:
        assert time.monotonic() < deadline, f"fewer than {count} subscriptions after {TIMEOUT}s"
        time.sleep(0.02)


def start_mosquitto_sub(broker: Any, version: str, *args: str) -> subprocess.Popen[str]:
    """Start mosquitto_sub and return once its subscriptions are in place."""
    assert MOSQUITTO_SUB is not None
    before = subscriptions(broker)
    proc = subprocess.Popen(
        [MOSQUITTO_SUB, *_common(broker, version), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wanted = before + args.count("-t")
    deadline = time.monotonic() + TIMEOUT
    # It may already be gone again, e.g. with -C 1 and a retained message waiting.
    while proc.poll() is None and subscriptions(broker) < wanted:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"mosquitto_sub did not subscribe: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def output(proc: subprocess.Popen[str]) -> list[str]:
    """Wait for mosquitto_sub to exit (-C or -W) and return its printed lines."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT + 1)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    return out.splitlines()


class PahoSubscriber:
    def __init__(self, broker: Any, protocol: int, topic_filter: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        subscribed: queue.Queue[object] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.on_connect = lambda c, u, f, rc, props: c.subscribe(topic_filter, 1)
        self.client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()
        subscribed.get(timeout=TIMEOUT)

    def get(self, timeout: float = TIMEOUT) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _paho_protocol(version: str) -> int:
    return paho.MQTTv5 if version == "mqttv5" else paho.MQTTv311


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_at_each_qos(broker, version, qos):  # [MQTT-3.8.4-8], [MQTT-4.3.2-4], [MQTT-4.3.3-8]
    sub = start_mosquitto_sub(broker, version, "-t", "rt/x", "-q", str(qos), "-C", "1", "-W", "5", "-F", "%t|%p|%q|%r")
    log = mosquitto_pub(broker, version, "-t", "rt/x", "-q", str(qos), "-m", f"hello {qos}")
    assert output(sub) == [f"rt/x|hello {qos}|{qos}|0"]
    expected_acks = {0: [], 1: ["received PUBACK"], 2: ["received PUBREC", "received PUBCOMP"]}[qos]
    assert all(ack in log for ack in expected_acks), log


def test_mqtt_3_1_round_trip(broker):  # MQTT 3.1 has no numbered statements: "MQIsdp", level 3, still accepted
    sub = start_mosquitto_sub(broker, "mqttv31", "-t", "old/x", "-q", "2", "-C", "1", "-W", "5", "-F", "%t|%p|%q")
    mosquitto_pub(broker, "mqttv31", "-t", "old/x", "-q", "2", "-m", "legacy")
    assert output(sub) == ["old/x|legacy|2"]


@pytest.mark.parametrize("version", VERSIONS)
def test_large_binary_payload_round_trip(broker, version):  # [MQTT-3.3.2-3], payload carried unaltered
    payload = bytes(range(256)) * 1024  # 256 KiB, every byte value
    sub = start_mosquitto_sub(broker, version, "-t", "big/x", "-q", "1", "-C", "1", "-W", "5", "-F", "%l|%x")
    mosquitto_pub(broker, version, "-t", "big/x", "-q", "1", "-s", stdin=payload)
    [line] = output(sub)
    length, hex_payload = line.split("|")
    assert int(length) == len(payload) and bytes.fromhex(hex_payload) == payload


# -- retained ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_and_cleared_with_mosquitto_pub(broker, raw, version):  # [MQTT-3.3.1-5], [MQTT-3.3.1-6]
    mosquitto_pub(broker, version, "-t", "ret/x", "-q", "1", "-r", "-m", "kept")
    sub = start_mosquitto_sub(broker, version, "-t", "ret/#", "-C", "1", "-W", "5", "-F", "%t|%p|%r")
    assert output(sub) == ["ret/x|kept|1"]  # sent with RETAIN 1 to a new subscription [MQTT-3.3.1-9]

    mosquitto_pub(broker, version, "-t", "ret/x", "-q", "1", "-r", "-n")  # -n: zero-length payload
    client = raw(4)
    client.connect("checker")
    client.subscribe("ret/#", qos=1)
    client.nothing()


# -- wills ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_will_of_killed_mosquitto_sub_reaches_paho(broker, version):  # [MQTT-3.1.2-8]
    watcher = PahoSubscriber(broker, _paho_protocol(version), "will/#")
    try:
        sub = start_mosquitto_sub(
            broker, version, "-t", "any/x", "--will-topic", "will/mosq", "--will-payload", "gone", "--will-qos", "1"
        )
        sub.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sees the connection drop
        sub.wait(TIMEOUT)
        will = watcher.get()
        assert (will.topic, will.payload, will.qos) == ("will/mosq", b"gone", 1)
    finally:
        watcher.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_will_discarded_when_mosquitto_sub_exits_normally(broker, version):  # [MQTT-3.14.4-3], [MQTT-3.1.2-10]
    watcher = PahoSubscriber(broker, _paho_protocol(version), "will/#")
    try:
        sub = start_mosquitto_sub(
            broker, version, "-t", "any/x", "-C", "1", "--will-topic", "will/mosq", "--will-payload", "x"
        )
        mosquitto_pub(broker, version, "-t", "any/x", "-m", "one")  # -C 1: it exits with a normal DISCONNECT
        assert output(sub) == ["one"]
        with pytest.raises(queue.Empty):
            watcher.get(timeout=0.5)
    finally:
        watcher.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_will_after_sigterm_follows_the_disconnect_reason(broker, version):  # [MQTT-3.1.2-8], [MQTT-3.1.2-10]
    # On SIGTERM mosquitto_sub 2.x disconnects with 0x04 "Disconnect with Will Message" in MQTT 5, so the
    # will is published; a 3.1.1 DISCONNECT has no reason code and always discards the will.
    watcher = PahoSubscriber(broker, _paho_protocol(version), "will/#")
    try:
        sub = start_mosquitto_sub(broker, version, "-t", "any/x", "--will-topic", "will/mosq", "--will-payload", "x")
        sub.send_signal(signal.SIGTERM)
        sub.wait(TIMEOUT)
        if version == "mqttv5":
            assert watcher.get().payload == b"x"
        else:
            with pytest.raises(queue.Empty):
                watcher.get(timeout=0.5)
    finally:
        watcher.close()


# -- persistent sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_with_c_and_i(broker, version):  # [MQTT-3.1.2-5] (3.1.1), [MQTT-3.1.2-23]
    client_id = f"mosq-persist-{version}"
    sub = start_mosquitto_sub(broker, version, "-c", "-i", client_id, "-q", "1", "-t", "ps/#")
    sub.send_signal(signal.SIGTERM)  # a clean DISCONNECT; -c keeps the session (v5: expiry "never")
    sub.wait(TIMEOUT)
    for i in range(3):
        mosquitto_pub(broker, version, "-t", f"ps/{i}", "-q", "1", "-m", f"queued {i}")

    again = start_mosquitto_sub(
        broker, version, "-c", "-i", client_id, "-q", "1", "-t", "ps/#", "-C", "3", "-W", "5", "-F", "%t|%p|%q"
    )
    assert output(again) == [f"ps/{i}|queued {i}|1" for i in range(3)]


# -- MQTT 5 properties ------------------------------------------------------------------------------


def test_user_properties_from_mosquitto_pub_reach_paho(broker):  # [MQTT-3.3.2-17], [MQTT-3.3.2-18]
    watcher = PahoSubscriber(broker, paho.MQTTv5, "up/#")
    try:
        mosquitto_pub(
            broker,
            "mqttv5",
            "-t",
            "up/x",
            "-q",
            "1",
            "-m",
            "with properties",
            *("-D", "publish", "user-property", "k", "v"),
            *("-D", "publish", "user-property", "k", "v2"),
            *("-D", "publish", "user-property", "a", "b"),
            *("-D", "publish", "content-type", "text/plain"),
        )
        msg = watcher.get()
        assert msg.payload == b"with properties"
        assert msg.properties.UserProperty == [("k", "v"), ("k", "v2"), ("a", "b")]  # all, in order
        assert msg.properties.ContentType == "text/plain"  # [MQTT-3.3.2-20]
    finally:
        watcher.close()


def test_v5_properties_from_raw_publisher_reach_mosquitto_sub(broker, raw):  # [MQTT-3.3.2-15..20], [MQTT-3.3.4-3]
    sub = start_mosquitto_sub(
        broker,
        "mqttv5",
        *("-t", "pp/#", "-q", "1", "-C", "1", "-W", "5"),
        *("-D", "subscribe", "subscription-identifier", "9"),
        *("-F", "%C|%D|%E|%F|%R|%S|%P|%p"),
    )
    props = {
        PropertyId.CONTENT_TYPE: "application/json",
        PropertyId.CORRELATION_DATA: b"corr",
        PropertyId.MESSAGE_EXPIRY_INTERVAL: 60,
        PropertyId.PAYLOAD_FORMAT_INDICATOR: 1,
        PropertyId.RESPONSE_TOPIC: "reply/to",
        PropertyId.USER_PROPERTY: [("k", "v"), ("k2", "v2")],
    }
    client = raw(5)
    client.connect("raw-pub")
    ack = client.publish("pp/x", b'{"a":1}', qos=1, properties=props)
    assert isinstance(ack, p.Puback)
    [line] = output(sub)
    content_type, corr, expiry, fmt, response, sub_id, user, payload = line.split("|")
    assert (content_type, corr, fmt, response, sub_id) == ("application/json", "corr", "1", "reply/to", "9")
    assert 59 <= int(expiry) <= 60  # [MQTT-3.3.2-6]
    assert user == "k:v k2:v2"
    assert payload == '{"a":1}'
