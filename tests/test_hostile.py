"""Hostile input (issue 5): a healthy subscriber keeps receiving a steady stream, losing nothing,
while hundreds of hostile connections come and go: garbage bytes, half-open sockets that never send
CONNECT, oversized packets, slow-drip CONNECTs, truncated packets and CONNECT floods. Afterwards
every hostile socket is closed and the broker's memory is back where it was.

A malformed packet closes that one connection [MQTT-4.8.0-1 / MQTT-4.13.1-1]; a socket without
CONNECT is closed after the connect timeout [MQTT-3.1.4-1 context]; nothing disturbs the others.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mqttraw import RawClient
from serveproc import clean_env, free_port, serve_command
from wrenmq.mqtt import encode
from wrenmq.mqtt import packets as p

WAVE_SECONDS = 3.0
CONNECT = encode(p.Connect("drip", 4, True, 30), 4)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def broker_process(tmp_path: Path):
    port = free_port()
    env = clean_env(WRENMQ_CONNECT_TIMEOUT="1", WRENMQ_MAX_PACKET_SIZE=str(64 * 1024), WRENMQ_LOG_LEVEL="error")
    proc = subprocess.Popen(serve_command(port, tmp_path), env=env)
    deadline = time.monotonic() + 15
    while True:
        try:
            RawClient(port, 4).close()
            break
        except OSError:
            assert proc.poll() is None, "the broker exited"
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.05)
    yield proc, port
    proc.terminate()
    proc.wait(10)


def _hostile(port: int, kind: str, rng: random.Random) -> None:
    """One hostile connection of the given kind; returns when the broker has closed it (or we did)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return
    try:
        if kind == "garbage":
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 512)))
            sock.sendall(data)
        elif kind == "oversized":  # a PUBLISH claiming 200 MB after a valid CONNECT
            sock.sendall(CONNECT + b"\x30\xff\xff\xff\x5f" + b"\x00\x01t" + b"x" * 1000)
        elif kind == "truncated":  # a CONNECT cut short, then silence
            sock.sendall(CONNECT[: rng.randint(1, len(CONNECT) - 1)])
        elif kind == "slow_drip":
            for byte in CONNECT[:6]:
                sock.sendall(bytes((byte,)))
                time.sleep(0.05)
        elif kind == "flood":
            sock.sendall(CONNECT)
        elif kind == "half_open":
            pass  # connect and say nothing
        sock.settimeout(5)
        while sock.recv(4096):  # until the broker closes it (timeouts: connect_timeout = 1 s)
            if kind == "flood":
                break  # got the CONNACK: hang up at once
    except OSError:
        pass
    finally:
        sock.close()


def _wave(port: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    kinds = ["garbage", "oversized", "truncated", "slow_drip", "flood", "half_open"]
    threads = [
        threading.Thread(target=_hostile, args=(port, kinds[i % len(kinds)], random.Random(rng.random())))
        for i in range(count)
    ]
    for i, thread in enumerate(threads):
        thread.start()
        time.sleep(WAVE_SECONDS / count)
        if i % 50 == 49:
            time.sleep(0.05)
    for thread in threads:
        thread.join(15)
        assert not thread.is_alive(), "a hostile connection was never closed by the broker"


def _steady_stream(
    port: int, stop: threading.Event, sent: list[int], errors: list[BaseException]
) -> Callable[[], None]:
    def run() -> None:
        try:
            with RawClient(port, 5, timeout=10) as pub:
                assert pub.connect("steady-pub").reason_code == 0
                n = 0
                while not stop.is_set():
                    assert pub.publish("steady/n", str(n).encode(), 1).reason_code == 0
                    sent.append(n)
                    n += 1
                    time.sleep(0.005)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            stop.set()

    return run


def test_healthy_subscriber_loses_nothing_under_hostile_connections(broker_process):
    proc, port = broker_process
    with RawClient(port, 5, timeout=10) as sub:
        assert sub.connect("healthy").reason_code == 0
        assert sub.subscribe("steady/#", 1).reason_codes == [1]
        stop = threading.Event()
        sent: list[int] = []
        received: list[int] = []
        reader_error: list[BaseException] = []
        publisher = threading.Thread(target=_steady_stream(port, stop, sent, reader_error))
        publisher.start()

        def read() -> None:
            try:
                quiet_since = time.monotonic()
                while not (stop.is_set() and len(received) >= len(sent)):
                    try:
                        packet = sub.recv(0.5)
                    except TimeoutError:
                        assert time.monotonic() - quiet_since < 10, "the healthy subscriber starved"
                        continue
                    quiet_since = time.monotonic()
                    if isinstance(packet, p.Publish):
                        received.append(int(packet.payload))
                        sub.send(p.Puback(packet.packet_id))
            except BaseException as exc:  # reported below
                reader_error.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            _wave(port, 150, seed=1)  # warms the allocator up: the baseline is taken after it
            time.sleep(1.5)
            baseline_rss, baseline_fds = _rss_kib(proc.pid), _open_fds(proc.pid)
            _wave(port, 300, seed=2)
            time.sleep(1.5)  # connect timeout (1 s) + sweep for the half-open ones
        finally:
            stop.set()
            publisher.join(15)
            reader.join(20)
        assert not reader_error, (reader_error, len(sent), len(received))
        assert received == sent, f"lost or reordered: sent {len(sent)}, received {len(received)}"
        assert len(sent) > 200
        # Every hostile socket is closed again, and the memory did not grow with the second wave.
        assert _open_fds(proc.pid) <= baseline_fds
        grown = _rss_kib(proc.pid) - baseline_rss
        assert grown < 2048, f"broker RSS grew by {grown} KiB over a wave of 300 hostile connections"
        # And the broker still serves new clients.
        with RawClient(port, 4) as late:
            assert late.connect("late").reason_code == 0
        assert proc.poll() is None
