"""Retained messages (section 3.3.1.3): store, replace, clear, deliver on subscribe, expiry, QoS cap,
the in-process API and a mosquitto_pub / mosquitto_sub round trip.

Statement numbers are MQTT 5.0's unless marked "3.1.1".
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from mqttraw import RawClient, connected
from paho_sync import PROTOCOLS
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

VERSIONS = [4, 5]
EXPIRY = PropertyId.MESSAGE_EXPIRY_INTERVAL


def retained_on_subscribe(raw, version: int, topic_filter: str, qos: int = 0) -> list[p.Publish]:  # type: ignore[no-untyped-def]
    """Subscribe a fresh client and return the retained messages it gets (acknowledging QoS 1/2).

    A PINGREQ sent after the SUBSCRIBE marks the end: the broker handles a client's packets in
    order and sends the retained messages as part of handling the SUBSCRIBE.
    """
    sub = connected(raw, version)
    sub.subscribe(topic_filter, qos)
    sub.send(p.Pingreq())
    got = []
    while not isinstance(msg := sub.recv(), p.Pingresp):
        assert isinstance(msg, p.Publish), msg
        got.append(msg)
    for msg in got:
        if msg.qos == 1:
            sub.send(p.Puback(msg.packet_id))
        elif msg.qos == 2:
            sub.send(p.Pubrec(msg.packet_id))
            assert sub.expect(p.Pubrel).packet_id == msg.packet_id
            sub.send(p.Pubcomp(msg.packet_id))
    sub.disconnect()
    return got


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_sent_on_subscribe_with_retain_flag(raw, version):  # [MQTT-3.3.1-5], [MQTT-3.3.1-9] (3.1.1: -8)
    connected(raw, version, "pub").publish("r/t", b"kept", 1, retain=True)
    [msg] = retained_on_subscribe(raw, version, "r/t", 1)
    assert (msg.topic, msg.payload, msg.retain, msg.qos) == ("r/t", b"kept", True, 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_replaced_by_newer(raw, version):  # [MQTT-3.3.1-5]
    pub = connected(raw, version, "pub")
    for payload in (b"v1", b"v2", b"v3"):
        pub.publish("r/t", payload, 0, retain=True)
    assert [m.payload for m in retained_on_subscribe(raw, version, "r/t")] == [b"v3"]


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_retained_clears_and_is_still_forwarded(raw, version):  # [MQTT-3.3.1-6], [MQTT-3.3.1-7]
    pub = connected(raw, version, "pub")
    pub.publish("r/t", b"kept", 0, retain=True)
    live = connected(raw, version, "live")
    live.subscribe("r/t", 0)
    assert live.expect(p.Publish).payload == b"kept"
    pub.publish("r/t", b"", 0, retain=True)
    msg = live.expect(p.Publish)  # processed normally: sent to current subscribers
    assert msg.payload == b""
    assert retained_on_subscribe(raw, version, "r/t") == []  # and nothing stored


@pytest.mark.parametrize("version", VERSIONS)
def test_non_retained_publish_leaves_retained_alone(raw, version):  # [MQTT-3.3.1-8] (3.1.1: [MQTT-3.3.1-12])
    pub = connected(raw, version, "pub")
    pub.publish("r/t", b"kept", 0, retain=True)
    pub.publish("r/t", b"transient", 0, retain=False)
    pub.publish("r/t", b"", 0, retain=False)  # an empty non-retained message does not clear it either
    assert [m.payload for m in retained_on_subscribe(raw, version, "r/t")] == [b"kept"]


def test_v311_forwards_retained_to_existing_subscribers_with_retain_0(raw):  # [MQTT-3.3.1-9 (3.1.1)]
    sub = connected(raw, 4, "sub")
    sub.subscribe("r/t", 0)
    connected(raw, 4, "pub").publish("r/t", b"live", 0, retain=True)
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.retain) == (b"live", False)


def test_v5_forwards_retained_with_retain_0_by_default(raw):  # [MQTT-3.3.1-12]
    sub = connected(raw, 5, "sub")
    sub.subscribe("r/t", 0)
    connected(raw, 5, "pub").publish("r/t", b"live", 0, retain=True)
    assert sub.expect(p.Publish).retain is False


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_subscribe_gets_every_matching_retained(raw, version):  # [MQTT-3.3.1-9] (3.1.1: [MQTT-3.3.1-6])
    pub = connected(raw, version, "pub")
    topics = ["house", "house/kitchen", "house/kitchen/temp", "house/hall/temp", "garden/temp"]
    for topic in topics:
        pub.publish(topic, topic.encode(), 0, retain=True)
    assert sorted(m.topic for m in retained_on_subscribe(raw, version, "house/#")) == sorted(topics[:4])
    assert sorted(m.topic for m in retained_on_subscribe(raw, version, "+/+/temp")) == [
        "house/hall/temp",
        "house/kitchen/temp",
    ]
    assert sorted(m.topic for m in retained_on_subscribe(raw, version, "+")) == ["house"]
    got = retained_on_subscribe(raw, version, "#")
    assert sorted(m.topic for m in got) == sorted(topics)
    assert all(m.retain and m.payload == m.topic.encode() for m in got)


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_retained_not_matched_by_leading_wildcard(broker, raw, version):  # [MQTT-4.7.2-1]
    broker.publish("$SYS/broker/version", b"1", retain=True)
    connected(raw, version, "pub").publish("$app/state", b"s", 0, retain=True)
    connected(raw, version, "pub2").publish("app/state", b"a", 0, retain=True)
    assert [m.topic for m in retained_on_subscribe(raw, version, "#")] == ["app/state"]
    assert [m.topic for m in retained_on_subscribe(raw, version, "+/state")] == ["app/state"]
    assert [m.topic for m in retained_on_subscribe(raw, version, "$SYS/#")] == ["$SYS/broker/version"]
    assert [m.topic for m in retained_on_subscribe(raw, version, "$app/+")] == ["$app/state"]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_qos_capped_at_subscription_qos(raw, version):  # [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6])
    pub = connected(raw, version, "pub")
    pub.publish("r/q2", b"two", 2, retain=True)
    pub.publish("r/q0", b"zero", 0, retain=True)
    assert [m.qos for m in retained_on_subscribe(raw, version, "r/q2", 1)] == [1]
    assert [m.qos for m in retained_on_subscribe(raw, version, "r/q2", 0)] == [0]
    assert [m.qos for m in retained_on_subscribe(raw, version, "r/q2", 2)] == [2]
    assert [m.qos for m in retained_on_subscribe(raw, version, "r/q0", 2)] == [0]  # never upgraded


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_resends_retained(raw, version):  # [MQTT-3.8.4-4] (3.1.1: [MQTT-3.8.4-3])
    connected(raw, version, "pub").publish("r/t", b"kept", 0, retain=True)
    sub = connected(raw, version, "sub")
    sub.subscribe("r/t", 0)
    assert sub.expect(p.Publish).payload == b"kept"
    sub.subscribe("r/t", 1)
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.retain) == (b"kept", True)


def test_retained_expiry_elapsed_not_delivered(raw):  # [MQTT-3.3.2-5]
    pub = connected(raw, 5, "pub")
    pub.publish("r/exp", b"short", 0, retain=True, properties={EXPIRY: 1})
    pub.publish("r/keep", b"long", 0, retain=True, properties={EXPIRY: 100})
    time.sleep(1.2)
    got = retained_on_subscribe(raw, 5, "r/#")
    assert [m.topic for m in got] == ["r/keep"]
    assert 0 < got[0].properties[EXPIRY] < 100  # the time it waited is taken off [MQTT-3.3.2-6]
    assert retained_on_subscribe(raw, 4, "r/#")[0].topic == "r/keep"


def test_retained_expiry_not_elapsed_delivered_with_remaining_interval(raw):  # [MQTT-3.3.2-6]
    connected(raw, 5, "pub").publish("r/exp", b"x", 0, retain=True, properties={EXPIRY: 30})
    [msg] = retained_on_subscribe(raw, 5, "r/exp")
    assert 28 <= msg.properties[EXPIRY] <= 30


def test_retained_properties_kept(raw):  # [MQTT-3.3.2-4], [MQTT-3.3.2-17], [MQTT-3.3.2-20]
    props = {
        PropertyId.PAYLOAD_FORMAT_INDICATOR: 1,
        PropertyId.CONTENT_TYPE: "text/plain",
        PropertyId.USER_PROPERTY: [("a", "1"), ("b", "2")],
    }
    connected(raw, 5, "pub").publish("r/props", b"hi", 0, retain=True, properties=props)
    [msg] = retained_on_subscribe(raw, 5, "r/props")
    assert msg.properties == props


@pytest.mark.parametrize("version", VERSIONS)
def test_in_process_publish_retained(broker, raw, version):  # [MQTT-3.3.1-5]
    assert broker.publish("r/api", "from the server", qos=1, retain=True) == 0
    [msg] = retained_on_subscribe(raw, version, "r/api", 2)
    assert (msg.payload, msg.retain, msg.qos) == (b"from the server", True, 1)
    broker.publish("r/api", b"", retain=True)
    assert retained_on_subscribe(raw, version, "r/api") == []


def test_retained_messages_survive_restart_with_sqlite(wrenmq_server_factory, tmp_path):  # [MQTT-3.3.1-5]
    props = {EXPIRY: 300, PropertyId.CONTENT_TYPE: "text/plain", PropertyId.USER_PROPERTY: [("k", "v")]}
    first = wrenmq_server_factory(storage="sqlite", data_dir=tmp_path)
    with RawClient(first.port, 5) as pub:
        pub.connect("pub")
        pub.publish("r/a", b"kept", 2, retain=True, properties=props)
        pub.publish("r/b", b"gone", 1, retain=True)
        pub.publish("r/b", b"", 1, retain=True)
    first.stop()
    second = wrenmq_server_factory(storage="sqlite", data_dir=tmp_path)
    with RawClient(second.port, 5) as sub:
        sub.connect("sub")
        sub.subscribe("r/#", 2)
        msg = sub.expect(p.Publish)
        assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("r/a", b"kept", 2, True)
        assert 290 <= msg.properties.pop(EXPIRY) <= 300
        assert msg.properties == {k: v for k, v in props.items() if k != EXPIRY}
        sub.nothing()


def test_retain_not_available_disconnects_0x9a(wrenmq_server_factory):  # [MQTT-3.2.2-14], section 3.2.2.3.5
    server = wrenmq_server_factory(retain_available=False)
    with RawClient(server.port, 5) as pub:
        assert pub.connect("pub").properties.get(PropertyId.RETAIN_AVAILABLE) == 0
        pub.send(p.Publish("r/t", b"x", 0, retain=True))
        seen = pub.expect_closed()
        assert [s.reason_code for s in seen] == [ReasonCode.RETAIN_NOT_SUPPORTED]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_retained_round_trip(paho, protocol):  # [MQTT-3.3.1-5], [MQTT-3.3.1-9], interop with paho
    paho(protocol, "paho-pub").publish("pr/t", b"kept", 1, retain=True)
    sub = paho(protocol, "paho-sub")
    sub.subscribe("pr/#", 1)
    [msg] = sub.receive(1)
    assert (msg.topic, msg.payload, msg.retain, msg.qos) == ("pr/t", b"kept", True, 1)


MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")


@pytest.mark.skipif(not (MOSQUITTO_PUB and MOSQUITTO_SUB), reason="mosquitto clients not installed")
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_sub_retained_round_trip(broker, version):  # [MQTT-3.3.1-5], [MQTT-3.3.1-9]
    common = ["-h", "127.0.0.1", "-p", str(broker.port), "-V", version]
    subprocess.run(
        [MOSQUITTO_PUB, *common, "-t", "mosq/r", "-m", "retained hello", "-r", "-q", "1"],
        check=True,
        timeout=10,
    )
    out = subprocess.run(
        [MOSQUITTO_SUB, *common, "-t", "mosq/#", "-C", "1", "-W", "5", "-F", "%t %r %q %p"],
        check=True,
        timeout=10,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "mosq/r 1 0 retained hello"  # topic, retain flag, QoS (sub asks 0), payload
    subprocess.run([MOSQUITTO_PUB, *common, "-t", "mosq/r", "-n", "-r"], check=True, timeout=10)
    gone = subprocess.run(
        [MOSQUITTO_SUB, *common, "-t", "mosq/#", "-C", "1", "-W", "1"],
        timeout=10,
        capture_output=True,
        text=True,
    )
    assert gone.stdout == ""  # cleared: the subscriber timed out with nothing
