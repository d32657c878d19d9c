"""Metrics history: the broker's numbers sampled every ``metrics_history_interval`` seconds (10 by
default) into a bounded in-memory ring of ``metrics_history_retention`` seconds (24 h), served by
``GET /api/v1/metrics/history`` so the console's dashboard opens on the last hours instead of an
empty chart. Prometheus (``/metrics``) remains the place for long-term history.

Each sample is one column entry per field in ``array('d')`` rings (8 bytes a number: 24 h at 10 s
is 8,640 samples, about 0.7 MB in all), grown as samples come until the ring is full, so a broker
just started holds none of it (issue 19's idle footprint). Counters are kept as rates per second over the interval
(a counter that went down counts as 0), sizes as their value. Sampling is a timer on the broker's
loop, a few attribute reads and one pass over the sessions (queued messages) per interval; the
publish path pays nothing. The ring lives as long as the process: a restart starts it empty.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from itertools import pairwise
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from .routing import v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["FIELDS", "MetricsHistory", "install"]

RATES = ("messages_in", "messages_out", "bytes_in", "bytes_out", "dropped")  # per second over the interval
SIZES = ("connections", "sessions", "subscriptions", "retained", "queued")  # as sampled
FIELDS = RATES + SIZES
MAX_POINTS = 10_000  # points one answer holds at most (a longer range is averaged into wider steps)


class History(BaseModel):
    """Columns of samples, oldest first: ``t[i]`` is when sample i was taken."""

    interval: float = Field(description="Seconds between samples (metrics_history_interval).")
    retention: float = Field(description="Seconds of samples kept (metrics_history_retention).")
    step: float = Field(description="Seconds per point in this answer: the interval, or wider (averaged).")
    t: list[float] = Field(description="Unix time of each point (the end of its step).")
    messages_in: list[float] = Field(description="PUBLISH messages received per second.")
    messages_out: list[float] = Field(description="PUBLISH messages sent per second.")
    bytes_in: list[float] = Field(description="Bytes received per second.")
    bytes_out: list[float] = Field(description="Bytes sent per second.")
    dropped: list[float] = Field(description="Messages dropped per second (every cause).")
    connections: list[float] = Field(description="Clients connected.")
    sessions: list[float]
    subscriptions: list[float]
    retained: list[float] = Field(description="Retained messages stored.")
    queued: list[float] = Field(description="QoS 1/2 messages waiting in session queues.")


class MetricsHistory:
    """The ring, and the timer that fills it."""

    def __init__(self, broker: Broker, interval: float, retention: float) -> None:
        self.broker = broker
        self.interval = interval
        self.retention = retention
        self.capacity = max(1, round(retention / interval))
        self._t = array("d")  # grows to capacity with the samples, then wraps
        self._columns = {name: array("d") for name in FIELDS}
        self._next = 0  # where the next sample goes
        self.count = 0  # samples held (at most capacity)
        self._last: tuple[float, tuple[int, ...]] | None = None  # (monotonic time, counters) at the last sample
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    # -- sampling ---------------------------------------------------------------------------------

    def _counters(self) -> tuple[int, ...]:
        stats = self.broker.stats
        return (
            stats.messages_received,
            stats.messages_sent,
            stats.bytes_received,
            stats.bytes_sent,
            stats.messages_dropped + stats.messages_expired,
        )

    def start(self) -> None:
        """Sample from now on, on the running loop (the broker's)."""
        if self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        # The first sample counts from the broker's start (its counters began at 0 then), so what
        # happened before the API started serving is in it.
        started = self.broker.started_at
        since_start = max(0.0, time.time() - started) if started else 0.0
        self._last = (loop.time() - since_start, (0,) * len(RATES))
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.sample(now)
        self._due += self.interval
        if self._due <= now:  # the loop was busy for more than an interval: no catching up in a burst
            self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick, loop)

    def sample(self, now: float) -> None:
        """Add one sample: rates since the last one (``now`` on the loop's clock), sizes as they are."""
        counters = self._counters()
        assert self._last is not None
        then, before = self._last
        self._last = (now, counters)
        elapsed = now - then
        broker = self.broker
        values = [max(0, a - b) / elapsed if elapsed > 0 else 0.0 for a, b in zip(counters, before, strict=True)]
        connected = queued = 0
        for session in broker.sessions.values():
            connected += session.connection is not None
            queued += len(session.queue)
        values += [connected, len(broker.sessions), broker.router.count, len(broker.retained), queued]
        at = self._next
        if at == len(self._t):  # the ring is still filling
            self._t.append(time.time())
            for name, value in zip(FIELDS, values, strict=True):
                self._columns[name].append(value)
        else:
            self._t[at] = time.time()
            for name, value in zip(FIELDS, values, strict=True):
                self._columns[name][at] = value
        self._next = (at + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    # -- reading ----------------------------------------------------------------------------------

    def _ordered(self, column: array[float]) -> list[float]:
        start = (self._next - self.count) % self.capacity
        if start + self.count <= self.capacity:
            return column[start : start + self.count].tolist()
        return column[start:].tolist() + column[: self._next].tolist()

    def read(self, seconds: float, step: float) -> History:
        """The samples of the last ``seconds``, averaged into points of ``step`` seconds (rounded up
        to a whole number of intervals, and widened so no answer holds more than MAX_POINTS)."""
        per = max(1, math.ceil(step / self.interval - 1e-9))
        t = self._ordered(self._t)
        since = time.time() - seconds
        first = next((i for i, at in enumerate(t) if at >= since), len(t))
        t = t[first:]
        per = max(per, math.ceil(len(t) / MAX_POINTS))
        columns = {name: self._ordered(self._columns[name])[first:] for name in FIELDS}
        if per > 1:  # buckets aligned to the clock, so the same step gives the same points each time
            width = per * self.interval
            keys = [math.floor(at / width) for at in t]
            bounds = [i for i in range(len(t)) if i == 0 or keys[i] != keys[i - 1]] + [len(t)]
            spans = list(pairwise(bounds))
            t = [t[end - 1] for _, end in spans]
            for name in FIELDS:
                values = columns[name]
                if name in RATES:
                    columns[name] = [sum(values[a:b]) / (b - a) for a, b in spans]
                else:
                    columns[name] = [values[b - 1] for _, b in spans]
        return History(interval=self.interval, retention=self.retention, step=per * self.interval, t=t, **columns)


def install(app: FastAPI, broker: Broker) -> None:
    config = broker.config
    history = MetricsHistory(broker, config.metrics.history_interval, config.metrics.history_retention)
    app.state.metrics_history = history
    app.state.on_start.append(history.start)
    app.state.on_stop.append(history.stop)
    router = v1_router("metrics")

    @router.get("/metrics/history", summary="The broker's numbers over the last hours, sampled by the broker")
    async def metrics_history(
        seconds: Annotated[
            float, Query(gt=0, le=10 * 365 * 86400, description="How far back (at most what is kept).")
        ] = 3600.0,
        step: Annotated[
            float, Query(ge=0, le=86400, description="Seconds per point; 0 or less than the interval: every sample.")
        ] = 0.0,
    ) -> History:
        """Rates (per second) and sizes from the in-memory ring: the samples taken since the broker
        started, at most ``metrics_history_retention`` seconds of them."""
        return history.read(seconds, step)

    app.include_router(router)
