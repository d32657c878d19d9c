"""Malformed packets and protocol errors against a running broker (sections 4.13 and 3.1.4).

Each violation closes the offending connection only: an MQTT 5 client first gets a DISCONNECT (or,
for a bad CONNECT, a CONNACK) with the reason code, an MQTT 3.1.1 client is simply disconnected,
and a well-behaved "bystander" connected at the same time keeps publishing and receiving.
The raw packets come from the builders in test_codec.py.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqttraw import RawClient
from test_codec import connect_bytes, frame, prop, props, publish_bytes, subscribe_bytes, unsubscribe_bytes, utf8
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

P = PropertyId
MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR


def bystander(make: Callable[..., RawClient], server: Any, version: int = 5) -> RawClient:
    """A well-behaved client, connected before the offender and subscribed to its own topics."""
    c = make(server, version)
    assert c.connect(f"bystander-v{version}").reason_code == 0
    assert c.subscribe("bystander/#", 1).reason_codes == [1]
    return c


def assert_still_served(c: RawClient) -> None:
    """The bystander publishes at QoS 1 and gets both its PUBACK and its own message back."""
    for n in range(2):
        payload = b"still here %d" % n
        c.send(p.Publish("bystander/after", payload, 1, False, c.pid()))
        got = [c.recv(3), c.recv(3)]
        acks = [x for x in got if isinstance(x, p.Puback)]
        msgs = [x for x in got if isinstance(x, p.Publish)]
        assert len(acks) == 1 and acks[0].reason_code == 0, got
        assert len(msgs) == 1 and msgs[0].payload == payload, got
        c.send(p.Puback(msgs[0].packet_id))


def offender(make: Callable[..., RawClient], server: Any, version: int, client_id: str = "offender") -> RawClient:
    c = make(server, version)
    assert c.connect(client_id).reason_code == 0
    return c


def assert_disconnected_with(c: RawClient, code: int) -> p.Disconnect:
    """[MQTT-4.13.1-1]: the server sends DISCONNECT with the reason code, then closes."""
    sent = c.expect_closed()
    assert [type(x) for x in sent] == [p.Disconnect], sent
    assert sent[0].reason_code == code, f"reason 0x{sent[0].reason_code:02X}, expected 0x{code:02X}"
    return sent[0]


def read_until_closed(c: RawClient, timeout: float = 5.0) -> bytes:
    """Every byte the broker sends before it closes the connection, unparsed."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = c.sock.recv(4096)
        except ConnectionResetError:
            return data
        except TimeoutError:
            raise AssertionError(f"connection still open after {data!r}") from None
        if not chunk:
            return data
        data += chunk


# -- MQTT 5: DISCONNECT with the reason code -----------------------------------------------------

