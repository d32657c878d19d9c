"""MQTT 5 PUBLISH features: Receive Maximum and Maximum Packet Size towards the client, Topic Alias
from the client, Message Expiry, property pass-through and the PUBACK/PUBREC reason codes."""

from __future__ import annotations

import time

import pytest

from mqttraw import RawClient
from paho_sync import MQTTv5
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

P = PropertyId


def connected(raw, client_id: str = "", version: int = 5, **props: int) -> RawClient:  # type: ignore[no-untyped-def]
    """A connected client; keyword arguments are CONNECT properties by PropertyId name."""
    client = raw(version)
    properties = {P[name.upper()]: value for name, value in props.items()}
    clean = P.SESSION_EXPIRY_INTERVAL not in properties
    assert client.connect(client_id, clean=clean, properties=properties).reason_code == 0
    return client


def expect_disconnect(client: RawClient, reason: int) -> None:
    seen = client.expect_closed()
    assert [(type(s), s.reason_code) for s in seen] == [(p.Disconnect, reason)], seen


# -- Receive Maximum towards the client --------------------------------------------------------------


def test_receive_maximum_limits_unacked_qos1(broker, raw):  # [MQTT-3.3.4-9], [MQTT-4.9.0-2]
    sub = connected(raw, "sub", receive_maximum=2)
    sub.subscribe("rm/t", 1)
    for i in range(6):
        broker.publish("rm/t", f"{i}", qos=1)
    first = [sub.expect(p.Publish) for _ in range(2)]
    sub.nothing()  # the quota is used up
    got = [m.payload for m in first]
    pending = list(first)
    while len(got) < 6:
        sub.send(p.Puback(pending.pop(0).packet_id))
        msg = sub.expect(p.Publish)  # one acknowledgement frees exactly one slot
        sub.nothing(0.1)
        pending.append(msg)
        got.append(msg.payload)
    assert got == [str(i).encode() for i in range(6)]  # and order is kept [MQTT-4.6.0-5]


def test_receive_maximum_of_reconnecting_client_limits_resend(broker, raw):  # [MQTT-3.3.4-9], [MQTT-4.4.0-1]
    sub = connected(raw, "sub", receive_maximum=4, session_expiry_interval=60)
    sub.subscribe("rm/t", 2)
    for i in range(4):
        broker.publish("rm/t", f"{i}", qos=1 + i % 2)
    first = [sub.expect(p.Publish) for _ in range(4)]
    sub.send(p.Pubrec(first[3].packet_id))  # the last (QoS 2) moves on to PUBREL
    assert sub.expect(p.Pubrel).packet_id == first[3].packet_id
    sub.close()
    broker.publish("rm/t", b"new", qos=1)

    again = connected(raw, "sub", receive_maximum=2, session_expiry_interval=60)
    # The PUBREL is resent and its message still holds a slot: room for one PUBLISH only.
    got = [again.recv(), again.recv()]
    again.nothing(0.2)
    assert [type(x) for x in got] == [p.Publish, p.Pubrel]
    assert (got[0].payload, got[0].dup, got[0].packet_id) == (b"0", True, first[0].packet_id)
    order = [got[0]]
    again.send(p.Pubcomp(first[3].packet_id))
    while len(order) < 4:
        msg = again.expect(p.Publish)
        again.nothing(0.1)  # each acknowledgement lets one more through
        order.append(msg)
        previous = order[-2]
        again.send(p.Puback(previous.packet_id) if previous.qos == 1 else p.Pubrec(previous.packet_id))
        if previous.qos == 2:
            assert again.expect(p.Pubrel).packet_id == previous.packet_id
            again.send(p.Pubcomp(previous.packet_id))
    assert [(m.payload, m.dup) for m in order] == [(b"0", True), (b"1", True), (b"2", True), (b"new", False)]
    assert [m.packet_id for m in order[:3]] == [m.packet_id for m in first[:3]]  # original ids [MQTT-4.4.0-1]


def test_receive_maximum_counts_qos2_until_pubcomp(broker, raw):  # [MQTT-3.3.4-9]
    sub = connected(raw, "sub", receive_maximum=1)
    sub.subscribe("rm/t", 2)
    broker.publish("rm/t", b"a", qos=2)
    broker.publish("rm/t", b"b", qos=2)
    first = sub.expect(p.Publish)
    sub.nothing(0.2)
    sub.send(p.Pubrec(first.packet_id))
    assert sub.expect(p.Pubrel).packet_id == first.packet_id
    sub.nothing(0.2)  # PUBREC with success does not free the slot
    sub.send(p.Pubcomp(first.packet_id))
    second = sub.expect(p.Publish)
    assert second.payload == b"b"


