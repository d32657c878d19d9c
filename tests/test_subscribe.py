"""SUBSCRIBE and SUBACK (sections 3.8, 3.9), topic filter matching (section 4.7) and the MQTT 5
subscription options: No Local, Retain As Published, Retain Handling, Subscription Identifier."""

from __future__ import annotations

import pytest

from mqttraw import RawClient, connected
from paho_sync import PROTOCOLS, MQTTv5
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

VERSIONS = [4, 5]
SUB_ID = PropertyId.SUBSCRIPTION_IDENTIFIER


def subscribe_many(client: RawClient, *subs: p.Subscription, properties: dict | None = None) -> p.Suback:
    pid = client.pid()
    client.send(p.Subscribe(pid, list(subs), properties))
    ack = client.expect(p.Suback)
    assert ack.packet_id == pid  # [MQTT-3.8.4-2]
    return ack


def received_topics(sub: RawClient, pub: RawClient) -> list[str]:
    """The topics ``sub`` receives from ``pub`` up to an end marker that ``pub`` sends now.

    The marker topic starts with '$', so no wildcard filter under test matches it [MQTT-4.7.2-1];
    messages from one publisher arrive in order [MQTT-4.6.0-5], so everything before it is in.
    """
    topics = []
    sub.send(p.Subscribe(sub.pid(), [p.Subscription("$end")]))
    while not isinstance(packet := sub.recv(), p.Suback):
        topics.append(packet.topic)
    pub.publish("$end", b"", 0)
    while (topic := sub.expect(p.Publish).topic) != "$end":
        topics.append(topic)
    return topics


# -- topic filter matching --------------------------------------------------------------------

MATCHING = [
    ("sport/tennis/+", ["sport/tennis/p1", "sport/tennis/p2"], ["sport/tennis/p1/ranking", "sport/tennis"]),
    ("sport/+", ["sport/"], ["sport", "sport/tennis/player1"]),  # [MQTT-4.7.1-2]: sport/+ does not match sport
    ("sport/#", ["sport", "sport/tennis", "sport/tennis/player1"], ["sports", "Sport/tennis"]),  # '#' matches parent
    ("+/+", ["/finance", "a/b"], ["a", "a/b/c"]),
    ("/+", ["/finance"], ["finance", "a/b"]),
    ("+", ["finance", "x"], ["/finance", "a/b"]),
    ("+/tennis/#", ["sport/tennis", "sport/tennis/x/y"], ["sport/golf"]),
    ("#", ["a", "a/b", "/x"], []),
    ("a//c", ["a//c"], ["a/b/c", "a/c"]),
]


@pytest.mark.parametrize(("topic_filter", "matches", "misses"), MATCHING)
@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_matching(raw, version, topic_filter, matches, misses):  # [MQTT-4.7.1-1], [MQTT-4.7.1-2]
    sub = connected(raw, version, "sub")
    assert sub.subscribe(topic_filter, 0).reason_codes == [0]
    pub = connected(raw, version, "pub")
    for topic in misses + matches:
        pub.publish(topic, b"x", 0)
    assert sorted(received_topics(sub, pub)) == sorted(matches)


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_not_matched_by_leading_wildcards(broker, raw, version):  # [MQTT-4.7.2-1]
    wild = connected(raw, version, "wild")
    subscribe_many(wild, p.Subscription("#"), p.Subscription("+/info"), p.Subscription("+/+"))
    explicit = connected(raw, version, "explicit")
    subscribe_many(explicit, p.Subscription("$SYS/#"), p.Subscription("$foo/+"))
    broker.publish("$SYS/info", b"sys")
    pub = connected(raw, version, "pub")
    pub.publish("$foo/bar", b"foo", 0)
    assert sorted(received_topics(explicit, pub)) == ["$SYS/info", "$foo/bar"]
    assert received_topics(wild, pub) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_matching_is_exact_no_normalisation(raw, version):  # [MQTT-4.7.3-4]
    sub = connected(raw, version, "sub")
    sub.subscribe("Accounts/é/x", 0)
    pub = connected(raw, version, "pub")
    for topic in ("accounts/é/x", "Accounts/e\u0301/x", "Accounts/é/x ", "Accounts/é/x"):
        pub.publish(topic, b"x", 0)
    assert received_topics(sub, pub) == ["Accounts/é/x"]