V5_VIOLATIONS = {
    # 0x81 Malformed Packet
    "remaining length of five bytes": (b"\x30\xff\xff\xff\xff\x01", MALFORMED),  # section 1.5.5
    "reserved packet type 0": (b"\x00\x00", MALFORMED),  # section 2.1.2
    "PUBREL flags 0000": (b"\x60\x02\x00\x01", MALFORMED),  # section 2.1.3
    "SUBSCRIBE flags 0000": (b"\x80" + subscribe_bytes()[1:], MALFORMED),  # section 2.1.3
    "UNSUBSCRIBE flags 0000": (b"\xa0" + unsubscribe_bytes()[1:], MALFORMED),  # section 2.1.3
    "PINGREQ flags 0001": (b"\xc1\x00", MALFORMED),  # section 2.1.3
    "PUBLISH QoS 3": (publish_bytes(flags=0x06, payload=b"\x00\x01"), MALFORMED),  # [MQTT-3.3.1-4]
    "DUP on QoS 0": (publish_bytes(flags=0x08), MALFORMED),  # [MQTT-3.3.1-2]
    "invalid UTF-8 topic": (publish_bytes(b"a/\xff"), MALFORMED),  # [MQTT-1.5.4-1]
    "UTF-16 surrogate in topic": (publish_bytes(b"a/\xed\xa0\x80"), MALFORMED),  # [MQTT-1.5.4-1]
    "U+0000 in topic": (publish_bytes(b"a/\x00"), MALFORMED),  # [MQTT-1.5.4-2]
    "U+0000 in topic filter": (subscribe_bytes(b"a/\x00"), MALFORMED),  # [MQTT-1.5.4-2]
    "U+0000 in user property": (
        publish_bytes(properties=props(prop(P.USER_PROPERTY, utf8("k") + utf8(b"\x00")))),
        MALFORMED,
    ),  # [MQTT-1.5.4-2]
    "unknown property": (publish_bytes(properties=props(b"\x7f\x00")), MALFORMED),  # section 2.2.2.2
    "property not allowed in PUBLISH": (
        publish_bytes(properties=props(prop(P.SESSION_EXPIRY_INTERVAL, b"\0\0\0\1"))),
        MALFORMED,
    ),  # section 2.2.2.2
    "property length beyond the packet": (frame(0x30, utf8("t"), b"\x09\x23\x00\x01"), MALFORMED),  # 2.2.2.1
    "subscription options reserved bits": (subscribe_bytes(options=0xC1), MALFORMED),  # [MQTT-3.8.3-5]
    "PINGREQ with a payload": (b"\xc0\x01\x00", MALFORMED),  # section 3.12
    # 0x82 Protocol Error
    "duplicate property": (
        publish_bytes(properties=props(*[prop(P.MESSAGE_EXPIRY_INTERVAL, b"\0\0\0\1")] * 2)),
        PROTOCOL_ERROR,
    ),  # section 3.3.2.3.3
    "PUBLISH with packet id 0": (publish_bytes(qos=1, packet_id=0), PROTOCOL_ERROR),  # [MQTT-2.2.1-3]
    "SUBSCRIBE with packet id 0": (subscribe_bytes(packet_id=0), PROTOCOL_ERROR),  # [MQTT-2.2.1-3]
    "empty SUBSCRIBE": (frame(0x82, b"\x00\x01\x00"), PROTOCOL_ERROR),  # [MQTT-3.8.3-2]
    "empty UNSUBSCRIBE": (frame(0xA2, b"\x00\x01\x00"), PROTOCOL_ERROR),  # [MQTT-3.10.3-2]
    "SUBSCRIBE with QoS 3": (subscribe_bytes(options=3), PROTOCOL_ERROR),  # section 3.8.3.1
    "retain handling 3": (subscribe_bytes(options=0x30), PROTOCOL_ERROR),  # section 3.8.3.1
    "subscription identifier 0": (
        subscribe_bytes(properties=props(prop(P.SUBSCRIPTION_IDENTIFIER, b"\x00"))),
        PROTOCOL_ERROR,
    ),  # section 3.8.2.1.2
    "subscription identifier from a client": (
        publish_bytes(properties=props(prop(P.SUBSCRIPTION_IDENTIFIER, b"\x01"))),
        PROTOCOL_ERROR,
    ),  # [MQTT-3.3.4-6]
    "empty topic without alias": (publish_bytes(""), PROTOCOL_ERROR),  # section 3.3.2.1
    "unknown topic alias": (
        publish_bytes("", properties=props(prop(P.TOPIC_ALIAS, b"\x00\x05"))),
        PROTOCOL_ERROR,
    ),  # section 3.3.2.3.4
    "AUTH without an authentication method": (b"\xf0\x00", PROTOCOL_ERROR),  # section 4.12
    "CONNACK from a client": (b"\x20\x03\x00\x00\x00", PROTOCOL_ERROR),  # section 3.2: server to client only
    "SUBACK from a client": (b"\x90\x04\x00\x01\x00\x00", PROTOCOL_ERROR),  # section 3.9: server to client only
    # 0x90 Topic Name invalid
    "wildcard + in topic": (publish_bytes("a/+"), ReasonCode.TOPIC_NAME_INVALID),  # [MQTT-3.3.2-2]
    "wildcard # in topic": (publish_bytes("a/#", qos=1), ReasonCode.TOPIC_NAME_INVALID),  # [MQTT-3.3.2-2]
    # 0x94 Topic Alias invalid
    "topic alias 0": (
        publish_bytes("t", properties=props(prop(P.TOPIC_ALIAS, b"\x00\x00"))),
        ReasonCode.TOPIC_ALIAS_INVALID,
    ),  # [MQTT-3.3.2-8]
    "topic alias above the maximum": (
        publish_bytes("t", properties=props(prop(P.TOPIC_ALIAS, b"\xff\xff"))),
        ReasonCode.TOPIC_ALIAS_INVALID,
    ),  # [MQTT-3.3.2-9]
}


