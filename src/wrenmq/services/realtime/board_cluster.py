"""Application users' presence across cluster nodes: who is attached is the cluster's, in Redis.

A user may be attached through Socket.IO on one node, polling on another and MQTT on a third.
Each attachment is a field of the user's hash ``rtp:<id>`` (``<node>|<key>`` -> transport), and
every decision the board makes alone on one node is taken here by one Lua script, atomically, on
that hash: the first attachment cluster-wide announces the user online, the last one offline
(after the grace, unless the user came back anywhere meanwhile: ``rtp:leaving:<id>``). Each node
keeps a count of every user's non-MQTT attachments elsewhere (``rtp`` channel), which is what an
MQTT will saying "offline" is refused for. A node that dies loses its attachments through the
cluster's reaper (``Cluster.reapers``); users left with none are announced offline then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ...aio import cancelling

if TYPE_CHECKING:
    from ...cluster import Cluster

__all__ = ["SharedAttachments"]

log = logging.getLogger("wrenmq.realtime")

# KEYS: hash, leaving, node set; ARGV: field, transport, id, channel. 1 if the user was nowhere.
_ATTACH = """
local before = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
local back = redis.call('DEL', KEYS[2])
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not string.find(f, '|mqtt:', 1, true) then n = n + 1 end
end
redis.call('PUBLISH', ARGV[4], ARGV[3] .. '\\0' .. n)
if before == 0 and back == 0 then return 1 end
return 0
"""

# KEYS: hash, leaving; ARGV: field, grace in ms (0: none), id, channel.
# {attachments left, a remaining transport | 'leaving' | ''}
_DETACH = """
redis.call('HDEL', KEYS[1], ARGV[1])
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not string.find(f, '|mqtt:', 1, true) then n = n + 1 end
end
redis.call('PUBLISH', ARGV[4], ARGV[3] .. '\\0' .. n)
local left = redis.call('HLEN', KEYS[1])
if left > 0 then return {left, redis.call('HVALS', KEYS[1])[1]} end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2] * 2 + 10000)
  return {0, 'leaving'}
end
return {0, ''}
"""

# KEYS: hash, leaving. 1 if the grace ended with the user attached nowhere (and not back since).
_LEFT = """
if redis.call('HLEN', KEYS[1]) == 0 and redis.call('DEL', KEYS[2]) == 1 then return 1 end
return 0
"""

# KEYS: the dead node's set; ARGV: prefix of the node's fields, key prefix, channel.
# The ids of users left with no attachment.
_REAP = """
local gone = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = ARGV[2] .. id
  local n = 0
  for _, f in ipairs(redis.call('HKEYS', h)) do
    if string.sub(f, 1, string.len(ARGV[1])) == ARGV[1] then redis.call('HDEL', h, f)
    elseif not string.find(f, '|mqtt:', 1, true) then n = n + 1 end
  end
  redis.call('PUBLISH', ARGV[3], id .. '\\0' .. n)
  if redis.call('HLEN', h) == 0 then table.insert(gone, id) end