def test_pubrec_error_frees_the_slot(broker, raw):  # [MQTT-3.3.4-9]
    sub = connected(raw, "sub", receive_maximum=1)
    sub.subscribe("rm/t", 2)
    broker.publish("rm/t", b"a", qos=2)
    broker.publish("rm/t", b"b", qos=2)
    first = sub.expect(p.Publish)
    sub.send(p.Pubrec(first.packet_id, ReasonCode.UNSPECIFIED_ERROR))
    assert sub.expect(p.Publish).payload == b"b"


def test_receive_maximum_does_not_hold_back_qos0_or_other_packets(broker, raw):  # [MQTT-3.3.4-10]
    sub = connected(raw, "sub", receive_maximum=1)
    sub.subscribe("rm/t", 1)
    broker.publish("rm/t", b"q1", qos=1)
    broker.publish("rm/t", b"q1 held", qos=1)
    assert sub.expect(p.Publish).payload == b"q1"
    sub.send(p.Pingreq())
    sub.expect(p.Pingresp)
    assert sub.subscribe("rm/other", 0).reason_codes == [0]


def test_server_receive_maximum_exceeded_disconnects_0x93(wrenmq_server_factory):  # [MQTT-3.3.4-7], section 3.3.4
    server = wrenmq_server_factory(receive_maximum=2)
    with RawClient(server.port, 5) as pub:
        assert pub.connect("pub").properties[P.RECEIVE_MAXIMUM] == 2
        for pid in (1, 2):
            pub.send(p.Publish("rm/in", b"x", 2, packet_id=pid))
            assert pub.expect(p.Pubrec).packet_id == pid
        pub.send(p.Publish("rm/in", b"x", 2, packet_id=3))  # a third unacknowledged QoS 2
        expect_disconnect(pub, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)


def test_server_receive_maximum_slot_freed_by_pubrel(wrenmq_server_factory):  # [MQTT-3.3.4-7]
    server = wrenmq_server_factory(receive_maximum=1)
    with RawClient(server.port, 5) as pub:
        pub.connect("pub")
        for _ in range(3):
            assert pub.publish("rm/in", b"x", 2).reason_code == ReasonCode.SUCCESS  # the PUBCOMP
            assert pub.publish("rm/in", b"x", 1).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS


# -- Maximum Packet Size towards the client ----------------------------------------------------------


def test_message_too_large_for_client_not_sent(broker, raw):  # [MQTT-3.1.2-24], [MQTT-3.1.2-25]
    sub = connected(raw, "sub", maximum_packet_size=64)
    sub.subscribe("mps/t", 1)
    broker.publish("mps/t", b"x" * 100, qos=0)
    broker.publish("mps/t", b"small", qos=0)
    msg = sub.expect(p.Publish)
    assert msg.payload == b"small"
    sub.nothing()


def test_large_qos1_discarded_as_if_delivered(broker, raw):  # [MQTT-3.1.2-25]
    sub = connected(raw, "sub", maximum_packet_size=64, receive_maximum=1, session_expiry_interval=60)
    sub.subscribe("mps/t", 1)
    broker.publish("mps/t", b"x" * 100, qos=1)
    broker.publish("mps/t", b"small", qos=1)  # would wait forever if the large one held the only slot
    msg = sub.expect(p.Publish)
    assert msg.payload == b"small"
    sub.close()
    again = connected(raw, "sub", maximum_packet_size=64, session_expiry_interval=60)
    resent = again.expect(p.Publish)  # only the unacknowledged small one is resent
    assert (resent.payload, resent.dup) == (b"small", True)
    again.send(p.Puback(resent.packet_id))
    again.nothing()


def test_retained_message_too_large_for_client_not_sent(broker, raw):  # [MQTT-3.1.2-25]
    broker.publish("mps/big", b"x" * 100, retain=True)
    broker.publish("mps/small", b"y", retain=True)
    sub = connected(raw, "sub", maximum_packet_size=64)
    sub.subscribe("mps/#", 1)
    assert sub.expect(p.Publish).topic == "mps/small"
    sub.nothing()