@pytest.mark.parametrize(("data", "code"), V5_VIOLATIONS.values(), ids=V5_VIOLATIONS)
def test_v5_violation_disconnects_with_reason_code(broker, clients, data, code):  # [MQTT-4.13.1-1]
    good = bystander(clients, broker)
    bad = offender(clients, broker, 5)
    bad.send(data)
    assert_disconnected_with(bad, code)
    assert_still_served(good)


# -- MQTT 3.1.1: the connection is closed, nothing is sent ----------------------------------------

V4_VIOLATIONS = {
    "remaining length of five bytes": b"\x30\xff\xff\xff\xff\x01",  # section 2.2.3
    "reserved packet type 0": b"\x00\x00",  # section 2.2.1
    "AUTH (reserved in 3.1.1)": b"\xf0\x00",  # section 2.2.1
    "PUBREL flags 0000": b"\x60\x02\x00\x01",  # [MQTT-2.2.2-2]
    "SUBSCRIBE flags 0000": b"\x80" + subscribe_bytes(level=4)[1:],  # [MQTT-3.8.1-1]
    "UNSUBSCRIBE flags 0000": b"\xa0" + unsubscribe_bytes(level=4)[1:],  # [MQTT-3.10.1-1]
    "PUBLISH QoS 3": publish_bytes(level=4, flags=0x06, payload=b"\x00\x01"),  # [MQTT-3.3.1-4]
    "invalid UTF-8 topic": publish_bytes(b"a/\xff", level=4),  # [MQTT-1.5.3-1]
    "U+0000 in topic": publish_bytes(b"a/\x00", level=4),  # [MQTT-1.5.3-2]
    "wildcard in topic": publish_bytes("a/#", level=4),  # [MQTT-3.3.2-2]
    "empty topic": publish_bytes("", level=4),  # [MQTT-4.7.3-1]
    "PUBLISH with packet id 0": publish_bytes(qos=2, packet_id=0, level=4),  # [MQTT-2.3.1-1]
    "empty SUBSCRIBE": frame(0x82, b"\x00\x01"),  # [MQTT-3.8.3-3]
    "empty UNSUBSCRIBE": frame(0xA2, b"\x00\x01"),  # [MQTT-3.10.3-2]
    "SUBSCRIBE with QoS 3": subscribe_bytes(options=3, level=4),  # [MQTT-3-8.3-4]
    "subscription options reserved bits": subscribe_bytes(options=0x05, level=4),  # [MQTT-3-8.3-4]
    "DISCONNECT with a payload": b"\xe0\x01\x00",  # section 3.14
    "CONNACK from a client": b"\x20\x02\x00\x00",  # section 3.2: server to client only
}


@pytest.mark.parametrize("data", V4_VIOLATIONS.values(), ids=V4_VIOLATIONS)
def test_v311_violation_closes_connection(broker, clients, data):  # [MQTT-4.8.0-1] (3.1.1): close, no reply
    good = bystander(clients, broker, 4)
    bad = offender(clients, broker, 4)
    bad.send(data)
    assert bad.expect_closed() == []
    assert_still_served(good)


