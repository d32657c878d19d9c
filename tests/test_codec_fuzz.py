"""Property-based tests of the codec (hypothesis): generated packets survive encode/decode at any
split of the byte stream, and arbitrary bytes only ever yield packets or a ProtocolError.

Example counts are bounded so the file runs in a few seconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wrenmq.mqtt import (
    Connect,
    Parser,
    PropertyId,
    ProtocolError,
    Publish,
    Subscribe,
    Subscription,
    Will,
    encode,
)
from wrenmq.mqtt.properties import encode_varint

P = PropertyId
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------

# UTF-8 Encoded Strings: no surrogates [MQTT-1.5.4-1] (codec="utf-8"), no U+0000 [MQTT-1.5.4-2].
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
topic_name = st.text(st.characters(codec="utf-8", exclude_characters="\x00+#"), min_size=1, max_size=20)
topic_filter = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
packet_id = st.integers(1, 65535)
four_bytes = st.integers(0, 0xFFFFFFFF)
user_props = st.lists(st.tuples(text, text), min_size=1, max_size=3)


def optional_props(**strategies: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A dict holding any subset of the given properties."""
    return st.fixed_dictionaries({}, optional={PropertyId[name]: s for name, s in strategies.items()})


publish_props = optional_props(
    PAYLOAD_FORMAT_INDICATOR=st.integers(0, 1),
    MESSAGE_EXPIRY_INTERVAL=four_bytes,
    TOPIC_ALIAS=st.integers(1, 65535),
    RESPONSE_TOPIC=topic_name,
    CORRELATION_DATA=st.binary(max_size=20),
    USER_PROPERTY=user_props,
    SUBSCRIPTION_IDENTIFIER=st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3),
    CONTENT_TYPE=text,
)
will_props = optional_props(
    WILL_DELAY_INTERVAL=four_bytes,
    PAYLOAD_FORMAT_INDICATOR=st.integers(0, 1),
    MESSAGE_EXPIRY_INTERVAL=four_bytes,
    CONTENT_TYPE=text,
    RESPONSE_TOPIC=topic_name,
    CORRELATION_DATA=st.binary(max_size=20),
    USER_PROPERTY=user_props,
)
connect_props = optional_props(
    SESSION_EXPIRY_INTERVAL=four_bytes,
    RECEIVE_MAXIMUM=st.integers(1, 65535),
    MAXIMUM_PACKET_SIZE=st.integers(1, 0xFFFFFFFF),
    TOPIC_ALIAS_MAXIMUM=st.integers(0, 65535),
    REQUEST_RESPONSE_INFORMATION=st.integers(0, 1),
    REQUEST_PROBLEM_INFORMATION=st.integers(0, 1),
    USER_PROPERTY=user_props,
    AUTHENTICATION_METHOD=text,
    AUTHENTICATION_DATA=st.binary(max_size=20),
)
subscribe_props = optional_props(SUBSCRIPTION_IDENTIFIER=st.integers(1, 268_435_455), USER_PROPERTY=user_props)


@st.composite
def publishes(draw: st.DrawFn, level: int) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        draw(topic_name),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(packet_id) if qos else None,
        draw(st.booleans()) if qos else False,  # DUP only with QoS > 0 [MQTT-3.3.1-2]
        draw(publish_props) if level == 5 else {},
    )


@st.composite
def subscribes(draw: st.DrawFn, level: int) -> Subscribe:
    def subscription() -> Subscription:
        if level != 5:
            return Subscription(draw(topic_filter), draw(st.integers(0, 2)))
        qos, no_local, retain_as_published = draw(st.integers(0, 2)), draw(st.booleans()), draw(st.booleans())
        return Subscription(draw(topic_filter), qos, no_local, retain_as_published, draw(st.integers(0, 2)))

    count = draw(st.integers(1, 4))
    subs = [subscription() for _ in range(count)]
    return Subscribe(draw(packet_id), subs, draw(subscribe_props) if level == 5 else {})


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    v5 = level == 5
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_name),
            draw(st.binary(max_size=50)),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(will_props) if v5 else {},
        )
    username = draw(st.none() | text)
    # A password needs a user name before MQTT 5 [MQTT-3.1.2-22].
    password = draw(st.none() | st.binary(max_size=30)) if v5 or username is not None else None
    return Connect(
        draw(text),
        level,
        draw(st.booleans()),
        draw(st.integers(0, 65535)),
        will,
        username,
        password,
        draw(connect_props) if v5 else {},
    )


