"""The benchmark scenarios: each drives one fresh broker with generator worker processes.

A scenario function takes a :class:`Run` (the broker under test, the settings, a progress
printer) and returns its metrics as a flat dict. Every scenario is bounded in time and in count,
and counts the messages it lost (``lost``: sent but never received, after a drain period).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from . import procfs
from .brokers import BrokerProcess
from .generator import (
    EXIT,
    MEASURE,
    RUN,
    STOP,
    WAIT,
    ConnectorSpec,
    Control,
    PublisherSpec,
    SubscriberSpec,
    run_connector,
    run_publisher,
    run_subscriber,
)

__all__ = ["SCENARIOS", "Metric", "Run", "Scenario", "Settings"]


@dataclass(frozen=True)
class Settings:
    """Sizes and durations; ``quick()`` shrinks them for a CI smoke run."""

    duration: float = 5.0  # measured seconds of each throughput scenario
    warmup: float = 1.0
    payload: int = 32  # bytes per message, the first 8 the send timestamp
    publishers: int = 8  # fan-in
    subscribers: int = 50  # fan-out
    rate: int = 2000  # latency scenario, msgs/s
    backlog: int = 100_000
    retained: int = 100_000
    connections: int = 10_000
    drain_timeout: float = 10.0  # after the publishers stop, how long to wait for stragglers
    nice: int = 0  # niceness of broker and generator processes (negative: shield from other load; root only)
    broker_cpus: frozenset[int] = frozenset()
    generator_cpus: frozenset[int] = frozenset()
    api: bool = False  # wrenmq with its HTTP API (realtime, streams) on: what services cost per message

    def quick(self) -> Settings:
        return replace(
            self, duration=0.5, warmup=0.2, backlog=2_000, retained=2_000, connections=200, drain_timeout=5.0
        )


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str | None  # "higher", "lower", or None for context figures (CPU use)
    fmt: str = "{:,.0f}"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    metrics: tuple[Metric, ...]
    run: Callable[[Run], dict[str, Any]]


def _cpu_metrics() -> tuple[Metric, ...]:
    return (
        Metric("broker_cpu", "broker CPU %", None),
        Metric("generator_cpu", "generator CPU % (of its cores)", None),
        Metric("other_cpu_broker_core", "other processes on broker core %", None),
    )


# --- worker plumbing ----------------------------------------------------------------------------


class Workers:
    """Generator processes sharing one state value and per-slot counters with the coordinator."""

    def __init__(self, slots: int, nice: int = 0) -> None:
        self.mp = multiprocessing.get_context("spawn")
        self.nice = nice
        self.state = self.mp.RawValue("i", WAIT)
        self.sent = self.mp.RawArray("q", slots)
        self.received = self.mp.RawArray("q", slots)
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        self.roles: list[str] = []
        self.final_cpu: dict[int, float] = {}

    def start(self, role: str, target: Callable[..., None], spec: Any) -> int:
        reader, writer = self.mp.Pipe(duplex=False)
        ctl = Control(self.state, self.sent, self.received, writer)
        proc = self.mp.Process(target=target, args=(spec, ctl), name=f"bench-{role}-{spec.slot}", daemon=True)
        proc.start()
        writer.close()
        if self.nice and proc.pid is not None:
            os.setpriority(os.PRIO_PROCESS, proc.pid, self.nice)
        self.procs.append(proc)
        self.pipes.append(reader)
        self.roles.append(role)
        return len(self.procs) - 1

    def expect(self, index: int, kind: str, timeout: float) -> Any:
        """Wait for worker ``index`` to send a message of ``kind``; a worker error is raised here."""
        pipe = self.pipes[index]
        if not pipe.poll(timeout):
            raise TimeoutError(f"{self.roles[index]} worker sent no {kind!r} within {timeout:.0f}s")
        try:
            got, payload = pipe.recv()
        except EOFError:
            raise RuntimeError(f"{self.roles[index]} worker died (exit code {self.procs[index].exitcode})") from None
        if got == "error":
            raise RuntimeError(f"{self.roles[index]} worker failed:\n{payload}")
        if got != kind:
            raise RuntimeError(f"{self.roles[index]} worker sent {got!r}, expected {kind!r}")
        if got == "result":
            self.final_cpu[index] = payload.get("cpu_seconds", 0.0)
        return payload

    def set(self, state: int) -> None:
        self.state.value = state

    def cpu_seconds(self) -> float:
        """CPU used by the workers so far: read from /proc, or as reported by a worker that finished."""
        total = 0.0
        for i, proc in enumerate(self.procs):
            live = procfs.cpu_seconds(proc.pid) if proc.pid is not None else 0.0
            total += max(live, self.final_cpu.get(i, 0.0))
        return total

    def total_sent(self) -> int:
        return sum(self.sent)

    def total_received(self) -> int:
        return sum(self.received)

    def close(self) -> None:
        self.set(EXIT)
        for proc in self.procs:
            proc.join(5)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        for pipe in self.pipes:
            pipe.close()


@dataclass
class Run:
    """One measurement: a fresh broker, the settings, and where progress goes."""

    broker: BrokerProcess
    settings: Settings
    progress: Callable[[str], None]
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def cpus(self) -> set[int]:
        return set(self.settings.generator_cpus)

    def usage(self, workers: Workers) -> tuple[float, ...]:
        s = self.settings
        return (
            time.monotonic(),
            self.broker.cpu_seconds(),
            workers.cpu_seconds(),
            procfs.busy_seconds(s.broker_cpus),
            procfs.busy_seconds(s.generator_cpus),
        )

    def cpu_percent(self, before: tuple[float, ...], after: tuple[float, ...]) -> dict[str, float]:
        """CPU use of the broker and the generator over the interval, and of everything else on
        their cores (other processes on a shared machine steal from the measurement)."""
        wall = max(after[0] - before[0], 1e-9)
        broker, generator, broker_core, generator_core = (
            100.0 * (a - b) / wall for a, b in zip(after[1:], before[1:], strict=True)
        )
        # Generator CPU is a share of all its cores, so that 100% means the generator is saturated.
        out = {"broker_cpu": broker, "generator_cpu": generator / max(1, len(self.settings.generator_cpus))}
        if self.settings.broker_cpus:
            out["other_cpu_broker_core"] = max(0.0, broker_core - broker)
            out["other_cpu_generator_cores"] = max(0.0, generator_core - generator)
        return out

    def check_broker(self) -> None:
        if not self.broker.alive():
            raise RuntimeError(f"{self.broker.name} died:\n{self.broker.log_tail()}")


def _latency(samples: list[int], prefix: str = "latency") -> dict[str, float]:
    if not samples:
        return {}
    samples = sorted(samples)
    n = len(samples)

    def pct(q: float) -> float:
        return samples[min(n - 1, int(q * n))] / 1000.0  # ns -> us

    return {
        f"{prefix}_p50_us": pct(0.50),
        f"{prefix}_p99_us": pct(0.99),
        f"{prefix}_max_us": samples[-1] / 1000.0,
        f"{prefix}_samples": n,
    }


# --- streaming scenarios (fan-in, fan-out, QoS 2, latency) ----------------------------------------


def _stream(
    run: Run, publishers: list[PublisherSpec], subscribers: list[SubscriberSpec], fanout: int
) -> dict[str, Any]:
    """Subscribers first, then publishers; warm up, measure, stop, drain, count."""
    s = run.settings
    workers = Workers(len(publishers) + len(subscribers), s.nice)
    try:
        subs = [workers.start("subscriber", run_subscriber, spec) for spec in subscribers]
        for i in subs:
            workers.expect(i, "ready", 30)
        pubs = [workers.start("publisher", run_publisher, spec) for spec in publishers]
        for i in pubs:
            workers.expect(i, "ready", 30)
        workers.set(RUN)
        time.sleep(s.warmup)
        run.check_broker()
        before = run.usage(workers)
        received_before = workers.total_received()
        workers.set(MEASURE)
        end = before[0] + s.duration
        last_t, last_n = before[0], received_before
        while (now := time.monotonic()) < end:
            time.sleep(min(1.0, end - now))
            run.check_broker()
            t, n = time.monotonic(), workers.total_received()
            run.progress(f"{(n - last_n) / max(t - last_t, 1e-9):>12,.0f} msg/s")
            last_t, last_n = t, n
        after = run.usage(workers)
        received_after = workers.total_received()
        workers.set(STOP)
        sent = sum(workers.expect(i, "result", s.drain_timeout + 30)["sent"] for i in pubs)
        deadline = time.monotonic() + s.drain_timeout
        while workers.total_received() < sent * fanout and time.monotonic() < deadline:
            time.sleep(0.01)
        workers.set(EXIT)
        results = [workers.expect(i, "result", 30) for i in subs]
    finally:
        workers.close()
    received = sum(r["received"] for r in results)
    samples = [x for r in results for x in r["samples"]]
    metrics: dict[str, Any] = {
        "msgs_per_s": (received_after - received_before) / (after[0] - before[0]),
        "published": sent,
        "received": received,
        "lost": max(0, sent * fanout - received),
        "duplicates": max(0, received - sent * fanout),
        **run.cpu_percent(before, after),
        **_latency(samples),
    }
    return metrics


def _subscriber(run: Run, slot: int, ids: list[str], topic_filter: str, sample_topic: str, **kw: Any) -> SubscriberSpec:
    b = run.broker
    return SubscriberSpec(
        "127.0.0.1",
        b.port,
        slot,
        ids,
        topic_filter,
        sample_topic=sample_topic,
        payload=run.settings.payload,
        cpus=run.cpus,
        **kw,
    )


def _publisher(run: Run, slot: int, ids: list[str], topics: list[str], **kw: Any) -> PublisherSpec:
    s = run.settings
    return PublisherSpec(
        "127.0.0.1",
        run.broker.port,
        slot,
        ids,
        topics,
        payload=s.payload,
        drain_timeout=s.drain_timeout,
        cpus=run.cpus,
        **kw,
    )


def _fan_in(run: Run, qos: int) -> dict[str, Any]:
    """8 publishers on bench/in/NN (two processes), one subscriber on bench/in/#."""
    n = run.settings.publishers
    procs = min(2, n)
    topics = [f"bench/in/{i:02d}" for i in range(n)]
    sub = _subscriber(run, procs, ["sub-in"], "bench/in/#", topics[0], qos=qos, delivered_qos=qos)
    pubs = [
        _publisher(
            run,
            k,
            [f"pub-in-{i}" for i in range(k, n, procs)],
            topics[k::procs],
            qos=qos,
            batch=50,
            window=8_000,
            fanout=1,
            unacked=8_000,
        )
        for k in range(procs)
    ]
    return _stream(run, pubs, [sub], fanout=1)


