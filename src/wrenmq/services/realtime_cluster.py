"""Realtime resume across cluster nodes: every node's journal holds what realtime readers anywhere
in the cluster read.

A realtime client resumes (``since`` / ``replay``) from the journal of the node it lands on. On
one node that journal holds every routed message. In a cluster a node routes only what is
published on it and what other nodes forward to it, which is what its own subscribers match: a
browser that was on node A and comes back on node B (A died, or the load balancer moved it) would
find in B's journal nothing that was published on A or C while it was away.

So the filters realtime readers hold are announced cluster-wide, and every node with the realtime
service holds them too, as in-process subscriptions of its journal (owner ``realtime-journal``:
the message is recorded by ``Broker.route`` as any routed message is; the subscription only makes
the cluster forward it here). A filter stays held while a reader anywhere holds it and for
``realtime_journal_seconds`` after the last one let it go: as long as its messages may be asked
for. What this costs: a message that a realtime reader's filter matches crosses to every node
with the realtime service (once per node, as any forward), not only to the reader's.

In Redis (under the cluster's prefix): ``realtime:filters`` (hash): filter -> until when it is held
(Unix time), refreshed every ``REFRESH`` seconds by each node whose readers hold it; a new filter
is announced at once on the channel ``realtime:filters``. Each node reads the hash at start and
at each refresh (what a lost announcement missed) and forgets filters whose time has passed.

What a resume on another node cannot promise: messages are stamped by the node that routes them,
so a message near the cut may be sent again (with the same ``message_id``: wrenmq-realtime.js
drops it, as it drops the repeats its replay margin asks for on one node); a message published on
a node that died before forwarding it is lost, as for any subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..broker.router import LocalSubscriber

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.message import Message
    from ..cluster import Cluster

__all__ = ["OWNER", "REFRESH", "ClusterJournal"]

log = logging.getLogger("wrenmq.realtime")

OWNER = "realtime-journal"  # the journal's in-process subscriptions
REFRESH = 5.0  # seconds between refreshes of the filters this node's readers hold

# Forget a filter whose time has passed, unless a node refreshed it meanwhile.
_EXPIRE = (
    "local t = redis.call('hget', KEYS[1], ARGV[1]) "
    "if t and tonumber(t) < tonumber(ARGV[2]) then return redis.call('hdel', KEYS[1], ARGV[1]) end "
    "return 0"
)


def _ignore(message: Message, qos: int, sub_ids: list[int] | None) -> None:
    """The journal's subscriptions deliver nothing: ``Broker.route`` records what they attract."""


class ClusterJournal:
    """This node's part: announce its readers' filters, hold everyone's for its journal."""

    def __init__(self, broker: Broker, cluster: Cluster, seconds: float) -> None:
        self.broker = broker
        self.cluster = cluster
        self.keep = seconds  # how long a filter is held after its last reader let it go
        self.hash = cluster.key("realtime", "filters")
        self.channel = cluster.key("realtime", "filters")
        self.used: dict[str, int] = {}  # filters this node's readers hold -> how many readers
        self.held: dict[str, float] = {}  # filters the journal subscribes to -> until (Unix time)
        self._new: list[str] = []  # filters to announce
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.running = False

    # -- from the realtime service (on the event loop, never blocking) ------------------------------

    def use(self, topic_filter: str) -> None:
        """A reader of this node subscribed to ``topic_filter``."""
        if not self.running:
            return
        count = self.used.get(topic_filter, 0)
        self.used[topic_filter] = count + 1
        if not count:
            self.hold(topic_filter, time.time() + self.keep + 2 * REFRESH)
            self._new.append(topic_filter)
            self._wake.set()

    def release(self, topic_filter: str) -> None:
        """A reader of this node let ``topic_filter`` go; it stays held for ``keep`` seconds."""
        if not self.running:
            return
        count = self.used.get(topic_filter, 0) - 1
        if count > 0:
            self.used[topic_filter] = count
            return
        self.used.pop(topic_filter, None)
        self.hold(topic_filter, time.time() + self.keep)
        self._new.append(topic_filter)  # its time, from now
        self._wake.set()

    def hold(self, topic_filter: str, until: float) -> None:
        if topic_filter not in self.held:
            self.broker.subscribe_local(LocalSubscriber(OWNER, topic_filter, _ignore, 0))
            self.held[topic_filter] = until
        elif until > self.held[topic_filter]:
            self.held[topic_filter] = until

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening (which reads the filters held so far) and refreshing."""
        self.running = True
        self._tasks = [
            asyncio.create_task(
                self.cluster.follow(self.channel, self._heard, self._read), name="realtime-journal-listen"
            ),
            asyncio.create_task(self._refresh(), name="realtime-journal-refresh"),
        ]

    def stop(self) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        for topic_filter in self.held:
            self.broker.unsubscribe_local(OWNER, topic_filter)
        self.held.clear()

    # -- Redis -------------------------------------------------------------------------------------

    async def _read(self) -> None:
        """Hold every filter of the hash whose time has not passed."""
        now = time.time()
        for raw, until in (await self.cluster.redis.hgetall(self.hash)).items():
            if float(until) > now:
                self.hold(raw.decode(), float(until))

    async def _announce(self, filters: list[str]) -> None:
        now = time.time()
        async with self.cluster.redis.pipeline(transaction=False) as pipe:
            for topic_filter in filters:
                until = now + (self.keep + 2 * REFRESH if topic_filter in self.used else self.keep)
                pipe.eval(_EXTEND, 1, self.hash, topic_filter, f"{until:.3f}")  # (never shortened)
                pipe.publish(self.channel, f"{until:.3f}\x00{topic_filter}")
            await pipe.execute()

    async def _refresh(self) -> None:
        """Announce what is new at once; every ``REFRESH`` seconds extend what readers here hold,
        pick up what a lost announcement missed, and let go of filters whose time has passed."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + REFRESH
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_refresh - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            new, self._new = list(dict.fromkeys(self._new)), []
            refresh = loop.time() >= next_refresh
            if refresh:
                next_refresh = loop.time() + REFRESH
                new = list(dict.fromkeys([*new, *self.used]))
            try:
                if new:
                    await self._announce(new)
                if refresh:
                    await self._read()
                    await self._expire()
            except (RedisError, OSError) as exc:
                log.warning("realtime journal filters: Redis failed (%s); retrying", exc)
                self._new = list(dict.fromkeys([*new, *self._new]))
                await asyncio.sleep(0.5)

    async def _expire(self) -> None:
        now = time.time()
        for topic_filter, until in list(self.held.items()):
            if until < now and topic_filter not in self.used:
                del self.held[topic_filter]
                self.broker.unsubscribe_local(OWNER, topic_filter)
                await self.cluster.redis.eval(_EXPIRE, 1, self.hash, topic_filter, f"{now:.3f}")

    def _heard(self, data: bytes) -> None:
        """Hold each filter another node announces."""
        until, _, topic_filter = data.decode().partition("\x00")
        if topic_filter:
            self.hold(topic_filter, float(until))


# Set a filter's time to ARGV[2] unless it is already later.
_EXTEND = (
    "local t = redis.call('hget', KEYS[1], ARGV[1]) "
    "if not t or tonumber(t) < tonumber(ARGV[2]) then redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) end "
    "return 0"
)
