"""MQTT 5.0 properties (section 2.2.2): identifiers, wire types and where each may appear."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from . import packets as p
from .errors import malformed, protocol_error


class PropertyId(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


# Wire types.
BYTE, TWO, FOUR, VARINT, STRING, BINARY, PAIR = range(7)

WILL = 0  # pseudo packet type for the Will Properties of CONNECT

_P = PropertyId
PROPERTY_TYPES: dict[int, int] = {
    _P.PAYLOAD_FORMAT_INDICATOR: BYTE,
    _P.MESSAGE_EXPIRY_INTERVAL: FOUR,
    _P.CONTENT_TYPE: STRING,
    _P.RESPONSE_TOPIC: STRING,
    _P.CORRELATION_DATA: BINARY,
    _P.SUBSCRIPTION_IDENTIFIER: VARINT,
    _P.SESSION_EXPIRY_INTERVAL: FOUR,
    _P.ASSIGNED_CLIENT_IDENTIFIER: STRING,
    _P.SERVER_KEEP_ALIVE: TWO,
    _P.AUTHENTICATION_METHOD: STRING,
    _P.AUTHENTICATION_DATA: BINARY,
    _P.REQUEST_PROBLEM_INFORMATION: BYTE,
    _P.WILL_DELAY_INTERVAL: FOUR,
    _P.REQUEST_RESPONSE_INFORMATION: BYTE,
    _P.RESPONSE_INFORMATION: STRING,
    _P.SERVER_REFERENCE: STRING,
    _P.REASON_STRING: STRING,
    _P.RECEIVE_MAXIMUM: TWO,
    _P.TOPIC_ALIAS_MAXIMUM: TWO,
    _P.TOPIC_ALIAS: TWO,
    _P.MAXIMUM_QOS: BYTE,
    _P.RETAIN_AVAILABLE: BYTE,
    _P.USER_PROPERTY: PAIR,
    _P.MAXIMUM_PACKET_SIZE: FOUR,
    _P.WILDCARD_SUBSCRIPTION_AVAILABLE: BYTE,
    _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: BYTE,
    _P.SHARED_SUBSCRIPTION_AVAILABLE: BYTE,
}

_ACKS = (p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP)
_ALL = (
    p.CONNECT,
    p.CONNACK,
    p.PUBLISH,
    *_ACKS,
    p.SUBSCRIBE,
    p.SUBACK,
    p.UNSUBSCRIBE,
    p.UNSUBACK,
    p.DISCONNECT,
    p.AUTH,
    WILL,
)

# Which packet may carry which property (the table in section 2.2.2.2).
ALLOWED: dict[int, frozenset[int]] = {
    _P.PAYLOAD_FORMAT_INDICATOR: frozenset((p.PUBLISH, WILL)),
    _P.MESSAGE_EXPIRY_INTERVAL: frozenset((p.PUBLISH, WILL)),
    _P.CONTENT_TYPE: frozenset((p.PUBLISH, WILL)),
    _P.RESPONSE_TOPIC: frozenset((p.PUBLISH, WILL)),
    _P.CORRELATION_DATA: frozenset((p.PUBLISH, WILL)),
    _P.SUBSCRIPTION_IDENTIFIER: frozenset((p.PUBLISH, p.SUBSCRIBE)),
    _P.SESSION_EXPIRY_INTERVAL: frozenset((p.CONNECT, p.CONNACK, p.DISCONNECT)),
    _P.ASSIGNED_CLIENT_IDENTIFIER: frozenset((p.CONNACK,)),
    _P.SERVER_KEEP_ALIVE: frozenset((p.CONNACK,)),
    _P.AUTHENTICATION_METHOD: frozenset((p.CONNECT, p.CONNACK, p.AUTH)),
    _P.AUTHENTICATION_DATA: frozenset((p.CONNECT, p.CONNACK, p.AUTH)),
    _P.REQUEST_PROBLEM_INFORMATION: frozenset((p.CONNECT,)),
    _P.WILL_DELAY_INTERVAL: frozenset((WILL,)),
    _P.REQUEST_RESPONSE_INFORMATION: frozenset((p.CONNECT,)),
    _P.RESPONSE_INFORMATION: frozenset((p.CONNACK,)),
    _P.SERVER_REFERENCE: frozenset((p.CONNACK, p.DISCONNECT)),
    _P.REASON_STRING: frozenset((p.CONNACK, *_ACKS, p.SUBACK, p.UNSUBACK, p.DISCONNECT, p.AUTH)),
    _P.RECEIVE_MAXIMUM: frozenset((p.CONNECT, p.CONNACK)),
    _P.TOPIC_ALIAS_MAXIMUM: frozenset((p.CONNECT, p.CONNACK)),
    _P.TOPIC_ALIAS: frozenset((p.PUBLISH,)),
    _P.MAXIMUM_QOS: frozenset((p.CONNACK,)),
    _P.RETAIN_AVAILABLE: frozenset((p.CONNACK,)),
    _P.USER_PROPERTY: frozenset(_ALL),
    _P.MAXIMUM_PACKET_SIZE: frozenset((p.CONNECT, p.CONNACK)),
    _P.WILDCARD_SUBSCRIPTION_AVAILABLE: frozenset((p.CONNACK,)),
    _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: frozenset((p.CONNACK,)),
    _P.SHARED_SUBSCRIPTION_AVAILABLE: frozenset((p.CONNACK,)),
}


# Byte properties where any value but 0 or 1 is a Protocol Error (sections 3.1.2.11, 3.2.2.3).
_ZERO_OR_ONE = frozenset(
    (
        _P.REQUEST_PROBLEM_INFORMATION,
        _P.REQUEST_RESPONSE_INFORMATION,
        _P.MAXIMUM_QOS,
        _P.RETAIN_AVAILABLE,
        _P.WILDCARD_SUBSCRIPTION_AVAILABLE,
        _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        _P.SHARED_SUBSCRIPTION_AVAILABLE,
    )
)


def decode_utf8(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"[MQTT-1.5.4-1] {what} is not valid UTF-8") from None
    if "\x00" in text:
        raise malformed(f"[MQTT-1.5.4-2] {what} contains U+0000")
    return text


def decode_properties(data: bytes, pos: int, end: int, packet_type: int) -> tuple[dict[int, Any], int]:
    """Decode a property block starting at ``pos`` (its length prefix included).

    Returns the properties and the position after the block. Duplicates are a Protocol Error
    except for User Property and (in PUBLISH) Subscription Identifier [MQTT-2.2.2-2].
    """
    length, pos = decode_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise malformed("property length exceeds the packet")
    props: dict[int, Any] = {}
    while pos < stop:
        pid = data[pos]
        pos += 1
        kind = PROPERTY_TYPES.get(pid)
        if kind is None:
            raise malformed(f"unknown property identifier 0x{pid:02X}")
        if packet_type not in ALLOWED[pid]:
            # An identifier not valid for its packet type makes a Malformed Packet (section 2.2.2.2).
            raise malformed(f"property 0x{pid:02X} is not allowed in this packet")
        if kind == BYTE:
            if pos + 1 > stop:
                raise malformed("truncated property")
            value: Any = data[pos]
            pos += 1
            if value > 1 and pid in _ZERO_OR_ONE:
                raise protocol_error(f"property 0x{pid:02X} has the value {value}, not 0 or 1")
        elif kind == TWO:
            if pos + 2 > stop:
                raise malformed("truncated property")
            value = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif kind == FOUR:
            if pos + 4 > stop:
                raise malformed("truncated property")
            value = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif kind == VARINT:
            value, pos = decode_varint(data, pos, stop)
        else:
            if pos + 2 > stop:
                raise malformed("truncated property")
            n = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if pos + n > stop:
                raise malformed("truncated property")
            raw = data[pos : pos + n]
            pos += n
            if kind == BINARY:
                value = raw
            elif kind == STRING:
                value = decode_utf8(raw, f"property 0x{pid:02X}")
            else:  # PAIR
                if pos + 2 > stop:
                    raise malformed("truncated user property")
                m = (data[pos] << 8) | data[pos + 1]
                pos += 2
                if pos + m > stop:
                    raise malformed("truncated user property")
                value = (
                    decode_utf8(raw, "user property name"),
                    decode_utf8(data[pos : pos + m], "user property value"),
                )
                pos += m
        if pid == _P.USER_PROPERTY or (pid == _P.SUBSCRIPTION_IDENTIFIER and packet_type == p.PUBLISH):
            props.setdefault(pid, []).append(value)
        elif pid in props:
            raise protocol_error(f"[MQTT-2.2.2-2] property 0x{pid:02X} appears twice")
        else:
            props[pid] = value
    if pos != stop:
        raise malformed("property block overruns its length")
    return props, pos


def encode_properties(props: dict[int, Any] | None) -> bytes:
    """Encode a property block including its variable-byte length prefix."""
    if not props:
        return b"\x00"
    out = bytearray()
    for pid, value in props.items():
        kind = PROPERTY_TYPES[pid]
        if pid == _P.USER_PROPERTY:
            for name, val in value:
                nb = name.encode()
                vb = val.encode()
                out.append(pid)
                out += len(nb).to_bytes(2, "big") + nb + len(vb).to_bytes(2, "big") + vb
            continue
        if pid == _P.SUBSCRIPTION_IDENTIFIER and isinstance(value, list):
            for v in value:
                out.append(pid)
                out += encode_varint(v)
            continue
        out.append(pid)
        if kind == BYTE:
            out.append(value)
        elif kind == TWO:
            out += value.to_bytes(2, "big")
        elif kind == FOUR:
            out += value.to_bytes(4, "big")
        elif kind == VARINT:
            out += encode_varint(value)
        elif kind == STRING:
            b = value.encode()
            out += len(b).to_bytes(2, "big") + b
        else:  # BINARY
            out += len(value).to_bytes(2, "big") + bytes(value)
    return encode_varint(len(out)) + bytes(out)


def decode_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a Variable Byte Integer (section 1.5.5); at most four bytes."""
    value = 0
    shift = 0
    for _ in range(4):
        if pos >= end:
            raise malformed("truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise malformed("[MQTT-1.5.5-1] variable byte integer longer than four bytes")


def encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