def packets_for(level: int) -> st.SearchStrategy:
    return st.one_of(publishes(level), subscribes(level))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def feed_all(parser: Parser, chunks: list[bytes]) -> list:
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


# -- (a) round trips ----------------------------------------------------------------------------


def level_and_packets(level: int) -> st.SearchStrategy:
    return st.tuples(st.just(level), st.lists(packets_for(level), min_size=1, max_size=6))


@FAST
@given(st.sampled_from([4, 5]).flatmap(level_and_packets), st.lists(st.integers(0, 10_000), max_size=8))
def test_publish_and_subscribe_round_trip_at_any_split(level_and_packets, cuts):  # sections 2.1, 3.3, 3.8
    level, packets = level_and_packets
    data = b"".join(encode(p, level) for p in packets)
    assert feed_all(Parser(protocol_level=level), split(data, cuts)) == packets


@FAST
@given(st.sampled_from([4, 5]).flatmap(lambda v: connects(v)), st.lists(st.integers(0, 10_000), max_size=6))
def test_connect_round_trip_at_any_split(connect, cuts):  # section 3.1: the server learns the level from CONNECT
    follow = Publish("after/connect", b"x", 1, False, 1, False, {P.USER_PROPERTY: [("k", "v")]})
    if connect.protocol_level != 5:
        follow.properties = {}
    data = encode(connect, connect.protocol_level) + encode(follow, connect.protocol_level)
    parser = Parser()
    assert feed_all(parser, split(data, cuts)) == [connect, follow]
    assert parser.protocol_level == connect.protocol_level


# -- (b) arbitrary bytes ------------------------------------------------------------------------


@st.composite
def framed_noise(draw: st.DrawFn) -> bytes:
    """A plausible fixed header over random body bytes, so every decoder sees garbage, not only the framer."""
    body = draw(st.binary(max_size=60))
    return bytes((draw(st.integers(0, 255)),)) + encode_varint(len(body)) + body


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    """A valid packet with a few bytes overwritten, inserted or removed."""
    level = draw(st.sampled_from([4, 5]))
    data = bytearray(encode(draw(st.one_of(packets_for(level), connects(level))), level))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            data[i] = draw(st.integers(0, 255))
        elif action == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif len(data) > 1:
            del data[i]
    return bytes(data)


garbage = st.lists(st.one_of(st.binary(max_size=80), framed_noise(), mutated_packets()), min_size=1, max_size=4).map(
    b"".join
)


def reencodes(packet, level: int) -> None:
    """Whatever the parser accepts, the encoder writes back to something that decodes the same."""
    if isinstance(packet, Connect):
        level = packet.protocol_level
        assert Parser().feed(encode(packet, level)) == [packet]
    else:
        assert Parser(protocol_level=level).feed(encode(packet, level)) == [packet]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage, st.sampled_from([0, 3, 4, 5]), st.lists(st.integers(0, 10_000), max_size=5))
def test_arbitrary_bytes_give_packets_or_protocol_error(data, level, cuts):  # section 4.13: errors, never crashes
    parser = Parser(protocol_level=level)
    packets = []
    try:
        for chunk in split(data, cuts):
            packets += parser.feed(chunk)
    except ProtocolError:
        pass
    # Accepted packets are real packets: they re-encode to bytes that decode to the same packet.
    current = level
    for packet in packets:
        reencodes(packet, current)
        if isinstance(packet, Connect):
            current = packet.protocol_level