def fan_in_qos0(run: Run) -> dict[str, Any]:
    return _fan_in(run, 0)


def fan_in_qos1(run: Run) -> dict[str, Any]:
    return _fan_in(run, 1)


def fan_out_qos0(run: Run) -> dict[str, Any]:
    """One publisher, ``subscribers`` subscribers on bench/out (in two processes)."""
    n = run.settings.subscribers
    procs = min(2, n)
    subs = [
        _subscriber(run, 1 + k, [f"sub-out-{i}" for i in range(k, n, procs)], "bench/out", "bench/out")
        for k in range(procs)
    ]
    pub = _publisher(run, 0, ["pub-out"], ["bench/out"], batch=20, window=400, fanout=n)
    return _stream(run, [pub], subs, fanout=n)


def qos2(run: Run) -> dict[str, Any]:
    """QoS 2 end to end: PUBLISH/PUBREC/PUBREL/PUBCOMP on both sides of the broker."""
    sub = _subscriber(run, 1, ["sub-q2"], "bench/q2", "bench/q2", qos=2, delivered_qos=2)
    pub = _publisher(run, 0, ["pub-q2"], ["bench/q2"], qos=2, batch=25, window=1_000, unacked=1_000)
    return _stream(run, [pub], [sub], fanout=1)


def latency(run: Run) -> dict[str, Any]:
    """One publisher at a fixed rate (QoS 0), one subscriber timing every message."""
    s = run.settings
    sub = _subscriber(run, 1, ["sub-lat"], "bench/lat", "bench/lat", sample_all=True)
    pub = _publisher(run, 0, ["pub-lat"], ["bench/lat"], batch=1, rate=float(s.rate), window=s.rate)
    return _stream(run, [pub], [sub], fanout=1)


