"""The cluster scenario: what a message costs when it crosses from one node to another through Redis.

Three topologies on one machine, the same load on each:

- ``single``: the runner's wrenmq, no ``cluster_url``: publishers and subscriber on one node;
- ``local``: two clustered nodes, publishers and subscriber on node A (nothing crosses: what
  membership costs a node's local traffic);
- ``cross``: publishers on node A, the subscriber on node B: every message crosses Redis once.

Each runs twice: fan-in at full speed (8 publishers, QoS 0: the rate, and the CPU per delivered
message of the nodes together and of Redis) and one publisher at a fixed 2,000 msg/s (latency p50
and p99; ``cross`` minus ``single`` is what a hop adds). Redis's commands per crossing message come
from its INFO commandstats. The nodes and Redis share the broker's cores (on a 2-core machine one
core holds them all), so on a small machine the scenario measures cost, not scale-out: BENCHMARKS.md
turns the costs into the figures for N nodes. Needs Debian's ``redis-server``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import procfs
from .brokers import BrokerOptions, BrokerProcess, free_port, start_broker
from .generator import PublisherSpec, SubscriberSpec
from .measure import Run
from .streams import _stream

__all__ = ["cluster", "redis_missing"]

CLUSTER_NAME = "bench"


def redis_missing() -> str | None:
    """Why the scenario cannot run here, or None."""
    return None if shutil.which("redis-server") else "needs redis-server (apt-get install redis-server)"


class _Redis:
    """A throwaway ``redis-server`` on a free loopback port, nothing saved, on the brokers' cores."""

    def __init__(self, workdir: Path, cpus: set[int]) -> None:
        import redis

        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, cpus)
        self.client = redis.Redis(port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commands(self) -> int:
        """Commands Redis has run so far (INFO commandstats), heartbeats and all."""
        stats = self.client.info("commandstats")
        return sum(int(entry["calls"]) for entry in stats.values())

    def wait_route(self, node: str, topic_filter: str) -> None:
        """Until ``node``'s route for ``topic_filter`` is in Redis (its announcement goes out in the
        same round trip; the other node's replica has it a moment later)."""
        deadline = time.monotonic() + 10
        while not self.client.sismember(f"wrenmq:{CLUSTER_NAME}:routes:{node}", topic_filter):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node} did not announce {topic_filter} within 10 s")
            time.sleep(0.02)
        time.sleep(0.2)

    def cpu_seconds(self) -> float:
        return procfs.cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class _Nodes(BrokerProcess):
    """Several nodes measured as one broker: their CPU together, alive while all are."""

    def __init__(self, nodes: list[BrokerProcess]) -> None:
        first = nodes[0]
        super().__init__("wrenmq cluster", first.proc, first.port, first.log_path)
        self.nodes = nodes

    def cpu_seconds(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)

    def alive(self) -> bool:
        return all(node.alive() for node in self.nodes)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(f"{node.log_path}:\n{node.log_tail(lines)}" for node in self.nodes)


Ready = Callable[[str], None]  # called with the subscriber's filter once it is subscribed


def _no_wait(topic_filter: str) -> None:
    pass


def _fan_in(run: Run, pub_port: int, sub_port: int, tag: str, ready: Ready) -> dict[str, Any]:
    s = run.settings
    n, procs = s.publishers, min(2, s.publishers)
    topics = [f"bench/{tag}/{i:02d}" for i in range(n)]
    sub = SubscriberSpec(
        "127.0.0.1", sub_port, procs, [f"sub-{tag}"], f"bench/{tag}/#",
        sample_topic=topics[0], payload=s.payload, cpus=run.cpus,
    )  # fmt: skip
    pubs = [
        PublisherSpec(
            "127.0.0.1",
            pub_port,
            k,
            [f"pub-{tag}-{i}" for i in range(k, n, procs)],
            topics[k::procs],
            payload=s.payload,
            batch=50,
            window=8_000,
            drain_timeout=s.drain_timeout,
            cpus=run.cpus,
        )
        for k in range(procs)
    ]
    return _stream(run, pubs, [sub], fanout=1, ready=lambda: ready(f"bench/{tag}/#"))


