"""Device presence across cluster nodes: one registry in Redis, a replica on every node.

A device publishes through the node it is connected to, so only that node's presence hook sees
its announce, status and heartbeats (a message forwarded from another node is routed, not
published again: hooks do not run twice). Each node therefore writes the entries it changed to
Redis and announces them; every node keeps the whole registry as a replica, so
``GET /api/v1/devices`` and the snapshot are the same whichever node serves them.

In Redis (under the cluster's prefix):

- ``presence:devices`` (hash): device id -> its entry (JSON), written by the node that changed it,
  at each flush (``presence_snapshot_debounce``); ``presence:nodes`` (hash): device id -> the node
  an online device is heard through; ``presence:events:<id>`` (list): its recent events.
- the channel ``presence``: each change, with the node that made it, for the replicas.

Who watches what: the node a device is heard through watches its heartbeats (as on one node) and
its clean DISCONNECT. When that node dies, its clients' wills are published by a surviving node
(``cluster.node``), whose presence hook sees them as on one node: the devices go offline at once.
A device of the dead node without a will goes offline once it has been silent for the heartbeat
timeout, as any silent device does; one surviving node (the one that takes
``presence:offline:<id>``) publishes its offline message.

A node that starts when the registry in Redis is empty seeds it from its own storage. A change
announced while a node's channel subscription was lost (Redis restarting) reaches that node's
replica with the device's next change (an online device's next heartbeat); what is in Redis is
read again only when a node starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from ..cluster import Cluster
    from .presence import Presence

__all__ = ["PresenceCluster"]

log = logging.getLogger("wrenmq.services.presence")


class PresenceCluster:
    """The Redis side of one node's ``Presence``."""

    def __init__(self, presence: Presence, cluster: Cluster) -> None:
        self.presence = presence
        self.cluster = cluster
        self.node = cluster.node
        self.devices_key = cluster.key("presence", "devices")
        self.nodes_key = cluster.key("presence", "nodes")
        self.channel = cluster.key("presence")
        self.heard_through: dict[str, str] = {}  # online device -> the node it is heard through
        self.heard_at: dict[str, float] = {}  # device heard through another node -> loop time of news
        self.known_nodes: set[str] = set()  # every node seen alive (one gone from the list died)
        # device -> (entry | None, heard here, newly heard here: its node to write)
        self._out: dict[str, tuple[dict[str, Any] | None, bool, bool]] = {}
        self._events: list[tuple[str, str, int]] = []  # (device, event JSON, how many to keep)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    async def load(self) -> list[dict[str, Any]] | None:
        """The registry in Redis, or None when it is empty (this node seeds it)."""
        redis = self.cluster.redis
        raw = await redis.hgetall(self.devices_key)
        if not raw:
            return None
        loop = asyncio.get_running_loop()
        for device_id, node in (await redis.hgetall(self.nodes_key)).items():
            self.heard_through[device_id.decode()] = node.decode()
            self.heard_at[device_id.decode()] = loop.time()
        return [json.loads(value) for value in raw.values()]

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.cluster.follow(self.channel, self._heard), name="presence-cluster-listen"),
            asyncio.create_task(self._send(), name="presence-cluster-send"),
        ]

    async def stop(self) -> None:
        """Write what is queued (the last flush), then stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(RedisError, OSError):
            await self._write()

    # -- from Presence (on the event loop, never blocking) -------------------------------------------

    def put(self, entries: list[dict[str, Any]], heard_here: set[str]) -> None:
        """Entries this node changed; ``heard_here``: the ids of devices connected through it."""
        for entry in entries:
            device_id = entry["deviceId"]
            here = device_id in heard_here
            moved = here and self.heard_through.get(device_id) != self.node
            if device_id in self._out:  # (not written yet: keep what it says of the node)
                moved = moved or self._out[device_id][2]
            self._out[device_id] = (entry, here, moved)
            if here:
                self.heard_through[device_id] = self.node
            elif not entry["online"]:
                self.heard_through.pop(device_id, None)
        self._wake.set()

    def delete(self, device_id: str) -> None:
        self._out[device_id] = (None, False, False)
        self.heard_through.pop(device_id, None)
        self._wake.set()

    def event_add(self, device_id: str, body: dict[str, Any], keep: int) -> None:
        self._events.append((device_id, json.dumps(body), keep))
        self._wake.set()

    async def events(self, device_id: str, limit: int) -> list[dict[str, Any]]:
        raw = await self.cluster.redis.lrange(self.cluster.key("presence", "events", device_id), 0, limit - 1)
        return [json.loads(value) for value in raw]

    def orphans(self, now: float, timeout: float) -> list[str]:
        """Online devices heard through a node that died, and silent for ``timeout`` seconds."""
        peers = self.cluster.peers
        self.known_nodes.update(name for name, peer in peers.items() if peer.alive)
        found = []
        for device_id, node in self.heard_through.items():
            if node == self.node or now - self.heard_at.get(device_id, now) < timeout:
                continue
            peer = peers.get(node)
            if peer.alive if peer is not None else node not in self.known_nodes:
                continue  # (a node not seen yet may be one that just joined)
            entry = self.presence.devices.get(device_id)
            if entry is not None and entry["online"]:
                found.append(device_id)
        return found

    async def claim_offline(self, device_id: str) -> bool:
        """Whether this node is the one to say ``device_id`` is offline (once cluster-wide)."""
        key = self.cluster.key("presence", "offline", device_id)
        return bool(await self.cluster.redis.set(key, self.node, nx=True, px=10_000))

    # -- Redis -------------------------------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write()
            except (RedisError, OSError) as exc:
                log.warning("presence: Redis unreachable (%s); retrying", exc)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _write(self) -> None:
        out, self._out = self._out, {}
        events, self._events = self._events, []
        if not out and not events:
            return
        try:
            async with self.cluster.redis.pipeline(transaction=False) as pipe:
                for device_id, (entry, here, moved) in out.items():
                    if entry is None:
                        pipe.hdel(self.devices_key, device_id)
                        pipe.hdel(self.nodes_key, device_id)
                        pipe.delete(self.cluster.key("presence", "events", device_id))
                    else:
                        pipe.hset(self.devices_key, device_id, json.dumps(entry))
                        if moved:
                            pipe.hset(self.nodes_key, device_id, self.node)
                        elif not entry["online"]:
                            pipe.hdel(self.nodes_key, device_id)
                    pipe.publish(self.channel, json.dumps({"n": self.node, "d": device_id, "e": entry, "h": here}))
                for device_id, body, keep in events:
                    key = self.cluster.key("presence", "events", device_id)
                    pipe.lpush(key, body)
                    pipe.ltrim(key, 0, keep - 1)
                await pipe.execute()
        except BaseException:
            self._out = {**out, **self._out}  # written again next time (newer changes win)
            self._events = events + self._events
            raise

    def _heard(self, data: bytes) -> None:
        """Apply a change another node announces to this node's replica."""
        change = json.loads(data)
        node, device_id, entry = change["n"], change["d"], change["e"]
        if node == self.node:
            return
        if change["h"]:
            self.heard_through[device_id] = node
            self.heard_at[device_id] = asyncio.get_running_loop().time()
        elif entry is None or not entry["online"]:
            self.heard_through.pop(device_id, None)
            self.heard_at.pop(device_id, None)
        self.presence.replace(device_id, entry, elsewhere=bool(change["h"]))
