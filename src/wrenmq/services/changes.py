"""The change-event service: wrenmq keeps the latest version of each resource and a log of its
changes, and publishes every create, update and delete as an event (see ``change_events``).

Resources and events are kept by the broker's storage (``Storage.resource_*``: with SQLite in
``<data_dir>/resources.db``; in memory with ``storage = "memory"``), whose writer thread does the
SQLite work, never the event loop. A change reads the resource and the kind's last seq, and is
stored with its event as seq + 1 in one transaction (``resource_commit``, which refuses any other
seq), so seq is gap-free per kind and never taken by a change that was not stored; an update that
changes nothing stores nothing. Events are published after the commit, in seq order (an asyncio
lock spans read + store + publish); a publish that fails (a hook refuses it) is logged and the
event stays in the log for ``?since=``.

In a cluster (``cluster_url``) the resources and their log are the cluster's, in Redis
(``storage.redis_resources``), whichever node a request lands on: the asyncio lock orders this
node's changes, and a commit that finds the kind changed by another node meanwhile
(``ResourceConflict``) is read and decided again, so seq stays gap-free and unique cluster-wide.
Each node publishes its own changes' events; the cluster forwards them like any message, so a
subscriber on any node gets each event once, in seq order among the changes made on one node (two
changes made on two nodes at the same moment may arrive in either order: order by seq).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..mqtt.properties import PropertyId
from ..storage.base import ResourceConflict
from .change_events import EventType, build_event, diff, encode_event, merge_patch, topics

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..broker.broker import Broker

__all__ = ["ChangeResult", "ChangeService", "ResourceStore"]

log = logging.getLogger("wrenmq.services.changes")

MAX_ATTEMPTS = 100  # commits refused because another node changed the kind first, before giving up


class ResourceStore(Protocol):
    """Where resources and their events are kept: the ``resource_*`` methods of ``Storage`` (one
    node), or ``RedisResources`` (a cluster)."""

    async def resource_state(self, kind: str, resource_id: str) -> tuple[dict[str, Any] | None, int]: ...

    async def resource_commit(
        self, kind: str, resource_id: str, resource: dict[str, Any] | None, seq: int, event: dict[str, Any]
    ) -> None: ...

    async def resource_get(self, kind: str, resource_id: str) -> dict[str, Any] | None: ...

    async def resource_page(
        self, kind: str, limit: int, offset: int
    ) -> tuple[list[tuple[str, dict[str, Any]]], int]: ...

    async def resource_events(self, kind: str, since: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The resource after the change (None once deleted), and the event (None: nothing changed)."""

    resource: dict[str, Any] | None
    event: dict[str, Any] | None
    created: bool = False


class ChangeService:
    """Resources of any kind, their changes published to ``<events_prefix>/all`` and
    ``<events_prefix>/<kind>/<id>`` with ``events_qos`` and ``events_retain``."""

    def __init__(self, broker: Broker, store: ResourceStore | None = None) -> None:
        config = broker.config
        self.broker = broker
        self.store = store  # None: the broker's storage
        self.prefix = config.events.prefix
        self.qos = config.events.qos
        self.retain = config.events.retain
        self._lock = asyncio.Lock()

    @property
    def _storage(self) -> ResourceStore:
        # The broker's storage is opened by broker.start(), which runs before any request.
        return self.store if self.store is not None else self.broker.storage

    async def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        return await self._storage.resource_get(kind, resource_id)

    async def resources(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        return await self._storage.resource_page(kind, limit, offset)

    async def events(self, kind: str, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return await self._storage.resource_events(kind, since, limit)

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
        async with self._lock:  # store and publish in seq order
            for attempt in range(1, MAX_ATTEMPTS + 1):
                old, last_seq = await self._storage.resource_state(kind, resource_id)
                new = update(old)
                if new == old:
                    return ChangeResult(new, None)
                event_type: EventType = "created" if old is None else "deleted" if new is None else "updated"
                resource = new if new is not None else old
                assert resource is not None
                event = build_event(event_type, kind, resource_id, resource, diff(old, new), last_seq + 1)
                try:
                    await self._storage.resource_commit(kind, resource_id, new, last_seq + 1, event)
                except ResourceConflict:  # another node changed the kind since we read it: decide again
                    if attempt == MAX_ATTEMPTS:
                        raise
                    continue
                break
            await self._publish(kind, resource_id, event)
        return ChangeResult(new, event, created=old is None)

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
