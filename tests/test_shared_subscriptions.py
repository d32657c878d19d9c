"""Shared subscriptions ``$share/{ShareName}/{filter}`` (section 4.8.2)."""

from __future__ import annotations

import queue
import time

import pytest

from mqttraw import RawClient
from paho_sync import MQTTv5
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

SUB_ID = PropertyId.SUBSCRIPTION_IDENTIFIER


def connected(raw, client_id: str = "", version: int = 5, persistent: bool = False) -> RawClient:  # type: ignore[no-untyped-def]
    client = raw(version)
    props = {PropertyId.SESSION_EXPIRY_INTERVAL: 300} if persistent and version == 5 else None
    assert client.connect(client_id, clean=not persistent, properties=props).reason_code == 0
    return client


def drain(client: RawClient) -> list[p.Publish]:
    """Everything ``client`` has been sent up to now: a PINGREQ/PINGRESP round trip marks the end,
    as the broker writes to one connection in order."""
    client.send(p.Pingreq())
    got = []
    while not isinstance(packet := client.recv(), p.Pingresp):
        assert isinstance(packet, p.Publish), packet
        got.append(packet)
    return got


def ack_all(client: RawClient, msgs: list[p.Publish]) -> None:
    for msg in msgs:
        if msg.qos == 1:
            client.send(p.Puback(msg.packet_id))
        elif msg.qos == 2:
            client.send(p.Pubrec(msg.packet_id))
            assert client.expect(p.Pubrel).packet_id == msg.packet_id
            client.send(p.Pubcomp(msg.packet_id))


def publish_numbered(pub: RawClient, topic: str, count: int, qos: int = 0) -> list[bytes]:
    payloads = [str(i).encode() for i in range(count)]
    for payload in payloads:
        pub.publish(topic, payload, qos)
    pub.send(p.Pingreq())  # every PUBLISH has been routed once this comes back
    pub.expect(p.Pingresp)
    return payloads


def test_each_message_to_exactly_one_member_spread_over_members(raw):  # [MQTT-4.8.2-3], section 4.8.2
    members = [connected(raw, f"m{i}") for i in range(3)]
    for member in members:
        assert member.subscribe("$share/g/sh/t", 0).reason_codes == [0]
    payloads = publish_numbered(connected(raw, "pub"), "sh/t", 30)
    got = [[m.payload for m in drain(member)] for member in members]
    assert sorted(x for g in got for x in g) == sorted(payloads)  # every message once, none twice
    assert all(got), f"some member got nothing: {[len(g) for g in got]}"


def test_each_group_gets_a_copy_and_plain_subscribers_too(raw):  # section 4.8.2
    g1 = [connected(raw, f"g1-{i}") for i in range(2)]
    g2 = [connected(raw, f"g2-{i}") for i in range(2)]
    plain = connected(raw, "plain")
    for member in g1:
        member.subscribe("$share/one/sh/+", 0)
    for member in g2:
        member.subscribe("$share/two/sh/#", 0)
    plain.subscribe("sh/t", 0)
    payloads = publish_numbered(connected(raw, "pub"), "sh/t", 10)
    for group in (g1, g2):
        assert sorted(m.payload for member in group for m in drain(member)) == sorted(payloads)
    assert [m.payload for m in drain(plain)] == payloads


def test_one_client_in_a_group_and_plain_gets_both(raw):  # section 4.8.2: shared and non-shared are separate
    client = connected(raw, "both")
    client.subscribe("$share/g/sh/t", 0)
    client.subscribe("sh/t", 0)
    publish_numbered(connected(raw, "pub"), "sh/t", 1)
    assert [m.payload for m in drain(client)] == [b"0", b"0"]


@pytest.mark.parametrize(
    "topic_filter",
    ["$share/g", "$share/g/", "$share//sh/t", "$share/g+/sh/t", "$share/g#/sh/t", "$share/g/sh/#/x", "$share/g/sh+"],
)
@pytest.mark.parametrize(("version", "failure"), [(5, ReasonCode.TOPIC_FILTER_INVALID), (4, 0x80)])
def test_invalid_share_names_rejected(raw, topic_filter, version, failure):  # [MQTT-4.8.2-1], [MQTT-4.8.2-2]
    client = connected(raw, "c", version)
    client.send(p.Subscribe(7, [p.Subscription(topic_filter, 1), p.Subscription("$share/ok/sh/t", 1)]))
    ack = client.expect(p.Suback)
    assert ack.reason_codes == [failure, 1]


