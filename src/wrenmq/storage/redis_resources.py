"""Resources and their change events in Redis, for a cluster: the ``resource_*`` part of the
storage interface (``Storage``) that ``services.changes`` uses, shared by every node.

A node's own storage (SQLite) is its own; resource changes must be numbered once for the whole
cluster, whichever node an API request lands on. So with ``cluster_url`` they live in Redis, under
the cluster's prefix:

- ``res:<kind>`` (hash): id -> the resource's JSON; ``res:<kind>:ids`` (sorted set, every score 0):
  the ids in byte order, for pages (the order SQLite's ``ORDER BY id`` gives);
- ``res:<kind>:events`` (list): the kind's events, the event with seq ``n`` at index ``n - 1``, so
  the last seq is the list's length.

``resource_commit`` is one Lua script: it appends the event only if its seq is the length + 1 and
writes the resource in the same step (Redis runs a script alone), else stores nothing and raises
``ResourceConflict``; ``services.changes`` then reads again and retries. Two nodes changing one
kind at once therefore never take the same seq, and no seq is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .base import Json, ResourceConflict

__all__ = ["RedisResources"]

# KEYS: resources hash, ids zset, events list. ARGV: id, seq, resource JSON ("" deletes), event JSON.
# Returns -1 when stored, else the kind's last seq (someone else changed the kind).
_COMMIT = """
local last = redis.call('LLEN', KEYS[3])
if last + 1 ~= tonumber(ARGV[2]) then return last end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
redis.call('RPUSH', KEYS[3], ARGV[4])
return -1
"""


class RedisResources:
    """The resource store of a cluster (``Cluster.redis``, keys made by ``Cluster.key``)."""

    def __init__(self, redis: Any, key: Callable[..., str]) -> None:
        self.redis = redis
        self._key = key
        self._commit = redis.register_script(_COMMIT)

    def _keys(self, kind: str) -> tuple[str, str, str]:
        base = self._key("res", kind)
        return base, base + ":ids", base + ":events"

    async def resource_state(self, kind: str, resource_id: str) -> tuple[Json | None, int]:
        resources, _, events = self._keys(kind)
        async with self.redis.pipeline(transaction=True) as pipe:  # one consistent read
            pipe.hget(resources, resource_id)
            pipe.llen(events)
            body, last = await pipe.execute()
        return (json.loads(body) if body is not None else None), int(last)

    async def resource_commit(self, kind: str, resource_id: str, resource: Json | None, seq: int, event: Json) -> None:
        body = "" if resource is None else json.dumps(resource)
        found = await self._commit(keys=self._keys(kind), args=[resource_id, seq, body, json.dumps(event)])
        if int(found) != -1:
            raise ResourceConflict(f"event seq {seq} of {kind!r} is not its last seq + 1 ({int(found) + 1})")

    async def resource_get(self, kind: str, resource_id: str) -> Json | None:
        body = await self.redis.hget(self._keys(kind)[0], resource_id)
        return json.loads(body) if body is not None else None

    async def resource_page(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, Json]], int]:
        resources, ids_key, _ = self._keys(kind)
        offset, limit = max(offset, 0), max(limit, 0)
        if not limit:
            return [], int(await self.redis.zcard(ids_key))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(ids_key, offset, offset + limit - 1)
            pipe.zcard(ids_key)
            ids, total = await pipe.execute()
        if not ids:
            return [], int(total)
        bodies = await self.redis.hmget(resources, ids)
        page = [(rid.decode(), json.loads(body)) for rid, body in zip(ids, bodies, strict=True) if body is not None]
        return page, int(total)

    async def resource_events(self, kind: str, since: int, limit: int) -> tuple[list[Json], int]:
        events = self._keys(kind)[2]
        since, limit = max(since, 0), max(limit, 0)
        if not limit:
            return [], int(await self.redis.llen(events))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(events, since, since + limit - 1)
            pipe.llen(events)
            found, last = await pipe.execute()
        return [json.loads(body) for body in found], int(last)
