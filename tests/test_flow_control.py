"""Flow control and slow consumers: bounded write buffers, bounded session queues, no one else held back.

Most of this is the broker's own promise (issues 3 and 14, STYLE.md habit 4) within what the spec allows:
QoS 0 is "at most once" (section 4.3.1), so a subscriber that cannot keep up may lose QoS 0 messages, and
MQTT 5 lets a sender suspend QoS 0 when its peer is saturated [MQTT-4.9.0-2]; QoS 1/2 messages pending
transmission are session state (section 4.1) and arrive in order [MQTT-4.6.0-6]. What the tests hold the
broker to: a client's write buffer stays near ``max_write_buffer``, its session queue within
``max_queued_messages`` and ``max_queued_bytes``, a publisher is never paused for a subscriber's sake (a slow
subscriber costs only itself), and every message dropped is counted. The slow-consumer timeout that ends
such a client's connection is tested in tests/test_fairness.py.

A "slow subscriber" is a raw socket with a small receive buffer that subscribes and then stops reading.
The broker runs with small buffers (16 KiB high, 4 KiB low, 64 KiB cap) to keep the volumes small.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttraw import RawClient
from paho_sync import PROTOCOLS, PahoFactory
from wrenmq.broker import Broker
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode
from wrenmq.mqtt.properties import PropertyId
from wrenmq.pytest_plugin import WrenmqServer

KiB = 1024
LIMITS = {"write_buffer_high": 16 * KiB, "write_buffer_low": 4 * KiB, "max_write_buffer": 64 * KiB}
# What may land on a full buffer before the cap takes effect: one flush's worth (high-water) and a message or two.
SLACK = LIMITS["write_buffer_high"] + 4 * KiB
PATIENCE = 2.0  # seconds of slack for work that should be prompt, on a loaded machine


class SlowClient(RawClient):
    """A raw client with a small SO_RCVBUF (set before connecting, so the TCP window stays small): once it
    stops reading, the broker's writes to it back up after a few KiB instead of filling megabytes of kernel buffer."""

    def __init__(self, port: int, version: int = 4, rcvbuf: int = 4 * KiB) -> None:
        self.version = version
        self.timeout = 5.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.timeout)
        self.sock.connect(("127.0.0.1", port))
        self.parser = Parser(protocol_level=version)
        self.pending: list[p.AnyPacket] = []
        self._next_pid = 0


