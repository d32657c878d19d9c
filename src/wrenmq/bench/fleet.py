"""Many-connection scenarios: connect rate, memory per idle connection, churn, wide fan-out, footprint.

These measure what IoT fleets care about: the cost of each connection rather than of each message.
"""

from __future__ import annotations

import socket
import statistics
import time
import urllib.error
import urllib.request
from typing import Any

from ..mqtt import packets as p
from ..mqtt.codec import Parser, encode
from .brokers import BrokerOptions, free_port, start_broker
from .crowd import CrowdSpec, run_crowd
from .generator import EXIT, MEASURE, RUN, ConnectorSpec, open_client, read_packet, run_connector
from .measure import Run, Workers

__all__ = ["churn", "connections", "footprint", "idle_memory", "wide_fan_out"]

SETTLE = 0.5  # seconds between the last connection and reading the broker's RSS
WIDE_TOPIC = "bench/wide"
WIDE_ROUND_TIMEOUT = 30.0  # seconds for one message to reach every subscriber


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
        **_cpu_per_connection(before, after, connected),
        "rss_per_conn_kib": (rss_after - rss_before) / max(connected, 1),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "lost": 0,
        **run.cpu_percent(before, after),
    }


def _cpu_per_connection(before: tuple[float, ...], after: tuple[float, ...], connected: int) -> dict[str, float]:
    """CPU microseconds per connection set up, of the broker and of the generator (all its
    processes): what a connection costs each side, which other load on a shared machine moves
    far less than the rate, and which says whether the generator, not the broker, set the rate."""
    n = max(connected, 1)
    return {
        "broker_us_per_conn": (after[1] - before[1]) / n * 1e6,
        "generator_us_per_conn": (after[2] - before[2]) / n * 1e6,
    }


# --- the crowd worker's scenarios ------------------------------------------------------------------