def test_packet_size_limit_counts_the_whole_packet(broker, raw):  # [MQTT-3.1.2-24]
    limit = 40
    sub = connected(raw, "sub", maximum_packet_size=limit)
    sub.subscribe("mps/t", 0)
    # fixed header 2 + topic 2+5 + properties length 1 = 10 bytes around the payload
    broker.publish("mps/t", b"a" * (limit - 10), qos=0)
    broker.publish("mps/t", b"b" * (limit - 9), qos=0)
    msg = sub.expect(p.Publish)
    assert len(encode(msg, 5)) == limit
    sub.nothing()


# -- Topic Alias from the client ---------------------------------------------------------------------


def test_topic_alias_set_then_used(raw):  # [MQTT-3.3.2-12]
    sub = connected(raw, "sub")
    sub.subscribe("ta/#", 0)
    pub = raw(5)
    ack = pub.connect("pub")
    assert ack.properties[P.TOPIC_ALIAS_MAXIMUM] >= 2
    pub.publish("ta/long/topic/name", b"1", 0, properties={P.TOPIC_ALIAS: 1})
    pub.publish("", b"2", 0, properties={P.TOPIC_ALIAS: 1})
    pub.publish("ta/other", b"3", 1, properties={P.TOPIC_ALIAS: 2})
    pub.publish("", b"4", 1, properties={P.TOPIC_ALIAS: 2})
    pub.publish("ta/remapped", b"5", 0, properties={P.TOPIC_ALIAS: 1})
    pub.publish("", b"6", 0, properties={P.TOPIC_ALIAS: 1})
    got = [sub.expect(p.Publish) for _ in range(6)]
    assert [(m.topic, m.payload) for m in got] == [
        ("ta/long/topic/name", b"1"),
        ("ta/long/topic/name", b"2"),
        ("ta/other", b"3"),
        ("ta/other", b"4"),
        ("ta/remapped", b"5"),
        ("ta/remapped", b"6"),
    ]
    # The alias is the publisher's, not the message's: the subscriber never sees it [MQTT-3.3.2-11].
    assert all(P.TOPIC_ALIAS not in m.properties for m in got)


def test_topic_alias_topic_reaches_v311_subscriber(raw):  # [MQTT-3.3.2-3]
    sub = connected(raw, "sub", version=4)
    sub.subscribe("ta/t", 0)
    pub = connected(raw, "pub")
    pub.publish("ta/t", b"1", 0, properties={P.TOPIC_ALIAS: 3})
    pub.publish("", b"2", 0, properties={P.TOPIC_ALIAS: 3})
    assert [(m.topic, m.payload) for m in (sub.expect(p.Publish), sub.expect(p.Publish))] == [
        ("ta/t", b"1"),
        ("ta/t", b"2"),
    ]


def test_topic_alias_zero_disconnects_0x94(raw):  # [MQTT-3.3.2-8]
    pub = connected(raw, "pub")
    pub.send(p.Publish("ta/t", b"x", 0, properties={P.TOPIC_ALIAS: 0}))
    expect_disconnect(pub, ReasonCode.TOPIC_ALIAS_INVALID)


def test_topic_alias_above_maximum_disconnects_0x94(raw):  # [MQTT-3.3.2-9], [MQTT-3.2.2-17]
    pub = raw(5)
    maximum = pub.connect("pub").properties[P.TOPIC_ALIAS_MAXIMUM]
    pub.publish("ta/t", b"x", 0, properties={P.TOPIC_ALIAS: maximum})  # the maximum itself is fine
    pub.send(p.Publish("ta/t", b"x", 0, properties={P.TOPIC_ALIAS: maximum + 1}))
    expect_disconnect(pub, ReasonCode.TOPIC_ALIAS_INVALID)


def test_topic_alias_when_server_allows_none_disconnects_0x94(wrenmq_server_factory):  # [MQTT-3.2.2-18]
    server = wrenmq_server_factory(topic_alias_maximum=0)
    with RawClient(server.port, 5) as pub:
        assert P.TOPIC_ALIAS_MAXIMUM not in pub.connect("pub").properties
        pub.send(p.Publish("ta/t", b"x", 0, properties={P.TOPIC_ALIAS: 1}))
        expect_disconnect(pub, ReasonCode.TOPIC_ALIAS_INVALID)


def test_unknown_topic_alias_with_empty_topic_is_protocol_error(raw):  # section 3.3.2.3.4
    pub = connected(raw, "pub")
    pub.send(p.Publish("", b"x", 0, properties={P.TOPIC_ALIAS: 5}))
    expect_disconnect(pub, ReasonCode.PROTOCOL_ERROR)


