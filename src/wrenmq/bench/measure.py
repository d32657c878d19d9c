"""What every scenario shares: the settings, the metrics' shape, the generator processes and CPU use.

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
from pathlib import Path
from typing import Any

from . import procfs
from .brokers import BrokerProcess
from .generator import EXIT, WAIT, Control

__all__ = [
    "Metric",
    "Run",
    "Scenario",
    "Settings",
    "Workers",
    "cpu_metrics",
    "default_cpus",
    "latency_stats",
    "median_metrics",
]


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
    connections: int = 10_000  # connect rate (MQTT 3.1.1, no subscription)
    idle_connections: int = 10_000  # memory per idle connection (MQTT 5, one subscription each)
    churn: int = 100_000  # connect + subscribe + disconnect cycles
    wide_subscribers: int = 10_000  # wide fan-out: subscribers of one topic
    wide_rounds: int = 5  # wide fan-out: messages per QoS, one at a time
    settle: float = 1.0  # idle seconds before reading an idle broker's RSS (footprint)
    mosquitto_nodelay: bool = False  # set_tcp_nodelay in Mosquitto's configuration (false: its default)
    drain_timeout: float = 10.0  # after the publishers stop, how long to wait for stragglers
    nice: int = 0  # niceness of broker and generator processes (negative: shield from other load; root only)
    broker_cpus: frozenset[int] = frozenset()
    generator_cpus: frozenset[int] = frozenset()
    api: bool = False  # wrenmq with its HTTP API (realtime, streams) on: what services cost per message

    def quick(self) -> Settings:
        return replace(
            self,
            duration=0.5,
            warmup=0.2,
            backlog=2_000,
            retained=2_000,
            connections=200,
            idle_connections=200,
            churn=500,
            wide_subscribers=200,
            wide_rounds=2,
            settle=0.3,
            drain_timeout=5.0,
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
    in_quick: bool = True  # part of `--quick` (CI's smoke run) unless named with --scenarios
    wrenmq_only: bool = False  # a wrenmq feature Mosquitto has no counterpart of: not run on --compare's broker
    missing: Callable[[], str | None] | None = None  # why it cannot run on this machine (skipped, said so)


def cpu_metrics() -> tuple[Metric, ...]:
    return (
        Metric("broker_cpu", "broker CPU %", None),
        Metric("generator_cpu", "generator CPU % (of its cores)", None),
        Metric("other_cpu_broker_core", "other processes on broker core %", None),
    )


class Workers:
    """Generator processes sharing one state value and per-slot counters with the coordinator."""

    def __init__(self, slots: int, nice: int = 0) -> None:
        self.mp = multiprocessing.get_context("spawn")
        self.nice = nice
        self.state = self.mp.RawValue("i", WAIT)
        self.sent = self.mp.RawArray("q", slots)
        self.received = self.mp.RawArray("q", slots)
        self.marks = self.mp.RawArray("q", slots)
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        self.roles: list[str] = []
        self.final_cpu: dict[int, float] = {}

    def start(self, role: str, target: Callable[..., None], spec: Any) -> int:
        reader, writer = self.mp.Pipe(duplex=False)
        ctl = Control(self.state, self.sent, self.received, writer, self.marks)
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
    workdir: Path | None = None  # where a scenario may start a second broker (the idle footprint's)

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


def latency_stats(samples: list[int], prefix: str = "latency") -> dict[str, float]:
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
