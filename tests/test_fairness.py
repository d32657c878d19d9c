"""Fairness under hostile load (issue 14, item 14): a slow subscriber costs only itself.

A client that does not read its socket gets its QoS 0 messages dropped (counted) and its QoS 1/2
messages queued in its session, within ``max_queued_messages`` and ``max_queued_bytes``; once it has
stayed at that cap without draining for ``slow_consumer_timeout`` it is disconnected (counted,
logged once). No publisher is held back for its sake, so other clients' latency does not move.
QoS 0 may be lost (section 4.3.1); QoS 1/2 pending transmission are session state (section 4.1).

The load test runs the broker and the hostile clients in processes of their own (so their threads
do not compete with the healthy pair for this process's GIL); ``tests/fairness_load.py probe`` is
the longer on-demand version, against wrenmq or Mosquitto.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fairness_load import PairResult, healthy_pair, start_load
from hookrec import CountDrops, add_hook
from mqttraw import RawClient
from serveproc import clean_env, free_port, serve_command
from wrenmq.broker import Broker
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode
from wrenmq.pytest_plugin import WrenmqServer

KiB = 1024
SLOW_CONSUMER_TIMEOUT = 1.5
SWEEP = 0.25  # broker.SWEEP_INTERVAL: timeouts are enforced up to this late
LIMITS = {
    "write_buffer_high": 16 * KiB,
    "write_buffer_low": 4 * KiB,
    "max_write_buffer": 64 * KiB,
    "max_queued_messages": 100,
    "max_queued_bytes": 40 * KiB,
    "slow_consumer_timeout": SLOW_CONSUMER_TIMEOUT,
}


class SmallWindowClient(RawClient):
    """A raw client with a 4 KiB receive buffer (set before connecting, so the TCP window stays
    small): once it stops reading, the broker's writes to it back up after a few KiB."""

    def __init__(self, port: int, version: int = 4) -> None:
        self.version = version
        self.timeout = 5.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KiB)
        self.sock.settimeout(self.timeout)
        self.sock.connect(("127.0.0.1", port))
        self.parser = Parser(protocol_level=version)
        self.pending: list[p.AnyPacket] = []
        self._next_pid = 0


