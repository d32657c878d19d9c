"""A lease in Redis: one node of a cluster at a time runs something (an external broker connection).

The lease is one key holding the holder's node name with a time to live (``SET NX PX``). The holder
renews it every ``RENEW`` seconds; every other node tries to take it as often. A holder that dies
(kill -9, power loss) stops renewing, the key expires after ``TTL`` and another node takes it: the
thing moves within ``TTL + RENEW`` seconds. A holder that cannot reach Redis gives the lease up on
its own once ``TTL - RENEW`` seconds have passed since its last renewal, before anyone else can take
it, so two nodes never believe they hold it at once (clocks may drift; the margin covers that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from ..aio import cancelling

__all__ = ["RENEW", "TTL", "Lease"]

log = logging.getLogger("wrenmq.lease")

TTL = 4.0  # seconds a lease lasts unless renewed
RENEW = 1.0  # seconds between renewals (and between attempts to take it)

# KEYS[1]: the lease; ARGV: holder, ttl in ms. 1 if ARGV[1] holds it now (taken or renewed), else 0.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Lease:
    """Hold ``key`` for ``holder`` whenever possible: ``acquired`` runs when this node takes it,
    ``lost`` when it no longer holds it (expired, taken, or Redis out of reach too long)."""

    def __init__(
        self,
        redis: Any,
        key: str,
        holder: str,
        acquired: Callable[[], Awaitable[None]],
        lost: Callable[[], Awaitable[None]],
        ttl: float = TTL,
        renew: float = RENEW,
    ) -> None:
        self.redis = redis
        self.key = key
        self.holder = holder
        self.held = False
        self.seen: str | None = None  # who held it at the last look (this node's name when it holds it)
        self._acquired = acquired
        self._lost = lost
        self._ttl = ttl
        self._renew = renew
        self._take = redis.register_script(_TAKE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"wrenmq lease {self.key}")

    async def stop(self) -> None:
        """Stop renewing and give the lease back at once, so another node need not wait for the TTL."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.held:
            self.held = False
            with contextlib.suppress(RedisError, OSError):
                await self.redis.eval(_RELEASE, 1, self.key, self.holder)

    async def _run(self) -> None:
        renewed = 0.0  # monotonic time of the last renewal that Redis confirmed
        while True:
            try:
                holds = bool(await self._take(keys=[self.key], args=[self.holder, int(self._ttl * 1000)]))
                if holds:
                    renewed = time.monotonic()
                    self.seen = self.holder
                else:
                    found = await self.redis.get(self.key)
                    self.seen = found.decode() if found is not None else None
            except (RedisError, OSError) as exc:
                if cancelling():
                    raise asyncio.CancelledError from None
                # Out of touch: keep it only while no other node could have taken it.
                holds = self.held and time.monotonic() - renewed < self._ttl - self._renew
                if not holds and self.held:
                    log.warning("lease %s: Redis out of reach (%s): giving it up", self.key, exc)
            if holds and not self.held:
                self.held = True
                await self._call(self._acquired)
            elif not holds and self.held:
                self.held = False
                await self._call(self._lost)
            await asyncio.sleep(self._renew)

    async def _call(self, callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except Exception:
            log.exception("lease %s: a callback failed", self.key)
