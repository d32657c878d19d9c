"""Load-generator worker processes: publishers, subscribers and idle connectors on raw sockets.

Each worker is its own OS process (multiprocessing, spawn), pinned to the generator's cores, and
talks to the coordinator through shared counters and one pipe:

* ``Control.state`` (shared) moves WAIT -> RUN -> MEASURE -> STOP -> EXIT; publishers publish in
  RUN and MEASURE and finish their flows in STOP, subscribers sample latency only in MEASURE and
  leave at EXIT.
* ``Control.sent[slot]`` / ``Control.received[slot]`` (shared, one writer each) are the message
  counts. Publishers use them for credit-based flow control: they stop while more than ``window``
  messages are outstanding (published but not yet received by every subscriber), so a run
  measures what the broker sustains rather than how fast socket buffers fill.
* The pipe carries ``("ready", None)``, then ``("result", dict)`` or ``("error", traceback)``.
"""

from __future__ import annotations

import os
import select
import selectors
import socket
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..mqtt import packets as p
from ..mqtt.codec import Parser, encode
from .frames import VERSION, AckCounter, FrameTemplate, Inbox
from .procfs import raise_nofile_limit

__all__ = [
    "EXIT",
    "MEASURE",
    "RUN",
    "STOP",
    "WAIT",
    "ConnectorSpec",
    "Control",
    "PublisherSpec",
    "SubscriberSpec",
    "run_connector",
    "run_publisher",
    "run_subscriber",
]

WAIT, RUN, MEASURE, STOP, EXIT = range(5)
IDLE = 0.0002  # seconds a publisher sleeps while it has no credit
RECV_SIZE = 1 << 18
# A broker that writes each message with its own send() would wake a subscriber once per message
# and make the generator the bottleneck; after small reads (on average below COALESCE_BYTES), a
# subscriber pauses (COALESCE_MIN, doubling up to COALESCE_MAX) so that its next reads take many
# messages at once. Not in the latency scenario, where every message is read as soon as it arrives;
# the credit windows are far larger than what arrives during a pause, so throughput is not capped.
COALESCE_BYTES = 8 * 1024
COALESCE_MIN = 0.0002
COALESCE_MAX = 0.002
MAX_SAMPLES = 1_000_000
DISCONNECT = b"\xe0\x00"


@dataclass
class Control:
    """The shared objects a worker gets from the coordinator (multiprocessing RawValue/RawArray)."""

    state: Any
    sent: Any
    received: Any
    pipe: Connection
    marks: Any = None  # per slot: time.monotonic_ns() of the latest delivery (wide fan-out)


@dataclass
class PublisherSpec:
    host: str
    port: int
    slot: int
    client_ids: list[str]
    topics: list[str]  # one per client; with ``numbered`` the prefix of numbered topics
    qos: int = 0
    payload: int = 32
    batch: int = 64
    window: int = 0  # max messages outstanding towards subscribers (0: no credit check)
    fanout: int = 1  # deliveries per published message, to convert received counts
    unacked: int = 20_000  # max QoS 1/2 flows in flight per client
    rate: float = 0.0  # messages per second for the whole worker (0: as fast as credit allows)
    count: int = 0  # messages per worker (0: until STOP)
    retain: bool = False
    numbered: bool = False  # each message to its own topic: topics[0] + six digits
    drain_timeout: float = 10.0
    per_packet: bool = False  # one send() per PUBLISH, as paho-mqtt and MQTT.js write
    nodelay: bool = True  # TCP_NODELAY; paho-mqtt and MQTT.js leave Nagle's algorithm on
    cpus: set[int] = field(default_factory=set)


@dataclass
class SubscriberSpec:
    host: str
    port: int
    slot: int
    client_ids: list[str]
    topic_filter: str
    qos: int = 0  # subscription QoS
    sample_topic: str = ""  # a topic of the expected deliveries (its length fixes the frame size)
    delivered_qos: int = 0
    payload: int = 32
    retain: bool = False  # the RETAIN flag expected on deliveries
    sample_all: bool = False  # every message's latency, not only the oldest and newest of each read
    mode: str = "live"  # live | backlog (persistent session reconnects) | storm (subscribes at RUN)
    expected: int = 0  # backlog/storm: messages to wait for
    start_state: int = RUN  # backlog/storm: the state at which to reconnect or subscribe
    timeout: float = 60.0
    coalesce: bool = True  # pause after small reads (see COALESCE_BYTES); real clients do not
    cpus: set[int] = field(default_factory=set)


@dataclass
class ConnectorSpec:
    host: str
    port: int
    slot: int
    count: int
    prefix: str
    in_flight: int = 64  # connection attempts under way at once
    timeout: float = 60.0
    cpus: set[int] = field(default_factory=set)


# --- helpers ---------------------------------------------------------------------------------