def test_empty_topic_without_alias_is_rejected(raw):  # [MQTT-4.7.3-1], section 3.3.2.1
    pub = connected(raw, "pub")
    pub.send(p.Publish("", b"x", 0))
    seen = pub.expect_closed()
    assert len(seen) == 1 and seen[0].reason_code in (ReasonCode.TOPIC_NAME_INVALID, ReasonCode.PROTOCOL_ERROR)


def test_topic_aliases_do_not_survive_the_connection(raw):  # [MQTT-3.3.2-7]
    pub = connected(raw, "pub", session_expiry_interval=60)
    pub.publish("ta/t", b"x", 0, properties={P.TOPIC_ALIAS: 1})
    pub.disconnect()
    again = connected(raw, "pub", session_expiry_interval=60)
    again.send(p.Publish("", b"x", 0, properties={P.TOPIC_ALIAS: 1}))
    expect_disconnect(again, ReasonCode.PROTOCOL_ERROR)


# -- Message Expiry Interval -------------------------------------------------------------------------


def test_message_expiry_forwarded(raw):  # [MQTT-3.3.2-6]
    sub = connected(raw, "sub")
    sub.subscribe("exp/t", 0)
    connected(raw, "pub").publish("exp/t", b"x", 0, properties={P.MESSAGE_EXPIRY_INTERVAL: 120})
    assert 119 <= sub.expect(p.Publish).properties[P.MESSAGE_EXPIRY_INTERVAL] <= 120


def test_no_expiry_means_no_expiry_property(raw):  # [MQTT-3.3.2-6] (absent: the message does not expire)
    sub = connected(raw, "sub")
    sub.subscribe("exp/t", 0)
    connected(raw, "pub").publish("exp/t", b"x", 0)
    assert P.MESSAGE_EXPIRY_INTERVAL not in sub.expect(p.Publish).properties