# --- backlog, retained storm, connections ----------------------------------------------------------


def backlog(run: Run) -> dict[str, Any]:
    """A persistent session goes offline, ``backlog`` QoS 1 messages queue up, it reconnects and drains."""
    s = run.settings
    workers = Workers(2, s.nice)
    try:
        sub = workers.start(
            "subscriber",
            run_subscriber,
            _subscriber(
                run,
                1,
                ["sub-backlog"],
                "bench/backlog",
                "bench/backlog",
                qos=1,
                delivered_qos=1,
                mode="backlog",
                expected=s.backlog,
                timeout=120,
                start_state=MEASURE,
            ),
        )
        workers.expect(sub, "ready", 30)
        pub = workers.start(
            "publisher",
            run_publisher,
            _publisher(run, 0, ["pub-backlog"], ["bench/backlog"], qos=1, batch=100, count=s.backlog, unacked=10_000),
        )
        workers.expect(pub, "ready", 30)
        before_fill = run.usage(workers)
        workers.set(RUN)  # the publisher fills the offline session's queue
        filled = workers.expect(pub, "result", 120)
        after_fill = run.usage(workers)
        run.check_broker()
        run.progress(f"queued {filled['acked']:,} in {filled['complete_seconds']:.2f}s; draining")
        workers.set(MEASURE)  # the subscriber reconnects
        result = workers.expect(sub, "result", 150)
        after = run.usage(workers)
    finally:
        workers.close()
    received = result["received"]
    if not result.get("session_present"):
        run.notes.append("backlog: the session was not present on reconnect")
    fill_cpu = run.cpu_percent(before_fill, after_fill)
    return {
        "fill_s": filled["complete_seconds"],
        "drain_s": result["seconds"],
        "drain_msgs_per_s": received / max(result["seconds"], 1e-9),
        "published": filled["sent"],
        "acked": filled["acked"],
        "received": received,
        "lost": max(0, filled["acked"] - received) + (filled["sent"] - filled["acked"]),
        "fill_broker_cpu": fill_cpu["broker_cpu"],
        **run.cpu_percent(after_fill, after),
    }