def _setup(cpus: set[int], nofile: int | None = None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
    raise_nofile_limit(nofile)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def read_packet(sock: socket.socket, parser: Parser) -> p.AnyPacket:
    """Read exactly one packet (never more), so the bytes after it stay in the socket."""
    data = _recv_exact(sock, 2)
    while data[-1] & 0x80:
        data += _recv_exact(sock, 1)
    length = 0
    for i, byte in enumerate(data[1:]):
        length |= (byte & 0x7F) << (7 * i)
    packets = parser.feed(data + _recv_exact(sock, length))
    return packets[0]


def open_client(
    host: str, port: int, client_id: str, clean: bool = True, timeout: float = 10.0, nodelay: bool = True
) -> tuple[socket.socket, p.Connack]:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if nodelay else 0)
    sock.sendall(encode(p.Connect(client_id, VERSION, clean, keep_alive=0), VERSION))
    connack = read_packet(sock, Parser(protocol_level=VERSION))
    if not isinstance(connack, p.Connack) or connack.reason_code:
        raise ConnectionError(f"{client_id}: connection refused: {connack!r}")
    sock.settimeout(None)  # blocking from here on: MSG_DONTWAIT reads raise BlockingIOError, not a timeout
    return sock, connack


def subscribe(sock: socket.socket, topic_filter: str, qos: int) -> None:
    sock.sendall(encode(p.Subscribe(1, [p.Subscription(topic_filter, qos)]), VERSION))
    suback = read_packet(sock, Parser(protocol_level=VERSION))
    if not isinstance(suback, p.Suback) or suback.reason_codes[0] >= 0x80:
        raise ConnectionError(f"subscription to {topic_filter!r} refused: {suback!r}")


def _wait_state(ctl: Control, at_least: int) -> int:
    while (state := ctl.state.value) < at_least:
        time.sleep(0.002)
    return state


def _report(body: Any, spec: Any, ctl: Control) -> None:
    """Run a worker body; send its result or its traceback through the pipe."""
    try:
        result = body(spec, ctl)
    except BaseException:
        ctl.pipe.send(("error", traceback.format_exc()))
    else:
        times = os.times()
        result["cpu_seconds"] = times.user + times.system  # the coordinator's figure once we are gone
        ctl.pipe.send(("result", result))
    finally:
        ctl.pipe.close()


# --- publisher -----------------------------------------------------------------------------------


class _PubClient:
    __slots__ = ("acks", "pid_index", "sent", "sock", "template", "topic")

    def __init__(self, sock: socket.socket, template: FrameTemplate, topic: str) -> None:
        self.sock = sock
        self.template = template
        self.topic = topic
        self.acks = AckCounter()
        self.pid_index = 0
        self.sent = 0

    def pump_acks(self) -> None:
        """Read whatever acknowledgements are waiting, without blocking; answer PUBRECs."""
        acks = self.acks
        while True:
            try:
                data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                raise ConnectionError("publisher connection closed by the broker")
            acks.feed(data)
            if acks.out:
                self.sock.sendall(acks.out)
                acks.out.clear()


def _publisher(spec: PublisherSpec, ctl: Control) -> dict[str, Any]:
    _setup(spec.cpus)
    clients = []
    for client_id, topic in zip(spec.client_ids, spec.topics, strict=True):
        sock, _ = open_client(spec.host, spec.port, client_id, nodelay=spec.nodelay)
        sample = topic + "000000" if spec.numbered else topic
        clients.append(_PubClient(sock, FrameTemplate(sample, spec.payload, spec.qos, spec.retain), topic))
    ctl.pipe.send(("ready", None))
    _wait_state(ctl, RUN)
    started = time.monotonic()
    total = _publish_numbered(spec, ctl, clients[0]) if spec.numbered else _publish_batches(spec, ctl, clients)
    published = time.monotonic()
    deadline = published + spec.drain_timeout
    if spec.qos:
        while any(c.acks.done < c.sent for c in clients) and time.monotonic() < deadline:
            for c in clients:
                c.pump_acks()
            time.sleep(IDLE)
    acked = sum(c.acks.done for c in clients)
    finished = time.monotonic()
    for c in clients:
        try:
            c.sock.sendall(DISCONNECT)
        except OSError:
            pass
        c.sock.close()
    return {
        "sent": total,
        "acked": acked,
        "publish_seconds": published - started,
        "complete_seconds": finished - started,
    }


