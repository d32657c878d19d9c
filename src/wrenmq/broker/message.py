"""An application message inside the broker, and its outgoing PUBLISH encodings.

A message is encoded once per variant (protocol version, QoS, retain flag) and the bytes are
shared by every subscriber that gets that variant; a QoS 1/2 PUBLISH is written as
``head + packet id + tail`` so the packet id is the only per-subscriber part. A delivery with
per-delivery properties (remaining expiry, Subscription Identifiers, the broker's message id)
reuses the message's own properties as encoded once, and the last such encoding is kept, so the
subscribers of one fan-out that get the same properties share the bytes too.
"""

from __future__ import annotations

import math
from typing import Any

from ..mqtt.codec import publish_head
from ..mqtt.properties import PropertyId, encode_properties, encode_varint

_EXPIRY = PropertyId.MESSAGE_EXPIRY_INTERVAL
_SUB_ID = PropertyId.SUBSCRIPTION_IDENTIFIER
_USER = PropertyId.USER_PROPERTY
MESSAGE_ID_PROPERTY = "wrenmq-message-id"  # the user property that carries Broker.message_id

__all__ = ["MESSAGE_ID_PROPERTY", "Message"]


class Message:
    __slots__ = (
        "_at_key",
        "_at_value",
        "_key",
        "_own_props",
        "_own_props_id",
        "_stored",
        "_value",
        "_wire",
        "expires_at",
        "hop",
        "origin",
        "payload",
        "properties",
        "qos",
        "retain",
        "routed_at",
        "seq",
        "stored_id",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
        expires_at: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        # Per-hop properties (Topic Alias, Subscription Identifier) never belong to the message.
        self.properties = properties or {}
        self.expires_at = expires_at  # event-loop time, None = never
        self.origin = origin  # client id of the publisher, for No Local
        # Encodings by variant: the first in two slots (most messages have one), the rest in a dict.
        self._key = -1
        self._value: tuple[bytes, bytes] = (b"", b"")
        self._wire: dict[int, tuple[bytes, bytes]] | None = None
        # Per-delivery encodings (wire_at): the message's own MQTT 5 properties as encoded, without
        # and with the message id; and the last encoding made, with what it was made for.
        self._own_props: bytes | None = None
        self._own_props_id: bytes | None = None
        self._at_key: tuple[int, int, tuple[int, ...] | None, bool] | None = None
        self._at_value: tuple[bytes, bytes] = (b"", b"")
        self._stored: object | None = None  # its storage record, built once (see persist.py)
        self.seq = 0  # the broker's number for it, given when it is first routed (0: not yet)
        self.routed_at = 0.0  # wall-clock seconds it was routed, stamped by the journal (journal.py)
        self.stored_id: str | None = None  # its Broker.message_id from before a restart (see persist.py)
        self.hop: Any = None  # cluster.wire.Hop when another node of the cluster forwarded it here

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def wire(self, version: int, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """(head, tail) of the PUBLISH for this variant; a QoS > 0 packet id goes between them.

        For QoS 0 the whole packet is ``head`` and ``tail`` is empty.
        """
        key = (version << 3) | (qos << 1) | retain
        if key == self._key:
            return self._value
        cache = self._wire
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit
        result = self._encode(version, qos, retain, self.properties if version == 5 else None)
        if self._key < 0:
            self._key = key
            self._value = result
        else:
            if cache is None:
                cache = self._wire = {}
            cache[key] = result
        return result

    def wire_at(
        self,
        version: int,
        qos: int,
        retain: bool,
        now: float,
        sub_ids: list[int] | None,
        message_id: str | None = None,
    ) -> tuple[bytes, bytes]:
        """Like :meth:`wire` but for a delivery that needs per-delivery properties: the remaining
        Message Expiry Interval [MQTT-3.3.2-6], the Subscription Identifiers [MQTT-3.3.4-3], and
        for a client that asked for them, the broker's message id as the last User Property (the
        message's own User Properties go first, in their order [MQTT-3.3.2-18])."""
        if version != 5 or (not sub_ids and self.expires_at is None and message_id is None):
            return self.wire(version, qos, retain)
        remaining = -1
        if self.expires_at is not None:
            # Round away float noise first: (t + 300) - t can be 300.00000000000006, and the
            # remaining interval must never exceed the one received [MQTT-3.3.2-6].
            remaining = max(0, math.ceil(round(self.expires_at - now, 6)))
        key = ((qos << 1) | retain, remaining, tuple(sub_ids) if sub_ids else None, message_id is not None)
        if key == self._at_key:
            return self._at_value
        props = self._own(message_id)
        if remaining >= 0:
            props += bytes((_EXPIRY,)) + remaining.to_bytes(4, "big")
        if sub_ids:
            for sub_id in sub_ids:
                props += bytes((_SUB_ID,)) + encode_varint(sub_id)
        result = self._assemble(qos, retain, encode_varint(len(props)) + props)
        self._at_key = key
        self._at_value = result
        return result

    def _own(self, message_id: str | None) -> bytes:
        """The message's own properties but the expiry (set per delivery), encoded without their
        length; with ``message_id``, that as the last User Property: once per message."""
        found = self._own_props if message_id is None else self._own_props_id
        if found is not None:
            return found
        props = {k: v for k, v in self.properties.items() if k != _EXPIRY}
        if message_id is not None:
            props[_USER] = [*props.get(_USER, ()), (MESSAGE_ID_PROPERTY, message_id)]
        encoded = encode_properties(props)
        skip = 1
        while encoded[skip - 1] & 0x80:  # the length prefix (a Variable Byte Integer)
            skip += 1
        body = encoded[skip:] if props else b""
        if message_id is None:
            self._own_props = body
        else:
            self._own_props_id = body
        return body

    def _encode(self, version: int, qos: int, retain: bool, props: dict[int, Any] | None) -> tuple[bytes, bytes]:
        return self._assemble(qos, retain, encode_properties(props) if version == 5 else b"")

    def _assemble(self, qos: int, retain: bool, props: bytes) -> tuple[bytes, bytes]:
        """The PUBLISH around ``props`` (its property block with length; empty before MQTT 5)."""
        tail = props + self.payload if props else self.payload
        first = 0x30 | (qos << 1) | retain
        if not qos:
            return publish_head(first, self.topic.encode(), len(tail)) + tail, b""
        return publish_head(first, self.topic.encode(), 2 + len(tail)), tail

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.payload[:32]!r}, qos={self.qos}, retain={self.retain})"