# -- limits from the server's configuration ----------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_packet_too_large(wrenmq_server_factory, clients, version):  # [MQTT-3.2.2-15]: 0x95 Packet too large
    server = wrenmq_server_factory(max_packet_size=256)
    good = bystander(clients, server, version)
    bad = clients(server, version)
    ack = bad.connect("big")
    if version == 5:
        assert ack.properties[P.MAXIMUM_PACKET_SIZE] == 256  # section 3.2.2.3.6: announced in CONNACK
    fits = publish_bytes("bystander/fits", level=version, payload=b"x" * (256 - 19 - (version == 5)))
    assert len(fits) == 256
    bad.send(fits)
    assert good.expect(p.Publish).topic == "bystander/fits"
    bad.send(publish_bytes("bystander/big", level=version, payload=b"x" * 300))
    if version == 5:
        assert_disconnected_with(bad, ReasonCode.PACKET_TOO_LARGE)
    else:
        assert bad.expect_closed() == []
    good.nothing(0.2)  # the oversized message was not routed
    assert_still_served(good)


def test_packet_too_large_refused_from_its_header(wrenmq_server_factory, clients):  # [MQTT-3.2.2-15]
    server = wrenmq_server_factory(max_packet_size=1024)
    bad = offender(clients, server, 5)
    bad.send(b"\x30\x80\x80\x40")  # a fixed header announcing 1 MiB: refused without waiting for the body
    assert_disconnected_with(bad, ReasonCode.PACKET_TOO_LARGE)


def test_receive_maximum_exceeded(wrenmq_server_factory, clients):  # [MQTT-3.3.4-9]: 0x93 Receive Maximum exceeded
    server = wrenmq_server_factory(receive_maximum=2)
    good = bystander(clients, server)
    bad = clients(server, 5)
    assert bad.connect("greedy").properties[P.RECEIVE_MAXIMUM] == 2
    for pid in (1, 2):
        bad.send(p.Publish("bystander/q2", b"%d" % pid, 2, False, pid))
        assert bad.expect(p.Pubrec).packet_id == pid
    bad.send(p.Publish("bystander/q2", b"3", 2, False, 3))  # a third QoS 2 PUBLISH with no PUBREL sent
    assert_disconnected_with(bad, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
    got = [good.expect(p.Publish) for _ in range(2)]
    assert sorted(m.payload for m in got) == [b"1", b"2"]  # the two within quota were delivered
    for m in got:
        good.send(p.Puback(m.packet_id))
    good.nothing(0.2)  # the third was not
    assert_still_served(good)


def test_topic_alias_when_the_server_allows_none(wrenmq_server_factory, clients):  # [MQTT-3.3.2-9]: 0x94
    server = wrenmq_server_factory(topic_alias_maximum=0)
    good = bystander(clients, server)
    bad = clients(server, 5)
    assert P.TOPIC_ALIAS_MAXIMUM not in bad.connect("aliased").properties  # absent means 0 (section 3.2.2.3.8)
    bad.send(publish_bytes("t", properties=props(prop(P.TOPIC_ALIAS, b"\x00\x01"))))
    assert_disconnected_with(bad, ReasonCode.TOPIC_ALIAS_INVALID)
    assert_still_served(good)


# -- CONNECT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"\xc0\x00", id="PINGREQ"),
        pytest.param(subscribe_bytes(level=4), id="SUBSCRIBE"),
        pytest.param(publish_bytes("bystander/x", level=4), id="PUBLISH"),
        pytest.param(b"\xe0\x00", id="DISCONNECT"),
    ],
)
def test_first_packet_not_connect(broker, clients, version, first):  # [MQTT-3.1.0-1]
    good = bystander(clients, broker, version)
    bad = clients(broker, version)
    bad.send(first)
    assert bad.expect_closed() == []  # no CONNACK, and no DISCONNECT before a CONNACK [MQTT-3.14.0-1]
    good.nothing(0.2)  # the PUBLISH was not routed
    assert_still_served(good)


@pytest.mark.parametrize("version", [4, 5])
def test_second_connect_is_a_protocol_error(broker, clients, version):  # [MQTT-3.1.0-2]
    good = bystander(clients, broker, version)
    bad = offender(clients, broker, version)
    bad.send(p.Connect("offender", version))
    if version == 5:
        assert_disconnected_with(bad, PROTOCOL_ERROR)
    else:
        assert bad.expect_closed() == []
    assert_still_served(good)


