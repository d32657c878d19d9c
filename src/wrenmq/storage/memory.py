"""No persistence: the broker's in-memory state is all there is, and it dies with the process.

Sessions and retained messages are not kept at all (the broker holds them live), so that
``storage = "memory"`` costs nothing on the hot path. The services' state has no live copy
elsewhere, so it is kept here, as JSON text: a read returns a fresh copy, as the SQLite backend's does.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable

from .base import (
    Json,
    LoadedState,
    OutboxRecord,
    ResourceConflict,
    Storage,
    StoredMessage,
    StoredSession,
    StoredSessionMessage,
)


class MemoryStorage(Storage):
    """Accepts every broker write and keeps none; keeps the services' state in dicts."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._devices: dict[str, str] = {}
        self._device_events: dict[str, deque[str]] = {}
        self._resources: dict[tuple[str, str], str] = {}
        self._resource_events: dict[str, list[str]] = {}  # seq n is item n - 1
        self._outbox: dict[int, OutboxRecord] = {}  # insertion order is key order
        self._next_outbox_key = 1

    def open(self, loop: asyncio.AbstractEventLoop) -> LoadedState:
        self._loop = loop
        return LoadedState(retained=[], sessions=[])

    def retain_set(self, msg: StoredMessage) -> None:
        pass

    def retain_delete(self, topic: str) -> None:
        pass

    def session_put(self, session: StoredSession) -> None:
        pass

    def session_delete(self, client_id: str) -> None:
        pass

    def message_add(self, client_id: str, msg: StoredSessionMessage) -> None:
        pass

    def message_update(self, client_id: str, seq: int, packet_id: int | None, state: int) -> None:
        pass

    def message_delete(self, client_id: str, seq: int) -> None:
        pass

    def inbound_add(self, client_id: str, packet_id: int) -> None:
        pass

    def inbound_delete(self, client_id: str, packet_id: int) -> None:
        pass

    # -- device presence --------------------------------------------------------------------------

    async def devices_load(self) -> list[Json]:
        return [json.loads(self._devices[d]) for d in sorted(self._devices)]

    def device_put(self, entries: list[Json]) -> None:
        for entry in entries:
            self._devices[entry["deviceId"]] = json.dumps(entry)

    def device_delete(self, device_id: str) -> None:
        self._devices.pop(device_id, None)
        self._device_events.pop(device_id, None)

    def device_event_add(self, device_id: str, event: Json, kept: int) -> None:
        events = self._device_events.setdefault(device_id, deque())
        events.append(json.dumps(event))
        while len(events) > max(kept, 0):
            events.popleft()

    async def device_events(self, device_id: str, limit: int) -> list[Json]:
        events = self._device_events.get(device_id, ())
        return [json.loads(body) for body in list(reversed(events))[: max(limit, 0)]]

    # -- resources ---------------------------------------------------------------------------------

    async def resource_state(self, kind: str, resource_id: str) -> tuple[Json | None, int]:
        return await self.resource_get(kind, resource_id), len(self._resource_events.get(kind, ()))

    async def resource_commit(self, kind: str, resource_id: str, resource: Json | None, seq: int, event: Json) -> None:
        events = self._resource_events.setdefault(kind, [])
        if seq != len(events) + 1:
            raise ResourceConflict(f"event seq {seq} of {kind!r} is not its last seq + 1 ({len(events) + 1})")
        body = json.dumps(event)  # before anything changes: an event that is not JSON stores nothing
        if resource is None:
            self._resources.pop((kind, resource_id), None)
        else:
            self._resources[kind, resource_id] = json.dumps(resource)
        events.append(body)

    async def resource_get(self, kind: str, resource_id: str) -> Json | None:
        body = self._resources.get((kind, resource_id))
        return json.loads(body) if body is not None else None

    async def resource_page(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, Json]], int]:
        ids = sorted(rid for k, rid in self._resources if k == kind)
        page = ids[max(offset, 0) :][: max(limit, 0)]
        return [(rid, json.loads(self._resources[kind, rid])) for rid in page], len(ids)

    async def resource_events(self, kind: str, since: int, limit: int) -> tuple[list[Json], int]:
        events = self._resource_events.get(kind, [])
        found = events[max(since, 0) :][: max(limit, 0)]
        return [json.loads(body) for body in found], len(events)

    # -- outboxes ----------------------------------------------------------------------------------

    async def outbox_load(self) -> list[OutboxRecord]:
        return list(self._outbox.values())

    def outbox_add(self, connection: str, message: StoredMessage) -> int:
        key = self._next_outbox_key
        self._next_outbox_key += 1
        self._outbox[key] = OutboxRecord(key, connection, message)
        return key

    def outbox_delete(self, key: int) -> None:
        self._outbox.pop(key, None)

    def outbox_clear(self, connection: str) -> None:
        for key in [k for k, record in self._outbox.items() if record.connection == connection]:
            del self._outbox[key]

    @property
    def dirty(self) -> bool:
        return False

    def barrier(self, callback: Callable[[], None]) -> None:
        (self._loop or asyncio.get_running_loop()).call_soon(callback)

    async def close(self) -> None:
        pass
