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
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..mqtt.properties import PropertyId
from .change_events import EventType, build_event, diff, encode_event, merge_patch, topics

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..broker.broker import Broker
    from ..storage import Storage

__all__ = ["ChangeResult", "ChangeService"]

log = logging.getLogger("wrenmq.services.changes")


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The resource after the change (None once deleted), and the event (None: nothing changed)."""

    resource: dict[str, Any] | None
    event: dict[str, Any] | None
    created: bool = False


class ChangeService:
    """Resources of any kind, their changes published to ``<events_prefix>/all`` and
    ``<events_prefix>/<kind>/<id>`` with ``events_qos`` and ``events_retain``."""

    def __init__(self, broker: Broker) -> None:
        config = broker.config
        self.broker = broker
        self.prefix = config.events.prefix
        self.qos = config.events.qos
        self.retain = config.events.retain
        self._lock = asyncio.Lock()

    @property
    def _storage(self) -> Storage:
        return self.broker.storage  # opened by broker.start(), which runs before any request

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
            old, last_seq = await self._storage.resource_state(kind, resource_id)
            new = update(old)
            if new == old:
                return ChangeResult(new, None)
            event_type: EventType = "created" if old is None else "deleted" if new is None else "updated"
            resource = new if new is not None else old
            assert resource is not None
            event = build_event(event_type, kind, resource_id, resource, diff(old, new), last_seq + 1)
            await self._storage.resource_commit(kind, resource_id, new, last_seq + 1, event)
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
