"""Outgoing PUBLISH encodings of a routed message (broker/message.py), decoded by the codec.

Per-delivery properties are the remaining Message Expiry Interval [MQTT-3.3.2-6], the
Subscription Identifiers [MQTT-3.3.4-3] and, for a client that asked, the broker's message id as
the last User Property [MQTT-3.3.2-18]. What is the same for every subscriber is encoded once
per message: the message's own properties always, and the whole packet for subscribers of one
fan-out that get the same per-delivery properties.
"""

from __future__ import annotations

import pytest

from wrenmq.broker.message import MESSAGE_ID_PROPERTY, Message
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, packet_id_bytes
from wrenmq.mqtt.properties import PropertyId

_P = PropertyId


def decode(head: bytes, tail: bytes, qos: int, packet_id: int = 7) -> p.Publish:
    data = head + (packet_id_bytes(packet_id) if qos else b"") + tail
    (packet,) = Parser(protocol_level=5).feed(data)
    assert isinstance(packet, p.Publish)
    return packet


def message(payload: bytes = b"payload" * 40, expiry: int | None = 300) -> Message:
    props: dict[int, object] = {_P.CONTENT_TYPE: "text/plain", _P.USER_PROPERTY: [("a", "1"), ("b", "2")]}
    if expiry is not None:
        props[_P.MESSAGE_EXPIRY_INTERVAL] = expiry
    return Message("t/x", payload, 1, False, props, expires_at=1000.0 + expiry if expiry is not None else None)


@pytest.mark.parametrize("qos", [0, 1])
def test_per_delivery_properties_decode(qos):  # [MQTT-3.3.2-6], [MQTT-3.3.4-3], [MQTT-3.3.2-18]
    msg = message()
    head, tail = msg.wire_at(5, qos, False, 1100.2, [3, 70000], "boot-1")
    packet = decode(head, tail, qos)
    assert (packet.topic, packet.payload, packet.qos) == ("t/x", msg.payload, qos)
    props = packet.properties
    assert props[_P.MESSAGE_EXPIRY_INTERVAL] == 200  # 199.8 s left, rounded up
    assert props[_P.SUBSCRIPTION_IDENTIFIER] == [3, 70000]
    assert props[_P.CONTENT_TYPE] == "text/plain"
    assert props[_P.USER_PROPERTY] == [("a", "1"), ("b", "2"), (MESSAGE_ID_PROPERTY, "boot-1")]


def test_remaining_expiry_never_exceeds_the_interval_received():  # [MQTT-3.3.2-6]
    msg = Message("t", b"x", 0, False, {_P.MESSAGE_EXPIRY_INTERVAL: 300}, expires_at=0.1 + 300)
    assert decode(*msg.wire_at(5, 0, False, 0.1, None), 0).properties[_P.MESSAGE_EXPIRY_INTERVAL] == 300


def same_bytes(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> bool:
    """The same encoded objects (compiled code boxes a returned tuple anew: compare its items)."""
    return a[0] is b[0] and a[1] is b[1]


def test_one_encoding_per_fan_out_for_the_same_properties():
    """Subscribers of one fan-out with the same per-delivery properties share one encoding (the
    payload is not copied per subscriber); others are built from the own properties encoded once."""
    msg = message()
    first = msg.wire_at(5, 1, False, 1100.0, None)
    assert same_bytes(msg.wire_at(5, 1, False, 1100.0, None), first)
    with_ids = msg.wire_at(5, 1, False, 1100.0, [1])
    assert not same_bytes(with_ids, first) and decode(*with_ids, 1).properties[_P.SUBSCRIPTION_IDENTIFIER] == [1]
    own = msg._own_props
    assert own is not None
    msg.wire_at(5, 1, False, 1100.0, [2])
    assert msg._own_props is own  # encoded once per message
    later = msg.wire_at(5, 1, False, 1250.0, None)  # time passed: a new remaining interval
    assert decode(*later, 1).properties[_P.MESSAGE_EXPIRY_INTERVAL] == 50


def test_no_per_delivery_properties_uses_the_shared_variant():
    msg = message(expiry=None)
    assert same_bytes(msg.wire_at(5, 1, False, 0.0, None), msg.wire(5, 1, False))
    assert same_bytes(msg.wire_at(4, 1, False, 0.0, [1], "id"), msg.wire(4, 1, False))  # 3.1.1: no properties


def test_message_id_alone_and_no_own_properties():  # [MQTT-3.3.2-18]
    msg = Message("t", b"x", 0)
    packet = decode(*msg.wire_at(5, 0, True, 0.0, None, "boot-9"), 0)
    assert packet.retain and packet.properties == {_P.USER_PROPERTY: [(MESSAGE_ID_PROPERTY, "boot-9")]}
