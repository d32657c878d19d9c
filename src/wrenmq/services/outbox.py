"""The outbox of an external broker connection: a bounded FIFO of messages for the remote, kept
in SQLite until the remote has acknowledged them (see :mod:`wrenmq.services.brokers`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..mqtt.packets import PUBLISH
from ..mqtt.properties import decode_properties, encode_properties
from ..storage.private import connect_sqlite

__all__ = ["Outbox", "OutboxFull", "OutboxStore", "Outgoing"]


class OutboxFull(Exception):
    """The outbox holds ``queue_size`` messages already."""


@dataclass(eq=False, slots=True)
class Outgoing:
    """A message for the remote; ``row`` is its SQLite row, ``done`` a future an API call awaits."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[int, Any]
    row: int | None = None
    done: asyncio.Future[int] | None = None


class OutboxStore:
    """Every connection's outbox in one SQLite file (None: memory only). Writes made in one turn
    of the event loop are committed together at the end of it."""

    def __init__(self, path: Path | None, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self._loop = loop
        self._db: sqlite3.Connection | None = None
        self._commit_scheduled = False
        if path is not None:
            db = connect_sqlite(path, isolation_level=None, check_same_thread=False)  # private: 0600
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, connection TEXT NOT NULL,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
                " properties BLOB NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS outbox_connection ON outbox (connection, id)")
            self._db = db

    def load(self, connection: str) -> list[Outgoing]:
        if self._db is None:
            return []
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, properties FROM outbox WHERE connection = ? ORDER BY id",
            (connection,),
        ).fetchall()
        found = []
        for row, topic, payload, qos, retain, props in rows:
            properties = decode_properties(props, 0, len(props), PUBLISH)[0] if props != b"\x00" else {}
            found.append(Outgoing(topic, payload, qos, bool(retain), properties, row))
        return found

    def add(self, connection: str, item: Outgoing) -> None:
        if self._db is None:
            return
        self._begin()
        cursor = self._db.execute(
            "INSERT INTO outbox (connection, topic, payload, qos, retain, properties) VALUES (?, ?, ?, ?, ?, ?)",
            (connection, item.topic, item.payload, item.qos, int(item.retain), encode_properties(item.properties)),
        )
        item.row = cursor.lastrowid

    def remove(self, item: Outgoing) -> None:
        if self._db is None or item.row is None:
            return
        self._begin()
        self._db.execute("DELETE FROM outbox WHERE id = ?", (item.row,))

    def clear(self, connection: str) -> None:
        if self._db is None:
            return
        self._begin()
        self._db.execute("DELETE FROM outbox WHERE connection = ?", (connection,))

    def _begin(self) -> None:
        assert self._db is not None
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        if not self._commit_scheduled:
            self._commit_scheduled = True
            self._loop.call_soon(self.commit)

    def commit(self) -> None:
        self._commit_scheduled = False
        if self._db is not None and self._db.in_transaction:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        if self._db is not None:
            self._db.close()
            self._db = None


class Outbox:
    """One connection's bounded FIFO of messages for the remote. A message counts against the
    bound until the remote has acknowledged it (:meth:`done`)."""

    def __init__(self, name: str, size: int, store: OutboxStore) -> None:
        self.name = name
        self.size = size
        self._store = store
        self._waiting: deque[Outgoing] = deque(store.load(name))  # not yet handed to the client
        self._handed = 0  # handed to the client, not yet acknowledged
        self._wakeup = asyncio.Event()
        if self._waiting:
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self._waiting) + self._handed

    @property
    def full(self) -> bool:
        return len(self) >= self.size

    def put(self, item: Outgoing, commit: bool = False) -> None:
        """Queue ``item``; ``commit``: stored before this returns (else at the end of this turn of
        the event loop, with the other writes made in it)."""
        if self.full:
            raise OutboxFull(f"the queue of {self.name!r} is full ({self.size} messages)")
        self._store.add(self.name, item)
        if commit:
            self._store.commit()
        self._waiting.append(item)
        self._wakeup.set()

    async def take(self) -> Outgoing:
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        self._handed += 1
        return self._waiting.popleft()

    def done(self, item: Outgoing) -> None:
        """The remote acknowledged ``item`` (or refused it for good): it leaves the queue."""
        self._handed -= 1
        self._store.remove(item)

    def returned(self, item: Outgoing) -> None:
        """``item`` was not sent (the client closed): it stays stored, for the next start."""
        self._handed -= 1

    def clear(self) -> None:
        self._waiting.clear()
        self._store.clear(self.name)
