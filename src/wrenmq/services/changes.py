"""The change-event service: wrenmq keeps the latest version of each resource and a log of its
changes, and publishes every create, update and delete as an event (see ``change_events``).

Storage is SQLite: ``<data_dir>/resources.db``, or an in-memory database with
``storage = "memory"``. All SQLite work runs on one dedicated thread (a single-worker executor),
never on the event loop, and that one thread is also what serializes writes. A change is stored
and given its ``seq`` (the kind's last seq + 1) in one transaction, so seq is gap-free per kind and
never taken by a change that was not stored; an update that changes nothing stores nothing.
Events are published after the commit, in seq order (an asyncio lock spans store + publish); a
publish that fails (a hook refuses it) is logged and the event stays in the log for ``?since=``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..mqtt.properties import PropertyId
from ..storage.private import connect_sqlite
from .change_events import EventType, build_event, diff, encode_event, merge_patch, topics

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..broker.broker import Broker

__all__ = ["ChangeResult", "ChangeService", "ResourceStore"]

log = logging.getLogger("wrenmq.services.changes")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS events (
    kind TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, seq)
);
"""


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The resource after the change (None once deleted), and the event (None: nothing changed)."""

    resource: dict[str, Any] | None
    event: dict[str, Any] | None
    created: bool = False


class ResourceStore:
    """The resources and their event log in one SQLite database. Blocking: call from one thread."""

    def __init__(self, path: Path | None) -> None:
        if path is None:
            self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            self.db = connect_sqlite(path, isolation_level=None, check_same_thread=False)  # private: 0600
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM resources WHERE kind = ? AND id = ?", (kind, resource_id)).fetchone()
        return json.loads(row[0]) if row else None

    def resources(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        rows = self.db.execute(
            "SELECT id, body FROM resources WHERE kind = ? ORDER BY id LIMIT ? OFFSET ?", (kind, limit, offset)
        ).fetchall()
        (total,) = self.db.execute("SELECT COUNT(*) FROM resources WHERE kind = ?", (kind,)).fetchone()
        return [(rid, json.loads(body)) for rid, body in rows], int(total)

    def events(self, kind: str, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Events with seq > ``since`` (at most ``limit``, oldest first), and the kind's last seq."""
        rows = self.db.execute(
            "SELECT body FROM events WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?", (kind, since, limit)
        ).fetchall()
        return [json.loads(body) for (body,) in rows], self._last_seq(kind)

    def _last_seq(self, kind: str) -> int:
        (last,) = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE kind = ?", (kind,)).fetchone()
        return int(last)

    def change(
        self, kind: str, resource_id: str, update: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> ChangeResult:
        """Apply ``update`` (current resource -> new resource, None: delete) and, if that changes
        anything, store it and its event in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = self.get(kind, resource_id)
            new = update(old)
            if new == old:
                self.db.execute("ROLLBACK")
                return ChangeResult(new, None)
            event_type: EventType = "created" if old is None else "deleted" if new is None else "updated"
            assert old is not None or new is not None
            resource = new if new is not None else old
            assert resource is not None
            event = build_event(event_type, kind, resource_id, resource, diff(old, new), self._last_seq(kind) + 1)
            if new is None:
                self.db.execute("DELETE FROM resources WHERE kind = ? AND id = ?", (kind, resource_id))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO resources (kind, id, body) VALUES (?, ?, ?)",
                    (kind, resource_id, json.dumps(new)),
                )
            self.db.execute(
                "INSERT INTO events (kind, seq, body) VALUES (?, ?, ?)", (kind, event["seq"], json.dumps(event))
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return ChangeResult(new, event, created=old is None)


class ChangeService:
    """Resources of any kind, their changes published to ``<events_prefix>/all`` and
    ``<events_prefix>/<kind>/<id>`` with ``events_qos`` and ``events_retain``."""

    def __init__(self, broker: Broker) -> None:
        config = broker.config
        self.broker = broker
        self.prefix = config.events_prefix
        self.qos = config.events_qos
        self.retain = config.events_retain
        path = None if config.storage == "memory" else config.data_dir / "resources.db"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wrenmq-resources")
        self._store = self._executor.submit(ResourceStore, path).result()
        self._lock = asyncio.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Close the database once the work already submitted is done."""
        self._executor.submit(self._store.close)
        self._executor.shutdown(wait=False)

    async def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        return await self._run(self._store.get, kind, resource_id)

    async def resources(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        return await self._run(self._store.resources, kind, limit, offset)

    async def events(self, kind: str, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return await self._run(self._store.events, kind, since, limit)

    async def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> ChangeResult:
        return await self._change(kind, resource_id, lambda old: resource)

    async def patch(self, kind: str, resource_id: str, patch: dict[str, Any]) -> ChangeResult | None:
        """A JSON merge patch (RFC 7396) on an existing resource; None if there is none."""
        missing = False

        def update(old: dict[str, Any] | None) -> dict[str, Any] | None:
            nonlocal missing
            if old is None:
                missing = True
                return None
            return merge_patch(old, patch)  # type: ignore[no-any-return]

        result = await self._change(kind, resource_id, update)
        return None if missing else result

    async def delete(self, kind: str, resource_id: str) -> ChangeResult | None:
        """None if there was no such resource."""
        result = await self._change(kind, resource_id, lambda old: None)
        return result if result.event is not None else None

    async def _change(
        self, kind: str, resource_id: str, update: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> ChangeResult:
        async with self._lock:  # publish in seq order
            result = await self._run(self._store.change, kind, resource_id, update)
            if result.event is not None:
                await self._publish(kind, resource_id, result.event)
        return result

    async def _publish(self, kind: str, resource_id: str, event: dict[str, Any]) -> None:
        payload = encode_event(event)
        properties: dict[int, Any] = {
            PropertyId.CONTENT_TYPE: "application/json",
            # The same event reaches a browser over MQTT and again over a fallback transport: the
            # realtime client (wrenmq-realtime.js) shows it once by this id.
            PropertyId.USER_PROPERTY: [("event-id", event["id"])],
        }
        for topic in topics(self.prefix, kind, resource_id):
            try:
                await self.broker.publish(topic, payload, self.qos, self.retain, properties)
            except Exception as exc:  # a hook refused it: the event is stored, readers catch up with ?since=
                log.warning(
                    "change event %s/%s seq %d not published to %s: %s", kind, resource_id, event["seq"], topic, exc
                )
