"""Hostile load and a healthy QoS 1 pair, for the fairness test (issue 14, item 14) and as a probe.

The hostile side runs in a process of its own (``python tests/fairness_load.py load ...``) so its
threads never compete with the healthy pair for the test process's GIL; what the pair measures is
the broker. Kinds of hostile connection:

- ``#`` subscribers that never read their socket (a small receive buffer, a new one every
  ``--nonreader-every`` seconds), at QoS 0 and QoS 1;
- publishers sending thousands of 1 KiB messages (QoS 0 and 1) as fast as the broker takes them;
- sockets that send CONNECT and then nothing (silent), and slowloris ones that trickle a PUBLISH one
  byte at a time;
- connect/close churn.

On exit it prints one JSON line: for each non-reader how long it was open and whether the broker
had closed it (the kernel's TCP state: CLOSE_WAIT or CLOSE), and how many messages were published.

On demand, a longer run against wrenmq or Mosquitto (not in CI)::

    python tests/fairness_load.py probe --broker wrenmq --duration 30 --nonreaders 50
    python tests/fairness_load.py probe --broker mosquitto --duration 30 --nonreaders 50
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mqttraw import ConnectionClosed, RawClient
from serveproc import clean_env, free_port, serve_command
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode

KiB = 1024


def closed_by_peer(sock: socket.socket, timeout: float = 2.0) -> bool:
    """Whether the broker has closed this socket: read what is buffered until the end of the
    stream. (The broker's kernel keeps an aborted socket's unsent bytes and FIN until the window
    opens, so nothing shows on this side before reading.)"""
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(1 << 20):
                return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True  # reset
    return False


class _SmallWindowClient(RawClient):
    """A raw client with a 4 KiB receive buffer (set before connecting, so the TCP window stays
    small): once it stops reading, the broker's writes to it back up after a few KiB."""

    def __init__(self, port: int) -> None:
        self.version = 4
        self.timeout = 5.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KiB)
        self.sock.settimeout(self.timeout)
        self.sock.connect(("127.0.0.1", port))
        self.parser = Parser(protocol_level=4)
        self.pending: list[p.AnyPacket] = []
        self._next_pid = 0


# -- the hostile side ----------------------------------------------------------------------------


@dataclass
class Nonreader:
    sock: socket.socket
    opened: float
    qos: int