def test_expired_message_not_delivered_from_offline_queue(raw):  # [MQTT-3.3.2-5], [MQTT-3.3.2-6]
    sub = connected(raw, "sub", session_expiry_interval=60)
    sub.subscribe("exp/#", 1)
    sub.disconnect()
    pub = connected(raw, "pub")
    pub.publish("exp/short", b"gone", 1, properties={P.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("exp/long", b"kept", 1, properties={P.MESSAGE_EXPIRY_INTERVAL: 60})
    pub.publish("exp/none", b"forever", 1)
    time.sleep(1.3)
    again = connected(raw, "sub", session_expiry_interval=60)
    kept, forever = again.expect(p.Publish), again.expect(p.Publish)
    assert (kept.payload, forever.payload) == (b"kept", b"forever")
    assert kept.properties[P.MESSAGE_EXPIRY_INTERVAL] <= 59  # the time it waited is taken off
    assert P.MESSAGE_EXPIRY_INTERVAL not in forever.properties
    for msg in (kept, forever):
        again.send(p.Puback(msg.packet_id))
    again.nothing()


def test_expired_message_not_delivered_from_receive_maximum_queue(broker, raw):  # [MQTT-3.3.2-5]
    sub = connected(raw, "sub", receive_maximum=1)
    sub.subscribe("exp/t", 1)
    broker.publish("exp/t", b"first", qos=1)
    broker.publish("exp/t", b"short", qos=1, properties={P.MESSAGE_EXPIRY_INTERVAL: 1})
    broker.publish("exp/t", b"last", qos=1)
    first = sub.expect(p.Publish)
    time.sleep(1.3)
    sub.send(p.Puback(first.packet_id))
    assert sub.expect(p.Publish).payload == b"last"


# -- property pass-through ---------------------------------------------------------------------------

APP_PROPERTIES = {
    P.PAYLOAD_FORMAT_INDICATOR: 1,
    P.CONTENT_TYPE: "application/json; charset=utf-8",
    P.RESPONSE_TOPIC: "reply/to/me",
    P.CORRELATION_DATA: b"\x00\x01corr\xff",
    P.USER_PROPERTY: [("z", "last?"), ("a", "1"), ("z", "again"), ("ünï", "cödé"), ("empty", "")],
}


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_application_properties_forwarded_unaltered_in_order(raw, qos):
    # [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17], [MQTT-3.3.2-18], [MQTT-3.3.2-20]
    sub = connected(raw, "sub")
    sub.subscribe("props/t", qos)
    connected(raw, "pub").publish("props/t", b'{"k": 1}', qos, properties=dict(APP_PROPERTIES))
    msg = sub.expect(p.Publish)
    assert msg.properties == APP_PROPERTIES
    assert list(msg.properties[P.USER_PROPERTY]) == APP_PROPERTIES[P.USER_PROPERTY]


def test_application_properties_dropped_for_v311_subscriber(raw):  # [MQTT-3.3.2-3]: same message, 3.1.1 form
    sub = connected(raw, "sub", version=4)
    sub.subscribe("props/t", 1)
    connected(raw, "pub").publish("props/t", b"payload", 1, properties=dict(APP_PROPERTIES))
    msg = sub.expect(p.Publish)
    assert (msg.topic, msg.payload, msg.qos) == ("props/t", b"payload", 1)


def test_in_process_publish_properties(broker, raw):  # [MQTT-3.3.2-17], [MQTT-3.3.2-18]
    sub = connected(raw, "sub")
    sub.subscribe("props/api", 0)
    broker.publish("props/api", b"x", properties=dict(APP_PROPERTIES))
    assert sub.expect(p.Publish).properties == APP_PROPERTIES


@pytest.mark.parametrize("per_hop", [{P.TOPIC_ALIAS: 1}, {P.SUBSCRIPTION_IDENTIFIER: 3}])
def test_in_process_publish_refuses_per_hop_properties(broker, raw, per_hop):  # [MQTT-3.3.2-11], [MQTT-3.3.4-3]
    sub = connected(raw, "sub")
    sub.subscribe("props/api", 0)
    with pytest.raises(ValueError):
        broker.publish("props/api", b"x", properties=per_hop)
    sub.nothing()


def test_paho_v5_properties_round_trip(paho):  # [MQTT-3.3.2-15..18], [MQTT-3.3.2-20], interop with paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    sub = paho(MQTTv5, "paho-sub")
    sub.subscribe("pprops/t", 1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "reply/here"
    props.CorrelationData = b"id-1"
    props.ContentType = "text/plain"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 300
    props.UserProperty = [("k", "v1"), ("a", "b"), ("k", "v2")]
    paho(MQTTv5, "paho-pub").publish("pprops/t", b"hello", 1, properties=props)
    [msg] = sub.receive(1)
    got = msg.properties
    assert (got.ResponseTopic, got.CorrelationData, got.ContentType) == ("reply/here", b"id-1", "text/plain")
    assert got.PayloadFormatIndicator == 1
    assert 298 <= got.MessageExpiryInterval <= 300
    assert got.UserProperty == [("k", "v1"), ("a", "b"), ("k", "v2")]


# -- acknowledgement reason codes --------------------------------------------------------------------


def test_puback_and_pubrec_0x10_when_nobody_subscribed(raw):  # section 3.4.2.1, 3.5.2.1
    pub = connected(raw, "pub")
    assert pub.publish("nobody/home", b"x", 1).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    pub.send(p.Publish("nobody/home", b"x", 2, packet_id=9))
    rec = pub.expect(p.Pubrec)
    assert (rec.packet_id, rec.reason_code) == (9, ReasonCode.NO_MATCHING_SUBSCRIBERS)
    pub.send(p.Pubrel(9))  # a reason code below 0x80: the flow goes on
    assert pub.expect(p.Pubcomp).reason_code == ReasonCode.SUCCESS


def test_puback_success_when_someone_subscribed(raw):  # section 3.4.2.1
    sub = connected(raw, "sub")
    sub.subscribe("some/+", 0)
    pub = connected(raw, "pub")
    assert pub.publish("some/one", b"x", 1).reason_code == ReasonCode.SUCCESS
    assert pub.publish("none/one", b"x", 1).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS


def test_v311_puback_has_no_reason_code(raw):  # 3.1.1 section 3.4: PUBACK is two bytes of packet id
    pub = connected(raw, "pub", version=4)
    pub.send(p.Publish("nobody/home", b"x", 1, packet_id=3))
    assert pub.sock.recv(16) == b"\x40\x02\x00\x03"


def test_subscription_identifier_from_client_is_protocol_error(raw):  # [MQTT-3.3.4-6]
    pub = connected(raw, "pub")
    pub.send(p.Publish("si/t", b"x", 0, properties={P.SUBSCRIPTION_IDENTIFIER: [1]}))
    expect_disconnect(pub, ReasonCode.PROTOCOL_ERROR)
