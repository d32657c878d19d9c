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
"""

from __future__ import annotations

from .message import Message


class Journal:
    """Recent routed messages, oldest first, bounded by ``size`` (0: none kept), total payload
    ``max_bytes`` and age ``seconds``."""

    def __init__(self, size: int, max_bytes: int, seconds: float, offset: float = 0.0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.offset = offset  # wall-clock time minus the event loop's clock
        self.bytes = 0
        self._ring: list[Message | None] = [None] * size
        self._start = 0  # the oldest entry's place in the ring
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def record(self, message: Message, now: float) -> None:
        """Keep ``message`` (already numbered: ``Message.seq``), routed at loop time ``now``."""
        size = self.size
        if not size:
            return
        stamp = now + self.offset
        message.routed_at = stamp
        ring = self._ring
        if self._count == size:
            self._drop_oldest()
        ring[(self._start + self._count) % size] = message
        self._count += 1
        self.bytes += len(message.payload)
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
        first."""
        timestamp += 5e-7
        found: list[tuple[int, float, Message]] = []
        size = self.size
        # Newest entries are the likely ask (a client that just fell back): scan from the end.
        i = self._count
        while i:
            message = self._ring[(self._start + i - 1) % size]
            if message is None or message.routed_at <= timestamp:
                break
            found.append((message.seq, message.routed_at, message))
            i -= 1
        found.reverse()
        return found

    @property
    def oldest(self) -> float | None:
        """The oldest entry's stamp; None when the journal is empty."""
        if not self._count:
            return None
        message = self._ring[self._start]
        return None if message is None else message.routed_at
