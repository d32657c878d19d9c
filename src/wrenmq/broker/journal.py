"""The journal: the messages the broker routed recently, for realtime clients that resume.

A browser that falls back from MQTT to Socket.IO, or from Socket.IO to long polling, asks for what
it missed since a server timestamp (``services.realtime``). For that every routed message must be
kept a while, bounded by count, payload bytes and age. ``Broker.route`` records each message here
itself (``Broker.journal``, set while the realtime service runs): a publish hook per message cost
as much again as routing it; a store into a ring, compiled, costs a few percent.

A message is stamped once, when it is routed (``Message.routed_at``, wall-clock seconds): the
journal orders and bounds by it, and every realtime delivery of the message carries it, so a
timestamp a client was sent names exactly the messages after it. Stamps follow the event loop's
monotonic clock from when the journal was made (``offset``), so a step of the wall clock does
not reorder them.

What it holds is kept small, for the cost is in the holding: 10,000 routed messages kept whole
(the message, its cached encodings, its topic string, an empty property dict) are megabytes that
fall out of the CPU's caches and are freed cold, which cost more than the recording itself. An
:class:`Entry` keeps the payload, the properties only when there are any, and the topic string
the router's match cache already holds for every message on that topic (``Match.topic``); the
message itself and its encodings go as soon as its deliveries are done. A replay (rare) builds
the message again, under the same number and stamp.
"""

from __future__ import annotations

from typing import Any

from .message import Message


class Entry:
    """One journal entry: what a replay needs to build the message again."""

    __slots__ = (
        "expires_at",
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

    def __init__(self, message: Message, topic: str, stamp: float) -> None:
        self.topic = topic
        self.payload = message.payload
        self.qos = message.qos
        self.retain = message.retain
        self.properties: dict[int, Any] | None = message.properties or None
        self.expires_at = message.expires_at
        self.origin = message.origin
        self.seq = message.seq
        self.routed_at = stamp
        self.stored_id = message.stored_id

    def message(self) -> Message:
        message = Message(
            self.topic, self.payload, self.qos, self.retain, self.properties, self.expires_at, self.origin
        )
        message.seq = self.seq
        message.routed_at = self.routed_at
        message.stored_id = self.stored_id
        return message


class Journal:
    """Recent routed messages, oldest first, bounded by ``size`` (0: none kept), total payload
    ``max_bytes`` and age ``seconds``."""

    def __init__(self, size: int, max_bytes: int, seconds: float, offset: float = 0.0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.offset = offset  # wall-clock time minus the event loop's clock
        self.bytes = 0
        self._ring: list[Entry | None] = [None] * size
        self._start = 0  # the oldest entry's place in the ring
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def record(self, message: Message, now: float, topic: str = "") -> None:
        """Keep ``message`` (already numbered: ``Message.seq``), routed at loop time ``now``;
        ``topic``: the same string as its topic, one that outlives it (the router's)."""
        size = self.size
        if not size:
            return
        stamp = now + self.offset
        message.routed_at = stamp
        if self._count == size:
            self._drop_oldest()
        entry = Entry(message, topic or message.topic, stamp)
        ring = self._ring
        ring[(self._start + self._count) % size] = entry
        self._count += 1
        self.bytes += len(entry.payload)
        oldest = ring[self._start]
        if self.bytes > self.max_bytes or (oldest is not None and stamp - oldest.routed_at > self.seconds):
            self._trim(stamp)

    def _drop_oldest(self) -> None:
        ring = self._ring
        oldest = ring[self._start]
        ring[self._start] = None
        if oldest is not None:
            self.bytes -= len(oldest.payload)
        self._start = (self._start + 1) % self.size
        self._count -= 1

    def _trim(self, stamp: float) -> None:
        while self._count:
            oldest = self._ring[self._start]
            if oldest is not None and self.bytes <= self.max_bytes and stamp - oldest.routed_at <= self.seconds:
                return
            self._drop_oldest()

    def since(self, timestamp: float) -> list[tuple[int, float, Message]]:
        """(number, stamp, message) of the entries newer than ``timestamp`` (a stamp a client was
        sent, maybe rounded to the microsecond: the entry it came from is not sent again), oldest
        first. Each message is built anew from its entry."""
        timestamp += 5e-7
        found: list[tuple[int, float, Message]] = []
        size = self.size
        # Newest entries are the likely ask (a client that just fell back): scan from the end.
        i = self._count
        while i:
            entry = self._ring[(self._start + i - 1) % size]
            if entry is None or entry.routed_at <= timestamp:
                break
            found.append((entry.seq, entry.routed_at, entry.message()))
            i -= 1
        found.reverse()
        return found

    @property
    def oldest(self) -> float | None:
        """The oldest entry's stamp; None when the journal is empty."""
        if not self._count:
            return None
        entry = self._ring[self._start]
        return None if entry is None else entry.routed_at
