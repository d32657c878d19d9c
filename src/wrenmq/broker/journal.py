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
the message again, under the same number and stamp. The entries themselves are made once, as
the ring first fills, and filled again in place: recording allocates nothing, so a busy journal
gives the cyclic collector nothing new to count or to walk (an entry per message did: its
allocations set off young collections, and 10,000 live entries were walked by the old ones).
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

    def __init__(self) -> None:
        self.topic = ""
        self.payload = b""
        self.qos = 0
        self.retain = False
        self.properties: dict[int, Any] | None = None
        self.expires_at: float | None = None
        self.origin: str | None = None
        self.seq = 0
        self.routed_at = 0.0
        self.stored_id: str | None = None

    def fill(self, message: Message, topic: str, stamp: float) -> None:
        self.topic = topic
        self.payload = message.payload
        self.qos = message.qos
        self.retain = message.retain
        self.properties = message.properties or None
        self.expires_at = message.expires_at
        self.origin = message.origin
        self.seq = message.seq
        self.routed_at = stamp
        self.stored_id = message.stored_id

    def clear(self) -> None:
        """Let go of what the entry holds (it stays in its place in the ring, to be filled again)."""
        self.payload = b""
        self.properties = None
        self.origin = None
        self.stored_id = None

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
        # The entries are made once, as the ring first fills, and filled again in place: recording
        # a message allocates nothing, so the collector never sees the journal grow or churn.
        self._ring: list[Entry] = []
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
        ring = self._ring
        start = self._start
        if self._count == size:  # full: the oldest entry is filled again as the newest
            entry = ring[start]
            self.bytes -= len(entry.payload)
            start += 1
            self._start = start = 0 if start == size else start
        else:
            place = start + self._count
            if place >= size:
                place -= size
            if place < len(ring):
                entry = ring[place]
            else:  # (the ring fills in order from place 0: this is the next new one)
                entry = Entry()
                ring.append(entry)
            self._count += 1
        entry.fill(message, topic or message.topic, stamp)
        self.bytes += len(entry.payload)
        if self.bytes > self.max_bytes or stamp - ring[start].routed_at > self.seconds:
            self._trim(stamp)

    def _drop_oldest(self) -> None:
        oldest = self._ring[self._start]
        self.bytes -= len(oldest.payload)
        oldest.clear()
        self._start += 1
        if self._start == self.size:
            self._start = 0
        self._count -= 1

    def _trim(self, stamp: float) -> None:
        while self._count:
            oldest = self._ring[self._start]
            if self.bytes <= self.max_bytes and stamp - oldest.routed_at <= self.seconds:
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
            if entry.routed_at <= timestamp:
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
        return self._ring[self._start].routed_at