@pytest.mark.parametrize("level", [6, 0, 255])
def test_unsupported_protocol_level(broker, clients, level):  # [MQTT-3.1.2-2]: CONNACK 0x01 (3.1.1 form), close
    good = bystander(clients, broker)
    bad = clients(broker, 4)
    bad.send(frame(0x10, utf8("MQTT"), bytes((level, 0x02)), b"\x00\x3c", utf8("future")))
    assert read_until_closed(bad) == b"\x20\x02\x00\x01"
    assert_still_served(good)


@pytest.mark.parametrize("name", ["MQTX", "mqtt", "HTTP"])
def test_bad_protocol_name_closes(broker, clients, name):  # [MQTT-3.1.2-1]
    good = bystander(clients, broker)
    bad = clients(broker, 4)
    bad.send(connect_bytes(4, name=name))
    sent = bad.expect_closed()
    assert all(isinstance(x, p.Connack) and x.reason_code != 0 for x in sent), sent  # never accepted
    assert_still_served(good)


def test_http_request_closes(broker, clients):  # [MQTT-3.1.0-1]: "GET / HTTP/1.1" is not a CONNECT
    bad = clients(broker, 4)
    bad.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert bad.expect_closed() == []


BAD_CONNECTS = {
    "duplicate property": (
        connect_bytes(properties=props(*[prop(P.SESSION_EXPIRY_INTERVAL, b"\0\0\0\1")] * 2)),
        PROTOCOL_ERROR,
    ),  # section 3.1.2.11.2
    "property not allowed": (connect_bytes(properties=props(prop(P.TOPIC_ALIAS, b"\0\1"))), MALFORMED),  # 2.2.2.2
    "unknown property": (connect_bytes(properties=props(b"\x7f\x00")), MALFORMED),  # section 2.2.2.2
    "invalid UTF-8 client id": (connect_bytes(client_id=b"\xc3("), MALFORMED),  # [MQTT-1.5.4-1]
    "U+0000 in client id": (connect_bytes(client_id=b"a\x00"), MALFORMED),  # [MQTT-1.5.4-2]
    "reserved flag": (connect_bytes(flags=0x03), MALFORMED),  # [MQTT-3.1.2-3]
    "will QoS without will flag": (connect_bytes(flags=0x0A), MALFORMED),  # [MQTT-3.1.2-11]
    "will retain without will flag": (connect_bytes(flags=0x22), MALFORMED),  # [MQTT-3.1.2-13]
    "will QoS 3": (connect_bytes(flags=0x1E, rest=b"\x00" + utf8("w") + utf8(b"")), MALFORMED),  # [MQTT-3.1.2-12]
    "wildcard in will topic": (
        connect_bytes(flags=0x06, rest=b"\x00" + utf8("w/#") + utf8(b"")),
        ReasonCode.TOPIC_NAME_INVALID,
    ),  # [MQTT-3.1.3-11]
    "trailing bytes": (connect_bytes(rest=b"\x00"), MALFORMED),  # section 3.1.3
    "request problem information 2": (
        connect_bytes(properties=props(prop(P.REQUEST_PROBLEM_INFORMATION, b"\x02"))),
        PROTOCOL_ERROR,
    ),  # section 3.1.2.11.7
    "receive maximum 0": (connect_bytes(properties=props(prop(P.RECEIVE_MAXIMUM, b"\0\0"))), PROTOCOL_ERROR),
}


@pytest.mark.parametrize(("data", "code"), BAD_CONNECTS.values(), ids=BAD_CONNECTS)
def test_v5_bad_connect_gets_connack_with_reason(broker, clients, data, code):  # [MQTT-3.1.4-1], section 4.13.1
    good = bystander(clients, broker)
    bad = clients(broker, 5)
    bad.send(data)
    sent = bad.expect_closed()
    assert [type(x) for x in sent] == [p.Connack], sent
    assert sent[0].reason_code == code, f"reason 0x{sent[0].reason_code:02X}, expected 0x{code:02X}"
    assert not sent[0].session_present  # [MQTT-3.2.2-6]
    assert_still_served(good)


