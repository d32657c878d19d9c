"""Streaming scenarios: fan-in, fan-out, QoS 2 and latency, in two client shapes.

*Batched* clients write many PUBLISH packets per ``send()`` and subscribers pause briefly after
small reads, so that the generator, a Python process on one core, outruns the broker and the
figure is the broker's ceiling. *Per-packet* clients (``*_pp``) behave as paho-mqtt and MQTT.js
do: one ``send()`` per packet with Nagle's algorithm on (neither library sets TCP_NODELAY), and
subscribers that read whatever has arrived without pausing; BENCHMARKS.md says which to expect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .generator import EXIT, MEASURE, RUN, STOP, PublisherSpec, SubscriberSpec, run_publisher, run_subscriber
from .measure import Run, Workers, latency_stats

__all__ = [
    "fan_in_qos0",
    "fan_in_qos0_pp",
    "fan_in_qos1",
    "fan_in_qos1_pp",
    "fan_out_qos0",
    "fan_out_qos0_pp",
    "latency",
    "publisher_spec",
    "qos2",
    "subscriber_spec",
]


def _stream(
    run: Run,
    publishers: list[PublisherSpec],
    subscribers: list[SubscriberSpec],
    fanout: int,
    ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Subscribers first, then (once ``ready`` returns: a cluster's routes have crossed) publishers;
    warm up, measure, stop, drain, count."""
    s = run.settings
    workers = Workers(len(publishers) + len(subscribers), s.nice)
    try:
        subs = [workers.start("subscriber", run_subscriber, spec) for spec in subscribers]
        for i in subs:
            workers.expect(i, "ready", 30)
        if ready is not None:
            ready()
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
        # Per second of the broker's own CPU time: what a broker does with a core, which other work on
        # a shared machine (time the broker did not get) changes far less than the rate itself.
        "msgs_per_cpu_s": (received_after - received_before) / max(after[1] - before[1], 1e-9),
        "published": sent,
        "received": received,
        "lost": max(0, sent * fanout - received),
        "duplicates": max(0, received - sent * fanout),
        **run.cpu_percent(before, after),
        **latency_stats(samples),
    }
    return metrics


def subscriber_spec(
    run: Run, slot: int, ids: list[str], topic_filter: str, sample_topic: str, **kw: Any
) -> SubscriberSpec:
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


def publisher_spec(run: Run, slot: int, ids: list[str], topics: list[str], **kw: Any) -> PublisherSpec:
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


# Per-packet clients: one send() per PUBLISH with Nagle's algorithm on, subscribers that never pause.
PER_PACKET: dict[str, Any] = {"per_packet": True, "nodelay": False}


def _fan_in(run: Run, qos: int, per_packet: bool = False) -> dict[str, Any]:
    """8 publishers on bench/in/NN (two processes), one subscriber on bench/in/#."""
    n = run.settings.publishers
    procs = min(2, n)
    topics = [f"bench/in/{i:02d}" for i in range(n)]
    shape = PER_PACKET if per_packet else {}
    sub = subscriber_spec(
        run, procs, ["sub-in"], "bench/in/#", topics[0], qos=qos, delivered_qos=qos, coalesce=not per_packet
    )
    pubs = [
        publisher_spec(
            run,
            k,
            [f"pub-in-{i}" for i in range(k, n, procs)],
            topics[k::procs],
            qos=qos,
            batch=50,
            window=8_000,
            fanout=1,
            unacked=8_000,
            **shape,
        )
        for k in range(procs)
    ]
    return _stream(run, pubs, [sub], fanout=1)


def fan_in_qos0(run: Run) -> dict[str, Any]:
    return _fan_in(run, 0)


def fan_in_qos1(run: Run) -> dict[str, Any]:
    return _fan_in(run, 1)


def fan_in_qos0_pp(run: Run) -> dict[str, Any]:
    return _fan_in(run, 0, per_packet=True)


def fan_in_qos1_pp(run: Run) -> dict[str, Any]:
    return _fan_in(run, 1, per_packet=True)


def _fan_out(run: Run, per_packet: bool) -> dict[str, Any]:
    """One publisher, ``subscribers`` subscribers on bench/out (in two processes)."""
    n = run.settings.subscribers
    procs = min(2, n)
    subs = [
        subscriber_spec(
            run, 1 + k, [f"sub-out-{i}" for i in range(k, n, procs)], "bench/out", "bench/out", coalesce=not per_packet
        )
        for k in range(procs)
    ]
    shape = PER_PACKET if per_packet else {}
    pub = publisher_spec(run, 0, ["pub-out"], ["bench/out"], batch=20, window=400, fanout=n, **shape)
    return _stream(run, [pub], subs, fanout=n)


def fan_out_qos0(run: Run) -> dict[str, Any]:
    return _fan_out(run, per_packet=False)


def fan_out_qos0_pp(run: Run) -> dict[str, Any]:
    return _fan_out(run, per_packet=True)


def qos2(run: Run) -> dict[str, Any]:
    """QoS 2 end to end: PUBLISH/PUBREC/PUBREL/PUBCOMP on both sides of the broker."""
    sub = subscriber_spec(run, 1, ["sub-q2"], "bench/q2", "bench/q2", qos=2, delivered_qos=2)
    pub = publisher_spec(run, 0, ["pub-q2"], ["bench/q2"], qos=2, batch=25, window=1_000, unacked=1_000)
    return _stream(run, [pub], [sub], fanout=1)


def latency(run: Run) -> dict[str, Any]:
    """One publisher at a fixed rate (QoS 0), one subscriber timing every message."""
    s = run.settings
    sub = subscriber_spec(run, 1, ["sub-lat"], "bench/lat", "bench/lat", sample_all=True)
    pub = publisher_spec(run, 0, ["pub-lat"], ["bench/lat"], batch=1, rate=float(s.rate), window=s.rate)
    return _stream(run, [pub], [sub], fanout=1)
