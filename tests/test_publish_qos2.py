"""QoS 2 PUBLISH, exactly once (section 4.3.3): PUBREC/PUBREL/PUBCOMP in both directions, duplicate
suppression, redelivery on reconnect, QoS downgrade and a server with Maximum QoS 1."""

from __future__ import annotations

import time

import pytest

from mqttraw import RawClient, connected
from paho_sync import PROTOCOLS
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

VERSIONS = [4, 5]


# -- client to server -----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_inbound_qos2_full_flow(raw, version):  # [MQTT-4.3.3-8], [MQTT-4.3.3-11]
    sub = connected(raw, version, "sub")
    sub.subscribe("q2/t", 2)
    pub = connected(raw, version, "pub")
    pub.send(p.Publish("q2/t", b"once", 2, packet_id=77))
    rec = pub.expect(p.Pubrec)
    assert (rec.packet_id, rec.reason_code) == (77, 0)
    pub.send(p.Pubrel(77))
    comp = pub.expect(p.Pubcomp)
    assert (comp.packet_id, comp.reason_code) == (77, 0)
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.qos) == (b"once", 2)


@pytest.mark.parametrize("version", VERSIONS)
def test_resent_qos2_before_pubrel_not_delivered_twice(raw, version):  # [MQTT-4.3.3-10] (3.1.1: [MQTT-4.3.3-2])
    sub = connected(raw, version, "sub")
    sub.subscribe("q2/dup", 0)
    pub = connected(raw, version, "pub")
    pub.send(p.Publish("q2/dup", b"only once", 2, packet_id=5))
    assert pub.expect(p.Pubrec).packet_id == 5
    for _ in range(3):  # the client did not see our PUBREC and retransmits
        pub.send(p.Publish("q2/dup", b"only once", 2, packet_id=5, dup=True))
        assert pub.expect(p.Pubrec).packet_id == 5
    pub.send(p.Pubrel(5))
    assert pub.expect(p.Pubcomp).packet_id == 5
    assert sub.expect(p.Publish).payload == b"only once"
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_resent_qos2_after_reconnect_not_delivered_twice(raw, version):  # [MQTT-4.3.3-10], [MQTT-4.4.0-1]
    sub = connected(raw, version, "sub")
    sub.subscribe("q2/dup", 0)
    pub = connected(raw, version, "pub", persistent=True)
    pub.send(p.Publish("q2/dup", b"m", 2, packet_id=31))
    pub.expect(p.Pubrec)
    pub.close()  # connection lost before PUBREL
    again = connected(raw, version, "pub", persistent=True)
    again.send(p.Publish("q2/dup", b"m", 2, packet_id=31, dup=True))
    assert again.expect(p.Pubrec).packet_id == 31
    again.send(p.Pubrel(31))
    assert again.expect(p.Pubcomp).packet_id == 31
    assert sub.expect(p.Publish).payload == b"m"
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_same_packet_id_after_pubcomp_is_a_new_message(raw, version):  # [MQTT-4.3.3-12] (3.1.1: [MQTT-4.3.3-2])
    sub = connected(raw, version, "sub")
    sub.subscribe("q2/new", 0)
    pub = connected(raw, version, "pub")
    for payload in (b"one", b"two"):
        pub.send(p.Publish("q2/new", payload, 2, packet_id=12))
        pub.expect(p.Pubrec)
        pub.send(p.Pubrel(12))
        pub.expect(p.Pubcomp)
    assert [sub.expect(p.Publish).payload for _ in range(2)] == [b"one", b"two"]


def test_pubrel_for_unknown_packet_id_v311_gets_pubcomp(raw):  # [MQTT-4.3.3-11] (3.1.1: [MQTT-4.3.3-3])
    pub = connected(raw, 4, "pub")
    pub.send(p.Pubrel(999))
    assert pub.expect(p.Pubcomp).packet_id == 999
    pub.send(p.Pingreq())
    pub.expect(p.Pingresp)  # and the connection stays up


def test_pubrel_for_unknown_packet_id_v5_gets_0x92(raw):  # [MQTT-4.3.3-11], section 3.7.2.1
    pub = connected(raw, 5, "pub")
    pub.send(p.Pubrel(999))
    comp = pub.expect(p.Pubcomp)
    assert (comp.packet_id, comp.reason_code) == (999, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)
    pub.send(p.Pingreq())
    pub.expect(p.Pingresp)