def test_shared_subscription_gets_no_retained_messages(broker, raw):  # [MQTT-3.3.1-9 context], sections 3.3.1.3, 4.8.2
    broker.publish("sh/r", b"retained", retain=True)
    member = connected(raw, "m")
    member.subscribe("$share/g/sh/#", 0)
    member.subscribe("$share/g2/sh/r", 1, retain_handling=0)  # whatever Retain Handling says
    assert drain(member) == []
    member.subscribe("sh/r", 0)  # a non-shared subscription does get it
    assert [(m.payload, m.retain) for m in drain(member)] == [(b"retained", True)]


def test_no_local_on_shared_subscription_is_protocol_error(raw):  # [MQTT-3.8.3-4]
    client = connected(raw, "c")
    client.send(p.Subscribe(1, [p.Subscription("$share/g/sh/t", 0, no_local=True)]))
    seen = client.expect_closed()
    assert [(type(s), s.reason_code) for s in seen] == [(p.Disconnect, ReasonCode.PROTOCOL_ERROR)]


def test_granted_qos_respected_per_member(raw):  # [MQTT-4.8.2-3]
    low = connected(raw, "low")
    high = connected(raw, "high")
    assert low.subscribe("$share/g/sh/q", 0).reason_codes == [0]
    assert high.subscribe("$share/g/sh/q", 2).reason_codes == [2]
    publish_numbered(connected(raw, "pub"), "sh/q", 10, qos=2)
    low_got, high_got = drain(low), drain(high)
    assert low_got and high_got
    assert {m.qos for m in low_got} == {0}
    assert {m.qos for m in high_got} == {2}
    assert len(low_got) + len(high_got) == 10
    ack_all(high, high_got)


def test_subscription_identifier_on_shared_delivery(raw):  # [MQTT-3.3.4-3]
    member = connected(raw, "m")
    member.subscribe("$share/g/sh/t", 0, properties={SUB_ID: 17})
    publish_numbered(connected(raw, "pub"), "sh/t", 1)
    [msg] = drain(member)
    assert msg.properties[SUB_ID] == [17]


def test_member_that_unsubscribes_gets_no_more(raw):  # [MQTT-3.10.4-2]
    stays = connected(raw, "stays")
    leaves = connected(raw, "leaves")
    stays.subscribe("$share/g/sh/t", 0)
    leaves.subscribe("$share/g/sh/t", 0)
    leaves.send(p.Unsubscribe(2, ["$share/g/sh/t"]))
    assert leaves.expect(p.Unsuback).reason_codes == [0]
    payloads = publish_numbered(connected(raw, "pub"), "sh/t", 8)
    assert [m.payload for m in drain(stays)] == payloads
    assert drain(leaves) == []


def test_qos1_unacked_by_departing_member_goes_to_another(raw):  # section 4.8.2 (QoS 1: MAY send to another)
    leaving = connected(raw, "leaving")
    staying = connected(raw, "staying")
    leaving.subscribe("$share/g/sh/q1", 1)
    staying.subscribe("$share/g/sh/q1", 1)
    payloads = publish_numbered(connected(raw, "pub"), "sh/q1", 6, qos=1)
    unacked = drain(leaving)
    assert unacked  # the group spread them
    first = drain(staying)
    ack_all(staying, first)
    leaving.close()  # gone without acknowledging
    rest = []
    while len(first) + len(rest) < len(payloads):
        msg = staying.expect(p.Publish)
        staying.send(p.Puback(msg.packet_id))
        rest.append(msg)
    assert sorted(m.payload for m in first + rest) == sorted(payloads)
    assert sorted(m.payload for m in rest) == sorted(m.payload for m in unacked)
    assert all(not m.dup for m in rest)  # a first delivery to this client [MQTT-3.3.1-3]


