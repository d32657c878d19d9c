"""The scenario registry: each scenario's name, description and reported metrics.

The scenarios themselves live by concept: ``streams`` (message rates in two client shapes),
``stored`` (offline queue, retained store), ``fleet`` (many connections: connect rate, memory per
connection, churn, wide fan-out, idle footprint); ``measure`` holds what they share.
"""

from __future__ import annotations

from .cluster import cluster, redis_missing
from .fleet import churn, connections, footprint, idle_memory, wide_fan_out
from .measure import Metric, Run, Scenario, Settings, cpu_metrics, default_cpus, median_metrics
from .stored import backlog, retained
from .streams import (
    fan_in_qos0,
    fan_in_qos0_pp,
    fan_in_qos1,
    fan_in_qos1_pp,
    fan_out_qos0,
    fan_out_qos0_pp,
    latency,
    qos2,
)

__all__ = ["SCENARIOS", "Metric", "Run", "Scenario", "Settings", "default_cpus", "median_metrics"]

_THROUGHPUT = Metric("msgs_per_s", "delivered msg/s", "higher")
_PER_CPU = Metric("msgs_per_cpu_s", "delivered msg per broker CPU-second", "higher")
_LOST = Metric("lost", "lost msgs", "lower")
_BROKER_US_PER_CONN = Metric("broker_us_per_conn", "broker CPU us per connection", "lower", "{:,.1f}")
_GENERATOR_US_PER_CONN = Metric("generator_us_per_conn", "generator CPU us per connection", None, "{:,.1f}")
_LAT_P50 = Metric("latency_p50_us", "latency p50 us (under load)", "lower")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fanin_qos0",
            "8 publishers -> 1 wildcard subscriber, QoS 0",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
            fan_in_qos0,
        ),
        Scenario(
            "fanin_qos1",
            "8 publishers -> 1 wildcard subscriber, QoS 1",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
            fan_in_qos1,
        ),
        Scenario(
            "fanout_qos0",
            "1 publisher -> 50 subscribers on one topic, QoS 0",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
            fan_out_qos0,
        ),
        Scenario(
            "fanin_qos0_pp",
            "as fanin_qos0, per-packet clients: one send() per PUBLISH, Nagle on, no read pauses",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
            fan_in_qos0_pp,
        ),
        Scenario(
            "fanin_qos1_pp",
            "as fanin_qos1, per-packet clients",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
            fan_in_qos1_pp,
        ),
        Scenario(
            "fanout_qos0_pp",
            "as fanout_qos0, per-packet clients",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
            fan_out_qos0_pp,
        ),
        Scenario(
            "qos2",
            "QoS 2 flows on both sides, 1 publisher -> 1 subscriber",
            (_THROUGHPUT, _PER_CPU, _LOST, *cpu_metrics()),
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
                *cpu_metrics(),
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
                *cpu_metrics(),
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
                *cpu_metrics(),
            ),
            retained,
        ),
        Scenario(
            "connections",
            "10k idle connections",
            (
                Metric("connect_per_s", "connections/s", "higher"),
                _BROKER_US_PER_CONN,
                _GENERATOR_US_PER_CONN,
                Metric("rss_per_conn_kib", "broker RSS KiB/connection", "lower", "{:,.2f}"),
                Metric("connected", "connections held", "higher"),
                Metric("errors", "connection errors", "lower"),
                *cpu_metrics(),
            ),
            connections,
        ),
        Scenario(
            "fanout_10k",
            "one message at a time to 10k subscribers of one topic, QoS 0 and QoS 1 (5 rounds each)",
            (
                Metric("qos0_ms", "QoS 0: ms until the last has it (median)", "lower", "{:,.1f}"),
                Metric("qos0_max_ms", "QoS 0: slowest round ms", "lower", "{:,.1f}"),
                Metric("qos1_ms", "QoS 1: ms until the last has it (median)", "lower", "{:,.1f}"),
                Metric("qos1_max_ms", "QoS 1: slowest round ms", "lower", "{:,.1f}"),
                Metric("subscribers", "subscribers", "higher"),
                _LOST,
                *cpu_metrics(),
            ),
            wide_fan_out,
        ),
        Scenario(
            "idle_memory",
            "10k idle MQTT 5 connections, one subscription each: broker RSS per connection",
            (
                Metric("rss_per_conn_kib", "broker RSS KiB/connection", "lower", "{:,.2f}"),
                Metric("setup_per_s", "connect+subscribe/s", "higher"),
                _BROKER_US_PER_CONN,
                _GENERATOR_US_PER_CONN,
                Metric("connected", "connections held", "higher"),
                Metric("errors", "connection errors", "lower"),
                *cpu_metrics(),
            ),
            idle_memory,
        ),
        Scenario(
            "churn",
            "100k x (connect, subscribe, disconnect), MQTT 5: broker RSS growth after warm-up",
            (
                Metric("growth_kib", "RSS growth KiB (after - after warm-up)", "lower"),
                Metric("cycles_per_s", "cycles/s", "higher"),
                Metric("rss_end_kib", "broker RSS KiB at the end", "lower"),
                Metric("cycles", "cycles", "higher"),
                Metric("errors", "errors", "lower"),
                *cpu_metrics(),
            ),
            churn,
        ),
        Scenario(
            "cluster",
            "2 clustered nodes and Redis vs 1 node: 8 publishers -> 1 subscriber (QoS 0) and latency at 2,000 msg/s; "
            "single node, both on clustered node A (local), publishers on A and subscriber on B (cross)",
            (
                Metric("single_msgs_per_s", "single node: delivered msg/s", "higher"),
                Metric("local_msgs_per_s", "clustered, nothing crosses: delivered msg/s", "higher"),
                Metric("cross_msgs_per_s", "every message crosses: delivered msg/s", "higher"),
                Metric("single_cpu_us", "single node: broker CPU us/msg", "lower", "{:,.1f}"),
                Metric("local_cpu_us", "local: nodes' CPU us/msg", "lower", "{:,.1f}"),
                Metric("cross_cpu_us", "cross: nodes' CPU us/msg (A + B)", "lower", "{:,.1f}"),
                Metric("cross_redis_cpu_us", "cross: Redis CPU us/msg", "lower", "{:,.1f}"),
                Metric("cross_redis_ops", "cross: Redis commands/msg", "lower", "{:,.2f}"),
                Metric("single_p50_us", "single node: latency p50 us", "lower"),
                Metric("single_p99_us", "single node: latency p99 us", "lower"),
                Metric("cross_p50_us", "cross: latency p50 us", "lower"),
                Metric("cross_p99_us", "cross: latency p99 us", "lower"),
                Metric("hop_p50_us", "added by a hop: p50 us", "lower"),
                Metric("hop_p99_us", "added by a hop: p99 us", "lower"),
                _LOST,
                Metric("nproc", "CPUs", None),
            ),
            cluster,
            in_quick=False,
            wrenmq_only=True,
            missing=redis_missing,
        ),
        Scenario(
            "footprint",
            "idle broker RSS, and wrenmq's with the HTTP API and console",
            (
                Metric("rss_idle_kib", "broker-only RSS KiB", "lower"),
                Metric("rss_api_kib", "RSS KiB with API + console (Mosquitto: none)", "lower"),
                Metric("rss_socketio_kib", "RSS KiB after a Socket.IO handshake too (Mosquitto: none)", "lower"),
            ),
            footprint,
        ),
    )
}