def _latency(run: Run, pub_port: int, sub_port: int, tag: str, ready: Ready) -> dict[str, Any]:
    s = run.settings
    topic = f"bench/{tag}/lat"
    sub = SubscriberSpec(
        "127.0.0.1", sub_port, 1, [f"lsub-{tag}"], topic, sample_topic=topic, payload=s.payload,
        sample_all=True, cpus=run.cpus,
    )  # fmt: skip
    pub = PublisherSpec(
        "127.0.0.1", pub_port, 0, [f"lpub-{tag}"], [topic], payload=s.payload, batch=1, rate=float(s.rate),
        window=s.rate, drain_timeout=s.drain_timeout, cpus=run.cpus,
    )  # fmt: skip
    return _stream(run, [pub], [sub], fanout=1, ready=lambda: ready(topic))


def _phase(run: Run, label: str, pub_port: int, sub_port: int, redis: _Redis | None, ready: Ready) -> dict[str, Any]:
    """Fan-in and latency between two ports; with ``redis``, its CPU and commands per message."""
    run.progress(f"{label}: fan-in")
    before_cpu, before_ops = (redis.cpu_seconds(), redis.commands()) if redis else (0.0, 0)
    fan = _fan_in(run, pub_port, sub_port, label, ready)
    out: dict[str, Any] = {
        f"{label}_msgs_per_s": fan["msgs_per_s"],
        f"{label}_cpu_us": 1e6 / fan["msgs_per_cpu_s"] if fan["msgs_per_cpu_s"] else None,
        "lost": fan["lost"],
    }
    if redis is not None and fan["received"]:
        out[f"{label}_redis_cpu_us"] = 1e6 * (redis.cpu_seconds() - before_cpu) / fan["received"]
        out[f"{label}_redis_ops"] = (redis.commands() - before_ops) / fan["received"]
    run.progress(f"{label}: latency at {run.settings.rate:,} msg/s")
    lat = _latency(run, pub_port, sub_port, label, ready)
    out["lost"] += lat["lost"]
    out[f"{label}_p50_us"] = lat.get("latency_p50_us")
    out[f"{label}_p99_us"] = lat.get("latency_p99_us")
    return out


def cluster(run: Run) -> dict[str, Any]:
    """The three topologies (see the module's docstring); ``hop_*``: what crossing adds."""
    missing = redis_missing()
    if missing:
        raise RuntimeError(missing)
    assert run.workdir is not None
    s = run.settings
    cpus = set(s.broker_cpus)
    metrics = _phase(run, "single", run.broker.port, run.broker.port, None, _no_wait)
    redis = _Redis(run.workdir, cpus)
    nodes: list[BrokerProcess] = []
    single = run.broker
    try:
        for name in ("a", "b"):
            options = BrokerOptions(wrenmq={"cluster_url": redis.url, "node_name": name, "cluster_name": CLUSTER_NAME})
            nodes.append(start_broker("wrenmq", run.workdir / f"node-{name}", cpus, s.nice, options))
        run.broker = _Nodes(nodes)
        a, b = nodes
        for label, pub, sub, holder in (("local", a.port, a.port, "a"), ("cross", a.port, b.port, "b")):
            found = _phase(run, label, pub, sub, redis, functools.partial(redis.wait_route, holder))
            found["lost"] += metrics["lost"]
            metrics.update(found)
    finally:
        run.broker = single
        for node in nodes:
            node.stop()
        redis.stop()
    for q in ("p50", "p99"):
        here, there = metrics.get(f"single_{q}_us"), metrics.get(f"cross_{q}_us")
        if here is not None and there is not None:
            metrics[f"hop_{q}_us"] = there - here
    metrics["nproc"] = os.cpu_count() or 1
    return metrics