_open_clients: list[RawClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def start(factory: Callable[..., WrenmqServer], **overrides: Any) -> WrenmqServer:
    return factory(**{**LIMITS, **overrides})


def client(server: WrenmqServer, client_id: str, version: int = 4, slow: bool = False, **connect: Any) -> RawClient:
    """A connected raw client (closed after the test); ``slow`` gives it a small receive buffer."""
    c = SlowClient(server.port, version) if slow else RawClient(server.port, version)
    _open_clients.append(c)
    assert c.connect(client_id, **connect).reason_code == 0
    return c


async def _snapshot(broker: Broker, client_id: str) -> dict[str, Any]:
    """Flow-control state of ``client_id``'s connection and session, read on the broker's loop."""
    state: dict[str, Any] = {"connected": False}
    session = broker.sessions.get(client_id)
    if session is not None:
        state.update(
            queued=len(session.queue),
            queued_bytes=session.queued_bytes,
            inflight=len(session.inflight_out),
            dropped=session.dropped,
        )
    for conn in broker.connections:
        if conn.client_id == client_id and conn.transport is not None and not conn.closed:
            state.update(
                connected=True,
                buffer=conn.transport.get_write_buffer_size(),
                paused=conn.reading_paused,
                congested=conn.congested,
            )
    return state


def state(server: WrenmqServer, client_id: str) -> dict[str, Any]:
    return server.call(_snapshot(server.broker, client_id))


def wait_for(server: WrenmqServer, client_id: str, key: str, value: Any, timeout: float) -> float:
    """Poll ``client_id``'s state until ``key`` equals ``value``; returns the time it happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(server, client_id).get(key) == value:
            return time.monotonic()
        time.sleep(0.005)
    raise AssertionError(f"{client_id}: {key} did not become {value!r} within {timeout}s: {state(server, client_id)}")


def publishes(topic: str, count: int, size: int = KiB, qos: int = 0, tag: bytes = b"") -> list[bytes]:
    """``count`` encoded PUBLISH packets whose payloads start with ``tag`` and a sequence number."""
    out = []
    for seq in range(count):
        head = tag + b"%08d:" % seq
        pid = seq % 65535 + 1 if qos else None
        out.append(encode(p.Publish(topic, head + b"x" * (size - len(head)), qos, False, pid), 4))
    return out


def seq_of(packet: p.Publish, tag: bytes = b"") -> int:
    return int(packet.payload[len(tag) : len(tag) + 8])


def flood(c: RawClient, packets: list[bytes], batch: int = 64) -> None:
    """Send ``packets`` in batches (blocking while the broker holds the publisher back), then wait for a
    PINGRESP: the broker has read, and so routed, all of them."""
    c.sock.settimeout(10.0)
    for i in range(0, len(packets), batch):
        c.sock.sendall(b"".join(packets[i : i + batch]))
    c.send(p.Pingreq())
    deadline = time.monotonic() + 10.0
    while not isinstance(c.recv(max(0.01, deadline - time.monotonic())), p.Pingresp):
        pass  # PUBACKs for a QoS 1 flood


def drain(c: RawClient, count: int | None = None, idle: float = 0.5, timeout: float = 10.0) -> list[p.Publish]:
    """Read PUBLISHes (acknowledging QoS 1) until ``count`` arrived, or nothing came for ``idle`` seconds."""
    got: list[p.Publish] = []
    deadline = time.monotonic() + timeout
    while (count is None or len(got) < count) and time.monotonic() < deadline:
        try:
            packet = c.recv(idle)
        except TimeoutError:
            if count is None:
                break
            continue
        if isinstance(packet, p.Publish):
            got.append(packet)
            if packet.qos == 1:
                c.send(p.Puback(packet.packet_id))
    return got


def wait_received(server: WrenmqServer, count: int, timeout: float) -> None:
    """Wait until the broker has read ``count`` PUBLISHes (the kernel may have taken them long before)."""
    deadline = time.monotonic() + timeout
    while server.broker.stats.messages_received < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.broker.stats.messages_received == count, f"{server.broker.stats.messages_received} read"


def in_background(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


async def _publish_many(broker: Broker, topic: str, count: int, size: int) -> None:
    for seq in range(count):
        await broker.publish(topic, b"%08d:" % seq + b"x" * (size - 9))


def congest(server: WrenmqServer, topic: str, client_id: str, count: int = 4000) -> None:
    """Publish in-process to ``topic`` until the stopped subscriber ``client_id`` is congested."""
    server.call(_publish_many(server.broker, topic, count, KiB))
    assert state(server, client_id)["congested"], state(server, client_id)


def assert_working(server: WrenmqServer, tag: str) -> None:
    """A new client can connect, subscribe, publish QoS 1 and receive it, promptly."""
    started = time.monotonic()
    with RawClient(server.port, 5, timeout=2.0) as c:
        assert c.connect(f"probe-{tag}").reason_code == 0
        c.subscribe(f"probe/{tag}", 1)
        c.send(p.Publish(f"probe/{tag}", b"alive", 1, packet_id=1))
        got = {type(packet): packet for packet in (c.recv(), c.recv())}  # the PUBACK and its own copy
        assert got[p.Puback].reason_code == 0 and got[p.Publish].payload == b"alive"
        c.send(p.Puback(got[p.Publish].packet_id))
        c.disconnect()
    assert time.monotonic() - started < 1.5


# -- QoS 0: bounded buffers, drops counted -----------------------------------------------------


def test_slow_qos0_subscriber_write_buffer_is_bounded(wrenmq_server_factory):  # section 4.3.1: QoS 0 may be lost
    server = start(wrenmq_server_factory)
    slow = client(server, "slow", slow=True)
    slow.subscribe("flood/#", 0)
    pub = client(server, "pub")
    total = 20_000  # 20 MB in 1 KiB messages
    flood(pub, publishes("flood/a", total))
    slow_state = state(server, "slow")
    assert slow_state["connected"]
    assert slow_state["buffer"] <= LIMITS["max_write_buffer"] + SLACK, slow_state
    stats = server.broker.stats
    assert stats.messages_received == total
    assert stats.messages_dropped > 0
    assert stats.messages_sent + stats.messages_dropped == total  # every message is sent or counted as dropped
    assert not state(server, "pub")["paused"]


def test_slow_subscriber_does_not_stall_others(wrenmq_server_factory):  # [MQTT-4.6.0-6] for the fast subscriber
    server = start(wrenmq_server_factory)
    slow = client(server, "slow", slow=True)
    slow.subscribe("shared/topic", 0)
    congest(server, "shared/topic", "slow")
    fast = client(server, "fast")
    fast.subscribe("shared/topic", 0)
    pub = client(server, "pub")
    dropped = server.broker.stats.messages_dropped
    started = time.monotonic()
    flood(pub, publishes("shared/topic", 200, tag=b"after"))
    got = drain(fast, 200, timeout=3.0)
    assert [seq_of(m, b"after") for m in got] == list(range(200))
    assert time.monotonic() - started < 1.5  # not held back for the slow subscriber's sake
    assert not state(server, "pub")["paused"]
    assert server.broker.stats.messages_dropped - dropped == 200  # the slow subscriber's copies, counted
    assert_working(server, "other")
    assert state(server, "slow")["connected"]


# -- no backpressure on publishers -----------------------------------------------------------------


def test_publisher_never_paused_for_a_full_subscriber(wrenmq_server_factory):  # section 4.3.1, issue 14
    """A subscriber that stops reading does not hold its publisher back: the flood is read at once,
    what the subscriber cannot take is dropped and counted, and what it gets arrives in order."""
    server = start(wrenmq_server_factory)
    slow = client(server, "slow", slow=True)
    slow.subscribe("bp/#", 0)
    pub = client(server, "pub")
    total = 8000
    paused: list[bool] = []
    flooding = in_background(lambda: flood(pub, publishes("bp/t", total)))
    while flooding.is_alive():
        paused.append(state(server, "pub")["paused"])
        time.sleep(0.01)
    assert not any(paused)  # never, not even for a moment
    assert state(server, "slow")["congested"]
    got = drain(slow, idle=1.0)
    seqs = [seq_of(m) for m in got]
    assert seqs == sorted(set(seqs))  # in order, none twice [MQTT-4.6.0-6]
    stats = server.broker.stats
    assert stats.messages_received == total
    assert stats.dropped_congested > 0
    assert len(got) == stats.messages_sent  # everything not dropped arrives
    assert len(got) + stats.messages_dropped == total


# -- QoS 1: the session queue ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_qos1_to_slow_subscriber_waits_in_session_queue(wrenmq_server_factory, version):  # [MQTT-4.6.0-6]
    # The in-flight window is wide open, so what holds messages back is the transport, not Receive Maximum;
    # the queue is large enough for all of them, so none may be lost.
    server = start(wrenmq_server_factory, max_inflight_messages=65535, max_queued_messages=5000, max_queued_bytes=0)
    persistent = {PropertyId.SESSION_EXPIRY_INTERVAL: 300} if version == 5 else None
    slow = client(server, "slowq", version, slow=True, clean=False, properties=persistent)
    slow.subscribe("q/t", 1)
    pub = client(server, "pub")
    total = 5000
    flood(pub, publishes("q/t", total, qos=1))
    stuck = state(server, "slowq")
    assert stuck["queued"] > 0 and stuck["congested"], stuck
    assert stuck["buffer"] <= LIMITS["max_write_buffer"] + SLACK, stuck
    assert stuck["dropped"] == 0 and server.broker.stats.messages_dropped == 0
    got = drain(slow, total)
    assert [seq_of(m) for m in got] == list(range(total))
    assert all(m.qos == 1 and not m.dup for m in got)
    slow.send(p.Pingreq())
    slow.expect(p.Pingresp)  # all acknowledged: nothing more follows
    done = state(server, "slowq")
    assert (done["queued"], done["inflight"], done["dropped"]) == (0, 0, 0)


def test_qos1_session_queue_overflow_is_dropped_and_counted(wrenmq_server_factory):  # section 4.1 bounds
    server = start(wrenmq_server_factory, max_inflight_messages=65535, max_queued_messages=50)
    slow = client(server, "slowq", slow=True, clean=False)
    slow.subscribe("q/t", 1)
    pub = client(server, "pub")
    total = 5000
    flood(pub, publishes("q/t", total, qos=1))
    stuck = state(server, "slowq")
    assert stuck["queued"] == 50
    assert stuck["dropped"] > 0 and stuck["dropped"] == server.broker.stats.messages_dropped
    got = drain(slow, total - stuck["dropped"])
    assert len(got) == total - stuck["dropped"]
    seqs = [seq_of(m) for m in got]
    assert seqs == list(range(len(got)))  # drop_new: the newest are dropped, the rest arrive in order
    slow.nothing(0.3)


# Each delivery counts its topic and payload against max_queued_bytes: 4 + 1024 bytes for these.
ITEM = 4 + KiB


def offline_session(server: WrenmqServer, client_id: str, topic: str) -> None:
    """A persistent session subscribed to ``topic`` at QoS 1, its client gone."""
    c = client(server, client_id, clean=False)
    c.subscribe(topic, 1)
    c.disconnect()
    wait_for(server, client_id, "connected", False, timeout=5.0)


async def _publish_qos1(broker: Broker, topic: str, count: int) -> None:
    for seq in range(count):
        await broker.publish(topic, b"%08d:" % seq + b"x" * (KiB - 9), 1)


def receive_queue(server: WrenmqServer, client_id: str, count: int) -> list[int]:
    """Reconnect ``client_id`` and read its ``count`` queued messages (then nothing more: a PINGRESP)."""
    again = client(server, client_id, clean=False)
    got = drain(again, count)
    again.send(p.Pingreq())
    again.expect(p.Pingresp)  # the sentinel: nothing else was queued
    return [seq_of(m) for m in got]


@pytest.mark.parametrize("policy", ["drop_new", "drop_oldest"])
def test_session_queue_bounded_by_bytes(wrenmq_server_factory, policy):  # section 4.1 bounds, issue 14 item 17
    server = start(wrenmq_server_factory, max_queued_messages=1000, max_queued_bytes=10 * KiB, queue_drop_policy=policy)
    offline_session(server, "offline", "qb/t")
    server.call(_publish_qos1(server.broker, "qb/t", 50))
    fits = 10 * KiB // ITEM  # 9
    queued = state(server, "offline")
    assert (queued["queued"], queued["queued_bytes"], queued["dropped"]) == (fits, fits * ITEM, 50 - fits)
    assert server.broker.stats.dropped_queue_full == 50 - fits
    expected = list(range(fits)) if policy == "drop_new" else list(range(50 - fits, 50))
    assert receive_queue(server, "offline", fits) == expected
    assert state(server, "offline")["queued_bytes"] == 0


def test_message_larger_than_the_byte_bound_is_dropped(wrenmq_server_factory):  # issue 14 item 17
    """drop_oldest does not empty a queue for a message that could never fit in it."""
    server = start(wrenmq_server_factory, max_queued_bytes=4 * KiB, queue_drop_policy="drop_oldest")
    offline_session(server, "offline", "qb/#")
    server.call(_publish_qos1(server.broker, "qb/small", 2))
    server.call(server.broker.publish("qb/big", b"%08d:" % 2 + b"x" * (8 * KiB), 1))
    assert (state(server, "offline")["queued"], server.broker.stats.dropped_queue_full) == (2, 1)
    assert receive_queue(server, "offline", 2) == [0, 1]


@pytest.mark.parametrize("policy", ["drop_new", "drop_oldest"])
def test_stored_queue_restored_within_todays_bounds(wrenmq_server_factory, tmp_path, policy):  # issue 14 item 17
    """A queue stored under larger bounds is cut to the current ones on start-up, by the policy, and
    what is cut is deleted from storage too (counted as dropped)."""
    settings: dict[str, Any] = {"storage": "sqlite", "data_dir": tmp_path, "queue_drop_policy": policy}
    first = start(wrenmq_server_factory, **settings, max_queued_messages=1000, max_queued_bytes=0)
    offline_session(first, "offline", "qr/t")
    first.call(_publish_qos1(first.broker, "qr/t", 50))
    assert state(first, "offline")["queued"] == 50
    first.stop()
    fits = 8 * KiB // ITEM  # 7: the byte bound binds before the count (10)
    second = start(wrenmq_server_factory, **settings, max_queued_messages=10, max_queued_bytes=8 * KiB)
    restored = state(second, "offline")
    assert (restored["queued"], restored["queued_bytes"]) == (fits, fits * ITEM)
    assert second.broker.stats.dropped_queue_full == 50 - fits
    second.stop()
    third = start(wrenmq_server_factory, **settings, max_queued_messages=1000, max_queued_bytes=0)
    assert state(third, "offline")["queued"] == fits  # the rest were deleted, not just left behind
    expected = list(range(fits)) if policy == "drop_new" else list(range(50 - fits, 50))
    assert receive_queue(third, "offline", fits) == expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_clients_unaffected_by_stuck_qos1_subscriber(wrenmq_server_factory, protocol):  # [MQTT-4.6.0-6]
    server = start(wrenmq_server_factory, max_queued_messages=5000, max_queued_bytes=0)
    slow = client(server, "slow", slow=True, clean=False)
    slow.subscribe("paho/#", 1)
    paho = PahoFactory(server.port)
    try:
        fast = paho(protocol, "fast")
        fast.subscribe("paho/t", 1)
        pub = paho(protocol, "pub")
        total = 3000
        started = time.monotonic()
        infos = [pub.client.publish("paho/t", b"%08d:" % i + b"x" * 1015, 1) for i in range(total)]
        for info in infos:
            info.wait_for_publish(max(0.01, started + PATIENCE + 4.0 - time.monotonic()))
        assert all(info.is_published() for info in infos)  # every PUBACK came, the stuck subscriber notwithstanding
        got = fast.receive(total, timeout=5.0)
        assert [int(m.payload[:8]) for m in got] == list(range(total))
        stuck = state(server, "slow")
        assert stuck["queued"] > 0 and stuck["dropped"] == 0, stuck
    finally:
        paho.close()


# -- clients that never read ------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
def test_client_publishing_to_itself_without_reading_does_not_wedge(wrenmq_server_factory, qos):  # STYLE habit 4
    server = start(wrenmq_server_factory, max_queued_messages=100)
    loop = client(server, "loop", slow=True)
    loop.subscribe("loop/#", qos)
    total = 8000 if qos == 0 else 3000
    loop.sock.settimeout(10.0)
    packets = publishes("loop/x", total, qos=qos)
    sender = in_background(lambda: [loop.sock.sendall(b"".join(packets[i : i + 64])) for i in range(0, total, 64)])
    sender.join(PATIENCE + 3.0)
    assert not sender.is_alive()
    wait_received(server, total, PATIENCE + 1.0)  # the broker kept reading it
    assert_working(server, "while-looping")
    stuck = state(server, "loop")
    if stuck["connected"]:
        # Recovers: once it reads again, the buffered output arrives and it is served as before.
        assert stuck["buffer"] <= LIMITS["max_write_buffer"] + SLACK + total * 4, stuck  # + PUBACKs
        acks = 0
        loop.send(p.Pingreq())
        deadline = time.monotonic() + 5.0
        while True:
            packet = loop.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(packet, p.Pingresp):
                break
            if isinstance(packet, p.Puback):
                acks += 1
            elif isinstance(packet, p.Publish) and packet.qos == 1:
                loop.send(p.Puback(packet.packet_id))
        assert acks == (total if qos else 0)  # every inbound QoS 1 acknowledged [MQTT-4.3.2-4]
    else:
        loop.expect_closed(2.0)  # or the broker gave up on it: also bounded


def test_two_clients_feeding_each_other_without_reading_do_not_deadlock(wrenmq_server_factory):  # STYLE habit 4
    server = start(wrenmq_server_factory)
    a = client(server, "a", slow=True)
    b = client(server, "b", slow=True)
    a.subscribe("to-a/#", 0)
    b.subscribe("to-b/#", 0)
    to_b, to_a = publishes("to-b/x", 4000), publishes("to-a/x", 4000)
    a.sock.settimeout(10.0)
    b.sock.settimeout(10.0)
    senders = [
        in_background(lambda: [a.sock.sendall(b"".join(to_b[i : i + 64])) for i in range(0, 4000, 64)]),
        in_background(lambda: [b.sock.sendall(b"".join(to_a[i : i + 64])) for i in range(0, 4000, 64)]),
    ]
    for sender in senders:
        sender.join(2 * PATIENCE + 3.0)
        assert not sender.is_alive()
    wait_received(server, 8000, 2 * PATIENCE + 3.0)  # neither is held back for the other
    assert_working(server, "mutual")
    for name in ("a", "b"):
        s = state(server, name)
        assert s["buffer"] <= LIMITS["max_write_buffer"] + SLACK, s


def test_stuck_subscriber_closed_on_keep_alive_and_will_sent(wrenmq_server_factory):  # [MQTT-3.1.2-24], [MQTT-3.1.2-8]
    server = start(wrenmq_server_factory)
    watcher = client(server, "watcher")
    watcher.subscribe("will/stuck", 0)
    stuck = client(server, "stuck", slow=True, keep_alive=1, will=p.Will("will/stuck", b"gone"))
    stuck.subscribe("stuck/#", 0)
    congest(server, "stuck/x", "stuck")
    # It neither reads nor sends: keep-alive expires after 1.5 s, though its output can never be flushed.
    will = watcher.expect(p.Publish, timeout=1.5 + PATIENCE + 2.0)
    assert (will.topic, will.payload) == ("will/stuck", b"gone")
    assert not state(server, "stuck")["connected"]
    again = client(server, "stuck")  # the client id is free again
    again.disconnect()


def test_client_that_never_reads_its_replies_is_dropped(wrenmq_server_factory):  # section 4.13: bounded resources
    """Replies the broker owes (here PINGRESP to a PINGREQ flood) are never dropped like QoS 0 messages, so a
    client that sends without ever reading would grow its output buffer without bound: past twice
    max_write_buffer it is disconnected as a stuck consumer, its will is published, others carry on."""
    server = start(wrenmq_server_factory)
    watcher = client(server, "watcher")
    watcher.subscribe("will/flooder", 0)
    flooder = client(server, "flooder", slow=True, will=p.Will("will/flooder", b"dropped"))
    burst = b"\xc0\x00" * 8192  # 8,192 PINGREQs; each owes a 2-byte PINGRESP
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            flooder.sock.sendall(burst)
    except OSError:
        pass  # the broker dropped the connection mid-send: the point of the test
    will = watcher.expect(p.Publish, timeout=5.0)
    assert (will.topic, will.payload) == ("will/flooder", b"dropped")
    assert not state(server, "flooder")["connected"]
    assert server.broker.stats.slow_consumers_dropped == 1
    assert_working(server, "after-flood")