@pytest.mark.parametrize("version", VERSIONS)
def test_pubrecs_sent_in_order_of_publishes(raw, version):  # [MQTT-4.6.0-3] (as the server applies it)
    pub = connected(raw, version, "pub")
    ids = [40, 2, 17, 65000, 1]
    pub.send(b"".join(encode(p.Publish("q2/o", b"x", 2, packet_id=i), version) for i in ids))
    assert [pub.expect(p.Pubrec).packet_id for _ in ids] == ids
    pub.send(b"".join(encode(p.Pubrel(i), version) for i in ids))
    assert [pub.expect(p.Pubcomp).packet_id for _ in ids] == ids


# -- server to client -----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_qos2_full_flow(raw, version):  # [MQTT-4.3.3-1], [MQTT-4.3.3-2], [MQTT-4.3.3-4], [MQTT-4.3.3-5]
    sub = connected(raw, version, "sub")
    sub.subscribe("q2/out", 2)
    pub = connected(raw, version, "pub")
    pub.publish("q2/out", b"exactly", 2)
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.qos, msg.dup) == (b"exactly", 2, False)
    assert msg.packet_id
    sub.nothing(0.2)  # unacknowledged: the broker waits for PUBREC
    sub.send(p.Pubrec(msg.packet_id))
    rel = sub.expect(p.Pubrel)
    assert rel.packet_id == msg.packet_id
    sub.send(p.Pubcomp(msg.packet_id))
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_qos2_resends_publish_before_pubrec(raw, version):  # [MQTT-4.4.0-1], [MQTT-4.3.3-3]
    sub = connected(raw, version, "sub", persistent=True)
    sub.subscribe("q2/out", 2)
    connected(raw, version, "pub").publish("q2/out", b"m", 2)
    first = sub.expect(p.Publish)
    sub.close()
    again = connected(raw, version, "sub", persistent=True)
    msg = again.expect(p.Publish)
    assert (msg.payload, msg.packet_id, msg.qos, msg.dup) == (b"m", first.packet_id, 2, True)
    again.send(p.Pubrec(msg.packet_id))
    assert again.expect(p.Pubrel).packet_id == msg.packet_id
    again.send(p.Pubcomp(msg.packet_id))
    again.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_qos2_resends_pubrel_not_publish_after_pubrec(raw, version):  # [MQTT-4.3.3-6], [MQTT-4.4.0-1]
    sub = connected(raw, version, "sub", persistent=True)
    sub.subscribe("q2/out", 2)
    connected(raw, version, "pub").publish("q2/out", b"m", 2)
    msg = sub.expect(p.Publish)
    sub.send(p.Pubrec(msg.packet_id))
    assert sub.expect(p.Pubrel).packet_id == msg.packet_id
    sub.close()  # PUBCOMP never sent
    again = connected(raw, version, "sub", persistent=True)
    rel = again.expect(p.Pubrel)
    assert rel.packet_id == msg.packet_id
    again.send(p.Pubcomp(rel.packet_id))
    again.nothing()


def test_pubrec_error_ends_flow_without_pubrel(raw):  # [MQTT-4.3.3-4], [MQTT-4.4.0-2]
    sub = connected(raw, 5, "sub", persistent=True)
    sub.subscribe("q2/refused", 2)
    connected(raw, 5, "pub").publish("q2/refused", b"m", 2)
    msg = sub.expect(p.Publish)
    sub.send(p.Pubrec(msg.packet_id, ReasonCode.UNSPECIFIED_ERROR))
    sub.nothing()  # no PUBREL
    sub.close()
    again = connected(raw, 5, "sub", persistent=True)
    again.nothing()  # and it is not retransmitted


