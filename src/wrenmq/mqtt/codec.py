"""The sans-I/O codec: bytes in, packets out (:class:`Parser`); packets in, bytes out (:func:`encode`).

Nothing here knows about sockets or event loops. :meth:`Parser.feed` takes whatever a read
returned (part of a packet, or many packets) and returns every complete packet in one pass, so
the connection does one Python call per read, not one per packet. Violations raise
:class:`~wrenmq.mqtt.errors.ProtocolError` carrying the reason code the spec prescribes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import packets as p
from .errors import ProtocolError, malformed, protocol_error
from .properties import (
    WILL,
    PropertyId,
    decode_properties,
    decode_utf8,
    encode_properties,
    encode_varint,
)
from .reason_codes import ReasonCode

if TYPE_CHECKING:
    from mypy_extensions import i32  # compiled: a 4-byte field (annotations only: no run-time import)

MAX_REMAINING_LENGTH = 268_435_455
MAX_PACKET_SIZE = MAX_REMAINING_LENGTH + 5

# Fixed-header flags that every packet but PUBLISH must carry [MQTT-2.2.2-1], [MQTT-2.2.2-2].
_REQUIRED_FLAGS = {
    p.CONNECT: 0,
    p.CONNACK: 0,
    p.PUBACK: 0,
    p.PUBREC: 0,
    p.PUBREL: 2,
    p.PUBCOMP: 0,
    p.SUBSCRIBE: 2,
    p.SUBACK: 0,
    p.UNSUBSCRIBE: 2,
    p.UNSUBACK: 0,
    p.PINGREQ: 0,
    p.PINGRESP: 0,
    p.DISCONNECT: 0,
    p.AUTH: 0,
}


class UnsupportedProtocolVersion(ProtocolError):
    """CONNECT named a protocol level we do not speak; answered with CONNACK 0x01 / 0x84."""

    def __init__(self, level: int) -> None:
        super().__init__(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, f"[MQTT-3.1.2-2] unsupported protocol level {level}")
        self.level = level


def _string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    if pos + 2 > end:
        raise malformed(f"truncated {what}")
    n = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + n > end:
        raise malformed(f"truncated {what}")
    return decode_utf8(data[pos : pos + n], what), pos + n


def _binary(data: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise malformed(f"truncated {what}")
    n = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + n > end:
        raise malformed(f"truncated {what}")
    return bytes(data[pos : pos + n]), pos + n


def _packet_id(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise malformed("truncated packet identifier")
    pid = (data[pos] << 8) | data[pos + 1]
    if pid == 0:
        raise protocol_error("[MQTT-2.3.1-1] packet identifier is zero")
    return pid, pos + 2


# A parser between packets holds no chunk list of its own (one per connection adds up): this one
# is shared and never appended to; ``feed`` makes a list when a packet's body starts arriving.
_NO_CHUNKS: Final[list[bytes]] = []


class Parser:
    """Incremental decoder for one byte stream.

    ``protocol_level`` is learned from CONNECT on the server side (or set by a client after it
    sends CONNECT); it decides whether properties and reason codes are on the wire.
    """

    __slots__ = ("_buf", "_chunks", "_have", "_need", "error", "max_packet_size", "protocol_level")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE, protocol_level: int = 0) -> None:
        self._buf = b""
        # A packet whose length is known but whose body is still arriving is collected as chunks
        # and joined once, so a large packet read in small pieces costs linear, not quadratic, copying.
        self._chunks: list[bytes] = _NO_CHUNKS  # (shared and never appended to: none yet)
        # (i32, in pairs: compiled, two share the eight bytes an int field takes; all are bounded by
        # the 268,435,455-byte maximum of an MQTT packet)
        self._have: i32 = 0
        self._need: i32 = 0
        self.error: ProtocolError | None = None
        # (a larger limit is this one: no MQTT packet can be longer, and it fits an i32)
        self.max_packet_size: i32 = min(max_packet_size, MAX_PACKET_SIZE)
        self.protocol_level: i32 = protocol_level

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return len(self._buf) + self._have

    def feed(self, data: bytes) -> list[p.AnyPacket]:
        """Consume ``data`` and return every packet it completes, in order.

        A violation raises :class:`ProtocolError`. If complete packets came before it in ``data``,
        they are returned first and the error is kept in :attr:`error` (and raised by the next
        call), so a caller handles everything the peer sent before the bad packet, in order.
        """
        if self.error is not None:
            raise self.error
        if self._need:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = _NO_CHUNKS
            self._have = self._need = 0
        elif self._buf:
            data = self._buf + data
            self._buf = b""
        out: list[p.AnyPacket] = []
        pos = 0
        size = len(data)
        decoders = _DECODERS
        try:
            while pos < size:
                if size - pos < 2:
                    break
                first = data[pos]
                ptype = first >> 4
                if ptype != 3:
                    # Checked before the body arrives, so a stream that is not MQTT fails fast.
                    required = _REQUIRED_FLAGS.get(ptype)
                    if required is None:
                        raise malformed(f"reserved packet type {ptype}")
                    if first & 0x0F != required:
                        raise malformed(f"[MQTT-2.2.2-2] reserved flags 0x{first & 0x0F:X} in packet type {ptype}")
                # Remaining Length: a Variable Byte Integer of at most four bytes [MQTT-1.5.5-1].
                byte = data[pos + 1]
                if byte < 0x80:
                    length = byte
                    start = pos + 2
                else:
                    length = byte & 0x7F
                    shift = 7
                    i = pos + 2
                    while True:
                        if i >= size:
                            length = -1
                            break
                        byte = data[i]
                        i += 1
                        length |= (byte & 0x7F) << shift
                        if not byte & 0x80:
                            break
                        shift += 7
                        if shift > 21:
                            raise malformed("[MQTT-1.5.5-1] remaining length longer than four bytes")
                    if length < 0:
                        break
                    start = i
                end = start + length
                if end - pos > self.max_packet_size:
                    raise ProtocolError(
                        ReasonCode.PACKET_TOO_LARGE,
                        f"packet of {end - pos} bytes exceeds the maximum packet size {self.max_packet_size}",
                    )
                if end > size:
                    self._need = end - pos
                    break
                if ptype == 3:
                    out.append(self._publish(data, first, start, end))
                else:
                    out.append(decoders[ptype](self, data, start, end))
                pos = end
        except ProtocolError as exc:
            self.error = exc
            if not out:
                raise
            return out
        if pos < size:
            if self._need:
                self._chunks = [data[pos:]]  # (it held none: _need was 0 or its chunks were joined)
                self._have = size - pos
            else:
                self._buf = data[pos:]
        return out

    def _publish(self, data: bytes, first: int, pos: int, end: int) -> p.Publish:
        qos = (first >> 1) & 3
        if qos == 3:
            raise malformed("[MQTT-3.3.1-4] PUBLISH with QoS 3")
        dup = bool(first & 8)
        if dup and not qos:
            raise malformed("[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH")
        if pos + 2 > end:
            raise malformed("truncated topic name")
        n = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + n > end:
            raise malformed("truncated topic name")
        try:
            topic = data[pos : pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("[MQTT-1.5.4-1] topic name is not valid UTF-8") from None
        pos += n
        if "+" in topic or "#" in topic:
            raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID, "[MQTT-3.3.2-2] wildcard in a PUBLISH topic name")
        if "\x00" in topic:
            raise malformed("[MQTT-1.5.4-2] topic name contains U+0000")
        packet_id = None
        if qos:
            if pos + 2 > end:
                raise malformed("truncated packet identifier")
            packet_id = (data[pos] << 8) | data[pos + 1]
            if not packet_id:
                raise protocol_error("[MQTT-2.3.1-1] PUBLISH with packet identifier 0")
            pos += 2
        if self.protocol_level == 5:
            if pos < end and data[pos] == 0:
                props: dict[int, Any] = {}
                pos += 1
            else:
                props, pos = decode_properties(data, pos, end, p.PUBLISH)
        else:
            props = {}
        if not topic and PropertyId.TOPIC_ALIAS not in props:
            # MQTT 5 section 3.3.2.1: a Protocol Error; MQTT 3.1.1: [MQTT-4.7.3-1].
            raise protocol_error("[MQTT-4.7.3-1] empty topic name without a topic alias")
        return p.Publish(topic, data[pos:end], qos, bool(first & 1), packet_id, dup, props)

    def _connect(self, data: bytes, pos: int, end: int) -> p.Connect:
        name, pos = _string(data, pos, end, "protocol name")
        if pos >= end:
            raise malformed("truncated CONNECT")
        level = data[pos]
        pos += 1
        bridge = (name, level) in (("MQTT", 0x84), ("MQIsdp", 0x83))  # Mosquitto's bridges, as Mosquitto takes them
        if bridge:
            level &= 0x7F
        elif (name, level) not in (("MQTT", 4), ("MQTT", 5), ("MQIsdp", 3)):
            if name in ("MQTT", "MQIsdp"):
                raise UnsupportedProtocolVersion(level)
            raise protocol_error(f"[MQTT-3.1.2-1] unknown protocol name {name!r}")
        # Known from here on, so a violation later in this CONNECT can be answered in the
        # client's own protocol level (a CONNACK with the reason code for MQTT 5).
        self.protocol_level = level
        if pos + 3 > end:
            raise malformed("truncated CONNECT")
        flags = data[pos]
        keep_alive = (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
        if flags & 1:
            raise malformed("[MQTT-3.1.2-3] reserved CONNECT flag set")
        will_flag = bool(flags & 0x04)
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        if not will_flag and (will_qos or will_retain):
            raise malformed("[MQTT-3.1.2-11] Will QoS or Will Retain set without the Will Flag")
        if will_qos == 3:
            raise malformed("[MQTT-3.1.2-12] Will QoS 3")
        has_username = bool(flags & 0x80)
        has_password = bool(flags & 0x40)
        if level != 5 and has_password and not has_username:
            raise malformed("[MQTT-3.1.2-22] password flag set without the user name flag")
        props: dict[int, Any] = {}
        if level == 5:
            props, pos = decode_properties(data, pos, end, p.CONNECT)
        client_id, pos = _string(data, pos, end, "client identifier")
        will = None
        if will_flag:
            will_props: dict[int, Any] = {}
            if level == 5:
                will_props, pos = decode_properties(data, pos, end, WILL)
            will_topic, pos = _string(data, pos, end, "will topic")
            if "+" in will_topic or "#" in will_topic or not will_topic:
                raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID, "[MQTT-3.1.3-11] invalid will topic")
            will_payload, pos = _binary(data, pos, end, "will payload")
            will = p.Will(will_topic, will_payload, will_qos, will_retain, will_props)
        username = password = None
        if has_username:
            username, pos = _string(data, pos, end, "user name")
        if has_password:
            password, pos = _binary(data, pos, end, "password")
        if pos != end:
            raise malformed("trailing bytes after CONNECT payload")
        self.protocol_level = level
        return p.Connect(client_id, level, bool(flags & 2), keep_alive, will, username, password, props, name, bridge)

    def _connack(self, data: bytes, pos: int, end: int) -> p.Connack:
        if pos + 2 > end:
            raise malformed("truncated CONNACK")
        ack_flags = data[pos]
        if ack_flags & 0xFE:
            raise malformed("[MQTT-3.2.2-1] reserved CONNACK flags set")
        code = data[pos + 1]
        pos += 2
        props: dict[int, Any] = {}
        if self.protocol_level == 5 and pos < end:
            props, pos = decode_properties(data, pos, end, p.CONNACK)
        return p.Connack(bool(ack_flags & 1), code, props)

    def _ack(self, cls: type[p._Ack], data: bytes, pos: int, end: int) -> p._Ack:
        pid, pos = _packet_id(data, pos, end)
        if self.protocol_level != 5:
            if pos != end:
                raise malformed(f"{cls.__name__} of the wrong length")
            return cls(pid)
        code = 0
        props: dict[int, Any] = {}
        if pos < end:
            code = data[pos]
            pos += 1
            if pos < end:
                props, pos = decode_properties(data, pos, end, cls.type)
        if pos != end:
            raise malformed(f"trailing bytes after {cls.__name__}")
        return cls(pid, code, props)

    def _subscribe(self, data: bytes, pos: int, end: int) -> p.Subscribe:
        pid, pos = _packet_id(data, pos, end)
        props: dict[int, Any] = {}
        v5 = self.protocol_level == 5
        if v5:
            props, pos = decode_properties(data, pos, end, p.SUBSCRIBE)
            if PropertyId.SUBSCRIPTION_IDENTIFIER in props and props[PropertyId.SUBSCRIPTION_IDENTIFIER] == 0:
                raise protocol_error("[MQTT-3.8.2-1] subscription identifier 0")
        subs: list[p.Subscription] = []
        while pos < end:
            topic_filter, pos = _string(data, pos, end, "topic filter")
            if pos >= end:
                raise malformed("missing subscription options")
            opts = data[pos]
            pos += 1
            qos = opts & 3
            if qos == 3:
                if v5:
                    raise protocol_error("subscription with Maximum QoS 3 (a Protocol Error, section 3.8.3.1)")
                raise malformed("[MQTT-3-8.3-4] subscription with QoS 3")
            if v5:
                if opts & 0xC0:
                    raise malformed("[MQTT-3.8.3-5] reserved subscription option bits set")
                retain_handling = (opts >> 4) & 3
                if retain_handling == 3:
                    raise protocol_error("[MQTT-3.8.3-5] retain handling 3")
                subs.append(p.Subscription(topic_filter, qos, bool(opts & 4), bool(opts & 8), retain_handling))
            else:
                if opts & 0xFC:
                    raise malformed("[MQTT-3.8.3-4] reserved subscription option bits set")
                subs.append(p.Subscription(topic_filter, qos))
        if not subs:
            raise protocol_error("[MQTT-3.8.3-3] SUBSCRIBE with no topic filter")
        return p.Subscribe(pid, subs, props)

    def _suback(self, data: bytes, pos: int, end: int) -> p.Suback:
        pid, pos = _packet_id(data, pos, end)
        props: dict[int, Any] = {}
        if self.protocol_level == 5:
            props, pos = decode_properties(data, pos, end, p.SUBACK)
        return p.Suback(pid, list(data[pos:end]), props)

    def _unsubscribe(self, data: bytes, pos: int, end: int) -> p.Unsubscribe:
        pid, pos = _packet_id(data, pos, end)
        props: dict[int, Any] = {}
        if self.protocol_level == 5:
            props, pos = decode_properties(data, pos, end, p.UNSUBSCRIBE)
        filters: list[str] = []
        while pos < end:
            topic_filter, pos = _string(data, pos, end, "topic filter")
            filters.append(topic_filter)
        if not filters:
            raise protocol_error("[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filter")
        return p.Unsubscribe(pid, filters, props)

    def _unsuback(self, data: bytes, pos: int, end: int) -> p.Unsuback:
        pid, pos = _packet_id(data, pos, end)
        props: dict[int, Any] = {}
        if self.protocol_level == 5:
            props, pos = decode_properties(data, pos, end, p.UNSUBACK)
            return p.Unsuback(pid, list(data[pos:end]), props)
        return p.Unsuback(pid, [], props)

    def _empty(self, cls: type[p.Pingreq] | type[p.Pingresp], data: bytes, pos: int, end: int) -> p.AnyPacket:
        if pos != end:
            raise malformed(f"{cls.__name__} with a payload")
        return cls()

    def _disconnect(self, data: bytes, pos: int, end: int) -> p.Disconnect:
        if self.protocol_level != 5:
            if pos != end:
                raise malformed("DISCONNECT with a payload")
            return p.Disconnect()
        code = 0
        props: dict[int, Any] = {}
        if pos < end:
            code = data[pos]
            pos += 1
            if pos < end:
                props, pos = decode_properties(data, pos, end, p.DISCONNECT)
        if pos != end:
            raise malformed("trailing bytes after DISCONNECT")
        return p.Disconnect(code, props)

    def _auth(self, data: bytes, pos: int, end: int) -> p.Auth:
        if self.protocol_level != 5:
            raise malformed("reserved packet type 15 before MQTT 5")
        code = 0
        props: dict[int, Any] = {}
        if pos < end:
            code = data[pos]
            pos += 1
            if pos < end:
                props, pos = decode_properties(data, pos, end, p.AUTH)
        if pos != end:
            raise malformed("trailing bytes after AUTH")
        return p.Auth(code, props)


_Decoder = Callable[[Parser, bytes, int, int], Any]
_DECODERS: dict[int, _Decoder] = {
    p.CONNECT: Parser._connect,
    p.CONNACK: Parser._connack,
    p.PUBACK: lambda s, d, a, b: s._ack(p.Puback, d, a, b),
    p.PUBREC: lambda s, d, a, b: s._ack(p.Pubrec, d, a, b),
    p.PUBREL: lambda s, d, a, b: s._ack(p.Pubrel, d, a, b),
    p.PUBCOMP: lambda s, d, a, b: s._ack(p.Pubcomp, d, a, b),
    p.SUBSCRIBE: Parser._subscribe,
    p.SUBACK: Parser._suback,
    p.UNSUBSCRIBE: Parser._unsubscribe,
    p.UNSUBACK: Parser._unsuback,
    p.PINGREQ: lambda s, d, a, b: s._empty(p.Pingreq, d, a, b),
    p.PINGRESP: lambda s, d, a, b: s._empty(p.Pingresp, d, a, b),
    p.DISCONNECT: Parser._disconnect,
    p.AUTH: Parser._auth,
}


# ---------------------------------------------------------------------------------------------
# Encoding


def _str(value: str) -> bytes:
    b = value.encode()
    return len(b).to_bytes(2, "big") + b


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


# Two-byte packet identifiers, each built on first use and kept: the hot path indexes instead of
# allocating, and a broker holds only the ones it has sent (all 65,536 made up front were 2.8 MB of
# an idle broker's memory; the table of empty stand-ins is 0.5 MB).
_PACKET_ID_BYTES: Final[list[bytes]] = [b""] * 65536


def packet_id_bytes(packet_id: int) -> bytes:
    """Packet identifier ``packet_id`` (1-65535; also a Topic Alias) as its two bytes on the wire."""
    found = _PACKET_ID_BYTES[packet_id]
    if not found:
        found = _PACKET_ID_BYTES[packet_id] = packet_id.to_bytes(2, "big")
    return found


# -- PUBLISH (section 3.3) --------------------------------------------------------------------
# The one place that knows the PUBLISH byte layout: fixed header, Topic Name, [Packet Identifier],
# [Properties (MQTT 5)], Payload. The broker's shared fan-out encodings (Message.wire), outbound
# Topic Aliases, the API's size check and the client all go through these functions.


def publish_head(first: int, topic: bytes, rest: int) -> bytes:
    """The fixed header and Topic Name of a PUBLISH whose Packet Identifier, Properties and
    Payload (whatever follows the Topic Name) take ``rest`` bytes."""
    n = len(topic)
    length = 2 + n + rest
    if length < 128:
        return bytes((first, length, n >> 8, n & 0xFF)) + topic
    return bytes((first,)) + encode_varint(length) + bytes((n >> 8, n & 0xFF)) + topic


def publish_size(topic_length: int, qos: int, rest: int) -> int:
    """Bytes of a PUBLISH with a Topic Name of ``topic_length`` bytes whose Properties and Payload
    take ``rest`` bytes, without encoding it (the Maximum Packet Size checks)."""
    remaining = 2 + topic_length + (2 if qos else 0) + rest
    return 1 + len(encode_varint(remaining)) + remaining


def publish_first_byte(qos: int, retain: bool, dup: bool = False) -> int:
    return 0x30 | (qos << 1) | (8 if dup else 0) | (1 if retain else 0)


def publish_resent(head: bytes) -> bytes:
    """``head`` of an encoded PUBLISH with the DUP flag set: a resend [MQTT-3.3.1-1]."""
    return bytes((head[0] | 0x08,)) + head[1:]


def encode_publish(packet: p.Publish, version: int) -> bytes:
    qos = packet.qos
    tail = bytes(packet.payload)
    if version == 5:
        tail = encode_properties(packet.properties) + tail
    first = publish_first_byte(qos, packet.retain, packet.dup)
    topic = packet.topic.encode()
    if not qos:
        return publish_head(first, topic, len(tail)) + tail
    if not packet.packet_id:
        raise ValueError("QoS > 0 PUBLISH needs a packet identifier")
    return publish_head(first, topic, 2 + len(tail)) + packet_id_bytes(packet.packet_id) + tail


def alias_publish(
    head: bytes, packet_id: bytes, tail: bytes, payload: bytes, alias: int, with_topic: bool
) -> tuple[bytes, bytes]:
    """An MQTT 5 PUBLISH encoded as ``head + packet_id + tail`` (for QoS 0 ``head`` is all of it and
    ``packet_id`` and ``tail`` are empty), framed again with Topic Alias ``alias`` first in its
    Properties, and its Topic Name kept (``with_topic``: the alias is new) or left empty.
    Returns ``(start, properties)``: the packet is ``start + properties + payload``, so the
    payload, shared by every subscriber, is not copied."""
    pos = 1
    while head[pos] & 0x80:  # Remaining Length
        pos += 1
    pos += 1
    topic_end = pos + 2 + ((head[pos] << 8) | head[pos + 1])
    props, start = (tail, 0) if packet_id else (head, topic_end)
    length = 0
    shift = 0
    while True:  # the Property Length
        byte = props[start]
        start += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    block = encode_varint(length + 3) + b"\x23" + packet_id_bytes(alias) + props[start : start + length]
    topic = head[pos + 2 : topic_end] if with_topic else b""
    return publish_head(head[0], topic, len(packet_id) + len(block) + len(payload)) + packet_id, block


# The first two bytes of each ack without a reason code (fixed header, Remaining Length 2), by type.
_ACK_HEADS = [bytes(((t << 4) | (2 if t == p.PUBREL else 0), 2)) for t in range(16)]


def encode_ack(ptype: int, packet_id: int, reason_code: int = 0, version: int = p.MQTT_3_1_1) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP without properties: the acks of the hot path. Before MQTT 5
    there is no reason code on the wire."""
    if version != 5 or not reason_code:
        return _ACK_HEADS[ptype] + packet_id_bytes(packet_id)
    first = (ptype << 4) | (2 if ptype == p.PUBREL else 0)
    return bytes((first, 3)) + packet_id_bytes(packet_id) + bytes((reason_code,))


