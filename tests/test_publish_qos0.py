"""QoS 0 PUBLISH, at most once (section 4.3.1), in both directions, at MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import pytest

from mqttraw import connected
from paho_sync import PROTOCOLS
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.reason_codes import ReasonCode

VERSIONS = [4, 5]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_forwarded_with_qos0_and_dup0(raw, version):  # [MQTT-4.3.1-1], [MQTT-3.3.1-2]
    sub = connected(raw, version, "sub")
    assert sub.subscribe("q0/t", 0).reason_codes == [0]
    pub = connected(raw, version, "pub")
    pub.publish("q0/t", b"hello", 0)
    msg = sub.expect(p.Publish)
    assert (msg.topic, msg.payload, msg.qos, msg.dup, msg.retain, msg.packet_id) == (
        "q0/t",
        b"hello",
        0,
        False,
        False,
        None,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_publish_is_not_acknowledged(raw, version):  # [MQTT-3.3.4-1]: QoS 0 expects no response
    sub = connected(raw, version, "sub")
    sub.subscribe("q0/t", 2)
    pub = connected(raw, version, "pub")
    pub.publish("q0/t", b"x", 0)
    assert sub.expect(p.Publish).qos == 0
    pub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_not_upgraded_to_granted_qos(raw, version):  # [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6])
    sub = connected(raw, version, "sub")
    assert sub.subscribe("q0/#", 2).reason_codes == [2]
    pub = connected(raw, version, "pub")
    pub.publish("q0/up", b"x", 0)
    msg = sub.expect(p.Publish)
    assert msg.qos == 0 and msg.packet_id is None
    sub.nothing()  # no PUBREL or anything else follows a QoS 0 delivery


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_messages_keep_their_order(raw, version):  # [MQTT-4.6.0-5], [MQTT-4.6.0-6]
    sub = connected(raw, version, "sub")
    sub.subscribe("q0/order", 0)
    pub = connected(raw, version, "pub")
    # One write carrying 100 PUBLISH packets: the broker must forward them in arrival order.
    pub.send(b"".join(encode(p.Publish("q0/order", str(i).encode()), version) for i in range(100)))
    got = [sub.expect(p.Publish).payload for _ in range(100)]
    assert got == [str(i).encode() for i in range(100)]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_fan_out_to_every_subscriber(raw, version):  # [MQTT-4.5.0-1]
    subs = [connected(raw, version, f"sub{i}") for i in range(3)]
    for i, sub in enumerate(subs):
        sub.subscribe(["q0/fan", "q0/+", "#"][i], 0)
    pub = connected(raw, version, "pub")
    pub.publish("q0/fan", b"all", 0)
    for sub in subs:
        msg = sub.expect(p.Publish)
        assert (msg.topic, msg.payload) == ("q0/fan", b"all")


def test_qos0_across_protocol_versions(raw):  # [MQTT-3.3.2-3]: the topic name matches the subscription
    sub4 = connected(raw, 4, "sub4")
    sub5 = connected(raw, 5, "sub5")
    sub4.subscribe("x/#", 0)
    sub5.subscribe("x/#", 0)
    connected(raw, 5, "pub5").publish("x/from5", b"five", 0)
    connected(raw, 4, "pub4").publish("x/from4", b"four", 0)
    for sub in (sub4, sub5):
        got = {(m.topic, m.payload) for m in (sub.expect(p.Publish), sub.expect(p.Publish))}
        assert got == {("x/from5", b"five"), ("x/from4", b"four")}


def test_in_process_publish_qos0(broker, raw):  # [MQTT-4.3.1-1]
    sub = connected(raw, 5, "sub")
    sub.subscribe("inproc/t", 1)
    assert broker.publish("inproc/t", "text payload", qos=0) == 1
    msg = sub.expect(p.Publish)
    assert (msg.topic, msg.payload, msg.qos) == ("inproc/t", b"text payload", 0)


def test_qos0_not_delivered_to_non_matching_subscriber(raw):  # [MQTT-3.3.2-3]
    sub = connected(raw, 4, "sub")
    sub.subscribe("a/b", 0)
    pub = connected(raw, 4, "pub")
    pub.publish("a/c", b"x", 0)
    pub.publish("a/b/c", b"x", 0)
    pub.publish("A/b", b"x", 0)  # matching is case sensitive, no normalisation [MQTT-4.7.3-4]
    sub.nothing()


@pytest.mark.parametrize("topic", ["a/+", "a/#", "#", "+"])
def test_wildcard_in_topic_name_closes_v311(raw, topic):  # [MQTT-3.3.2-2], [MQTT-4.7.0-1]
    pub = connected(raw, 4, "pub")
    pub.send(_raw_publish(topic))
    pub.expect_closed()


@pytest.mark.parametrize("topic", ["a/+", "a/#", "#"])
def test_wildcard_in_topic_name_disconnects_v5_with_0x90(raw, topic):  # [MQTT-3.3.2-2]
    pub = connected(raw, 5, "pub")
    pub.send(_raw_publish(topic, v5=True))
    seen = pub.expect_closed()
    assert [type(s) for s in seen] == [p.Disconnect]
    assert seen[0].reason_code == ReasonCode.TOPIC_NAME_INVALID


def test_dup_flag_on_qos0_is_malformed(raw):  # [MQTT-3.3.1-2]
    pub = connected(raw, 5, "pub")
    pub.send(b"\x38\x05\x00\x01t\x00x")  # QoS 0 with DUP=1
    seen = pub.expect_closed()
    assert seen and seen[0].reason_code == ReasonCode.MALFORMED_PACKET


def test_qos3_publish_is_malformed(raw):  # [MQTT-3.3.1-4]
    pub = connected(raw, 4, "pub")
    pub.send(b"\x36\x05\x00\x01t\x00\x01")  # QoS bits 11
    assert pub.expect_closed() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_qos0_round_trip(paho, protocol):  # [MQTT-4.3.1-1], interop with paho
    sub = paho(protocol, "paho-sub")
    assert sub.subscribe("paho/q0", 0) == [0]
    pub = paho(protocol, "paho-pub")
    for i in range(10):
        pub.publish("paho/q0", f"m{i}".encode(), 0)
    got = sub.receive(10)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(10)]
    assert {(m.topic, m.qos, m.retain) for m in got} == {("paho/q0", 0, False)}


def _raw_publish(topic: str, v5: bool = False) -> bytes:
    """A QoS 0 PUBLISH built by hand: our encoder would build it too, but keep the bytes explicit."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + (b"\x00" if v5 else b"") + b"payload"
    return bytes((0x30, len(body))) + body
