"""The buffer of realtime delivery: the bounded :class:`Inbox` each Socket.IO socket, poll
session, API stream or trace reads from. (The journal that a client falling back between
transports replays from is the broker's: ``broker/journal.py``, read by ``resume.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from ...broker.message import Message

__all__ = ["Delivery", "Inbox"]

T = TypeVar("T")
# What a realtime reader's inbox holds: (journal seq, routing time, message, the QoS to deliver at).
Delivery = tuple[int, float, "Message", int]


class Inbox(Generic[T]):
    """What one reader has not taken yet: bounded; a full inbox drops its oldest item (counted).
    Realtime readers hold ``(seq, time, message, qos)`` items; API traces hold events."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer: deque[T] = deque()
        self.dropped = 0
        self.closed = False
        self._wake = asyncio.Event()

    def add(self, item: T) -> bool:
        """Add one; False if the oldest had to go to make room."""
        buffer = self.buffer
        full = len(buffer) >= self.capacity
        if full:
            buffer.popleft()
            self.dropped += 1
        buffer.append(item)
        self._wake.set()
        return not full

    async def take(self, timeout: float) -> tuple[list[T], int] | None:
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