_open: list[RawClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def client(server: WrenmqServer, client_id: str, version: int = 4, small: bool = False, **connect: Any) -> RawClient:
    c = SmallWindowClient(server.port, version) if small else RawClient(server.port, version)
    _open.append(c)
    assert c.connect(client_id, **connect).reason_code == 0
    return c


async def _state(broker: Broker, client_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {"connected": False}
    session = broker.sessions.get(client_id)
    if session is not None:
        state.update(queued=len(session.queue), queued_bytes=session.queued_bytes, inflight=len(session.inflight_out))
    for conn in broker.connections:
        if conn.client_id == client_id and conn.transport is not None and not conn.closed:
            state.update(connected=True, buffer=conn.transport.get_write_buffer_size(), paused=conn.reading_paused)
    return state


def state(server: WrenmqServer, client_id: str) -> dict[str, Any]:
    return server.call(_state(server.broker, client_id))


async def _publish_many(broker: Broker, topic: str, count: int, size: int, qos: int) -> None:
    for seq in range(count):
        await broker.publish(topic, b"%08d:" % seq + b"x" * (size - 9), qos)


def wait_disconnected(server: WrenmqServer, client_id: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not state(server, client_id)["connected"]:
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{client_id} still connected after {timeout}s: {state(server, client_id)}")


def slow_consumer_warnings(caplog: pytest.LogCaptureFixture, client_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "slow consumer" in r.getMessage() and client_id in r.getMessage()
    ]


# -- the done criterion: a healthy pair under hostile load ------------------------------------------


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log_file = tmp_path / "broker.log"
    env = clean_env(
        WRENMQ_SLOW_CONSUMER_TIMEOUT="2",
        WRENMQ_CONNECT_TIMEOUT="2",
        WRENMQ_LOG_LEVEL="warning",
    )
    with log_file.open("w") as log_out:
        proc = subprocess.Popen(serve_command(port, tmp_path), env=env, stderr=log_out)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, "the broker did not start"
                time.sleep(0.05)
        yield port, log_file
        assert proc.poll() is None, "the broker died under the load"
        proc.terminate()
        proc.wait(10)


def test_healthy_qos1_pair_keeps_its_latency_under_hostile_load(broker_process):  # section 4.3.2, issue 14 item 14
    """Non-reading ``#`` subscribers (a new one every 0.5 s, all along), three publishers sending a thousand
    1 KiB messages a second each, silent and slowloris connections and connect/close churn: a QoS 1
    pair that reads promptly loses nothing and keeps p99 under 50 ms; every non-reader is
    disconnected about ``slow_consumer_timeout`` (2 s) after it reached its cap, and logged once.

    The machine is shared: one 100 ms moment in which the OS runs something else instead of the
    broker says nothing about fairness but spoils a 4-second window's p99. So the pair is measured
    in windows of 4 s, each with new non-readers arriving: the median must be low in every one, the
    p99 in one of up to three. (Before the fix every window had a p99 near 2 s.)"""
    port, log_file = broker_process
    load = start_load(
        port, duration=30, nonreaders=30, nonreader_every=0.5, publishers=3, rate=1000, silent=10, slowloris=10
    )
    started = time.monotonic()
    windows: list[PairResult] = []
    try:
        time.sleep(1.0)  # the first non-readers are stuck and the publishers at full speed
        while len(windows) < 3 and not (windows and windows[-1].p99 < 50.0):
            pair = healthy_pair(port, duration=4.0, rate=100)
            windows.append(pair)
            figures = [f"p50 {w.p50:.1f} ms, p99 {w.p99:.1f} ms" for w in windows]
            assert pair.received == list(range(pair.sent)), f"sent {pair.sent}, received {len(pair.received)}"
            assert pair.sent >= 300
            assert pair.p50 < 10.0, figures
        time.sleep(max(0.0, started + 9.0 - time.monotonic()))  # some non-readers 2 s at their cap, and more
        report = json.loads(load.communicate("stop\n", timeout=60)[0])
    finally:
        load.kill()
    assert windows[-1].p99 < 50.0, figures
    assert report["published"] >= 3 * 1000 * 4, report  # the hostile publishers were not held back either
    nonreaders = report["nonreaders"]
    # Each is at its cap within a second of subscribing (the flood fills its buffer fast); 2 s later
    # and a sweep it is gone. Those open for 4 s or more must be.
    due = [r for r in nonreaders if r["open_s"] >= 4.0]
    assert len(due) >= 8 and all(r["closed"] for r in due), nonreaders
    warnings = [line for line in log_file.read_text().splitlines() if "slow consumer" in line]
    named = [line.split("client ", 1)[1].split()[0] for line in warnings]
    assert len(named) >= len(due) and len(set(named)) == len(named), warnings  # logged once each
    assert all(name.startswith("nonreader-") for name in named), warnings


# -- a non-reading client is bounded, then disconnected -----------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
def test_nonreading_subscriber_bounded_then_disconnected_after_timeout(wrenmq_server_factory, caplog, qos):
    # section 4.3.1 (QoS 0 may be lost), section 4.1 (QoS 1 queued in the session, bounded)
    server = wrenmq_server_factory(**LIMITS)
    watcher = client(server, "watcher")
    watcher.subscribe("will/stuck", 0)
    stuck = client(server, "stuck", small=True, will=p.Will("will/stuck", b"gone"))
    stuck.subscribe("#", qos)
    drops = CountDrops()  # what a trace is told: each drop, with its reason
    add_hook(server, drops)
    stats = server.broker.stats
    started = time.monotonic()
    server.call(_publish_many(server.broker, "flood/t", 6000, KiB, qos))  # 6 MB: past what the kernels buffer
    capped = state(server, "stuck")
    assert capped["connected"], capped
    assert capped["buffer"] <= LIMITS["max_write_buffer"] + LIMITS["write_buffer_high"] + 4 * KiB, capped
    assert capped["queued"] <= LIMITS["max_queued_messages"], capped
    assert capped["queued_bytes"] <= LIMITS["max_queued_bytes"], capped
    if qos:
        assert capped["queued"] > 0 and stats.dropped_queue_full > 0
    else:
        assert capped["queued"] == 0 and stats.dropped_congested > 0
    assert stats.messages_sent + stats.messages_dropped + capped["queued"] >= 6000  # each sent, queued or counted
    gone = wait_disconnected(server, "stuck", SLOW_CONSUMER_TIMEOUT + 3.0)
    assert gone - started >= SLOW_CONSUMER_TIMEOUT - SWEEP  # not before its time at the cap
    assert stats.slow_consumers_dropped == 1
    told = drops.counts[("stuck", "queue_full" if qos else "congested")]
    assert told == (stats.dropped_queue_full if qos else stats.dropped_congested) > 0
    assert drops.counts[("stuck", "slow_consumer")] == 1
    will = watcher.expect(p.Publish)  # a network close, not a DISCONNECT: the will is published
    assert (will.topic, will.payload) == ("will/stuck", b"gone")
    assert len(slow_consumer_warnings(caplog, "stuck")) == 1  # logged once


def test_slow_but_reading_subscriber_is_not_disconnected(wrenmq_server_factory):  # section 4.3.1
    """A client that reads, slowly, drains: each time its buffer shrinks its clock starts again.
    Fed far faster than it reads for longer than the timeout, it loses QoS 0 messages (counted)
    but keeps its connection."""
    server = wrenmq_server_factory(**LIMITS)
    slow = client(server, "slow-reader", small=True)
    slow.subscribe("slow/t", 0)
    stop = threading.Event()

    def feed() -> None:  # about 10 MB/s, for a reader of well under 1 MB/s
        while not stop.is_set():
            server.call(_publish_many(server.broker, "slow/t", 500, KiB, 0))
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    feeder.start()
    received = 0
    slow.sock.settimeout(5.0)
    try:
        while time.monotonic() - started < SLOW_CONSUMER_TIMEOUT + 2.0:
            slow.pending.extend(slow.parser.feed(slow.sock.recv(4 * KiB)))
            received += sum(isinstance(x, p.Publish) for x in slow.pending)
            slow.pending.clear()
            time.sleep(0.005)
    finally:
        stop.set()
        feeder.join(10)
    assert server.broker.stats.dropped_congested > 0  # it was past high-water, at its cap
    slow.send(p.Pingreq())
    while not isinstance(slow.recv(5.0), p.Pingresp):  # the sentinel: still connected after all that
        received += 1
    assert received > 0
    assert server.broker.stats.slow_consumers_dropped == 0


def test_client_not_acknowledging_at_full_queue_is_disconnected_with_reason(wrenmq_server_factory, caplog):
    # [MQTT-3.3.4-9]: the broker stops at the client's Receive Maximum, so the queue fills; the client
    # reads, so it is told why it goes: DISCONNECT 0x97 Quota exceeded [MQTT-4.13.2-1 context].
    server = wrenmq_server_factory(**LIMITS)
    props = {PropertyId.RECEIVE_MAXIMUM: 10, PropertyId.SESSION_EXPIRY_INTERVAL: 300}
    lazy = client(server, "lazy", 5, properties=props)
    lazy.subscribe("lazy/t", 1)
    server.call(_publish_many(server.broker, "lazy/t", 300, 100, 1))
    capped = state(server, "lazy")
    assert (capped["inflight"], capped["queued"]) == (10, LIMITS["max_queued_messages"]), capped
    started = time.monotonic()
    seen = lazy.expect_closed(SLOW_CONSUMER_TIMEOUT + 3.0)
    assert time.monotonic() - started >= SLOW_CONSUMER_TIMEOUT - 2 * SWEEP
    assert sum(isinstance(x, p.Publish) for x in seen) == 10
    assert isinstance(seen[-1], p.Disconnect) and seen[-1].reason_code == ReasonCode.QUOTA_EXCEEDED
    assert server.broker.stats.slow_consumers_dropped == 1
    assert len(slow_consumer_warnings(caplog, "lazy")) == 1
    # The session stays for its expiry interval with its bounded queue: a new connection gets it all.
    again = client(server, "lazy", 5, clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 300})
    got = []
    while len(got) < 10 + LIMITS["max_queued_messages"]:
        packet = again.expect(p.Publish)
        got.append(int(packet.payload[:8]))
        again.send(p.Puback(packet.packet_id))
    assert got == list(range(len(got)))  # the 10 in flight again (DUP), then the queue in order


def test_acknowledging_client_at_full_queue_is_not_disconnected(wrenmq_server_factory):  # section 4.1
    """A client whose queue is full but that acknowledges, however slowly, is draining: it stays."""
    server = wrenmq_server_factory(**LIMITS)
    props = {PropertyId.RECEIVE_MAXIMUM: 10}
    steady = client(server, "steady", 5, properties=props)
    steady.subscribe("steady/t", 1)
    server.call(_publish_many(server.broker, "steady/t", 300, 100, 1))
    started = time.monotonic()
    received = 0
    while received < 10 + LIMITS["max_queued_messages"]:
        packet = steady.expect(p.Publish)
        received += 1
        time.sleep(0.02)  # 110 messages at 50 a second: longer than the timeout
        steady.send(p.Puback(packet.packet_id))
    assert time.monotonic() - started > SLOW_CONSUMER_TIMEOUT
    steady.send(p.Pingreq())
    steady.expect(p.Pingresp)
    assert server.broker.stats.slow_consumers_dropped == 0


def test_slow_consumer_timeout_zero_keeps_a_stuck_client(wrenmq_server_factory):  # config: 0 disables
    server = wrenmq_server_factory(**{**LIMITS, "slow_consumer_timeout": 0})
    stuck = client(server, "stuck", small=True)
    stuck.subscribe("#", 0)
    server.call(_publish_many(server.broker, "flood/t", 6000, KiB, 0))
    time.sleep(SLOW_CONSUMER_TIMEOUT + 2 * SWEEP)
    assert state(server, "stuck")["connected"]
    assert server.broker.stats.slow_consumers_dropped == 0


def test_shared_subscription_passes_over_a_congested_member(wrenmq_server_factory):  # [MQTT-4.8.2-3]
    """The server may choose any member for each message; it does not choose one that cannot take it
    while another can: a stuck member would only queue (or drop) its share."""
    server = wrenmq_server_factory(**LIMITS)
    stuck = client(server, "stuck-member", small=True)
    stuck.subscribe("flood/#", 0)
    stuck.subscribe("$share/g/work", 1)
    healthy = client(server, "healthy-member")
    healthy.subscribe("$share/g/work", 1)
    server.call(_publish_many(server.broker, "flood/t", 6000, KiB, 0))  # fills the stuck member's buffer
    server.call(_publish_many(server.broker, "work", 200, 100, 1))
    got = []
    while len(got) < 200:
        packet = healthy.expect(p.Publish)
        got.append(int(packet.payload[:8]))
        healthy.send(p.Puback(packet.packet_id))
    assert got == list(range(200))
    stuck_state = state(server, "stuck-member")
    assert stuck_state["connected"] and stuck_state["queued"] == 0, stuck_state
    assert server.broker.stats.dropped_queue_full == 0
