"""QoS 1 PUBLISH, at least once (section 4.3.2): PUBACK flows in both directions, packet identifiers,
redelivery on reconnect, ordering and QoS downgrade, at MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import pytest

from mqttraw import connected
from paho_sync import PROTOCOLS
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode

VERSIONS = [4, 5]


@pytest.mark.parametrize("version", VERSIONS)
def test_inbound_qos1_acknowledged_with_same_packet_id(raw, version):  # [MQTT-4.3.2-4] (3.1.1: [MQTT-4.3.2-2])
    sub = connected(raw, version, "sub")
    sub.subscribe("q1/t", 1)
    pub = connected(raw, version, "pub")
    pub.send(p.Publish("q1/t", b"x", 1, packet_id=4242))
    ack = pub.expect(p.Puback)
    assert (ack.packet_id, ack.reason_code) == (4242, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_qos1_has_packet_id_and_dup0(raw, version):  # [MQTT-4.3.2-1], [MQTT-4.3.2-2]
    sub = connected(raw, version, "sub")
    assert sub.subscribe("q1/t", 1).reason_codes == [1]
    pub = connected(raw, version, "pub")
    assert pub.publish("q1/t", b"payload", 1).reason_code == 0
    msg = sub.expect(p.Publish)
    assert (msg.topic, msg.payload, msg.qos, msg.dup) == ("q1/t", b"payload", 1, False)
    assert msg.packet_id and 1 <= msg.packet_id <= 65535
    sub.send(p.Puback(msg.packet_id))
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_packet_ids_unique_while_in_flight(broker, raw, version):  # [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-2])
    sub = connected(raw, version, "sub")
    sub.subscribe("q1/ids", 1)
    for i in range(40):
        broker.publish("q1/ids", f"{i}", qos=1)
    msgs = [sub.expect(p.Publish) for _ in range(40)]  # none acknowledged yet
    ids = [m.packet_id for m in msgs]
    assert len(set(ids)) == 40 and 0 not in ids and None not in ids
    assert [m.payload for m in msgs] == [str(i).encode() for i in range(40)]


@pytest.mark.parametrize("version", VERSIONS)
def test_unacked_qos1_resent_with_dup_on_reconnect(raw, version):  # [MQTT-4.4.0-1], [MQTT-3.3.1-1], [MQTT-4.3.2-3]
    sub = connected(raw, version, "sub", persistent=True)
    sub.subscribe("q1/redo", 1)
    pub = connected(raw, version, "pub")
    pub.publish("q1/redo", b"first", 1)
    pub.publish("q1/redo", b"second", 1)
    first, second = sub.expect(p.Publish), sub.expect(p.Publish)
    sub.send(p.Puback(first.packet_id))  # only the first is acknowledged
    sub.nothing(0.2)
    sub.close()

    again = connected(raw, version, "sub", persistent=True)
    msg = again.expect(p.Publish)
    assert (msg.payload, msg.packet_id, msg.qos, msg.dup) == (b"second", second.packet_id, 1, True)
    again.send(p.Puback(msg.packet_id))
    again.nothing()  # the acknowledged message is never resent [MQTT-4.4.0-1]


@pytest.mark.parametrize("version", VERSIONS)
def test_acked_qos1_not_resent_on_reconnect(raw, version):  # [MQTT-4.4.0-1]: resend at no other time
    sub = connected(raw, version, "sub", persistent=True)
    sub.subscribe("q1/done", 1)
    connected(raw, version, "pub").publish("q1/done", b"x", 1)
    msg = sub.expect(p.Publish)
    sub.send(p.Puback(msg.packet_id))
    sub.nothing(0.2)
    sub.close()
    again = connected(raw, version, "sub", persistent=True)
    again.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_resent_by_client_with_same_id_is_a_new_message(raw, version):  # [MQTT-4.3.2-5]
    sub = connected(raw, version, "sub")
    sub.subscribe("q1/again", 0)
    pub = connected(raw, version, "pub")
    pub.send(p.Publish("q1/again", b"m", 1, packet_id=9))
    assert pub.expect(p.Puback).packet_id == 9
    pub.send(p.Publish("q1/again", b"m", 1, packet_id=9, dup=True))
    assert pub.expect(p.Puback).packet_id == 9
    assert [sub.expect(p.Publish).payload for _ in range(2)] == [b"m", b"m"]


@pytest.mark.parametrize("version", VERSIONS)
def test_dup_flag_not_forwarded(raw, version):  # [MQTT-3.3.1-3]
    sub = connected(raw, version, "sub")
    sub.subscribe("q1/dup", 1)
    pub = connected(raw, version, "pub")
    pub.send(p.Publish("q1/dup", b"m", 1, packet_id=3, dup=True))  # a retransmission from the publisher...
    pub.expect(p.Puback)
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.dup) == (b"m", False)  # ...is a first transmission to the subscriber


def test_mqtt31_qos1_round_trip(raw):  # [MQTT-4.3.2-4], MQTT 3.1 (protocol level 3, "MQIsdp")
    sub = connected(raw, 3, "sub31")
    assert sub.subscribe("q1/31", 1).reason_codes == [1]
    pub = connected(raw, 3, "pub31")
    assert pub.publish("q1/31", b"old", 1).packet_id
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.qos) == (b"old", 1)
    sub.send(p.Puback(msg.packet_id))
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_pubacks_sent_in_order_of_publishes(raw, version):  # [MQTT-4.6.0-2] (as the server applies it)
    sub = connected(raw, version, "sub")
    sub.subscribe("q1/#", 0)
    pub = connected(raw, version, "pub")
    ids = [7, 3, 65535, 1, 500, 2, 9, 8]
    pub.send(b"".join(encode(p.Publish(f"q1/{i}", b"x", 1, packet_id=i), version) for i in ids))
    assert [pub.expect(p.Puback).packet_id for _ in ids] == ids


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_messages_keep_their_order(raw, version):  # [MQTT-4.6.0-5], [MQTT-4.6.0-6]
    sub = connected(raw, version, "sub")
    sub.subscribe("q1/order", 1)
    pub = connected(raw, version, "pub")
    pub.send(b"".join(encode(p.Publish("q1/order", str(i).encode(), 1, packet_id=i + 1), version) for i in range(60)))
    got = []
    for _ in range(60):
        msg = sub.expect(p.Publish)
        sub.send(p.Puback(msg.packet_id))
        got.append(msg.payload)
    assert got == [str(i).encode() for i in range(60)]
    assert [pub.expect(p.Puback).packet_id for _ in range(60)] == list(range(1, 61))


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_downgraded_to_granted_qos0(raw, version):  # [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6])
    sub = connected(raw, version, "sub")
    assert sub.subscribe("q1/down", 0).reason_codes == [0]
    pub = connected(raw, version, "pub")
    pub.publish("q1/down", b"x", 1)
    msg = sub.expect(p.Publish)
    assert (msg.qos, msg.packet_id, msg.dup) == (0, None, False)


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_not_upgraded_to_granted_qos2(raw, version):  # [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6])
    sub = connected(raw, version, "sub")
    assert sub.subscribe("q1/up", 2).reason_codes == [2]
    pub = connected(raw, version, "pub")
    pub.publish("q1/up", b"x", 1)
    msg = sub.expect(p.Publish)
    assert msg.qos == 1
    sub.send(p.Puback(msg.packet_id))
    sub.nothing()


@pytest.mark.parametrize(("pub_version", "sub_version"), [(4, 5), (5, 4)])
def test_qos1_across_protocol_versions(raw, pub_version, sub_version):  # [MQTT-4.3.2-2], [MQTT-4.3.2-4]
    sub = connected(raw, sub_version, "sub")
    sub.subscribe("q1/x", 1)
    pub = connected(raw, pub_version, "pub")
    assert pub.publish("q1/x", b"cross", 1).reason_code == 0
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.qos) == (b"cross", 1)
    sub.send(p.Puback(msg.packet_id))


def test_qos1_queued_for_offline_persistent_session(raw):  # [MQTT-4.5.0-1], [MQTT-3.1.2-5 (3.1.1)]
    sub = connected(raw, 4, "sub", persistent=True)
    sub.subscribe("q1/off", 1)
    sub.disconnect()
    pub = connected(raw, 4, "pub")
    for i in range(5):
        pub.publish("q1/off", f"{i}".encode(), 1)
    again = connected(raw, 4, "sub", persistent=True)
    got = []
    for _ in range(5):
        msg = again.expect(p.Publish)
        assert (msg.qos, msg.dup) == (1, False)  # never sent before: not a redelivery [MQTT-3.3.1-3]
        again.send(p.Puback(msg.packet_id))
        got.append(msg.payload)
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_in_process_publish_qos1(broker, raw):  # [MQTT-4.3.2-1]
    sub = connected(raw, 5, "sub")
    sub.subscribe("inproc/q1", 1)
    assert broker.publish("inproc/q1", b"\x00\xffbin", qos=1) == 1
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.qos) == (b"\x00\xffbin", 1)
    sub.send(p.Puback(msg.packet_id))
    sub.nothing()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_qos1_round_trip(paho, protocol):  # [MQTT-4.3.2-4], interop with paho
    sub = paho(protocol, "paho-sub")
    assert sub.subscribe("paho/q1", 1) == [1]
    pub = paho(protocol, "paho-pub")
    for i in range(20):
        pub.publish("paho/q1", f"m{i}".encode(), 1)  # waits for each PUBACK
    got = sub.receive(20)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(20)]
    assert {m.qos for m in got} == {1}
