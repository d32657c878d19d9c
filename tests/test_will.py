"""Will Messages (sections 3.1.2.5-3.1.2.7, 3.1.3.2-3.1.3.4, 3.14 of MQTT 3.1.1 and 5.0).

Each test connects a client with a will on a topic of its own and a "watcher" subscribed to it,
then ends the client's connection in one of the ways the spec distinguishes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqttraw import RawClient
from wrenmq.auth.passwords import PasswordFile
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode

_P = PropertyId


def watcher(raw: Callable[..., RawClient], topic: str, qos: int = 2) -> RawClient:
    """A 5.0 client subscribed to ``topic``, to see the will arrive (or not)."""
    client = raw(5)
    client.connect(f"watch-{topic}")
    assert client.subscribe(topic, qos).reason_codes == [qos]
    return client


def with_will(
    raw: Callable[..., RawClient],
    version: int,
    client_id: str,
    topic: str,
    payload: bytes = b"gone",
    qos: int = 0,
    retain: bool = False,
    will_props: dict[int, Any] | None = None,
    expiry: int | None = None,
    clean: bool = True,
    keep_alive: int = 60,
) -> RawClient:
    """Connect a client carrying a will; ``expiry`` is the 5.0 Session Expiry Interval."""
    client = raw(version)
    props = {} if expiry is None else {_P.SESSION_EXPIRY_INTERVAL: expiry}
    will = p.Will(topic, payload, qos, retain, will_props or {})
    ack = client.connect(client_id, clean=clean, keep_alive=keep_alive, will=will, properties=props)
    assert ack.reason_code == 0
    return client


def expect_will(client: RawClient, topic: str, payload: bytes = b"gone", timeout: float = 3.0) -> p.Publish:
    msg = client.expect(p.Publish, timeout=timeout)
    assert (msg.topic, msg.payload) == (topic, payload)
    if msg.qos == 1:
        client.send(p.Puback(msg.packet_id))
    elif msg.qos == 2:
        client.send(p.Pubrec(msg.packet_id))
        client.expect(p.Pubrel)
        client.send(p.Pubcomp(msg.packet_id))
    return msg


# -- when the will is sent --------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_will_sent_on_abnormal_close(raw, version):  # [MQTT-3.1.2-8]
    watch = watcher(raw, "will/abnormal")
    client = with_will(raw, version, "abnormal", "will/abnormal")
    client.close()  # the network connection ends without DISCONNECT
    expect_will(watch, "will/abnormal")


@pytest.mark.parametrize("version", [4, 5])
def test_will_sent_on_keep_alive_timeout(raw, version):  # [MQTT-3.1.2-8], [MQTT-3.1.2-24] / 5.0 [MQTT-3.1.2-22]
    watch = watcher(raw, "will/keepalive")
    with_will(raw, version, "sleeper", "will/keepalive", keep_alive=1)
    expect_will(watch, "will/keepalive", timeout=3.0)


@pytest.mark.parametrize("version", [4, 5])
def test_will_sent_on_protocol_error(raw, version):  # [MQTT-3.1.2-8]: the server closes for a protocol error
    watch = watcher(raw, "will/violation")
    client = with_will(raw, version, "violator", "will/violation")
    client.send(p.Connect("violator", version))  # a second CONNECT [MQTT-3.1.0-2]
    client.expect_closed()
    expect_will(watch, "will/violation")


def test_will_sent_on_disconnect_with_will_message(raw):  # 3.14.2.1 (5.0): DISCONNECT reason code 0x04
    watch = watcher(raw, "will/0x04")
    client = with_will(raw, 5, "leaver", "will/0x04")
    client.disconnect(ReasonCode.DISCONNECT_WITH_WILL)
    expect_will(watch, "will/0x04")


@pytest.mark.parametrize("version", [3, 4, 5])
def test_will_not_sent_on_normal_disconnect(raw, version):  # [MQTT-3.1.2-10], 5.0 [MQTT-3.14.4-3]
    watch = watcher(raw, "will/normal")
    client = with_will(raw, version, "polite", "will/normal")
    client.disconnect()
    watch.nothing(0.5)


def test_will_published_only_once(raw):  # [MQTT-3.1.2-10] removed from the session once published
    watch = watcher(raw, "will/once")
    client = with_will(raw, 5, "once", "will/once", expiry=1)
    client.close()
    expect_will(watch, "will/once")
    watch.nothing(1.5)  # the session expiring later must not publish it again


# -- QoS, retain and properties ---------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_will_qos_and_retain_honoured(raw, version):  # [MQTT-3.1.2-17] (5.0: [MQTT-3.1.2-15])
    watch = watcher(raw, "will/retained")
    client = with_will(raw, version, "retainer", "will/retained", b"last words", qos=1, retain=True)
    client.close()
    live = expect_will(watch, "will/retained", b"last words")
    assert live.qos == 1
    assert live.retain is False  # to an existing subscription, RETAIN is 0 [MQTT-3.3.1-9] (3.1.1)
    # Published as a retained message: a later subscriber gets it with RETAIN 1 [MQTT-3.3.1-8].
    late = raw(4)
    late.connect("late")
    late.subscribe("will/retained", 2)
    stored = late.expect(p.Publish)
    assert (stored.topic, stored.payload, stored.qos, stored.retain) == ("will/retained", b"last words", 1, True)


@pytest.mark.parametrize("version", [4, 5])
def test_will_qos2_not_retained(raw, version):  # [MQTT-3.1.2-16] (5.0: [MQTT-3.1.2-14])
    watch = watcher(raw, "will/q2")
    client = with_will(raw, version, "q2", "will/q2", qos=2, retain=False)
    client.close()
    assert expect_will(watch, "will/q2").qos == 2
    late = raw(5)
    late.connect("late-q2")
    late.subscribe("will/q2", 2)
    late.nothing(0.3)  # not retained


def test_will_properties_passed_through(raw):  # 3.1.3.2 (5.0), [MQTT-3.1.3-10] User Property order kept
    watch = watcher(raw, "will/props")
    user = [("b", "2"), ("a", "1"), ("b", "3")]
    props = {
        _P.WILL_DELAY_INTERVAL: 0,
        _P.PAYLOAD_FORMAT_INDICATOR: 1,
        _P.MESSAGE_EXPIRY_INTERVAL: 300,
        _P.CONTENT_TYPE: "text/plain",
        _P.RESPONSE_TOPIC: "will/props/reply",
        _P.CORRELATION_DATA: b"\x00\x01corr",
        _P.USER_PROPERTY: user,
    }
    client = with_will(raw, 5, "propper", "will/props", b"bye", will_props=props)
    client.close()
    msg = expect_will(watch, "will/props", b"bye")
    got = msg.properties
    assert got[_P.PAYLOAD_FORMAT_INDICATOR] == 1
    assert got[_P.CONTENT_TYPE] == "text/plain"
    assert got[_P.RESPONSE_TOPIC] == "will/props/reply"
    assert got[_P.CORRELATION_DATA] == b"\x00\x01corr"
    assert [tuple(x) for x in got[_P.USER_PROPERTY]] == user
    assert 298 <= got[_P.MESSAGE_EXPIRY_INTERVAL] <= 300
    assert _P.WILL_DELAY_INTERVAL not in got  # a CONNECT-only property, never forwarded


def test_will_message_expiry_counts_from_publication(raw):  # 3.1.3.2.4 (5.0): lifetime from publication
    # The will is published 1 s after the close and lives 1 s from then: a subscriber arriving
    # just after publication still gets the retained will.
    props = {_P.WILL_DELAY_INTERVAL: 1, _P.MESSAGE_EXPIRY_INTERVAL: 1}
    watch = watcher(raw, "will/ttl")
    client = with_will(raw, 5, "ttl", "will/ttl", retain=True, will_props=props, expiry=30)
    time.sleep(0.6)  # time spent connected must not count either
    client.close()
    expect_will(watch, "will/ttl", timeout=3.0)
    late = raw(5)
    late.connect("late-ttl")
    late.subscribe("will/ttl", 1)
    msg = late.expect(p.Publish, timeout=1.0)
    assert msg.retain and msg.properties[_P.MESSAGE_EXPIRY_INTERVAL] == 1


def test_v311_subscriber_gets_will_of_v5_client(raw):  # [MQTT-3.1.2-8] across protocol versions
    old = raw(4)
    old.connect("old-watch")
    old.subscribe("will/cross", 1)
    client = with_will(raw, 5, "cross", "will/cross", will_props={_P.CONTENT_TYPE: "x"})
    client.close()
    msg = expect_will(old, "will/cross")
    assert msg.properties == {}


# -- Will Delay Interval ----------------------------------------------------------------------


def test_will_delay_interval_delays_will(raw):  # 3.1.3.2.2 (5.0): published after the Will Delay Interval
    watch = watcher(raw, "will/delayed")
    client = with_will(raw, 5, "delayer", "will/delayed", will_props={_P.WILL_DELAY_INTERVAL: 1}, expiry=30)
    client.close()
    started = time.monotonic()
    msg = expect_will(watch, "will/delayed", timeout=3.0)
    assert time.monotonic() - started >= 0.9
    assert _P.WILL_DELAY_INTERVAL not in msg.properties


def test_will_cancelled_by_reconnect_within_delay(raw):  # [MQTT-3.1.3-9]
    watch = watcher(raw, "will/cancelled")
    client = with_will(raw, 5, "returner", "will/cancelled", will_props={_P.WILL_DELAY_INTERVAL: 1}, expiry=30)
    client.close()
    back = raw(5)
    ack = back.connect("returner", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 30})
    assert ack.session_present is True
    watch.nothing(1.5)
    # Nor is it sent when the returning connection later ends normally.
    back.disconnect()
    watch.nothing(0.2)


def test_will_sent_when_reconnect_discards_session(raw):  # 3.1.3.2.2 (5.0): the session ended before the delay
    # Clean Start 1 ends the old session [MQTT-3.1.2-4]; that is not "a new Network Connection to this
    # Session", so the pending will is published then, not cancelled.
    watch = watcher(raw, "will/discarded")
    client = with_will(raw, 5, "discarder", "will/discarded", will_props={_P.WILL_DELAY_INTERVAL: 30}, expiry=60)
    client.close()
    watch.nothing(0.3)
    raw(5).connect("discarder", clean=True)
    expect_will(watch, "will/discarded", timeout=1.0)


def test_will_sent_when_session_expires_before_delay(raw):  # 3.1.3.2.2 (5.0), [MQTT-3.1.3-9] context
    watch = watcher(raw, "will/expired")
    client = with_will(raw, 5, "expirer", "will/expired", will_props={_P.WILL_DELAY_INTERVAL: 30}, expiry=1)
    client.close()
    watch.nothing(0.6)
    started = time.monotonic()
    expect_will(watch, "will/expired", timeout=2.0)
    assert time.monotonic() - started < 1.5  # at the 1 s session expiry, long before the 30 s delay


def test_will_sent_at_once_without_session_expiry(raw):  # 3.1.3.2.2 (5.0): a 0 expiry ends the session at close
    watch = watcher(raw, "will/noexpiry")
    client = with_will(raw, 5, "brief", "will/noexpiry", will_props={_P.WILL_DELAY_INTERVAL: 30})
    client.close()
    expect_will(watch, "will/noexpiry", timeout=0.5)


# -- session takeover -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_will_sent_on_session_takeover(raw, version):  # [MQTT-3.1.4-3] "that Will Message is published"
    watch = watcher(raw, "will/takeover")
    first = with_will(raw, version, "taken", "will/takeover")
    raw(version).connect("taken")
    first.expect_closed()
    expect_will(watch, "will/takeover")


def test_delayed_will_not_sent_on_takeover_of_session(raw):  # [MQTT-3.1.3-9], [MQTT-3.1.4-3]
    watch = watcher(raw, "will/kept")
    first = with_will(raw, 5, "kept", "will/kept", will_props={_P.WILL_DELAY_INTERVAL: 1}, expiry=60)
    second = raw(5)
    ack = second.connect("kept", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 60})
    assert ack.session_present is True
    assert [x.reason_code for x in first.expect_closed()] == [ReasonCode.SESSION_TAKEN_OVER]
    watch.nothing(1.5)


def test_delayed_will_sent_on_clean_takeover(raw):  # [MQTT-3.1.4-3]: Clean Start 1 ends the original session
    watch = watcher(raw, "will/cleantake")
    with_will(raw, 5, "cleantake", "will/cleantake", will_props={_P.WILL_DELAY_INTERVAL: 30}, expiry=60)
    raw(5).connect("cleantake", clean=True)
    expect_will(watch, "will/cleantake", timeout=1.0)


# -- refusals ---------------------------------------------------------------------------------


def test_will_qos_above_maximum_refused(wrenmq_server_factory, clients):  # [MQTT-3.2.2-12] (5.0)
    server = wrenmq_server_factory(maximum_qos=1)
    client = clients(server, 5)
    ack = client.connect("q2will", will=p.Will("will/q", b"x", qos=2))
    assert ack.reason_code == ReasonCode.QOS_NOT_SUPPORTED
    client.expect_closed()
    old = clients(server, 4)
    assert old.connect("q2will311", will=p.Will("will/q", b"x", qos=2)).reason_code != ConnackReturnCode.ACCEPTED
    old.expect_closed()


def test_will_retain_refused_without_retain_support(wrenmq_server_factory, clients):  # [MQTT-3.2.2-13] (5.0)
    server = wrenmq_server_factory(retain_available=False)
    client = clients(server, 5)
    ack = client.connect("rwill", will=p.Will("will/r", b"x", retain=True))
    assert ack.reason_code == ReasonCode.RETAIN_NOT_SUPPORTED
    client.expect_closed()


# -- interop: paho's will, received by mosquitto_sub ------------------------------------------


async def _subscribed(broker: Any, client_id: str, topic: str) -> bool:
    session = broker.sessions.get(client_id)
    return session is not None and topic in session.subscriptions


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto_sub not installed")
@pytest.mark.parametrize(("protocol", "sub_version"), [(mqtt.MQTTv311, "mqttv311"), (mqtt.MQTTv5, "mqttv5")])
def test_mosquitto_sub_receives_will_of_paho(broker, protocol, sub_version):  # [MQTT-3.1.2-8]
    topic = f"will/paho/{sub_version}"
    sub_id = f"mosq-{sub_version}"
    cmd = [shutil.which("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port), "-V", sub_version]
    cmd += ["-i", sub_id, "-t", topic, "-q", "1", "-C", "1", "-W", "10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while not broker.call(_subscribed(broker.broker, sub_id, topic)):
            assert time.monotonic() < deadline, "mosquitto_sub did not subscribe"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-will-{sub_version}", protocol=protocol)
        paho.will_set(topic, b"paho is gone", qos=1)
        paho.connect("127.0.0.1", broker.port, keepalive=30)
        deadline = time.monotonic() + 5
        while not paho.is_connected():
            assert time.monotonic() < deadline, "paho did not connect"
            paho.loop(0.05)
        paho.socket().close()  # drop the connection without DISCONNECT
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out.strip() == "paho is gone"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_will_not_sent_for_refused_connect(wrenmq_server_factory, clients, tmp_path):  # [MQTT-3.1.2-8] "if accepted"
    passwd = PasswordFile(tmp_path / "passwd")
    passwd.set_password("watcher", "secret")
    passwd.save()
    server = wrenmq_server_factory(allow_anonymous=False, password_file=passwd.path)
    watch = clients(server)
    assert watch.connect("watch-refused", username="watcher", password=b"secret").reason_code == 0
    watch.subscribe("will/refused", 1)
    for version in (4, 5):
        client = clients(server, version)
        assert client.connect(f"refused{version}", will=p.Will("will/refused", b"no")).reason_code != 0
        client.expect_closed()
    watch.nothing(0.3)