end
redis.call('DEL', KEYS[1])
return gone
"""

Announce = Callable[[str, str, str], None]  # (presence id, status, transport)


class SharedAttachments:
    """The cluster's half of a ``PresenceBoard`` (see the module docstring)."""

    def __init__(self, cluster: Cluster, announce: Announce, grace: float) -> None:
        self.cluster = cluster
        self.announce = announce
        self.grace = grace
        self.channel = cluster.key("rtp")
        self.elsewhere: dict[str, int] = {}  # presence id -> non-MQTT attachments, cluster-wide
        self._ops: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def _keys(self, presence_id: str) -> tuple[str, str]:
        return self.cluster.key("rtp", presence_id), self.cluster.key("rtp", "leaving", presence_id)

    def field(self, key: str) -> str:
        return f"{self.cluster.node}|{key}"

    # -- what the board asks (in order, one at a time) ------------------------------------------

    def attach(self, presence_id: str, key: str, transport: str) -> None:
        self._ops.put_nowait(("attach", presence_id, key, transport))

    def detach(self, presence_id: str, key: str, transport: str, goodbye: bool) -> None:
        self._ops.put_nowait(("detach", presence_id, key, transport, goodbye))

    def present_elsewhere(self, presence_id: str, here: int) -> bool:
        """Whether the user has non-MQTT attachments besides the ``here`` this node has."""
        return self.elsewhere.get(presence_id, 0) > here

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="realtime-presence-ops"),
            asyncio.create_task(self.cluster.follow(self.channel, self._count), name="realtime-presence-listen"),
        ]
        self.cluster.reapers.append(self._reap)

    def stop(self) -> None:
        # (the reaper stays: when the cluster stops after this, it takes this node's attachments
        # out of Redis and says offline for the users left with none)
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _run(self) -> None:
        r = self.cluster.redis
        while True:
            op = await self._ops.get()
            while True:
                try:
                    await self._do(r, op)
                    break
                except (RedisError, OSError) as exc:
                    if cancelling():
                        raise asyncio.CancelledError from None
                    log.warning("realtime presence: Redis failed (%s); retrying", exc)
                    await asyncio.sleep(0.5)

    async def _do(self, r: Any, op: tuple[Any, ...]) -> None:
        kind, presence_id, key = op[0], op[1], op[2]
        users, leaving = self._keys(presence_id)
        if kind == "attach":
            transport = op[3]
            node_set = self.cluster.key("rtp", "node", self.cluster.node)
            first = await r.eval(
                _ATTACH, 3, users, leaving, node_set, self.field(key), transport, presence_id, self.channel
            )
            if first and not key.startswith("mqtt:"):  # (an MQTT client said online itself)
                self.announce(presence_id, "online", transport)
        elif kind == "detach":
            transport, goodbye = op[3], op[4]
            grace_ms = 0 if goodbye or key.startswith("mqtt:") else int(self.grace * 1000)
            left, other = await r.eval(_DETACH, 2, users, leaving, self.field(key), grace_ms, presence_id, self.channel)
            other = other.decode() if isinstance(other, bytes) else str(other)
            if left:
                if key.startswith("mqtt:"):  # its will may have said offline: say online again
                    self.announce(presence_id, "online", other)
            elif other == "leaving":
                asyncio.get_running_loop().call_later(
                    self.grace, self._ops.put_nowait, ("left", presence_id, key, transport)
                )
            elif not key.startswith("mqtt:"):  # (an MQTT client's will says offline for it)
                self._gone(presence_id)
                self.announce(presence_id, "offline", transport)
        elif kind == "left" and await r.eval(_LEFT, 2, users, leaving):
            self._gone(presence_id)
            self.announce(presence_id, "offline", op[3])

    def _gone(self, presence_id: str) -> None:
        """Redis just decided the user has no attachment left anywhere: the count of attachments
        (``elsewhere``, kept from the channel) may not have heard it yet, and the offline message
        published next must not be refused for a user present elsewhere that is not."""
        self.elsewhere.pop(presence_id, None)

    async def _reap(self, dead: str) -> None:
        """``dead`` died: its attachments go; users left with none are offline."""
        gone = await self.cluster.redis.eval(
            _REAP, 1, self.cluster.key("rtp", "node", dead), f"{dead}|", self.cluster.key("rtp", ""), self.channel
        )
        for raw in gone:
            presence_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._gone(presence_id)
            self.announce(presence_id, "offline", "")

    def _count(self, data: bytes) -> None:
        """Keep ``elsewhere`` current from the counts every attach and detach publish."""
        presence_id, _, count = data.decode().rpartition("\x00")
        if int(count):
            self.elsewhere[presence_id] = int(count)
        else:
            self.elsewhere.pop(presence_id, None)