@pytest.mark.parametrize(
    "data",
    [
        connect_bytes(4, client_id=b"\xc3("),
        connect_bytes(4, flags=0x03),
        connect_bytes(4, flags=0x42, rest=utf8(b"pw")),  # password without user name [MQTT-3.1.2-22]
        connect_bytes(4, flags=0x0A),
        connect_bytes(4, rest=b"\x00"),
    ],
    ids=["invalid UTF-8 client id", "reserved flag", "password without user name", "will QoS", "trailing bytes"],
)
def test_v311_bad_connect_closes_without_connack(broker, clients, data):  # [MQTT-3.1.4-1] (3.1.1)
    good = bystander(clients, broker, 4)
    bad = clients(broker, 4)
    bad.send(data)
    assert bad.expect_closed() == []
    assert_still_served(good)


# -- what happens around the violation ----------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_will_published_on_protocol_error(broker, clients, version):  # [MQTT-3.1.2-8]
    good = bystander(clients, broker, version)
    bad = clients(broker, version)
    will = p.Will("bystander/will", b"offender gone", 1)
    assert bad.connect("willing", will=will).reason_code == 0
    bad.send(publish_bytes(b"bad/\xff", level=version))
    if version == 5:
        assert_disconnected_with(bad, MALFORMED)
    else:
        assert bad.expect_closed() == []
    msg = good.expect(p.Publish, timeout=3)
    assert (msg.topic, msg.payload, msg.qos) == ("bystander/will", b"offender gone", 1)
    good.send(p.Puback(msg.packet_id))
    assert_still_served(good)


def test_packets_before_the_violation_are_handled(broker, clients):  # section 4.13.1, [MQTT-4.6.0-1 context]
    good = bystander(clients, broker)
    bad = offender(clients, broker, 5)
    # One write: a valid QoS 1 PUBLISH, then a malformed packet. The first is honoured in order.
    bad.send(publish_bytes("bystander/before", qos=1, packet_id=7, payload=b"first") + b"\x36\x00")
    sent = bad.expect_closed()
    assert [type(x) for x in sent] == [p.Puback, p.Disconnect], sent
    assert sent[0].packet_id == 7 and sent[1].reason_code == MALFORMED
    msg = good.expect(p.Publish)
    assert (msg.topic, msg.payload) == ("bystander/before", b"first")
    good.send(p.Puback(msg.packet_id))
    assert_still_served(good)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["paho-3.1.1", "paho-5.0"])
def test_paho_bystander_unaffected_and_gets_the_will(broker, clients, protocol):  # [MQTT-3.1.2-8], section 4.13
    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    events: queue.Queue[str] = queue.Queue()
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-bystander", protocol=protocol)
    paho.on_connect = lambda *_: events.put("connack")
    paho.on_subscribe = lambda *_: events.put("suback")
    paho.on_message = lambda _c, _u, msg: messages.put(msg)
    paho.connect("127.0.0.1", broker.port, keepalive=30)
    paho.loop_start()
    try:
        assert events.get(timeout=5) == "connack"
        paho.subscribe("paho/#", 1)
        assert events.get(timeout=5) == "suback"
        bad = clients(broker, 5)
        assert bad.connect("willing", will=p.Will("paho/will", b"offender gone", 1)).reason_code == 0
        bad.send(b"\x00\x00")  # reserved packet type 0
        assert_disconnected_with(bad, MALFORMED)
        will = messages.get(timeout=3)
        assert (will.topic, will.payload) == ("paho/will", b"offender gone")
        info = paho.publish("paho/after", b"still here", 1)
        info.wait_for_publish(5)
        assert info.is_published()
        msg = messages.get(timeout=3)
        assert (msg.topic, msg.payload) == ("paho/after", b"still here")
    finally:
        paho.disconnect()
        paho.loop_stop()