def test_handed_over_message_follows_new_members_subscription(raw):  # [MQTT-4.8.2-3], [MQTT-3.3.4-3]
    leaving = connected(raw, "leaving")
    leaving.subscribe("$share/g/sh/h", 1, properties={SUB_ID: 1})
    publish_numbered(connected(raw, "pub"), "sh/h", 1, qos=2)
    [msg] = drain(leaving)
    assert (msg.qos, msg.properties[SUB_ID]) == (1, [1])
    taker = connected(raw, "taker")
    taker.subscribe("$share/g/sh/h", 2, properties={SUB_ID: 2})
    leaving.close()
    handed = taker.expect(p.Publish)
    assert (handed.payload, handed.qos, handed.properties[SUB_ID]) == (b"0", 2, [2])
    ack_all(taker, [handed])


def test_qos1_refused_by_member_not_sent_to_another(raw):  # [MQTT-4.8.2-6]
    refuser = connected(raw, "refuser")
    other = connected(raw, "other")
    refuser.subscribe("$share/g/sh/no", 1)
    publish_numbered(connected(raw, "pub"), "sh/no", 1, qos=1)
    [msg] = drain(refuser)
    refuser.send(p.Puback(msg.packet_id, ReasonCode.UNSPECIFIED_ERROR))
    other.subscribe("$share/g/sh/no", 1)
    refuser.close()
    assert drain(other) == []


def test_qos2_in_flight_completed_to_same_member_on_reconnect(raw):  # [MQTT-4.8.2-4]
    chosen = connected(raw, "chosen", persistent=True)
    other = connected(raw, "other")
    chosen.subscribe("$share/g/sh/q2", 2)
    publish_numbered(connected(raw, "pub"), "sh/q2", 1, qos=2)
    [msg] = drain(chosen)
    other.subscribe("$share/g/sh/q2", 2)
    chosen.close()  # connection breaks before PUBREC
    assert drain(other) == []  # not handed to another member: that could deliver it twice
    again = connected(raw, "chosen", persistent=True)
    resent = again.expect(p.Publish)
    assert (resent.payload, resent.packet_id, resent.dup) == (msg.payload, msg.packet_id, True)
    ack_all(again, [resent])


def test_qos2_in_flight_not_sent_to_another_when_session_ends(raw):  # [MQTT-4.8.2-5]
    chosen = connected(raw, "chosen")  # Session Expiry 0: the session ends with the connection
    other = connected(raw, "other")
    chosen.subscribe("$share/g/sh/q2", 2)
    publish_numbered(connected(raw, "pub"), "sh/q2", 1, qos=2)
    assert len(drain(chosen)) == 1
    other.subscribe("$share/g/sh/q2", 2)
    chosen.close()
    other.nothing(0.5)


def test_message_for_offline_persistent_member_queued(raw):  # [MQTT-4.5.0-1], section 4.8.2
    member = connected(raw, "member", persistent=True)
    member.subscribe("$share/g/sh/off", 1)
    member.disconnect()
    publish_numbered(connected(raw, "pub"), "sh/off", 2, qos=1)
    again = connected(raw, "member", persistent=True)
    got = [again.expect(p.Publish) for _ in range(2)]
    assert [m.payload for m in got] == [b"0", b"1"]
    ack_all(again, got)


def test_paho_v5_shared_subscription(paho):  # section 4.8.2, interop with paho
    members = [paho(MQTTv5, f"paho-m{i}") for i in range(2)]
    for member in members:
        assert member.subscribe("$share/pg/psh/t", 1) == [1]
    pub = paho(MQTTv5, "paho-pub")
    for i in range(10):
        pub.publish("psh/t", f"{i}".encode(), 1)
    per_member: list[list[bytes]] = [[], []]
    deadline = time.monotonic() + 5
    while sum(map(len, per_member)) < 10 and time.monotonic() < deadline:
        for i, member in enumerate(members):
            try:
                per_member[i].append(member.messages.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    assert sorted(per_member[0] + per_member[1]) == sorted(f"{i}".encode() for i in range(10))
    assert per_member[0] and per_member[1]