def _publish_batches(spec: PublisherSpec, ctl: Control, clients: list[_PubClient]) -> int:
    state, sent_arr, recv_arr = ctl.state, ctl.sent, ctl.received
    slot, window, fanout, qos = spec.slot, spec.window, max(spec.fanout, 1), spec.qos
    unacked_max = min(spec.unacked, 60_000)
    batch, per_packet = spec.batch, spec.per_packet
    interval = 1.0 / spec.rate if spec.rate else 0.0
    start = time.monotonic()
    total = 0
    while state.value < STOP:
        if spec.count and total >= spec.count:
            break
        if qos:
            for c in clients:
                c.pump_acks()
            if any(c.sent - c.acks.done + batch > unacked_max for c in clients):
                time.sleep(IDLE)
                continue
        if window and sum(sent_arr) - sum(recv_arr) // fanout >= window:
            time.sleep(IDLE)
            continue
        if interval:  # paced: the next message is due at start + total * interval
            delay = start + total * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for c in clients:
            n = batch
            if interval:
                n = 1
            if spec.count:
                n = min(n, spec.count - total)
                if n <= 0:
                    break
            frames = c.template.batch(n, c.pid_index)
            if per_packet:
                view, length = memoryview(frames), c.template.length
                for offset in range(0, n * length, length):
                    c.sock.sendall(view[offset : offset + length])
            else:
                c.sock.sendall(frames)
            c.pid_index = (c.pid_index + n) % 65535
            c.sent += n
            total += n
        sent_arr[slot] = total
    return total


def _publish_numbered(spec: PublisherSpec, ctl: Control, client: _PubClient) -> int:
    """``count`` messages, each to its own topic (``prefix`` + six digits): the retained store."""
    template = client.template
    prefix = client.topic.encode()
    total = 0
    while total < spec.count and ctl.state.value < STOP:
        client.pump_acks()
        if spec.qos and client.sent - client.acks.done + spec.batch > spec.unacked:
            time.sleep(IDLE)
            continue
        now = time.monotonic_ns()
        frames = []
        for i in range(total, min(total + spec.batch, spec.count)):
            pid = (client.pid_index % 65535) + 1 if spec.qos else None
            client.pid_index += 1
            frames.append(template.with_topic(prefix + b"%06d" % i, pid, now))
        client.sock.sendall(b"".join(frames))
        client.sent += len(frames)
        total += len(frames)
        ctl.sent[spec.slot] = total
    return total


def run_publisher(spec: PublisherSpec, ctl: Control) -> None:
    """Process entry point: publish until STOP (or ``count``), then finish the QoS flows."""
    _report(_publisher, spec, ctl)


# --- subscriber -----------------------------------------------------------------------------------


def _subscriber(spec: SubscriberSpec, ctl: Control) -> dict[str, Any]:
    _setup(spec.cpus)
    template = FrameTemplate(spec.sample_topic, spec.payload, spec.delivered_qos, spec.retain)
    result: dict[str, Any] = {}
    if spec.mode == "backlog":
        # The persistent session: subscribe, go away, and come back at RUN to a full queue.
        for client_id in spec.client_ids:
            sock, _ = open_client(spec.host, spec.port, client_id, clean=False)
            subscribe(sock, spec.topic_filter, spec.qos)
            sock.sendall(DISCONNECT)
            sock.close()
        ctl.pipe.send(("ready", None))
        _wait_state(ctl, spec.start_state)
        started = time.monotonic()
        socks = []
        for client_id in spec.client_ids:
            sock, connack = open_client(spec.host, spec.port, client_id, clean=False)
            result["session_present"] = connack.session_present
            socks.append(sock)
    else:
        socks = [open_client(spec.host, spec.port, cid)[0] for cid in spec.client_ids]
        if spec.mode == "live":
            for sock in socks:
                subscribe(sock, spec.topic_filter, spec.qos)
        ctl.pipe.send(("ready", None))
        _wait_state(ctl, spec.start_state)
        started = time.monotonic()
        if spec.mode == "storm":
            for sock in socks:
                sock.sendall(encode(p.Subscribe(1, [p.Subscription(spec.topic_filter, spec.qos)]), VERSION))
    inboxes = _receive(spec, ctl, template, socks, started)
    finished = time.monotonic()
    for sock in socks:
        try:
            sock.sendall(DISCONNECT)
        except OSError:
            pass
        sock.close()
    samples: list[int] = []
    for inbox in inboxes:
        samples.extend(inbox.samples)
    result.update(
        received=sum(i.count for i in inboxes),
        per_client=[i.count for i in inboxes],
        seconds=finished - started,
        samples=samples[:MAX_SAMPLES],
    )
    return result


def _on_control(packet: p.AnyPacket) -> bytes | None:
    if isinstance(packet, p.Suback):
        if any(code >= 0x80 for code in packet.reason_codes):
            raise ConnectionError(f"subscription refused: {packet!r}")
        return None
    raise RuntimeError(f"unexpected packet from the broker: {packet!r}")