def _encode_connect(packet: p.Connect, version: int) -> bytes:
    level = packet.protocol_level
    flags = 0x02 if packet.clean_start else 0
    will = packet.will
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        flags |= 0x40
    wire_level = level | 0x80 if packet.bridge and level < 5 else level
    parts = [_str(packet.protocol_name), bytes((wire_level, flags)), packet.keep_alive.to_bytes(2, "big")]
    if level == 5:
        parts.append(encode_properties(packet.properties))
    parts.append(_str(packet.client_id))
    if will is not None:
        if level == 5:
            parts.append(encode_properties(will.properties))
        parts.append(_str(will.topic))
        parts.append(len(will.payload).to_bytes(2, "big") + bytes(will.payload))
    if packet.username is not None:
        parts.append(_str(packet.username))
    if packet.password is not None:
        parts.append(len(packet.password).to_bytes(2, "big") + bytes(packet.password))
    return _frame(0x10, b"".join(parts))


def _encode_connack(packet: p.Connack, version: int) -> bytes:
    body = bytes((1 if packet.session_present else 0, packet.reason_code))
    if version == 5:
        body += encode_properties(packet.properties)
    return _frame(0x20, body)


def _encode_ack(packet: p._Ack, version: int) -> bytes:
    if not packet.properties or version != 5:
        return encode_ack(packet.type, packet.packet_id, packet.reason_code, version)
    first = (packet.type << 4) | (2 if packet.type == p.PUBREL else 0)
    body = packet_id_bytes(packet.packet_id) + bytes((packet.reason_code,)) + encode_properties(packet.properties)
    return _frame(first, body)


