"""The cluster's one ordered writer: everything a node writes to Redis, in the order it was asked.

Commands (a forward's XADD, a session record, an inbox XACK, a retained record) queue here and go
out in one MULTI/EXEC per batch, so what routing stored and the inbox entries it acknowledged land
together. Route announcements and wills ride in the same batch. While Redis is away the batch is
kept and written again (bounded by the cluster's ``max_queue`` for forwards). ``barrier`` is
``Persistence.gate``: a callback runs once the storage committed what came before it and Redis
took every command queued before it (a publisher's ack under strict durability).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .wire import event

if TYPE_CHECKING:
    from .node import Cluster

__all__ = ["Writer"]

log = logging.getLogger("wrenmq.cluster")


class Writer:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.out: list[tuple[Any, ...]] = []  # Redis commands, in order
        self.queued = 0  # commands queued so far
        self.sent = 0  # of which Redis took
        self.routes: list[tuple[str, bool]] = []  # (filter, added) to announce, in order
        self.wills: dict[str, bytes | None] = {}  # client id -> will record to store (None: delete)
        self.wake = asyncio.Event()
        self._waiters: list[tuple[int, Any]] = []

    @property
    def idle(self) -> bool:
        return not self.out and not self.routes and not self.wills

    def command(self, *args: Any) -> None:
        """Queue one Redis command."""
        self.out.append(args)
        self.queued += 1
        if len(self.out) == 1:
            self.wake.set()

    def announce(self, full_filter: str, added: bool) -> None:
        self.routes.append((full_filter, added))
        self.wake.set()

    def will(self, client_id: str, record: bytes | None) -> None:
        self.wills[client_id] = record
        self.wake.set()

    # -- the commit gate ------------------------------------------------------------------------

    def barrier(self, callback: Any) -> None:
        """Run ``callback`` once the storage committed what was enqueued before and Redis took
        every command queued before: a publisher's ack waits for both under strict durability."""
        mark = self.queued
        self.cluster.broker.storage.barrier(lambda: self._after_commit(mark, callback))

    def _after_commit(self, mark: int, callback: Any) -> None:
        if self.sent >= mark and not self._waiters:
            callback()
        else:
            self._waiters.append((mark, callback))

    def _release(self) -> None:
        waiters = self._waiters
        done = 0
        for mark, callback in waiters:
            if mark > self.sent:
                break
            done += 1
            try:
                callback()
            except Exception:
                log.exception("cluster: a commit callback failed")
        if done:
            del waiters[:done]

    def release_all(self) -> None:
        """The cluster stops: nothing waits for Redis any more."""
        self.sent = self.queued
        self._release()

    # -- the task -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write what is queued; retry while Redis is away; end once stopping and idle."""
        cluster = self.cluster
        backoff = 0.1
        while True:
            if self.idle:
                if cluster.stopping:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            batch, self.out = self.out, []
            routes, self.routes = self.routes, []
            wills, self.wills = self.wills, {}
            try:
                await self._write(batch, routes, wills)
            except (RedisError, OSError) as exc:
                if cluster.connected:
                    log.warning("cluster: Redis unreachable (%s): queueing until it is back", exc)
                cluster.connected = False
                self.out = batch + self.out
                self.routes = routes + self.routes
                self.wills = {**wills, **self.wills}
                if cluster.stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if not cluster.connected:
                cluster.connected = True
                log.info("cluster: Redis is back")
            self.sent += len(batch)
            self._release()

    async def _write(
        self, batch: list[tuple[Any, ...]], routes: list[tuple[str, bool]], wills: dict[str, bytes | None]
    ) -> None:
        cluster = self.cluster
        own_routes = cluster.key("routes", cluster.node)
        own_wills = cluster.key("wills", cluster.node)
        async with cluster.redis.pipeline(transaction=True) as pipe:
            for args in batch:
                pipe.execute_command(*args)
            for full_filter, added in routes:
                if added:
                    pipe.sadd(own_routes, full_filter)
                else:
                    pipe.srem(own_routes, full_filter)
                pipe.publish(cluster.key("routes"), event("+" if added else "-", cluster.node, full_filter))
            for client_id, record in wills.items():
                if record is None:
                    pipe.hdel(own_wills, client_id)
                else:
                    pipe.hset(own_wills, client_id, record)
            await pipe.execute()