# -- SUBACK -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_suback_grants_requested_qos_per_filter_in_order(raw, version):  # [MQTT-3.8.4-5], [MQTT-3.9.3-1]
    sub = connected(raw, version, "sub")
    ack = subscribe_many(sub, p.Subscription("a/2", 2), p.Subscription("a/0", 0), p.Subscription("a/1", 1))
    assert ack.reason_codes == [2, 0, 1]


@pytest.mark.parametrize(("version", "failure"), [(4, 0x80), (5, ReasonCode.TOPIC_FILTER_INVALID)])
def test_invalid_filters_fail_alone(raw, version, failure):  # [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1]
    # Each filter gets its own reason code [MQTT-3.8.4-6], [MQTT-3.8.4-7]; the valid ones succeed.
    sub = connected(raw, version, "sub")
    invalid = ["a/#/b", "a+", "#a", "a/b#", "+a/b", "a/++", ""]
    filters = [p.Subscription("ok/1", 1), *(p.Subscription(f, 1) for f in invalid), p.Subscription("ok/+", 2)]
    ack = subscribe_many(sub, *filters)
    assert ack.reason_codes == [1, *([failure] * len(invalid)), 2]
    pub = connected(raw, version, "pub")
    pub.publish("ok/1", b"x", 1)
    pub.publish("ok/2", b"x", 1)
    assert sorted(received_topics(sub, pub)) == ["ok/1", "ok/2"]  # the valid filters of the packet work


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_replaces_subscription_qos(raw, version):  # [MQTT-3.8.4-3]
    sub = connected(raw, version, "sub")
    assert sub.subscribe("re/t", 0).reason_codes == [0]
    assert sub.subscribe("re/t", 2).reason_codes == [2]
    pub = connected(raw, version, "pub")
    pub.publish("re/t", b"x", 2)
    msg = sub.expect(p.Publish)
    assert msg.qos == 2  # the new subscription's QoS, and one copy only
    sub.send(p.Pubrec(msg.packet_id))
    sub.expect(p.Pubrel)
    sub.send(p.Pubcomp(msg.packet_id))
    assert sub.subscribe("re/t", 1).reason_codes == [1]
    pub.publish("re/t", b"y", 2)
    assert sub.expect(p.Publish).qos == 1
    sub.nothing()


def test_resubscribe_loses_no_messages(broker, raw):  # [MQTT-3.8.4-4]
    sub = raw(5)
    sub.connect("sub", properties={PropertyId.RECEIVE_MAXIMUM: 1})
    sub.subscribe("re/t", 1)
    for i in range(3):
        broker.publish("re/t", f"{i}", qos=1)
    first = sub.expect(p.Publish)  # the other two wait for the Receive Maximum
    assert sub.subscribe("re/t", 1, retain_handling=2).reason_codes == [1]
    got = [first]
    for _ in range(2):
        sub.send(p.Puback(got[-1].packet_id))
        got.append(sub.expect(p.Publish))
    assert [m.payload for m in got] == [b"0", b"1", b"2"]


@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_subscriptions_one_copy_at_max_qos(raw, version):  # [MQTT-3.3.4-2] (3.1.1: [MQTT-3.3.5-1])
    sub = connected(raw, version, "sub")
    subscribe_many(sub, p.Subscription("ov/+", 1), p.Subscription("ov/#", 2), p.Subscription("ov/t", 0))
    connected(raw, version, "pub").publish("ov/t", b"x", 2)
    msg = sub.expect(p.Publish)
    assert msg.qos == 2
    sub.send(p.Pubrec(msg.packet_id))
    assert sub.expect(p.Pubrel).packet_id == msg.packet_id
    sub.send(p.Pubcomp(msg.packet_id))
    sub.nothing()


def test_overlapping_subscriptions_carry_every_subscription_identifier(raw):  # [MQTT-3.3.4-3], [MQTT-3.3.4-4]
    sub = connected(raw, 5, "sub")
    sub.subscribe("ov/+", 1, properties={SUB_ID: 1})
    sub.subscribe("ov/#", 0, properties={SUB_ID: 2})
    sub.subscribe("ov/t", 0)  # no identifier
    sub.subscribe("other/#", 0, properties={SUB_ID: 99})
    connected(raw, 5, "pub").publish("ov/t", b"x", 1)
    msg = sub.expect(p.Publish)
    assert msg.qos == 1
    assert sorted(msg.properties[SUB_ID]) == [1, 2]
    sub.send(p.Puback(msg.packet_id))
    sub.nothing()


