"""UNSUBSCRIBE and UNSUBACK (sections 3.10 and 3.11) at MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import pytest

from mqttraw import RawClient, connected
from paho_sync import PROTOCOLS
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ReasonCode

VERSIONS = [4, 5]


def unsubscribe(client: RawClient, *filters: str) -> p.Unsuback:
    pid = client.pid()
    client.send(p.Unsubscribe(pid, list(filters)))
    ack = client.expect(p.Unsuback)
    assert ack.packet_id == pid  # [MQTT-3.10.4-5]
    return ack


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(raw, version):  # [MQTT-3.10.4-1], [MQTT-3.10.4-2], [MQTT-3.10.4-4]
    sub = connected(raw, version, "sub")
    sub.subscribe("un/t", 1)
    pub = connected(raw, version, "pub")
    pub.publish("un/t", b"before", 0)
    assert sub.expect(p.Publish).payload == b"before"
    unsubscribe(sub, "un/t")
    pub.publish("un/t", b"after", 1)
    sub.nothing()


def test_unsuback_v311_has_no_reason_codes(raw):  # [MQTT-3.10.4-4], [MQTT-3.10.4-5]
    sub = connected(raw, 4, "sub")
    sub.subscribe("un/t", 0)
    sub.send(p.Unsubscribe(321, ["un/t"]))
    assert sub.recv() == p.Unsuback(321, [])


def test_unsuback_v5_reason_code_per_filter_in_order(raw):  # [MQTT-3.11.3-1], [MQTT-3.11.3-2], [MQTT-3.10.4-6]
    sub = connected(raw, 5, "sub")
    sub.subscribe("un/a", 0)
    sub.subscribe("un/+", 0)
    ack = unsubscribe(sub, "un/a", "un/none", "un/+", "un/a")
    assert ack.reason_codes == [
        ReasonCode.SUCCESS,
        ReasonCode.NO_SUBSCRIPTION_EXISTED,
        ReasonCode.SUCCESS,
        ReasonCode.NO_SUBSCRIPTION_EXISTED,  # handled as a sequence: the first one removed it
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_unsuback_even_when_nothing_was_subscribed(raw, version):  # [MQTT-3.10.4-5]
    sub = connected(raw, version, "sub")
    ack = unsubscribe(sub, "never/subscribed")
    assert ack.reason_codes == ([ReasonCode.NO_SUBSCRIPTION_EXISTED] if version == 5 else [])


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_compares_filters_character_by_character(raw, version):  # [MQTT-3.10.4-1]
    sub = connected(raw, version, "sub")
    sub.subscribe("un/b", 0)
    sub.subscribe("un/#", 0)
    ack = unsubscribe(sub, "un/+")  # matches 'un/b' as a topic, but is not the same filter
    if version == 5:
        assert ack.reason_codes == [ReasonCode.NO_SUBSCRIPTION_EXISTED]
    unsubscribe(sub, "un/#")
    pub = connected(raw, version, "pub")
    pub.publish("un/b", b"x", 0)
    pub.publish("un/c", b"x", 0)
    assert sub.expect(p.Publish).topic == "un/b"  # 'un/b' is still subscribed, 'un/#' is gone
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_leaves_other_subscribers_alone(raw, version):  # [MQTT-3.10.4-1]
    leaver = connected(raw, version, "leaver")
    stayer = connected(raw, version, "stayer")
    leaver.subscribe("un/t", 0)
    stayer.subscribe("un/t", 0)
    unsubscribe(leaver, "un/t")
    connected(raw, version, "pub").publish("un/t", b"x", 0)
    assert stayer.expect(p.Publish).payload == b"x"
    leaver.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_completes_qos1_in_flight(raw, version):  # [MQTT-3.10.4-3]
    sub = connected(raw, version, "sub", persistent=True)
    sub.subscribe("un/q", 1)
    pub = connected(raw, version, "pub")
    pub.publish("un/q", b"in flight", 1)
    msg = sub.expect(p.Publish)
    unsubscribe(sub, "un/q")
    pub.publish("un/q", b"after", 1)
    sub.close()  # PUBACK never sent: the delivery that had started must still complete
    again = connected(raw, version, "sub", persistent=True)
    resent = again.expect(p.Publish)
    assert (resent.payload, resent.packet_id, resent.dup) == (b"in flight", msg.packet_id, True)
    again.send(p.Puback(resent.packet_id))
    again.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_completes_qos2_in_flight(raw, version):  # [MQTT-3.10.4-3]
    sub = connected(raw, version, "sub")
    sub.subscribe("un/q", 2)
    connected(raw, version, "pub").publish("un/q", b"in flight", 2)
    msg = sub.expect(p.Publish)
    unsubscribe(sub, "un/q")
    sub.send(p.Pubrec(msg.packet_id))
    assert sub.expect(p.Pubrel).packet_id == msg.packet_id
    sub.send(p.Pubcomp(msg.packet_id))
    sub.nothing()


def test_unsubscribe_removes_subscription_from_persistent_session(raw):  # [MQTT-3.10.4-1], [MQTT-3.10.4-2]
    sub = connected(raw, 5, "sub", persistent=True)
    sub.subscribe("un/keep", 1)
    sub.subscribe("un/drop", 1)
    unsubscribe(sub, "un/drop")
    sub.disconnect()
    pub = connected(raw, 5, "pub")
    pub.publish("un/drop", b"dropped", 1)
    pub.publish("un/keep", b"kept", 1)
    again = connected(raw, 5, "sub", persistent=True)
    msg = again.expect(p.Publish)
    assert msg.payload == b"kept"
    again.send(p.Puback(msg.packet_id))
    again.nothing()


def test_unsubscribe_shared_subscription(raw):  # [MQTT-3.10.4-1]
    sub = connected(raw, 5, "sub")
    sub.subscribe("$share/g/un/t", 0)
    sub.subscribe("un/t", 0)
    assert unsubscribe(sub, "$share/g/un/t", "$share/other/un/t").reason_codes == [
        ReasonCode.SUCCESS,
        ReasonCode.NO_SUBSCRIPTION_EXISTED,
    ]
    connected(raw, 5, "pub").publish("un/t", b"x", 0)
    assert sub.expect(p.Publish).payload == b"x"  # from the plain subscription only
    sub.nothing()


@pytest.mark.parametrize("bad", ["$share/g", "$share//un/t", "a/#/b", "a+"])
def test_unsubscribe_invalid_filter_v5_gets_0x8f(raw, bad):  # [MQTT-3.11.3-2], [MQTT-3.10.4-6]
    sub = connected(raw, 5, "sub")
    sub.subscribe("un/t", 0)
    assert unsubscribe(sub, bad, "un/t").reason_codes == [ReasonCode.TOPIC_FILTER_INVALID, ReasonCode.SUCCESS]
    sub.send(p.Pingreq())
    sub.expect(p.Pingresp)  # still connected


@pytest.mark.parametrize("bad", ["$share/g", "a/#/b"])
def test_unsubscribe_invalid_filter_v311_still_unsubacked(raw, bad):  # [MQTT-3.10.4-5]
    sub = connected(raw, 4, "sub")
    assert unsubscribe(sub, bad).reason_codes == []


def test_unsubscribe_without_filters_is_protocol_error(raw):  # [MQTT-3.10.3-2]
    sub = connected(raw, 5, "sub")
    sub.send(b"\xa2\x03\x00\x01\x00")  # packet id 1, no properties, no topic filter
    seen = sub.expect_closed()
    assert seen and seen[-1].reason_code == ReasonCode.PROTOCOL_ERROR


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_unsubscribe(paho, protocol):  # [MQTT-3.10.4-2], interop with paho
    sub = paho(protocol, "paho-sub")
    sub.subscribe("pun/t", 1)
    pub = paho(protocol, "paho-pub")
    pub.publish("pun/t", b"one", 1)
    assert sub.receive(1)[0].payload == b"one"
    sub.unsubscribe("pun/t")
    pub.publish("pun/t", b"two", 1)
    sub.nothing()