def _split(total: int, procs: int) -> list[int]:
    return [total // procs + (1 if k < total % procs else 0) for k in range(procs)]


def _start_crowds(run: Run, workers: Workers, total: int, prefix: str, **kw: Any) -> list[int]:
    """Crowd workers for ``total`` connections: two processes from 1,000 on (the generator's cores)."""
    procs = 2 if total >= 1000 else 1
    ids = [
        workers.start(
            "crowd",
            run_crowd,
            CrowdSpec("127.0.0.1", run.broker.port, k, count, f"{prefix}{k}", cpus=run.cpus, **kw),
        )
        for k, count in enumerate(_split(total, procs))
    ]
    for i in ids:
        workers.expect(i, "ready", 30)
    return ids


def _collect(run: Run, workers: Workers, ids: list[int], kind: str, what: str) -> list[dict[str, Any]]:
    """Each worker's ``kind`` report, with progress every second and a check that the broker lives."""
    reports = []
    for i in ids:
        while True:
            try:
                reports.append(workers.expect(i, kind, 1.0))
                break
            except TimeoutError:
                run.check_broker()
                run.progress(f"{workers.total_sent():>8,} {what}")
    return reports


def _shortfall(run: Run, name: str, reports: list[dict[str, Any]], key: str, wanted: int) -> int:
    done = sum(r[key] for r in reports)
    if done < wanted:
        samples = sorted({e for r in reports for e in r["error_samples"]})
        run.notes.append(f"{name}: {done:,} of {wanted:,} on this machine: " + "; ".join(samples))
    return done


def idle_memory(run: Run) -> dict[str, Any]:
    """``idle_connections`` idle MQTT 5 clients, one subscription each: broker RSS per connection."""
    s = run.settings
    workers = Workers(2, s.nice)
    try:
        ids = _start_crowds(run, workers, s.idle_connections, "mem", topic_filter="dev/{id}/cmd", qos=1)
        time.sleep(0.2)
        rss_before = run.broker.rss_kib()
        before = run.usage(workers)
        workers.set(RUN)
        reports = _collect(run, workers, ids, "connected", "connected and subscribed")
        after = run.usage(workers)
        time.sleep(SETTLE)
        run.check_broker()
        rss_after = run.broker.rss_kib()
    finally:
        workers.close()
    connected = _shortfall(run, "idle_memory", reports, "connected", s.idle_connections)
    seconds = max(r["seconds"] for r in reports)
    return {
        "connected": connected,
        "errors": sum(r["errors"] for r in reports),
        "rss_per_conn_kib": (rss_after - rss_before) / max(connected, 1),
        "setup_per_s": connected / max(seconds, 1e-9),
        **_cpu_per_connection(before, after, connected),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "lost": 0,
        **run.cpu_percent(before, after),
    }


def churn(run: Run) -> dict[str, Any]:
    """``churn`` cycles of connect + subscribe + disconnect (MQTT 5, clean start): RSS before and after.

    "Before" is read after a warm-up of a tenth of the cycles (at most 5,000), so that the pools a
    broker fills on its first connections count as its working size, not as growth.
    """
    s = run.settings
    warm = min(5_000, max(1, s.churn // 10))
    rss_fresh = run.broker.rss_kib()
    workers = Workers(2, s.nice)
    try:
        ids = [
            workers.start(
                "churner",
                run_crowd,
                CrowdSpec(
                    "127.0.0.1",
                    run.broker.port,
                    k,
                    0,
                    f"churn{k}",
                    topic_filter="dev/{id}/cmd",
                    qos=1,
                    churn=n,
                    warmup=w,
                    in_flight=16,
                    timeout=300,
                    cpus=run.cpus,
                ),
            )
            for k, (n, w) in enumerate(zip(_split(s.churn, 2), _split(warm, 2), strict=True))
        ]
        for i in ids:
            workers.expect(i, "ready", 30)
        workers.set(RUN)
        _collect(run, workers, ids, "warm", "warm-up cycles")
        time.sleep(SETTLE)
        rss_warm = run.broker.rss_kib()
        before = run.usage(workers)
        workers.set(MEASURE)
        reports = _collect(run, workers, ids, "connected", "cycles")
        after = run.usage(workers)
        time.sleep(SETTLE)
        run.check_broker()
        rss_end = run.broker.rss_kib()
    finally:
        workers.close()
    cycles = _shortfall(run, "churn", reports, "cycles", s.churn)
    seconds = max(r["seconds"] for r in reports)
    return {
        "cycles": cycles,
        "errors": sum(r["errors"] for r in reports),
        "cycles_per_s": cycles / max(seconds, 1e-9),
        "growth_kib": rss_end - rss_warm,
        "rss_fresh_kib": rss_fresh,
        "rss_warm_kib": rss_warm,
        "rss_end_kib": rss_end,
        "lost": 0,
        **run.cpu_percent(before, after),
    }


def wide_fan_out(run: Run) -> dict[str, Any]:
    """One message at a time to ``wide_subscribers`` subscribers of one topic, QoS 0 then QoS 1.

    The figure is the time from the publisher's send to the read that brought the message to the
    last subscriber (``Control.marks``): the broker's work plus the generator's reading of 10,000
    sockets, the same for both brokers. Subscriptions are QoS 1, so the QoS 1 rounds are delivered
    (and acknowledged) at QoS 1; the next round starts once every subscriber has the message.
    """
    s = run.settings
    workers = Workers(2, s.nice)
    times: dict[int, list[float]] = {0: [], 1: []}
    lost = 0
    sock: socket.socket | None = None
    try:
        ids = _start_crowds(
            run, workers, s.wide_subscribers, "wide", version=p.MQTT_3_1_1, topic_filter=WIDE_TOPIC, qos=1
        )
        workers.set(RUN)
        reports = _collect(run, workers, ids, "connected", "subscribed")
        subscribed = _shortfall(run, "wide_fan_out", reports, "connected", s.wide_subscribers)
        sock, _ = open_client("127.0.0.1", run.broker.port, "wide-pub")
        before = run.usage(workers)
        expected = 0
        for qos, packet_id in [(q, r + 1) for q in (0, 1) for r in range(s.wide_rounds)]:
            expected += subscribed
            frame = encode(p.Publish(WIDE_TOPIC, bytes(32), qos, False, packet_id if qos else None), p.MQTT_3_1_1)
            sent = time.monotonic_ns()
            sock.sendall(frame)
            deadline = time.monotonic() + WIDE_ROUND_TIMEOUT
            while workers.total_received() < expected and time.monotonic() < deadline:
                time.sleep(0.001)
            if workers.total_received() < expected:
                lost = expected - workers.total_received()
                run.notes.append(f"wide_fan_out: QoS {qos} message {packet_id} reached only {subscribed - lost:,}")
                break
            times[qos].append((max(workers.marks) - sent) / 1e6)
            if qos:
                read_packet(sock, Parser(protocol_level=p.MQTT_3_1_1))  # the PUBACK
            run.check_broker()
            run.progress(f"QoS {qos}: last of {subscribed:,} after {times[qos][-1]:,.1f} ms")
            time.sleep(0.1)  # let the subscribers' PUBACKs settle before the next round
        after = run.usage(workers)
        sock.sendall(b"\xe0\x00")
    finally:
        if sock is not None:
            sock.close()
        workers.close()
    metrics: dict[str, Any] = {"subscribers": subscribed, "lost": lost, **run.cpu_percent(before, after)}
    for qos, values in times.items():
        if values:
            metrics[f"qos{qos}_ms"] = statistics.median(values)
            metrics[f"qos{qos}_max_ms"] = max(values)
            metrics[f"qos{qos}_rounds"] = values
    return metrics


def footprint(run: Run) -> dict[str, Any]:
    """Idle broker RSS ``settle`` seconds (one) after start-up; for wrenmq also with the HTTP API and console.

    The API broker is a second wrenmq with ``api_port`` set, asked once for the console page and
    its script, the health check and the metrics (so their modules are loaded) before its RSS is
    read; then, for a third figure, a Socket.IO handshake (python-socketio is imported with the
    first one). Mosquitto has no HTTP API or console: its figure on the API rows is the broker alone.
    """
    s = run.settings
    time.sleep(s.settle)
    rss = run.broker.rss_kib()
    metrics: dict[str, Any] = {"rss_idle_kib": rss, "rss_api_kib": rss, "rss_socketio_kib": rss, "lost": 0}
    if run.broker.name != "wrenmq" or run.workdir is None:
        run.notes.append("footprint: Mosquitto has no HTTP API or console; its 'with API' figure is the broker alone")
        return metrics
    api_port = free_port()
    options = BrokerOptions(wrenmq={"api_port": api_port})
    api = start_broker("wrenmq", run.workdir / "with-api", set(s.broker_cpus), s.nice, options)
    try:
        for path in ("/healthz", "/", "/console/app.js", "/metrics"):
            _get(api_port, path)
        time.sleep(s.settle)
        metrics["rss_api_kib"] = api.rss_kib()
        _get(api_port, "/socket.io/?EIO=4&transport=polling")
        time.sleep(s.settle)
        metrics["rss_socketio_kib"] = api.rss_kib()
    finally:
        api.stop()
    return metrics


def _get(port: int, path: str) -> None:
    """One GET to the API, retried until it listens; any HTTP answer will do (the route's code ran)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
            return
        except urllib.error.HTTPError:
            return  # answered (a sign-in is wanted): the route's code is loaded
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
