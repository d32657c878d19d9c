"""Stored-message scenarios: an offline session's queue (backlog) and the retained store."""

from __future__ import annotations

from typing import Any

from .generator import MEASURE, RUN, run_publisher, run_subscriber
from .measure import Run, Workers
from .streams import publisher_spec, subscriber_spec

__all__ = ["backlog", "retained"]


def backlog(run: Run) -> dict[str, Any]:
    """A persistent session goes offline, ``backlog`` QoS 1 messages queue up, it reconnects and drains."""
    s = run.settings
    workers = Workers(2, s.nice)
    try:
        sub = workers.start(
            "subscriber",
            run_subscriber,
            subscriber_spec(
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
            publisher_spec(
                run, 0, ["pub-backlog"], ["bench/backlog"], qos=1, batch=100, count=s.backlog, unacked=10_000
            ),
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
            publisher_spec(
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
            subscriber_spec(
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