# -- MQTT 5 subscription options --------------------------------------------------------------------


def test_subscription_identifier_sent_with_matching_messages(raw):  # [MQTT-3.3.4-3]
    sub = connected(raw, 5, "sub")
    sub.subscribe("sid/a", 0, properties={SUB_ID: 268435455})
    sub.subscribe("sid/b", 0)
    pub = connected(raw, 5, "pub")
    pub.publish("sid/a", b"a", 0)
    pub.publish("sid/b", b"b", 0)
    a, b = sub.expect(p.Publish), sub.expect(p.Publish)
    assert a.properties[SUB_ID] == [268435455]
    assert SUB_ID not in b.properties


def test_subscription_identifier_replaced_on_resubscribe(raw):  # [MQTT-3.8.4-3], [MQTT-3.3.4-3]
    sub = connected(raw, 5, "sub")
    sub.subscribe("sid/t", 0, properties={SUB_ID: 7})
    sub.subscribe("sid/t", 0, properties={SUB_ID: 8})
    pub = connected(raw, 5, "pub")
    pub.publish("sid/t", b"x", 0)
    assert sub.expect(p.Publish).properties[SUB_ID] == [8]
    sub.subscribe("sid/t", 0)  # replaced by a subscription without an identifier
    pub.publish("sid/t", b"y", 0)
    assert SUB_ID not in sub.expect(p.Publish).properties


def test_subscription_identifier_zero_is_protocol_error(raw):  # [MQTT-3.8.2-1 context], section 3.8.2.1.2
    sub = connected(raw, 5, "sub")
    # packet id 1, properties {Subscription Identifier: 0}, filter "a/b" QoS 0
    sub.send(b"\x82\x0b\x00\x01\x02\x0b\x00\x00\x03a/b\x00")
    seen = sub.expect_closed()
    assert seen and seen[-1].reason_code == ReasonCode.PROTOCOL_ERROR


def test_no_local_skips_own_messages(raw):  # [MQTT-3.8.3-3]
    me = connected(raw, 5, "me")
    other = connected(raw, 5, "other")
    subscribe_many(me, p.Subscription("nl/t", 1, no_local=True))
    subscribe_many(other, p.Subscription("nl/t", 1, no_local=True))
    me.publish("nl/t", b"mine", 1)
    me.nothing()
    msg = other.expect(p.Publish)
    assert msg.payload == b"mine"
    other.send(p.Puback(msg.packet_id))
    other.publish("nl/t", b"theirs", 1)
    assert me.expect(p.Publish).payload == b"theirs"


def test_without_no_local_own_messages_come_back(raw):  # [MQTT-3.8.3-3] (option 0)
    me = connected(raw, 5, "me")
    me.subscribe("nl/t", 0)
    me.publish("nl/t", b"echo", 0)
    assert me.expect(p.Publish).payload == b"echo"


def test_no_local_with_overlapping_subscription(raw):  # [MQTT-3.8.3-3], [MQTT-3.3.4-2]
    me = connected(raw, 5, "me")
    subscribe_many(me, p.Subscription("nl/#", 0, no_local=True), p.Subscription("nl/+", 0, no_local=True))
    me.publish("nl/x", b"mine", 0)
    me.nothing()


def test_no_local_applies_to_client_id_across_connections(raw):  # [MQTT-3.8.3-3]
    me = raw(5)
    me.connect("me", clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60})
    subscribe_many(me, p.Subscription("nl/t", 0, no_local=True))
    me.disconnect()
    again = raw(5)
    assert again.connect("me", clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60}).session_present
    again.publish("nl/t", b"mine", 0)
    again.nothing()