def retained(run: Run) -> dict[str, Any]:
    """``retained`` retained messages on distinct topics, then one subscription to all of them."""
    s = run.settings
    workers = Workers(2, s.nice)
    try:
        pub = workers.start(
            "publisher",
            run_publisher,
            _publisher(
                run,
                0,
                ["pub-retain"],
                ["bench/r/"],
                qos=1,
                retain=True,
                numbered=True,
                batch=100,
                count=s.retained,
                unacked=10_000,
            ),
        )
        sub = workers.start(
            "subscriber",
            run_subscriber,
            _subscriber(
                run,
                1,
                ["sub-storm"],
                "bench/r/#",
                "bench/r/000000",
                qos=1,
                delivered_qos=1,
                retain=True,
                mode="storm",
                expected=s.retained,
                timeout=120,
                start_state=MEASURE,
            ),
        )
        workers.expect(pub, "ready", 30)
        workers.expect(sub, "ready", 30)
        # The storm subscriber waits for MEASURE (SubscriberSpec.start_state), not RUN.
        workers.set(RUN)
        stored = workers.expect(pub, "result", 120)
        run.check_broker()
        run.progress(f"stored {stored['acked']:,} retained in {stored['complete_seconds']:.2f}s; subscribing")
        before = run.usage(workers)
        workers.set(MEASURE)
        result = workers.expect(sub, "result", 150)
        after = run.usage(workers)
    finally:
        workers.close()
    received = result["received"]
    return {
        "store_s": stored["complete_seconds"],
        "storm_s": result["seconds"],
        "storm_msgs_per_s": received / max(result["seconds"], 1e-9),
        "published": stored["sent"],
        "received": received,
        "lost": max(0, stored["acked"] - received) + (stored["sent"] - stored["acked"]),
        **run.cpu_percent(before, after),
    }


