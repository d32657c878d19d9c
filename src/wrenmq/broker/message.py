"""An application message inside the broker, and its outgoing PUBLISH encodings.

A message is encoded once per variant (protocol version, QoS, retain flag) and the bytes are
shared by every subscriber that gets that variant; a QoS 1/2 PUBLISH is written as
``head + packet id + tail`` so the packet id is the only per-subscriber part.
"""

from __future__ import annotations

import math
from typing import Any

from ..mqtt.codec import PACKET_ID_BYTES, publish_head
from ..mqtt.properties import PropertyId, encode_properties

_EXPIRY = PropertyId.MESSAGE_EXPIRY_INTERVAL
_SUB_ID = PropertyId.SUBSCRIPTION_IDENTIFIER
_USER = PropertyId.USER_PROPERTY
MESSAGE_ID_PROPERTY = "wrenmq-message-id"  # the user property that carries Broker.message_id

__all__ = ["MESSAGE_ID_PROPERTY", "PACKET_ID_BYTES", "Message"]


class Message:
    __slots__ = (
        "_key",
        "_stored",
        "_value",
        "_wire",
        "expires_at",
        "origin",
        "payload",
        "properties",
        "qos",
        "retain",
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
        self._stored: object | None = None  # its storage record, built once (see persist.py)
        self.seq = 0  # the broker's number for it, given when it is first routed (0: not yet)
        self.stored_id: str | None = None  # its Broker.message_id from before a restart (see persist.py)

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
        props = dict(self.properties)
        if message_id is not None:
            props[_USER] = [*props.get(_USER, ()), (MESSAGE_ID_PROPERTY, message_id)]
        if self.expires_at is not None:
            # Round away float noise first: (t + 300) - t can be 300.00000000000006, and the
            # remaining interval must never exceed the one received [MQTT-3.3.2-6].
            props[_EXPIRY] = max(0, math.ceil(round(self.expires_at - now, 6)))
        if sub_ids:
            props[_SUB_ID] = sub_ids
        return self._encode(version, qos, retain, props)

    def _encode(self, version: int, qos: int, retain: bool, props: dict[int, Any] | None) -> tuple[bytes, bytes]:
        tail = (encode_properties(props) + self.payload) if version == 5 else self.payload
        first = 0x30 | (qos << 1) | retain
        if not qos:
            return publish_head(first, self.topic.encode(), len(tail)) + tail, b""
        return publish_head(first, self.topic.encode(), 2 + len(tail)), tail

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.payload[:32]!r}, qos={self.qos}, retain={self.retain})"