def _encode_subscribe(packet: p.Subscribe, version: int) -> bytes:
    parts = [packet.packet_id.to_bytes(2, "big")]
    if version == 5:
        parts.append(encode_properties(packet.properties))
    for sub in packet.subscriptions:
        opts = sub.qos
        if version == 5:
            opts |= (4 if sub.no_local else 0) | (8 if sub.retain_as_published else 0) | (sub.retain_handling << 4)
        parts.append(_str(sub.topic_filter) + bytes((opts,)))
    return _frame(0x82, b"".join(parts))


def _encode_suback(packet: p.Suback, version: int) -> bytes:
    body = packet.packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(packet.properties)
    return _frame(0x90, body + bytes(packet.reason_codes))


def _encode_unsubscribe(packet: p.Unsubscribe, version: int) -> bytes:
    parts = [packet.packet_id.to_bytes(2, "big")]
    if version == 5:
        parts.append(encode_properties(packet.properties))
    parts.extend(_str(f) for f in packet.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(packet: p.Unsuback, version: int) -> bytes:
    body = packet.packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(packet.properties) + bytes(packet.reason_codes)
    return _frame(0xB0, body)


def _encode_disconnect(packet: p.Disconnect, version: int) -> bytes:
    if version != 5 or (packet.reason_code == 0 and not packet.properties):
        return b"\xe0\x00"
    body = bytes((packet.reason_code,))
    if packet.properties:
        body += encode_properties(packet.properties)
    return _frame(0xE0, body)


def _encode_auth(packet: p.Auth, version: int) -> bytes:
    if packet.reason_code == 0 and not packet.properties:
        return b"\xf0\x00"
    return _frame(0xF0, bytes((packet.reason_code,)) + encode_properties(packet.properties))


_ENCODERS: dict[int, Callable[[Any, int], bytes]] = {
    p.CONNECT: _encode_connect,
    p.CONNACK: _encode_connack,
    p.PUBLISH: encode_publish,
    p.PUBACK: _encode_ack,
    p.PUBREC: _encode_ack,
    p.PUBREL: _encode_ack,
    p.PUBCOMP: _encode_ack,
    p.SUBSCRIBE: _encode_subscribe,
    p.SUBACK: _encode_suback,
    p.UNSUBSCRIBE: _encode_unsubscribe,
    p.UNSUBACK: _encode_unsuback,
    p.PINGREQ: lambda packet, version: b"\xc0\x00",
    p.PINGRESP: lambda packet, version: b"\xd0\x00",
    p.DISCONNECT: _encode_disconnect,
    p.AUTH: _encode_auth,
}


def encode(packet: p.AnyPacket, version: int = p.MQTT_3_1_1) -> bytes:
    """Encode ``packet`` for a peer speaking protocol level ``version`` (3, 4 or 5)."""
    return _ENCODERS[packet.type](packet, version)