@dataclass
class Hostile:
    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    nonreaders: list[Nonreader] = field(default_factory=list)
    published: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _connect(self, client_id: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(encode(p.Connect(client_id, 4, True, 60), 4))
        return sock

    def nonreader(self, n: int, qos: int) -> None:
        """Subscribe to ``#``, read the SUBACK, never read again."""
        c = _SmallWindowClient(self.port)
        assert c.connect(f"nonreader-{n}").reason_code == 0
        c.subscribe("#", qos)  # and nothing more is ever read
        with self.lock:
            self.nonreaders.append(Nonreader(c.sock, time.monotonic(), qos))

    def publisher(self, n: int, rate: int) -> None:
        """Publish 1 KiB messages at ``rate`` a second until stopped, alternating QoS 0 and 1, acks
        read on the side."""
        try:
            self._publish(n, rate)
        except (OSError, ConnectionClosed, AssertionError) as exc:
            self.errors.append(f"publisher: {exc!r}")

    def _publish(self, n: int, rate: int) -> None:
        with RawClient(self.port, 4, timeout=10) as c:
            assert c.connect(f"flood-pub-{n}").reason_code == 0
            c.sock.settimeout(None)  # a broker that holds publishers back blocks the send: that is measured
            threading.Thread(target=_discard, args=(c, self.stop), daemon=True).start()
            body = b"x" * (KiB - 16)
            batch = max(1, rate // 50)
            seq = 0
            next_at = time.monotonic()
            while not self.stop.is_set():
                packets = []
                for _ in range(batch):
                    qos = seq & 1
                    pid = seq % 60000 + 1 if qos else None
                    packets.append(encode(p.Publish(f"flood/{n}/{seq % 10}", body, qos, False, pid), 4))
                    seq += 1
                c.sock.sendall(b"".join(packets))  # blocks if the broker stops reading us: measured
                with self.lock:
                    self.published += batch
                next_at += batch / rate
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def silent(self, n: int) -> None:
        """CONNECT, then not a byte more (keep alive 60 s: the broker may rightly keep it)."""
        sock = self._connect(f"silent-{n}")
        self.stop.wait()
        sock.close()

    def slowloris(self, n: int) -> None:
        """CONNECT, then a PUBLISH one byte at a time."""
        sock = self._connect(f"slowloris-{n}")
        packet = encode(p.Publish("slow/loris", b"y" * 4000, 0), 4)
        try:
            for byte in packet:
                if self.stop.wait(0.2):
                    break
                sock.sendall(bytes((byte,)))
        except OSError:
            pass
        sock.close()

    def churn(self) -> None:
        n = 0
        while not self.stop.wait(0.05):
            try:
                with RawClient(self.port, 4, timeout=5) as c:
                    c.connect(f"churn-{n % 20}")
                n += 1
            except (OSError, ConnectionClosed) as exc:
                self.errors.append(f"churn: {exc!r}")

    def run(self, args: argparse.Namespace) -> dict[str, object]:
        threads = [threading.Thread(target=self.silent, args=(i,)) for i in range(args.silent)]
        threads += [threading.Thread(target=self.slowloris, args=(i,)) for i in range(args.slowloris)]
        threads += [threading.Thread(target=self.churn)]
        threads += [threading.Thread(target=self.publisher, args=(i, args.rate)) for i in range(args.publishers)]
        for thread in threads:
            thread.daemon = True
            thread.start()
        started = time.monotonic()
        ended = threading.Event()  # a line on stdin (or its end) stops the load before --duration
        threading.Thread(target=lambda: (sys.stdin.readline(), ended.set()), daemon=True).start()
        n = 0
        while time.monotonic() - started < args.duration and not ended.is_set():
            if n < args.nonreaders:
                try:
                    self.nonreader(n, n & 1)
                except (OSError, ConnectionClosed, AssertionError) as exc:
                    self.errors.append(f"nonreader: {exc!r}")
                n += 1
            ended.wait(args.nonreader_every)
        now = time.monotonic()
        self.stop.set()
        report = {
            "published": self.published,
            "errors": self.errors[:5],
            "nonreaders": [
                {"open_s": round(now - r.opened, 2), "qos": r.qos, "closed": closed_by_peer(r.sock)}
                for r in self.nonreaders
            ],
        }
        return report


def _discard(c: RawClient, stop: threading.Event) -> None:
    """Read and ignore what the broker sends (acks), without touching the socket's timeout, which
    the sending thread shares."""
    while not stop.is_set():
        try:
            readable, _, _ = select.select([c.sock], [], [], 0.5)
            if readable and not c.sock.recv(65536):
                return
        except OSError:
            return


# -- the healthy pair ----------------------------------------------------------------------------


@dataclass
class PairResult:
    sent: int
    received: list[int]
    latencies_ms: list[float]

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("inf")

    @property
    def p50(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[len(ordered) // 2] if ordered else float("inf")


def healthy_pair(port: int, duration: float, rate: float = 100.0, version: int = 4) -> PairResult:
    """A QoS 1 publisher at ``rate`` msg/s and a QoS 1 subscriber, both reading promptly; latency is
    PUBLISH written by the publisher to PUBLISH read by the subscriber."""
    sub = RawClient(port, version, timeout=10)
    pub = RawClient(port, version, timeout=10)
    try:
        assert sub.connect("healthy-sub").reason_code == 0
        assert sub.subscribe("healthy/t", 1).reason_codes[0] == 1
        assert pub.connect("healthy-pub").reason_code == 0
        stop = threading.Event()
        received: list[int] = []
        latencies: list[float] = []
        errors: list[BaseException] = []
        sent = 0

        def subscriber() -> None:
            try:
                while not (stop.is_set() and len(received) >= sent):
                    try:
                        packet = sub.recv(0.5)
                    except TimeoutError:
                        if stop.is_set() and time.monotonic() > deadline + 5:
                            return  # what never came is reported as lost
                        continue
                    if isinstance(packet, p.Publish):
                        seq, stamp = struct.unpack(">QQ", packet.payload[:16])
                        latencies.append((time.monotonic_ns() - stamp) / 1e6)
                        received.append(seq)
                        sub.send(p.Puback(packet.packet_id))
            except BaseException as exc:  # reported below
                errors.append(exc)

        deadline = time.monotonic() + duration
        reader = threading.Thread(target=subscriber, daemon=True)
        reader.start()
        acks = threading.Thread(target=_discard, args=(pub, stop), daemon=True)
        acks.start()
        interval = 1.0 / rate
        next_at = time.monotonic()
        while time.monotonic() < deadline and not errors:
            payload = struct.pack(">QQ", sent, time.monotonic_ns()) + b"h" * 48
            pub.send(p.Publish("healthy/t", payload, 1, False, sent % 65535 + 1))
            sent += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        stop.set()
        reader.join(15)
        if errors:
            raise errors[0]
        return PairResult(sent, received, latencies)
    finally:
        sub.close()
        pub.close()


# -- the command line ----------------------------------------------------------------------------


def _add_load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--nonreaders", type=int, default=6)
    parser.add_argument("--nonreader-every", type=float, default=0.5)
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="messages a second per publisher")
    parser.add_argument("--silent", type=int, default=10)
    parser.add_argument("--slowloris", type=int, default=10)


def start_load(port: int, **options: object) -> subprocess.Popen[str]:
    """The hostile side in a process of its own; ``communicate("stop\\n")`` stops it before its
    ``duration`` and returns its JSON report."""
    args = [sys.executable, __file__, "load", "--port", str(port)]
    for key, value in options.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _probe(args: argparse.Namespace) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if args.broker == "mosquitto":
            conf = Path(tmp) / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
            mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        else:
            settings = dict(item.split("=", 1) for item in args.set)
            env = clean_env(WRENMQ_LOG_LEVEL="warning", **{f"WRENMQ_{k.upper()}": v for k, v in settings.items()})
            broker = subprocess.Popen(serve_command(port, Path(tmp)), env=env)
        try:
            _wait_listening(port)
            load = start_load(
                port,
                duration=args.duration + 2,
                nonreaders=args.nonreaders,
                nonreader_every=args.nonreader_every,
                publishers=args.publishers,
                rate=args.rate,
                silent=args.silent,
                slowloris=args.slowloris,
            )
            time.sleep(1.0)
            result = healthy_pair(port, args.duration)
            report = json.loads(load.communicate("stop\n", timeout=60)[0])
        finally:
            broker.terminate()
            broker.wait(10)
    lost = result.sent - len(set(result.received))
    closed = sum(r["closed"] for r in report["nonreaders"])
    print(
        f"{args.broker}: healthy pair p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms, "
        f"max {max(result.latencies_ms, default=0):.1f} ms, {result.sent} sent, {lost} lost; "
        f"{report['published']} hostile publishes, {closed}/{len(report['nonreaders'])} non-readers closed"
    )


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="run the hostile side against a broker on --port")
    load.add_argument("--port", type=int, required=True)
    _add_load_args(load)
    probe = sub.add_parser("probe", help="start a broker, run the hostile side and the healthy pair")
    probe.add_argument("--broker", choices=["wrenmq", "mosquitto"], default="wrenmq")
    probe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a wrenmq setting")
    _add_load_args(probe)
    args = parser.parse_args()
    if args.command == "load":
        print(json.dumps(Hostile(args.port).run(args)), flush=True)
        os._exit(0)  # daemon threads blocked in sockets: leave at once
    _probe(args)


if __name__ == "__main__":
    main()