def _receive(
    spec: SubscriberSpec, ctl: Control, template: FrameTemplate, socks: list[socket.socket], started: float
) -> list[Inbox]:
    """Read until EXIT (live) or until ``expected`` messages arrived (backlog, storm)."""
    selector = selectors.DefaultSelector()
    inboxes = []
    for sock in socks:
        sock.settimeout(None)
        inbox = Inbox(template, _on_control, spec.sample_all)
        inboxes.append(inbox)
        selector.register(sock, selectors.EVENT_READ, (sock, inbox))
    state, received, slot = ctl.state, ctl.received, spec.slot
    live = spec.mode == "live"
    coalesce = spec.coalesce and not spec.sample_all  # the latency scenario reads every message as soon as it arrives
    wait = 0.0
    total = 0
    deadline = started + spec.timeout
    while True:
        current = state.value
        if live:
            if current >= EXIT:
                break
        elif total >= spec.expected or time.monotonic() > deadline or current >= EXIT:
            break
        sampling = current == MEASURE or not live
        got = reads = 0
        for key, _ in selector.select(0.05):
            sock, inbox = key.data
            data = sock.recv(RECV_SIZE)
            if not data:
                raise ConnectionError("subscriber connection closed by the broker")
            got += len(data)
            reads += 1
            inbox.sampling = sampling and len(inbox.samples) < MAX_SAMPLES
            total += inbox.feed(data)
            if inbox.out:
                sock.sendall(inbox.out)
                inbox.out.clear()
            received[slot] = total
        if coalesce and reads:
            # Small reads: wait longer (up to COALESCE_MAX) before the next; large reads: less.
            wait = min(max(wait * 2, COALESCE_MIN), COALESCE_MAX) if got < COALESCE_BYTES * reads else wait / 2
            if wait >= COALESCE_MIN:
                time.sleep(wait)
    selector.close()
    return inboxes


def run_subscriber(spec: SubscriberSpec, ctl: Control) -> None:
    """Process entry point: receive, acknowledge and time deliveries."""
    _report(_subscriber, spec, ctl)


# --- idle connections ------------------------------------------------------------------------------


def _connector(spec: ConnectorSpec, ctl: Control) -> dict[str, Any]:
    """Open ``count`` MQTT connections (CONNECT, wait for CONNACK) and hold them until EXIT.

    Lean on purpose, so that the broker's accept path, not ours, sets the rate: a loopback
    ``connect`` completes at once, so each connection is connect, send CONNECT, and one epoll
    registration until its CONNACK arrives; ``in_flight`` CONNECTs are outstanding at a time.
    """
    _setup(spec.cpus, spec.count + 256)
    accepted = encode(p.Connack(False, 0), VERSION)
    # One CONNECT encoded by the codec; each connection patches its six-digit client id suffix.
    template = encode(p.Connect(f"{spec.prefix}-000000", VERSION, True, keep_alive=0), VERSION)
    suffix = len(template) - 6
    ctl.pipe.send(("ready", None))
    _wait_state(ctl, RUN)
    poller = select.epoll()
    waiting: dict[int, socket.socket] = {}
    held: list[socket.socket] = []
    errors: list[str] = []
    next_index = 0
    started = time.monotonic()
    deadline = started + spec.timeout
    last = started
    address = (spec.host, spec.port)
    while len(held) + len(errors) < spec.count and time.monotonic() < deadline:
        while len(waiting) < spec.in_flight and next_index < spec.count:
            connect = template[:suffix] + b"%06d" % next_index
            next_index += 1
            sock = None
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.connect(address)
                sock.sendall(connect)
            except OSError as exc:  # EMFILE (out of file descriptors), refused, timed out
                errors.append(f"connect: {exc}")
                if sock is not None:
                    sock.close()
                continue
            waiting[sock.fileno()] = sock
            poller.register(sock.fileno(), select.EPOLLIN)
        for fd, _ in poller.poll(0.5):
            sock = waiting.pop(fd)
            poller.unregister(fd)
            try:
                data = sock.recv(64, socket.MSG_DONTWAIT)
            except OSError as exc:
                data, error = b"", str(exc)
            else:
                error = "" if data == accepted else _connack_error(data)
            if error:
                errors.append(error)
                sock.close()
                continue
            held.append(sock)
            last = time.monotonic()
            ctl.received[spec.slot] = len(held)
    poller.close()
    result = {
        "connected": len(held),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "seconds": last - started,
    }
    ctl.pipe.send(("connected", result))
    _wait_state(ctl, EXIT)
    for sock in [*held, *waiting.values()]:
        sock.close()
    return result


def _connack_error(data: bytes) -> str:
    if not data:
        return "closed before CONNACK"
    try:
        packets = Parser(protocol_level=VERSION).feed(data)
    except Exception as exc:
        return f"malformed CONNACK: {exc}"
    return f"refused: {packets[0]!r}" if packets else "partial CONNACK"


def run_connector(spec: ConnectorSpec, ctl: Control) -> None:
    """Process entry point: open idle connections and hold them until EXIT."""
    _report(_connector, spec, ctl)