def connections(run: Run) -> dict[str, Any]:
    """``connections`` idle MQTT connections: connect rate and broker RSS per connection."""
    s = run.settings
    procs = 2 if s.connections >= 1000 else 1
    counts = [s.connections // procs + (1 if k < s.connections % procs else 0) for k in range(procs)]
    workers = Workers(procs, s.nice)
    try:
        ids = [
            workers.start(
                "connector",
                run_connector,
                ConnectorSpec("127.0.0.1", run.broker.port, k, counts[k], f"idle{k}", cpus=run.cpus),
            )
            for k in range(procs)
        ]
        for i in ids:
            workers.expect(i, "ready", 30)
        time.sleep(0.2)
        rss_before = run.broker.rss_kib()
        before = run.usage(workers)
        workers.set(RUN)
        reports = []
        for i in ids:
            while True:
                try:
                    reports.append(workers.expect(i, "connected", 1.0))
                    break
                except TimeoutError:
                    run.check_broker()
                    run.progress(f"{workers.total_received():>8,} connected")
        after = run.usage(workers)
        time.sleep(0.5)  # let the broker settle before reading its RSS
        run.check_broker()
        rss_after = run.broker.rss_kib()
        workers.set(EXIT)
        for i in ids:
            workers.expect(i, "result", 30)
    finally:
        workers.close()
    connected = sum(r["connected"] for r in reports)
    errors = sum(r["errors"] for r in reports)
    seconds = max(r["seconds"] for r in reports)
    if connected < s.connections:
        samples = sorted({e for r in reports for e in r["error_samples"]})
        run.notes.append(
            f"connections: only {connected:,} of {s.connections:,} reached on this machine ({errors} errors: "
            + "; ".join(samples)
            + ")"
        )
    return {
        "connected": connected,
        "errors": errors,
        "connect_per_s": connected / max(seconds, 1e-9),
        "rss_per_conn_kib": (rss_after - rss_before) / max(connected, 1),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "lost": 0,
        **run.cpu_percent(before, after),
    }


_THROUGHPUT = Metric("msgs_per_s", "delivered msg/s", "higher")
_LOST = Metric("lost", "lost msgs", "lower")
_LAT_P50 = Metric("latency_p50_us", "latency p50 us (under load)", "lower")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fanin_qos0",
            "8 publishers -> 1 wildcard subscriber, QoS 0",
            (_THROUGHPUT, _LOST, *_cpu_metrics()),
            fan_in_qos0,
        ),
        Scenario(
            "fanin_qos1",
            "8 publishers -> 1 wildcard subscriber, QoS 1",
            (_THROUGHPUT, _LOST, *_cpu_metrics()),
            fan_in_qos1,
        ),
        Scenario(
            "fanout_qos0",
            "1 publisher -> 50 subscribers on one topic, QoS 0",
            (_THROUGHPUT, _LOST, *_cpu_metrics()),
            fan_out_qos0,
        ),
        Scenario(
            "qos2",
            "QoS 2 flows on both sides, 1 publisher -> 1 subscriber",
            (_THROUGHPUT, _LOST, *_cpu_metrics()),
            qos2,
        ),
        Scenario(
            "latency",
            "end-to-end latency at a fixed 2,000 msg/s, QoS 0",
            (
                Metric("latency_p50_us", "p50 latency us", "lower"),
                Metric("latency_p99_us", "p99 latency us", "lower"),
                Metric("latency_max_us", "max latency us", "lower"),
                _LOST,
                *_cpu_metrics(),
            ),
            latency,
        ),
        Scenario(
            "backlog",
            "persistent session reconnects to 100k queued QoS 1 messages",
            (
                Metric("drain_s", "drain time s", "lower", "{:,.2f}"),
                Metric("fill_s", "queue fill time s", "lower", "{:,.2f}"),
                _LOST,
                *_cpu_metrics(),
            ),
            backlog,
        ),
        Scenario(
            "retained",
            "subscribe to 100k retained messages (QoS 1)",
            (
                Metric("storm_s", "time to receive all s", "lower", "{:,.2f}"),
                Metric("store_s", "time to store all s", "lower", "{:,.2f}"),
                _LOST,
                *_cpu_metrics(),
            ),
            retained,
        ),
        Scenario(
            "connections",
            "10k idle connections",
            (
                Metric("connect_per_s", "connections/s", "higher"),
                Metric("rss_per_conn_kib", "broker RSS KiB/connection", "lower", "{:,.2f}"),
                Metric("connected", "connections held", "higher"),
                Metric("errors", "connection errors", "lower"),
                *_cpu_metrics(),
            ),
            connections,
        ),
    )
}


def median_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric median over rounds (losses are summed: one lost message in any round counts)."""
    keys = {k for r in runs for k in r}
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if not values:
            continue
        out[key] = sum(values) if key in ("lost", "errors", "duplicates") else statistics.median(values)
    return out


def default_cpus() -> tuple[frozenset[int], frozenset[int]]:
    """Broker on the first CPU this process may use, the generator on the others."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return frozenset(), frozenset()
    if len(allowed) < 2:
        return frozenset(), frozenset()
    return frozenset(allowed[:1]), frozenset(allowed[1:])
