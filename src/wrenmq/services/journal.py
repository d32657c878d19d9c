"""The buffers of realtime delivery (see :mod:`wrenmq.services.realtime`): the :class:`Journal` of
recent routed messages that a client falling back between transports replays from, and the
bounded :class:`Inbox` each Socket.IO socket, poll session or API stream reads from."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..broker.message import Message

__all__ = ["Inbox", "Journal"]


class Journal:
    """Recent routed messages, numbered, bounded by count, total payload bytes and age."""

    def __init__(self, size: int, max_bytes: int, seconds: float) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.entries: deque[tuple[int, float, Message]] = deque(maxlen=size)  # size 0: no journal
        self.bytes = 0
        self.seq = 0

    def append(self, seq: int, message: Message, now: float) -> None:
        """Keep ``message`` under ``seq``, the broker's number for it (``Broker.number``)."""
        self.seq = seq
        entries = self.entries
        if entries.maxlen:
            if len(entries) == entries.maxlen:  # the deque drops the oldest itself: account for it
                self.bytes -= len(entries[0][2].payload)
            entries.append((seq, now, message))
            self.bytes += len(message.payload)
            if self.bytes > self.max_bytes or now - entries[0][1] > self.seconds:
                self._trim(now)

    def _trim(self, now: float) -> None:
        entries = self.entries
        while entries and (self.bytes > self.max_bytes or now - entries[0][1] > self.seconds):
            self.bytes -= len(entries.popleft()[2].payload)

    def since(self, timestamp: float) -> Iterator[tuple[int, float, Message]]:
        """Entries newer than ``timestamp`` (server time), oldest first. ``timestamp`` may be one a
        client was sent, rounded to the microsecond: the entry it came from is not sent again."""
        timestamp += 5e-7
        entries = self.entries
        if not entries or entries[-1][1] <= timestamp:
            return
        # Newest entries are the likely ask (a client that just fell back): scan from the end.
        start = len(entries)
        while start and entries[start - 1][1] > timestamp:
            start -= 1
        for i in range(start, len(entries)):
            yield entries[i]

    @property
    def oldest(self) -> float | None:
        return self.entries[0][1] if self.entries else None


class Inbox:
    """What one realtime reader has not taken yet: bounded; a full inbox drops its oldest message."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer: deque[tuple[int, float, Message, int]] = deque()  # seq, time, message, qos
        self.dropped = 0
        self.closed = False
        self._wake = asyncio.Event()

    def put(self, seq: int, now: float, message: Message, qos: int) -> bool:
        """Add one; False if the oldest had to go to make room."""
        buffer = self.buffer
        full = len(buffer) >= self.capacity
        if full:
            buffer.popleft()
            self.dropped += 1
        buffer.append((seq, now, message, qos))
        self._wake.set()
        return not full

    async def take(self, timeout: float) -> tuple[list[tuple[int, float, Message, int]], int] | None:
        """What is waiting (and how many were dropped before it) once there is something or
        ``timeout`` passed; None once the inbox is closed."""
        if not self.buffer and not self.dropped and not self.closed:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        if self.closed:
            return None
        batch = list(self.buffer)
        self.buffer.clear()
        dropped, self.dropped = self.dropped, 0
        return batch, dropped

    def close(self) -> None:
        self.closed = True
        self._wake.set()
