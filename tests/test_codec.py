"""The sans-I/O codec on its own: round trips, incremental decoding, spec example bytes and every
violation the parser must turn into a ProtocolError with the right reason code. No event loop.

The raw-packet builders at the top (``frame``, ``utf8``, ``props``, ``connect_bytes``, ...) are
shared with test_malformed.py, which sends the same bytes to a running broker.
"""

from __future__ import annotations

import time

import pytest

from wrenmq.mqtt import (
    MAX_PACKET_SIZE,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Parser,
    Pingreq,
    Pingresp,
    PropertyId,
    ProtocolError,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    encode,
)
from wrenmq.mqtt.properties import encode_varint

P = PropertyId
MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR

# -- raw packet builders ------------------------------------------------------------------------


def utf8(value: str | bytes) -> bytes:
    """A UTF-8 Encoded String (two-byte length prefix); bytes are sent as given, even if invalid."""
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(2, "big") + raw


def frame(first: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return bytes((first,)) + encode_varint(len(body)) + body


def props(*entries: bytes) -> bytes:
    """A property block from raw entries (identifier byte + value), so duplicates can be built."""
    body = b"".join(entries)
    return encode_varint(len(body)) + body


def prop(pid: int, value: bytes) -> bytes:
    return bytes((pid,)) + value


def user_property(name: str | bytes, value: str | bytes) -> bytes:
    return prop(P.USER_PROPERTY, utf8(name) + utf8(value))


def connect_bytes(
    level: int = 5,
    flags: int = 0x02,
    properties: bytes = b"\x00",
    client_id: str | bytes = "c",
    rest: bytes = b"",
    name: str = "MQTT",
) -> bytes:
    """CONNECT with the given flags; ``rest`` is what follows the client id (will, user name, password)."""
    return frame(
        0x10,
        utf8(name if level != 3 else "MQIsdp"),
        bytes((level, flags)),
        b"\x00\x3c",
        properties if level == 5 else b"",
        utf8(client_id),
        rest,
    )


def publish_bytes(
    topic: str | bytes = "t",
    level: int = 5,
    qos: int = 0,
    properties: bytes = b"\x00",
    packet_id: int = 1,
    payload: bytes = b"",
    flags: int | None = None,
) -> bytes:
    first = 0x30 | (qos << 1) if flags is None else 0x30 | flags
    pid = packet_id.to_bytes(2, "big") if qos else b""
    return frame(first, utf8(topic), pid, properties if level == 5 else b"", payload)


def subscribe_bytes(
    topic_filter: str | bytes = "t", options: int = 1, level: int = 5, properties: bytes = b"\x00", packet_id: int = 1
) -> bytes:
    pid = packet_id.to_bytes(2, "big")
    return frame(0x82, pid, properties if level == 5 else b"", utf8(topic_filter), bytes((options,)))


def unsubscribe_bytes(topic_filter: str | bytes = "t", level: int = 5, packet_id: int = 1) -> bytes:
    return frame(0xA2, packet_id.to_bytes(2, "big"), b"\x00" if level == 5 else b"", utf8(topic_filter))


# -- decoding helpers ---------------------------------------------------------------------------


def decode(data: bytes, level: int = 5, max_packet_size: int = MAX_PACKET_SIZE) -> list:
    return Parser(max_packet_size, protocol_level=level).feed(data)


def decode_one(data: bytes, level: int = 5) -> object:
    packets = decode(data, level)
    assert len(packets) == 1, packets
    return packets[0]


def violation(data: bytes, level: int = 5, max_packet_size: int = MAX_PACKET_SIZE) -> int:
    """Decode ``data``, which must be rejected, and return the reason code of the rejection."""
    with pytest.raises(ProtocolError) as info:
        decode(data, level, max_packet_size)
    return info.value.reason_code


# -- round trips --------------------------------------------------------------------------------

USER_PROPS = [("k", "v"), ("k", "second value"), ("ключ", "значение \U0002a6d4")]


def sample_packets(level: int) -> list:
    """One or more of every packet type the level has; with every property that packet may carry at 5."""
    v5 = level == 5
    will = Will("will/topic", b"gone", 1, True)
    packets = [
        Connect("client-1", level, True, 60),
        Connect("", level, False, 0, will, "user", b"\x00secret\xff"),
        Connect("c2", level, True, 65535, Will("w", b"", 2, False), "u"),
        Connack(False, 0),
        Connack(True, 0),
        Connack(False, 0x87 if v5 else 5),
        Publish("a/b", b"payload", 0),
        Publish("a/b", b"", 1, True, 1),
        Publish("a/\U0002a6d4/\ufeffc", bytes(range(256)), 2, False, 65535, dup=True),
        Puback(1),
        Pubrec(2),
        Pubrel(3),
        Pubcomp(65535),
        Subscribe(7, [Subscription("a/+", 0), Subscription("#", 1), Subscription("$share/g/x", 2)]),
        Suback(7, [0, 1, 2, 0x80]),
        Unsubscribe(8, ["a/+", "#"]),
        Unsuback(8, [0, 0x11] if v5 else []),
        Pingreq(),
        Pingresp(),
        Disconnect(),
    ]
    if not v5:
        return packets
    packets += [
        Connect(
            "client-5",
            5,
            False,
            30,
            Will(
                "w/t",
                b"bye",
                1,
                False,
                {
                    P.WILL_DELAY_INTERVAL: 5,
                    P.PAYLOAD_FORMAT_INDICATOR: 1,
                    P.MESSAGE_EXPIRY_INTERVAL: 60,
                    P.CONTENT_TYPE: "text/plain",
                    P.RESPONSE_TOPIC: "reply/here",
                    P.CORRELATION_DATA: b"\x01\x02",
                    P.USER_PROPERTY: USER_PROPS,
                },
            ),
            None,
            b"password without user name is allowed in 5.0",
            {
                P.SESSION_EXPIRY_INTERVAL: 0xFFFFFFFF,
                P.RECEIVE_MAXIMUM: 10,
                P.MAXIMUM_PACKET_SIZE: 1024,
                P.TOPIC_ALIAS_MAXIMUM: 5,
                P.REQUEST_RESPONSE_INFORMATION: 1,
                P.REQUEST_PROBLEM_INFORMATION: 0,
                P.USER_PROPERTY: USER_PROPS,
                P.AUTHENTICATION_METHOD: "SCRAM-SHA-1",
                P.AUTHENTICATION_DATA: b"client-first",
            },
        ),
        Connack(
            True,
            0,
            {
                P.SESSION_EXPIRY_INTERVAL: 100,
                P.RECEIVE_MAXIMUM: 20,
                P.MAXIMUM_QOS: 1,
                P.RETAIN_AVAILABLE: 0,
                P.MAXIMUM_PACKET_SIZE: 268435460,
                P.ASSIGNED_CLIENT_IDENTIFIER: "auto-1",
                P.TOPIC_ALIAS_MAXIMUM: 10,
                P.REASON_STRING: "welcome",
                P.USER_PROPERTY: USER_PROPS,
                P.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
                P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
                P.SHARED_SUBSCRIPTION_AVAILABLE: 1,
                P.SERVER_KEEP_ALIVE: 15,
                P.RESPONSE_INFORMATION: "resp/",
                P.SERVER_REFERENCE: "other:1883",
                P.AUTHENTICATION_METHOD: "SCRAM-SHA-1",
                P.AUTHENTICATION_DATA: b"server-final",
            },
        ),
        Publish(
            "a/b",
            b"with properties",
            1,
            False,
            9,
            False,
            {
                P.PAYLOAD_FORMAT_INDICATOR: 1,
                P.MESSAGE_EXPIRY_INTERVAL: 3600,
                P.TOPIC_ALIAS: 3,
                P.RESPONSE_TOPIC: "reply",
                P.CORRELATION_DATA: b"\x00\xff",
                P.USER_PROPERTY: USER_PROPS,
                P.SUBSCRIPTION_IDENTIFIER: [1, 268435455],  # repeatable in PUBLISH
                P.CONTENT_TYPE: "application/json",
            },
        ),
        Publish("", b"alias only", 0, False, None, False, {P.TOPIC_ALIAS: 3}),
        Puback(1, ReasonCode.NO_MATCHING_SUBSCRIBERS),
        Puback(1, ReasonCode.QUOTA_EXCEEDED, {P.REASON_STRING: "full", P.USER_PROPERTY: USER_PROPS}),
        Pubrec(2, ReasonCode.NOT_AUTHORIZED, {P.REASON_STRING: "no"}),
        Pubrel(3, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
        Pubcomp(4, 0, {P.USER_PROPERTY: USER_PROPS}),
        Subscribe(
            9,
            [
                Subscription("a/+", 2, no_local=True, retain_as_published=True, retain_handling=2),
                Subscription("b/#", 1, retain_handling=1),
            ],
            {P.SUBSCRIPTION_IDENTIFIER: 268435455, P.USER_PROPERTY: USER_PROPS},
        ),
        Suback(9, [2, 1, 0x87, 0xA2], {P.REASON_STRING: "partly", P.USER_PROPERTY: USER_PROPS}),
        Unsubscribe(10, ["a/+"], {P.USER_PROPERTY: USER_PROPS}),
        Unsuback(10, [0x87], {P.REASON_STRING: "denied"}),
        Disconnect(ReasonCode.DISCONNECT_WITH_WILL),
        Disconnect(
            ReasonCode.SERVER_MOVED,
            {
                P.SESSION_EXPIRY_INTERVAL: 0,
                P.REASON_STRING: "moved",
                P.SERVER_REFERENCE: "elsewhere:1883",
                P.USER_PROPERTY: USER_PROPS,
            },
        ),
        Auth(),
        Auth(ReasonCode.CONTINUE_AUTHENTICATION, {P.AUTHENTICATION_METHOD: "SCRAM-SHA-1", P.AUTHENTICATION_DATA: b"x"}),
        Auth(ReasonCode.RE_AUTHENTICATE, {P.AUTHENTICATION_METHOD: "m", P.REASON_STRING: "again"}),
    ]
    return packets


ROUND_TRIPS = [
    pytest.param(level, packet, id=f"v{level}-{i:02d}-{type(packet).__name__}")
    for level in (3, 4, 5)
    for i, packet in enumerate(sample_packets(level))
]


@pytest.mark.parametrize(("level", "packet"), ROUND_TRIPS)
def test_round_trip_every_packet_type(level, packet):  # sections 3.1-3.15: encode then decode is the identity
    data = encode(packet, level)
    assert decode_one(data, level) == packet
    if level == 5 or not getattr(packet, "properties", None):
        assert encode(decode_one(data, level), level) == data


def test_round_trip_covers_every_packet_type_and_property():  # section 2.1.2 and the table in 2.2.2.2
    v5 = sample_packets(5)
    assert {type(x) for x in v5} == {
        Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
        Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth,
    }  # fmt: skip
    seen = set()
    for packet in v5:
        seen.update(getattr(packet, "properties", {}))
        if isinstance(packet, Connect) and packet.will is not None:
            seen.update(packet.will.properties)
    assert seen == set(PropertyId)


def test_properties_are_not_on_the_wire_before_mqtt5():  # properties are new in 5.0 (section 2.2.2)
    packet = Publish("a/b", b"x", 1, False, 5, False, {P.MESSAGE_EXPIRY_INTERVAL: 10})
    assert encode(packet, 4) == b"\x32\x08\x00\x03a/b\x00\x05x"
    assert decode_one(encode(packet, 4), 4) == Publish("a/b", b"x", 1, False, 5)


# -- exact bytes from the specification's examples ----------------------------------------------

# Remaining Length / Variable Byte Integer table: 3.1.1 section 2.2.3, 5.0 section 1.5.5.
VARINT_TABLE = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"),
    (2097151, b"\xff\xff\x7f"),
    (2097152, b"\x80\x80\x80\x01"),
    (268435455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("value", "wire"), VARINT_TABLE)
def test_variable_byte_integer_matches_the_spec_table(value, wire):  # [MQTT-1.5.5-1]: minimum number of bytes
    assert encode_varint(value) == wire


def test_utf8_string_example():  # [MQTT-1.5.4-1]: the spec's "A\U0002A6D4" example, 00 05 41 F0 AA 9B 94
    packet = Publish("A\U0002a6d4", b"")
    assert encode(packet, 4) == b"\x30\x07" + b"\x00\x05\x41\xf0\xaa\x9b\x94"
    assert decode_one(b"\x30\x07\x00\x05\x41\xf0\xaa\x9b\x94", 4) == packet


def test_byte_order_mark_is_kept():  # [MQTT-1.5.4-3]: 0xEF 0xBB 0xBF is U+FEFF and is never stripped
    packet = decode_one(publish_bytes(b"\xef\xbb\xbfa"), 5)
    assert packet.topic == "\ufeffa"


def test_connect_variable_header_example_3_1_1():  # 3.1.1 section 3.1.2.10, Figure 3.6
    packet = Connect("", 4, True, 10, Will("w", b"", 1), "u", b"p")
    assert encode(packet, 4)[2:12] == b"\x00\x04MQTT\x04\xce\x00\x0a"


def test_connect_variable_header_example_5():  # 5.0 section 3.1.2.12, Figure 3-6: Session Expiry Interval 10
    packet = Connect("", 5, True, 10, Will("w", b"", 1), "u", b"p", {P.SESSION_EXPIRY_INTERVAL: 10})
    assert encode(packet, 5)[2:18] == b"\x00\x04MQTT\x05\xce\x00\x0a\x05\x11\x00\x00\x00\x0a"


def test_publish_variable_header_example():  # 3.1.1 section 3.3.2.3 / 5.0 section 3.3.2.3: "a/b", id 10
    assert encode(Publish("a/b", b"", 1, False, 10), 4) == b"\x32\x07\x00\x03a/b\x00\x0a"
    assert encode(Publish("a/b", b"", 1, False, 10), 5) == b"\x32\x08\x00\x03a/b\x00\x0a\x00"


def test_subscribe_example():  # 3.1.1 section 3.8.3.1: "a/b" QoS 1 and "c/d" QoS 2, packet id 10
    data = b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/d\x02"
    packet = Subscribe(10, [Subscription("a/b", 1), Subscription("c/d", 2)])
    assert encode(packet, 4) == data
    assert decode_one(data, 4) == packet


def test_suback_example():  # 3.1.1 section 3.9.3: return codes 0x00, 0x02, 0x80
    assert encode(Suback(10, [0, 2, 0x80]), 4) == b"\x90\x05\x00\x0a\x00\x02\x80"


def test_unsubscribe_example():  # 3.1.1 section 3.10.3: "a/b" and "c/d", packet id 10
    data = b"\xa2\x0c\x00\x0a\x00\x03a/b\x00\x03c/d"
    assert encode(Unsubscribe(10, ["a/b", "c/d"]), 4) == data
    assert decode_one(data, 4) == Unsubscribe(10, ["a/b", "c/d"])


@pytest.mark.parametrize(
    ("packet", "level", "wire"),
    [
        (Connack(False, 0), 4, b"\x20\x02\x00\x00"),  # [MQTT-3.2.2-1 (3.1.1)]
        (Connack(True, 0), 4, b"\x20\x02\x01\x00"),
        (Connack(False, 0), 5, b"\x20\x03\x00\x00\x00"),  # [MQTT-2.2.2-1]: an empty property block is 0x00
        (Puback(10), 4, b"\x40\x02\x00\x0a"),
        (Puback(10), 5, b"\x40\x02\x00\x0a"),  # 5.0 section 3.4.2.1: reason 0 and no properties may be omitted
        (Puback(10, 0x10), 5, b"\x40\x03\x00\x0a\x10"),
        (Pubrec(10), 4, b"\x50\x02\x00\x0a"),
        (Pubrel(10), 4, b"\x62\x02\x00\x0a"),  # [MQTT-3.6.1-1]: PUBREL flags are 0010
        (Pubcomp(10), 4, b"\x70\x02\x00\x0a"),
        (Pingreq(), 4, b"\xc0\x00"),
        (Pingresp(), 4, b"\xd0\x00"),
        (Disconnect(), 4, b"\xe0\x00"),
        (Disconnect(), 5, b"\xe0\x00"),  # 5.0 section 3.14.2.1: normal disconnection may omit the reason
        (Auth(), 5, b"\xf0\x00"),  # 5.0 section 3.15.2.1
    ],
    ids=repr,
)
def test_fixed_encodings(packet, level, wire):  # fixed headers of section 2.2 (3.1.1) / 2.1 (5.0)
    assert encode(packet, level) == wire
    assert decode_one(wire, level) == packet


# -- incremental decoding -----------------------------------------------------------------------


def _stream(level: int = 5) -> tuple[list, bytes]:
    packets = [p for p in sample_packets(level) if not isinstance(p, Connect)]
    return packets, b"".join(encode(p, level) for p in packets)


def test_byte_at_a_time():  # section 2.1: a packet is complete only when its last byte arrives
    packets, data = _stream()
    ends = []
    total = 0
    for packet in packets:
        total += len(encode(packet, 5))
        ends.append(total)
    parser = Parser(protocol_level=5)
    got = []
    for i in range(len(data)):
        out = parser.feed(data[i : i + 1])
        if out:
            assert len(out) == 1 and i + 1 in ends, (i, out)
            got += out
        assert parser.buffered == (i + 1) - (max((e for e in ends if e <= i + 1), default=0))
    assert got == packets
    assert parser.buffered == 0


def test_many_packets_in_one_feed():  # section 4.6: packets are handled in the order they arrive
    packets = [Publish(f"t/{i}", b"%d" % i, i % 3, False, (i + 1) if i % 3 else None) for i in range(2000)]
    data = b"".join(encode(p, 5) for p in packets)
    assert decode(data, 5) == packets


def test_split_at_every_point():  # section 2.1: packet boundaries are independent of read boundaries
    data = _stream()[1][:400]  # a few packets, so all split points stay fast
    complete = Parser(protocol_level=5).feed(data)
    for cut in range(len(data) + 1):
        parser = Parser(protocol_level=5)
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == complete, cut


def test_packet_split_across_three_feeds_with_the_header_split():  # section 2.2.3: length bytes may straddle reads
    data = encode(Publish("t", b"x" * 20000), 5)  # three-byte Remaining Length
    parser = Parser(protocol_level=5)
    assert parser.feed(data[:2]) == []
    assert parser.feed(data[2:3]) == []
    assert parser.feed(data[3:100]) == []
    assert parser.buffered == 100
    [packet] = parser.feed(data[100:])
    assert packet.payload == b"x" * 20000


@pytest.mark.parametrize(("length", "wire"), VARINT_TABLE[1:-1])
def test_remaining_length_boundaries(length, wire):  # section 1.5.5: 1/2/3/4-byte Remaining Length boundaries
    payload = b"\xaa" * (length - 3)  # v4 PUBLISH QoS 0: topic "t" takes 3 bytes
    data = encode(Publish("t", payload), 4)
    assert data[1 : 1 + len(wire)] == wire
    assert len(data) == 1 + len(wire) + length
    parser = Parser(protocol_level=4)
    assert parser.feed(data[: len(wire)]) == []  # the length itself split
    [packet] = parser.feed(data[len(wire) :])
    assert packet.payload == payload


def test_largest_remaining_length_is_accepted():  # section 1.5.5: 268,435,455 is the largest value
    header = b"\x30\xff\xff\xff\x7f"
    assert MAX_PACKET_SIZE == 268_435_455 + 5
    parser = Parser(MAX_PACKET_SIZE, protocol_level=5)
    assert parser.feed(header + b"\x00\x01t\x00") == []
    assert parser.buffered == len(header) + 4
    assert Parser(protocol_level=5).feed(header) == []  # the default allows it too
    with pytest.raises(ProtocolError) as info:
        Parser(MAX_PACKET_SIZE - 1, protocol_level=5).feed(header)
    assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE


def test_large_packet_in_small_reads_takes_linear_time():  # robustness: 16 MiB in 4 KiB reads
    data = encode(Publish("t", b"x" * (16 * 1024 * 1024 - 16)), 4)
    parser = Parser(protocol_level=4)
    started = time.perf_counter()
    out = []
    for i in range(0, len(data), 4096):
        out += parser.feed(data[i : i + 4096])
    elapsed = time.perf_counter() - started
    assert len(out) == 1 and len(out[0].payload) == len(data) - 8
    assert elapsed < 1.0, f"re-joining the buffer on every read is quadratic ({elapsed:.2f}s)"


def test_packets_before_a_violation_are_returned_first():  # section 4.13: packets before the bad one still count
    good = encode(Publish("a", b"1", 1, False, 1), 5) + encode(Pingreq(), 5)
    parser = Parser(protocol_level=5)
    packets = parser.feed(good + b"\x36\x00")  # QoS 3
    assert [type(p) for p in packets] == [Publish, Pingreq]
    assert parser.error is not None and parser.error.reason_code == MALFORMED
    with pytest.raises(ProtocolError):
        parser.feed(b"")


# -- violations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [4, 5])
def test_remaining_length_of_five_bytes(level):  # section 1.5.5 / 3.1.1 section 2.2.3: at most four bytes
    assert violation(b"\x30\xff\xff\xff\xff\x01", level) == MALFORMED
    # Detected as soon as the fourth byte says "more follows", without waiting for a fifth.
    assert violation(b"\xc0\x80\x80\x80\x80", level) == MALFORMED


RESERVED_FLAGS = [  # (packet, protocol level, first byte with bad flags, the rest of a valid packet)
    ("CONNECT", 4, 0x11, connect_bytes(4)[1:]),
    ("CONNACK", 5, 0x28, b"\x03\x00\x00\x00"),
    ("PUBACK", 5, 0x41, b"\x02\x00\x01"),
    ("PUBREC", 4, 0x52, b"\x02\x00\x01"),
    ("PUBREL 0000", 5, 0x60, b"\x02\x00\x01"),
    ("PUBREL 0000 v4", 4, 0x60, b"\x02\x00\x01"),
    ("PUBREL 0011", 5, 0x63, b"\x02\x00\x01"),
    ("PUBREL 1010", 4, 0x6A, b"\x02\x00\x01"),
    ("PUBCOMP", 5, 0x72, b"\x02\x00\x01"),
    ("SUBSCRIBE 0000", 5, 0x80, subscribe_bytes(level=5)[1:]),
    ("SUBSCRIBE 0000 v4", 4, 0x80, subscribe_bytes(level=4)[1:]),
    ("SUBSCRIBE 0011", 4, 0x83, subscribe_bytes(level=4)[1:]),
    ("SUBACK", 5, 0x92, b"\x04\x00\x01\x00\x00"),
    ("UNSUBSCRIBE 0000", 5, 0xA0, unsubscribe_bytes(level=5)[1:]),
    ("UNSUBSCRIBE 1010", 4, 0xAA, unsubscribe_bytes(level=4)[1:]),
    ("UNSUBACK", 4, 0xB1, b"\x02\x00\x01"),
    ("PINGREQ", 5, 0xC1, b"\x00"),
    ("PINGRESP", 4, 0xD8, b"\x00"),
    ("DISCONNECT", 5, 0xE4, b"\x00"),
    ("AUTH", 5, 0xF1, b"\x00"),
]


@pytest.mark.parametrize(
    ("level", "first", "rest"), [pytest.param(lv, f, r, id=name) for name, lv, f, r in RESERVED_FLAGS]
)
def test_reserved_fixed_header_flags(level, first, rest):  # [MQTT-2.2.2-1], [MQTT-2.2.2-2]; 5.0 section 2.1.3
    assert violation(bytes((first,)) + rest, level) == MALFORMED
    required = 2 if first >> 4 in (6, 8, 10) else 0  # PUBREL, SUBSCRIBE, UNSUBSCRIBE carry 0010
    assert decode(bytes(((first & 0xF0) | required,)) + rest, level)  # the same packet with the right flags


def test_fixed_header_checked_before_the_body_arrives():  # [MQTT-2.2.2-2]: a non-MQTT stream fails fast
    assert violation(b"\x60\x7f", 5) == MALFORMED  # PUBREL with flags 0000 announcing 127 bytes not yet sent
    assert violation(b"GET / HTTP/1.1\r\n", 4) == MALFORMED  # "G" is 0x47: PUBACK with flags 0111


@pytest.mark.parametrize("level", [4, 5])
def test_reserved_packet_type_zero(level):  # 3.1.1 section 2.2.1 / 5.0 section 2.1.2: type 0 is reserved
    assert violation(b"\x00\x00", level) == MALFORMED


def test_auth_is_reserved_in_3_1_1():  # 3.1.1 section 2.2.1: packet type 15 is reserved
    assert violation(b"\xf0\x00", 4) == MALFORMED
    assert decode_one(b"\xf0\x00", 5) == Auth()


BAD_UTF8 = {
    "invalid byte": b"a\xff",
    "truncated sequence": b"a\xc3",
    "UTF-16 surrogate": b"\xed\xa0\x80",
    "overlong encoding": b"\xc0\xaf",
    "code point above U+10FFFF": b"\xf4\x90\x80\x80",
    "U+0000": b"a\x00b",
}

STRING_FIELDS = {
    "topic name": lambda raw: publish_bytes(raw),
    "client id": lambda raw: connect_bytes(client_id=raw),
    "user name": lambda raw: connect_bytes(flags=0x82, rest=utf8(raw)),
    "will topic": lambda raw: connect_bytes(flags=0x06, rest=b"\x00" + utf8(raw) + utf8(b"")),
    "topic filter": lambda raw: subscribe_bytes(raw),
    "unsubscribe filter": lambda raw: unsubscribe_bytes(raw),
    "user property name": lambda raw: publish_bytes(properties=props(user_property(raw, "v"))),
    "user property value": lambda raw: publish_bytes(properties=props(user_property("k", raw))),
    "CONNECT user property": lambda raw: connect_bytes(properties=props(user_property("k", raw))),
    "content type": lambda raw: publish_bytes(properties=props(prop(P.CONTENT_TYPE, utf8(raw)))),
    "reason string": lambda raw: frame(0x40, b"\x00\x01\x10", props(prop(P.REASON_STRING, utf8(raw)))),
}


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("bad", BAD_UTF8)
def test_invalid_utf8_and_null_in_strings(field, bad):  # [MQTT-1.5.4-1], [MQTT-1.5.4-2]
    build = STRING_FIELDS[field]
    assert violation(build(BAD_UTF8[bad]), 5) == MALFORMED
    assert decode(build(b"ok"), 5)  # the same packet with a good string decodes


@pytest.mark.parametrize("bad", BAD_UTF8)
def test_invalid_utf8_in_3_1_1_strings(bad):  # [MQTT-1.5.3-1], [MQTT-1.5.3-2] (3.1.1)
    assert violation(publish_bytes(BAD_UTF8[bad], level=4), 4) == MALFORMED
    assert violation(connect_bytes(level=4, client_id=BAD_UTF8[bad]), 4) == MALFORMED
    assert violation(subscribe_bytes(BAD_UTF8[bad], level=4), 4) == MALFORMED


@pytest.mark.parametrize("topic", ["+", "a/+", "a/#", "#", "a/b+", "a#"])
def test_wildcard_in_publish_topic(topic):  # [MQTT-3.3.2-2]: 0x90 Topic Name invalid in 5.0
    assert violation(publish_bytes(topic), 5) == ReasonCode.TOPIC_NAME_INVALID
    with pytest.raises(ProtocolError):
        decode(publish_bytes(topic, level=4), 4)


def test_wildcard_in_will_topic():  # [MQTT-3.1.3-11] (5.0): the Will Topic is a Topic Name
    assert violation(connect_bytes(flags=0x06, rest=b"\x00" + utf8("a/#") + utf8(b""))) == ReasonCode.TOPIC_NAME_INVALID


def test_empty_topic_without_alias():  # 5.0 section 3.3.2.1 (a Protocol Error); 3.1.1 [MQTT-4.7.3-1]
    assert violation(publish_bytes(""), 5) == PROTOCOL_ERROR
    with pytest.raises(ProtocolError):
        decode(publish_bytes("", level=4), 4)
    assert decode_one(publish_bytes("", properties=props(prop(P.TOPIC_ALIAS, b"\x00\x01"))), 5).topic == ""


@pytest.mark.parametrize("level", [4, 5])
def test_publish_qos_3(level):  # [MQTT-3.3.1-4]: both QoS bits set is a Malformed Packet
    assert violation(publish_bytes(level=level, flags=0x06, payload=b"\x00\x01"), level) == MALFORMED


@pytest.mark.parametrize("level", [4, 5])
def test_dup_on_qos_0(level):  # [MQTT-3.3.1-2]: DUP MUST be 0 for QoS 0
    assert violation(publish_bytes(level=level, flags=0x08), level) == MALFORMED


def test_subscribe_qos_3():  # 5.0 section 3.8.3.1: Maximum QoS 3 is a Protocol Error; 3.1.1 [MQTT-3-8.3-4]: malformed
    assert violation(subscribe_bytes(options=3), 5) == PROTOCOL_ERROR
    assert violation(subscribe_bytes(options=3, level=4), 4) == MALFORMED


@pytest.mark.parametrize(("level", "options"), [(5, 0x40), (5, 0x80), (4, 0x04), (4, 0x10), (4, 0x80)])
def test_subscription_options_reserved_bits(level, options):  # [MQTT-3.8.3-5] (5.0), [MQTT-3-8.3-4] (3.1.1)
    assert violation(subscribe_bytes(options=options, level=level), level) == MALFORMED


def test_retain_handling_3():  # 5.0 section 3.8.3.1: Retain Handling 3 is a Protocol Error
    assert violation(subscribe_bytes(options=0x30), 5) == PROTOCOL_ERROR


def test_subscription_identifier_zero():  # 5.0 section 3.8.2.1.2: Subscription Identifier 0 is a Protocol Error
    assert violation(subscribe_bytes(properties=props(prop(P.SUBSCRIPTION_IDENTIFIER, b"\x00")))) == PROTOCOL_ERROR


MISSING_PACKET_ID = {
    "PUBLISH QoS 1": frame(0x32, utf8("t")),
    "PUBLISH QoS 2 one byte": frame(0x34, utf8("t"), b"\x00"),
    "SUBSCRIBE": frame(0x82),
    "UNSUBSCRIBE": frame(0xA2, b"\x00"),
    "PUBACK": frame(0x40),
    "PUBREL": frame(0x62, b"\x01"),
}


@pytest.mark.parametrize("data", MISSING_PACKET_ID.values(), ids=MISSING_PACKET_ID)
def test_missing_packet_identifier(data):  # [MQTT-2.3.1-1] (3.1.1), [MQTT-2.2.1-3] (5.0)
    for level in (4, 5):
        assert violation(data, level) == MALFORMED


ZERO_PACKET_ID = {
    "PUBLISH QoS 1": publish_bytes(qos=1, packet_id=0),
    "PUBLISH QoS 2": publish_bytes(qos=2, packet_id=0),
    "SUBSCRIBE": subscribe_bytes(packet_id=0),
    "UNSUBSCRIBE": unsubscribe_bytes(packet_id=0),
    "PUBACK": b"\x40\x02\x00\x00",
    "PUBREC": b"\x50\x02\x00\x00",
    "PUBREL": b"\x62\x02\x00\x00",
    "PUBCOMP": b"\x70\x02\x00\x00",
}


@pytest.mark.parametrize("data", ZERO_PACKET_ID.values(), ids=ZERO_PACKET_ID)
def test_zero_packet_identifier(data):  # [MQTT-2.3.1-1] (3.1.1), [MQTT-2.2.1-3] (5.0): non-zero
    assert violation(data, 5) == PROTOCOL_ERROR


DUPLICATE_PROPERTY = {
    "PUBLISH Message Expiry": publish_bytes(properties=props(*[prop(P.MESSAGE_EXPIRY_INTERVAL, b"\0\0\0\1")] * 2)),
    "PUBLISH Topic Alias": publish_bytes(properties=props(*[prop(P.TOPIC_ALIAS, b"\0\1")] * 2)),
    "PUBLISH Content Type": publish_bytes(properties=props(*[prop(P.CONTENT_TYPE, utf8("a"))] * 2)),
    "CONNECT Session Expiry": connect_bytes(properties=props(*[prop(P.SESSION_EXPIRY_INTERVAL, b"\0\0\0\1")] * 2)),
    "CONNECT Receive Maximum": connect_bytes(properties=props(*[prop(P.RECEIVE_MAXIMUM, b"\0\1")] * 2)),
    "Will Delay": connect_bytes(
        flags=0x06, rest=props(*[prop(P.WILL_DELAY_INTERVAL, b"\0\0\0\1")] * 2) + utf8("w") + utf8(b"")
    ),
    "SUBSCRIBE Subscription Identifier": subscribe_bytes(
        properties=props(*[prop(P.SUBSCRIPTION_IDENTIFIER, b"\x01")] * 2)
    ),
    "DISCONNECT Reason String": frame(0xE0, b"\x00", props(*[prop(P.REASON_STRING, utf8("x"))] * 2)),
}


@pytest.mark.parametrize("data", DUPLICATE_PROPERTY.values(), ids=DUPLICATE_PROPERTY)
def test_duplicate_property(data):  # 5.0 section 3.x.2.x: "a Protocol Error to include ... more than once"
    assert violation(data, 5) == PROTOCOL_ERROR


def test_repeatable_properties_are_not_duplicates():  # 5.0 sections 3.3.2.3.7, 3.3.2.3.8: may appear many times
    data = publish_bytes(
        properties=props(
            user_property("a", "1"),
            user_property("a", "2"),
            prop(P.SUBSCRIPTION_IDENTIFIER, b"\x01"),
            prop(P.SUBSCRIPTION_IDENTIFIER, b"\x02"),
        )
    )
    packet = decode_one(data)
    assert packet.properties == {P.USER_PROPERTY: [("a", "1"), ("a", "2")], P.SUBSCRIPTION_IDENTIFIER: [1, 2]}


NOT_ALLOWED = {
    "Session Expiry in PUBLISH": publish_bytes(properties=props(prop(P.SESSION_EXPIRY_INTERVAL, b"\0\0\0\1"))),
    "Topic Alias in CONNECT": connect_bytes(properties=props(prop(P.TOPIC_ALIAS, b"\0\1"))),
    "Will Delay in CONNECT": connect_bytes(properties=props(prop(P.WILL_DELAY_INTERVAL, b"\0\0\0\1"))),
    "Session Expiry in Will": connect_bytes(
        flags=0x06, rest=props(prop(P.SESSION_EXPIRY_INTERVAL, b"\0\0\0\1")) + utf8("w") + utf8(b"")
    ),
    "Reason String in SUBSCRIBE": subscribe_bytes(properties=props(prop(P.REASON_STRING, utf8("x")))),
    "Message Expiry in SUBSCRIBE": subscribe_bytes(properties=props(prop(P.MESSAGE_EXPIRY_INTERVAL, b"\0\0\0\1"))),
    "Subscription Identifier in UNSUBSCRIBE": frame(
        0xA2, b"\x00\x01", props(prop(P.SUBSCRIPTION_IDENTIFIER, b"\x01")), utf8("t")
    ),
    "Maximum QoS in PUBACK": frame(0x40, b"\x00\x01\x00", props(prop(P.MAXIMUM_QOS, b"\x01"))),
    "Topic Alias in DISCONNECT": frame(0xE0, b"\x00", props(prop(P.TOPIC_ALIAS, b"\0\1"))),
    "Receive Maximum in AUTH": frame(0xF0, b"\x18", props(prop(P.RECEIVE_MAXIMUM, b"\0\1"))),
}


@pytest.mark.parametrize("data", NOT_ALLOWED.values(), ids=NOT_ALLOWED)
def test_property_not_allowed_in_packet(data):  # 5.0 section 2.2.2.2: "not valid for its packet type" is malformed
    assert violation(data, 5) == MALFORMED


@pytest.mark.parametrize("pid", [0x00, 0x04, 0x7F, 0x80, 0xFF])
def test_unknown_property_identifier(pid):  # 5.0 section 2.2.2.2: an identifier not in the table is malformed
    assert violation(publish_bytes(properties=props(bytes((pid, 0, 0, 0, 0))))) == MALFORMED


@pytest.mark.parametrize("pid", [P.REQUEST_PROBLEM_INFORMATION, P.REQUEST_RESPONSE_INFORMATION], ids=lambda p: p.name)
def test_boolean_property_value_2(pid):  # 5.0 sections 3.1.2.11.6, 3.1.2.11.7: other than 0 or 1 is an error
    assert violation(connect_bytes(properties=props(prop(pid, b"\x02")))) == PROTOCOL_ERROR
    assert decode_one(connect_bytes(properties=props(prop(pid, b"\x01")))).properties == {pid: 1}


def test_property_block_overruns_the_packet():  # 5.0 section 2.2.2.1: Property Length counts the properties
    assert violation(frame(0x30, utf8("t"), b"\x05", prop(P.TOPIC_ALIAS, b"\0\1"))) == MALFORMED
    assert violation(frame(0x30, utf8("t"), b"\x02", prop(P.MESSAGE_EXPIRY_INTERVAL, b"\0\0\0\1"))) == MALFORMED


def test_publish_v5_without_property_length():  # [MQTT-2.2.2-1]: no properties is a Property Length of zero
    assert violation(frame(0x30, utf8("t")), 5) == MALFORMED
    assert decode_one(frame(0x30, utf8("t")), 4) == Publish("t")


def test_truncated_string():  # section 1.5.4: the length prefix must not exceed the packet
    assert violation(frame(0x30, b"\x00\x05ab"), 4) == MALFORMED
    assert violation(frame(0x82, b"\x00\x01", b"\x00\x00\x09a", b"\x01"), 4) == MALFORMED


@pytest.mark.parametrize("level", [3, 4, 5])
def test_reserved_connect_flag(level):  # [MQTT-3.1.2-3]: the reserved flag MUST be 0
    assert violation(connect_bytes(level, flags=0x03), level) == MALFORMED
    assert decode_one(connect_bytes(level, flags=0x02), level).clean_start


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize(
    "flags",
    [pytest.param(0x08, id="will QoS 1"), pytest.param(0x10, id="will QoS 2"), pytest.param(0x20, id="will retain")],
)
def test_will_flags_without_will(level, flags):  # 3.1.1 [MQTT-3.1.2-13], [MQTT-3.1.2-15]; 5.0 [MQTT-3.1.2-11], -13
    assert violation(connect_bytes(level, flags=0x02 | flags), level) == MALFORMED


@pytest.mark.parametrize("level", [4, 5])
def test_will_qos_3(level):  # 3.1.1 [MQTT-3.1.2-14], 5.0 [MQTT-3.1.2-12]
    will = (b"\x00" if level == 5 else b"") + utf8("w") + utf8(b"")
    assert violation(connect_bytes(level, flags=0x1E, rest=will), level) == MALFORMED


def test_password_without_user_name():  # 3.1.1 [MQTT-3.1.2-22]; allowed in 5.0 (section 3.1.2.9)
    assert violation(connect_bytes(4, flags=0x42, rest=utf8(b"pw")), 4) == MALFORMED
    assert violation(connect_bytes(3, flags=0x42, rest=utf8(b"pw")), 3) == MALFORMED
    packet = decode_one(connect_bytes(5, flags=0x42, rest=utf8(b"pw")), 5)
    assert (packet.username, packet.password) == (None, b"pw")


@pytest.mark.parametrize("level", [4, 5])
def test_connect_trailing_bytes(level):  # section 3.1.3: the payload is exactly the fields the flags announce
    assert violation(connect_bytes(level, rest=b"\x00"), level) == MALFORMED


@pytest.mark.parametrize(
    ("data", "level"),
    [(b"\xc0\x01\x00", 4), (b"\xd0\x01\x00", 5), (b"\xe0\x01\x00", 4)],
    ids=["PINGREQ", "PINGRESP", "DISCONNECT 3.1.1"],
)
def test_packets_without_payload_carry_none(data, level):  # sections 3.12, 3.13, 3.14 (3.1.1)
    assert violation(data, level) == MALFORMED


def test_packet_bigger_than_maximum_packet_size():  # [MQTT-3.2.2-15], 5.0 section 3.2.2.3.6: 0x95
    data = publish_bytes(payload=b"x" * 94)
    assert len(data) == 100
    assert decode(data, 5, max_packet_size=100)
    assert violation(data, 5, max_packet_size=99) == ReasonCode.PACKET_TOO_LARGE
    # Refused from the fixed header alone: a client cannot make the server buffer it first.
    assert violation(data[:2], 5, max_packet_size=99) == ReasonCode.PACKET_TOO_LARGE


@pytest.mark.parametrize("level", [4, 5])
def test_empty_subscribe(level):  # 3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2]
    data = frame(0x82, b"\x00\x01", b"\x00" if level == 5 else b"")
    assert violation(data, level) == PROTOCOL_ERROR


@pytest.mark.parametrize("level", [4, 5])
def test_empty_unsubscribe(level):  # 3.1.1 [MQTT-3.10.3-2], 5.0 [MQTT-3.10.3-2]
    data = frame(0xA2, b"\x00\x01", b"\x00" if level == 5 else b"")
    assert violation(data, level) == PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("name", "level"), [("MQTT", 6), ("MQTT", 0), ("MQTT", 3), ("MQIsdp", 4), ("MQTT", 255)], ids=repr
)
def test_unknown_protocol_level(name, level):  # [MQTT-3.1.2-2]
    data = frame(0x10, utf8(name), bytes((level, 2)), b"\x00\x3c", utf8("c"))
    with pytest.raises(UnsupportedProtocolVersion) as info:
        Parser().feed(data)
    assert info.value.level == level
    assert info.value.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


@pytest.mark.parametrize("name", ["MQTX", "mqtt", "", "MQTT\x01"])
def test_unknown_protocol_name(name):  # [MQTT-3.1.2-1]: not a protocol level problem
    with pytest.raises(ProtocolError) as info:
        Parser().feed(connect_bytes(4, name=name))
    assert not isinstance(info.value, UnsupportedProtocolVersion)


def test_parser_learns_the_protocol_level_from_connect():  # [MQTT-3.1.2-2]: the level decides the wire format
    parser = Parser()
    [connect] = parser.feed(connect_bytes(5))
    assert connect.protocol_level == parser.protocol_level == 5
    [publish] = parser.feed(publish_bytes(properties=props(prop(P.MESSAGE_EXPIRY_INTERVAL, b"\0\0\0\7"))))
    assert publish.properties == {P.MESSAGE_EXPIRY_INTERVAL: 7}


# -- one PUBLISH layout (codec.publish_head): every encoder of a PUBLISH agrees ------------------


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("payload_size", [0, 100, 120, 200, 16_370, 20_000])
def test_publish_layout_shared_by_every_encoder(version, qos, payload_size):  # [MQTT-3.3.1], [MQTT-1.5.5-1]
    """The broker's shared fan-out bytes (Message.wire), the codec's encoder and the size check of
    the API and the client are one layout, across the Remaining Length's 1/2/3-byte boundaries."""
    from wrenmq.broker.message import Message
    from wrenmq.mqtt.codec import encode_publish, packet_id_bytes, publish_size
    from wrenmq.mqtt.properties import encode_properties

    props = {PropertyId.CONTENT_TYPE: "text/plain"} if version == 5 else {}
    payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    packet = Publish("a/b", payload, qos, True, 7 if qos else None, properties=props)
    wire = encode_publish(packet, version)
    head, tail = Message("a/b", payload, qos, True, props).wire(version, qos, True)
    assert (head + packet_id_bytes(7) + tail if qos else head) == wire
    rest = len(payload) + (len(encode_properties(props)) if version == 5 else 0)
    assert publish_size(len(b"a/b"), qos, rest) == len(wire)
    (decoded,) = Parser(protocol_level=version).feed(wire)
    assert (decoded.topic, decoded.payload, decoded.qos, decoded.packet_id) == ("a/b", payload, qos, packet.packet_id)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("with_topic", [True, False])
def test_alias_publish_reframes_the_shared_bytes(qos, with_topic):  # [MQTT-3.3.2-12]
    from wrenmq.broker.message import Message
    from wrenmq.mqtt.codec import alias_publish, packet_id_bytes

    message = Message("a/b", b"x" * 300, qos, False, {PropertyId.CONTENT_TYPE: "t"})
    head, tail = message.wire(5, qos, False)
    pid = packet_id_bytes(9) if qos else b""
    start, block = alias_publish(head, pid, tail, message.payload, 3, with_topic)
    (decoded,) = Parser(protocol_level=5).feed(start + block + message.payload)
    assert decoded.topic == ("a/b" if with_topic else "")
    assert decoded.properties == {PropertyId.TOPIC_ALIAS: 3, PropertyId.CONTENT_TYPE: "t"}
    assert decoded.payload == message.payload and decoded.packet_id == (9 if qos else None)
