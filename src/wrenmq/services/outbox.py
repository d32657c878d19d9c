"""The outbox of an external broker connection: a bounded FIFO of messages for the remote, kept
by the broker's storage until the remote has acknowledged them (see :mod:`wrenmq.services.brokers`).

A ``put`` only enqueues the storage write (``Storage.outbox_add``), as the broker does for a
persistent session's queue: the publish hook that feeds the outbox never waits on the disk, and
the storage's writer thread commits the message (with SQLite in ``<data_dir>/bridges.db``) in its
next batch; a message the remote acknowledges before then never touches the disk. A caller that
promises more (the API's 202: "it is stored") awaits ``stored()``; a graceful stop commits
everything (the broker closes its storage last).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..mqtt.packets import PUBLISH
from ..mqtt.properties import decode_properties, encode_properties
from ..storage import OutboxRecord, StoredMessage

if TYPE_CHECKING:
    from ..storage import Storage

__all__ = ["Outbox", "OutboxFull", "Outgoing"]


class OutboxFull(Exception):
    """The outbox holds ``queue_size`` messages already."""


@dataclass(eq=False, slots=True)
class Outgoing:
    """A message for the remote; ``key`` names it in storage, ``done`` is a future an API call awaits."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[int, Any]
    key: int | None = None
    done: asyncio.Future[int] | None = None

    @classmethod
    def from_record(cls, record: OutboxRecord) -> Outgoing:
        m = record.message
        props = m.properties
        properties = decode_properties(props, 0, len(props), PUBLISH)[0] if props not in (b"", b"\x00") else {}
        return cls(m.topic, m.payload, m.qos, m.retain, properties, record.key)

    def record(self) -> StoredMessage:
        return StoredMessage(
            self.topic, bytes(self.payload), self.qos, self.retain, encode_properties(self.properties), None
        )


class Outbox:
    """One connection's bounded FIFO of messages for the remote. A message counts against the
    bound until the remote has acknowledged it (:meth:`done`)."""

    def __init__(self, name: str, size: int, storage: Storage, stored: list[OutboxRecord]) -> None:
        """``stored``: what storage held for ``name`` at start-up (``Storage.outbox_load``)."""
        self.name = name
        self.size = size
        self._storage = storage
        self._waiting: deque[Outgoing] = deque(map(Outgoing.from_record, stored))  # not yet handed to the client
        self._handed = 0  # handed to the client, not yet acknowledged
        self._wakeup = asyncio.Event()
        if self._waiting:
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self._waiting) + self._handed

    @property
    def full(self) -> bool:
        return len(self) >= self.size

    def put(self, item: Outgoing) -> None:
        """Queue ``item`` and enqueue its storage write (``stored`` waits for the commit)."""
        if self.full:
            raise OutboxFull(f"the queue of {self.name!r} is full ({self.size} messages)")
        item.key = self._storage.outbox_add(self.name, item.record())
        self._waiting.append(item)
        self._wakeup.set()

    async def stored(self) -> None:
        """Wait until everything put so far is committed."""
        await self._storage.flush()

    async def take(self) -> Outgoing:
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        self._handed += 1
        return self._waiting.popleft()

    def done(self, item: Outgoing) -> None:
        """The remote acknowledged ``item`` (or refused it for good): it leaves the queue."""
        self._handed -= 1
        if item.key is not None:
            self._storage.outbox_delete(item.key)

    def returned(self, item: Outgoing) -> None:
        """``item`` was not sent (the client closed): it stays stored, for the next start."""
        self._handed -= 1

    def clear(self) -> None:
        self._waiting.clear()
        self._storage.outbox_clear(self.name)