def test_outbound_qos2_not_expired_once_sent(raw):  # [MQTT-4.3.3-7]
    sub = connected(raw, 5, "sub", persistent=True)
    sub.subscribe("q2/exp", 2)
    pub = connected(raw, 5, "pub")
    pub.publish("q2/exp", b"m", 2, properties={PropertyId.MESSAGE_EXPIRY_INTERVAL: 1})
    first = sub.expect(p.Publish)
    sub.close()
    time.sleep(1.3)  # past the Message Expiry Interval
    again = connected(raw, 5, "sub", persistent=True)
    msg = again.expect(p.Publish)
    assert (msg.packet_id, msg.dup, msg.payload) == (first.packet_id, True, b"m")


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_packet_ids_unique_across_qos1_and_qos2(broker, raw, version):  # [MQTT-2.2.1-4], [MQTT-4.3.3-1]
    sub = connected(raw, version, "sub")
    sub.subscribe("q2/ids", 2)
    for i in range(30):
        broker.publish("q2/ids", f"{i}", qos=1 + i % 2)
    msgs = [sub.expect(p.Publish) for _ in range(30)]
    for msg in msgs[::2]:
        sub.send(p.Pubrec(msg.packet_id) if msg.qos == 2 else p.Puback(msg.packet_id))
    assert len({m.packet_id for m in msgs}) == 30


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_downgraded_to_granted_qos(raw, version):  # [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6])
    sub0 = connected(raw, version, "sub0")
    sub1 = connected(raw, version, "sub1")
    assert sub0.subscribe("q2/down", 0).reason_codes == [0]
    assert sub1.subscribe("q2/down", 1).reason_codes == [1]
    connected(raw, version, "pub").publish("q2/down", b"x", 2)
    assert sub0.expect(p.Publish).qos == 0
    msg = sub1.expect(p.Publish)
    assert msg.qos == 1
    sub1.send(p.Puback(msg.packet_id))
    sub1.nothing()  # a QoS 1 delivery: no PUBREL follows


def test_in_process_publish_qos2(broker, raw):  # [MQTT-4.3.3-2]
    sub = connected(raw, 4, "sub")
    sub.subscribe("inproc/q2", 2)
    assert broker.publish("inproc/q2", b"x", qos=2) == 1
    msg = sub.expect(p.Publish)
    assert msg.qos == 2
    sub.send(p.Pubrec(msg.packet_id))
    sub.expect(p.Pubrel)
    sub.send(p.Pubcomp(msg.packet_id))


# -- a server that supports QoS 0 and 1 only ----------------------------------------------------


@pytest.fixture
def qos1_server(wrenmq_server_factory):  # type: ignore[no-untyped-def]
    return wrenmq_server_factory(maximum_qos=1)


def test_maximum_qos_announced_in_connack(qos1_server):  # [MQTT-3.2.2-9]
    with RawClient(qos1_server.port, 5) as client:
        assert client.connect("c").properties.get(PropertyId.MAXIMUM_QOS) == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_subscribe_qos2_granted_1_by_qos1_server(qos1_server, version):  # [MQTT-3.2.2-10], [MQTT-3.8.4-7]
    with RawClient(qos1_server.port, version) as sub, RawClient(qos1_server.port, version) as pub:
        sub.connect("sub")
        assert sub.subscribe("m/t", 2).reason_codes == [1]
        pub.connect("pub")
        pub.publish("m/t", b"x", 1)
        assert sub.expect(p.Publish).qos == 1


def test_v5_publish_qos2_to_qos1_server_disconnects_0x9b(qos1_server):  # [MQTT-3.2.2-11], section 3.2.2.3.4
    with RawClient(qos1_server.port, 5) as pub:
        pub.connect("pub")
        pub.send(p.Publish("m/t", b"x", 2, packet_id=1))
        seen = pub.expect_closed()
        assert [type(s) for s in seen] == [p.Disconnect]
        assert seen[0].reason_code == ReasonCode.QOS_NOT_SUPPORTED


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_qos2_round_trip(paho, protocol):  # [MQTT-4.3.3-8], [MQTT-4.3.3-10], interop with paho
    sub = paho(protocol, "paho-sub")
    assert sub.subscribe("paho/q2", 2) == [2]
    pub = paho(protocol, "paho-pub")
    for i in range(20):
        pub.publish("paho/q2", f"m{i}".encode(), 2)  # waits for each PUBCOMP
    got = sub.receive(20)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(20)]
    assert {m.qos for m in got} == {2}
    sub.nothing()  # exactly once: no duplicates