@pytest.mark.parametrize(("rap", "expected"), [(False, False), (True, True)])
def test_retain_as_published(raw, rap, expected):  # [MQTT-3.3.1-12], [MQTT-3.3.1-13]
    sub = connected(raw, 5, "sub")
    subscribe_many(sub, p.Subscription("rap/t", 0, retain_as_published=rap))
    pub = connected(raw, 5, "pub")
    pub.publish("rap/t", b"kept", 0, retain=True)
    pub.publish("rap/t", b"plain", 0, retain=False)
    kept, plain = sub.expect(p.Publish), sub.expect(p.Publish)
    assert (kept.payload, kept.retain) == (b"kept", expected)
    assert (plain.payload, plain.retain) == (b"plain", False)
    pub.publish("rap/t", b"", 0, retain=True)  # clean up the retained message


def test_retain_handling_0_sends_retained_on_every_subscribe(broker, raw):  # [MQTT-3.3.1-9], [MQTT-3.8.4-4]
    broker.publish("rh/t", b"stored", retain=True)
    sub = connected(raw, 5, "sub")
    for _ in range(2):
        subscribe_many(sub, p.Subscription("rh/t", 0, retain_handling=0))
        msg = sub.expect(p.Publish)
        assert (msg.payload, msg.retain) == (b"stored", True)
    sub.nothing()


def test_retain_handling_1_only_for_new_subscription(broker, raw):  # [MQTT-3.3.1-10]
    broker.publish("rh/t", b"stored", retain=True)
    sub = connected(raw, 5, "sub")
    subscribe_many(sub, p.Subscription("rh/t", 0, retain_handling=1))
    assert sub.expect(p.Publish).payload == b"stored"
    subscribe_many(sub, p.Subscription("rh/t", 1, retain_handling=1))  # exists already
    sub.nothing()
    sub.send(p.Unsubscribe(sub.pid(), ["rh/t"]))
    sub.expect(p.Unsuback)
    subscribe_many(sub, p.Subscription("rh/t", 0, retain_handling=1))  # new again
    assert sub.expect(p.Publish).payload == b"stored"


def test_retain_handling_2_never_sends_retained(broker, raw):  # [MQTT-3.3.1-11]
    broker.publish("rh/t", b"stored", retain=True)
    sub = connected(raw, 5, "sub")
    subscribe_many(sub, p.Subscription("rh/#", 0, retain_handling=2))
    sub.nothing()
    broker.publish("rh/t", b"live", retain=True)  # but later messages still flow
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.retain) == (b"live", False)


def test_retained_message_carries_subscription_identifier(broker, raw):  # [MQTT-3.3.4-3]
    broker.publish("sid/r", b"stored", retain=True)
    sub = connected(raw, 5, "sub")
    sub.subscribe("sid/#", 0, properties={SUB_ID: 42})
    msg = sub.expect(p.Publish)
    assert (msg.payload, msg.retain, msg.properties[SUB_ID]) == (b"stored", True, [42])


def test_retain_handling_3_is_protocol_error(raw):  # [MQTT-3.8.3-5 context], section 3.8.3.1
    sub = connected(raw, 5, "sub")
    sub.send(b"\x82\x08\x00\x01\x00\x00\x02a/\x30")  # filter "a/" with Retain Handling 3
    seen = sub.expect_closed()
    assert seen and seen[-1].reason_code == ReasonCode.PROTOCOL_ERROR


# -- interop ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_wildcard_subscriptions(paho, protocol):  # [MQTT-4.7.1-2], [MQTT-3.9.3-1]
    sub = paho(protocol, "paho-sub")
    assert sub.subscribe([("w/+/t", 1), ("w/x/#", 2)]) == [1, 2]
    pub = paho(protocol, "paho-pub")
    for topic in ("w/a/t", "w/x", "w/x/y/z", "w/a/b"):
        pub.publish(topic, topic.encode(), 1)
    got = sorted(m.topic for m in sub.receive(3))
    assert got == ["w/a/t", "w/x", "w/x/y/z"]
    sub.nothing()


def test_paho_v5_no_local(paho):  # [MQTT-3.8.3-3]
    from paho.mqtt.subscribeoptions import SubscribeOptions

    me = paho(MQTTv5, "paho-me")
    assert me.subscribe("pnl/t", options=SubscribeOptions(qos=1, noLocal=True)) == [1]
    me.publish("pnl/t", b"mine", 1)
    me.nothing()
