"""Password checks off the event loop (issue 14, item 14): an argon2 check costs ~20 ms of CPU, so
the broker runs it on a bounded pool of worker threads. A burst of failed logins must not stall
healthy clients; a CONNECT whose check is running holds what the client sends after it and handles
it in order once decided [MQTT-4.6.0-1 context: packets are handled in the order they arrive];
a client that goes away meanwhile costs nothing more.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mqttraw import RawClient
from wrenmq.auth.passwords import PasswordFile
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.reason_codes import ReasonCode
from wrenmq.pytest_plugin import WrenmqServer


@pytest.fixture
def passwords(tmp_path: Path) -> PasswordFile:
    """Real argon2id hashes with the broker's own parameters (the cost the issue measured)."""
    passwords = PasswordFile(tmp_path / "passwd")
    passwords.set_password("alice", "wonderland")
    passwords.save()
    return passwords


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], passwords: PasswordFile) -> WrenmqServer:
    return wrenmq_server_factory(password_file=passwords.path, allow_anonymous=True, auth_failure_limit=0)


def one_check_seconds(passwords: PasswordFile) -> float:
    started = time.perf_counter()
    assert not passwords.verify("alice", "wrong")
    return time.perf_counter() - started


class LoopLag:
    """Runs on the broker's loop: a callback due every TICK seconds notes how late it ran. The sum
    of the lateness is the time the loop spent unable to serve anyone (blocked)."""

    TICK = 0.005

    def __init__(self, server: WrenmqServer) -> None:
        self.loop = server.loop
        self.blocked = 0.0
        self.worst = 0.0
        self.running = True
        self.loop.call_soon_threadsafe(self._tick, None)

    def _tick(self, due: float | None) -> None:
        now = self.loop.time()
        if due is not None:
            late = now - due
            self.worst = max(self.worst, late)
            if late > self.TICK:
                self.blocked += late
        if self.running:
            self.loop.call_later(self.TICK, self._tick, now + self.TICK)

    def stop(self) -> None:
        self.running = False


async def _thread_ident() -> int:
    return threading.get_ident()


def test_failed_logins_do_not_stall_a_healthy_client(
    server: WrenmqServer, passwords: PasswordFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of wrong passwords whose checks, on the event loop, would block it for seconds in
    all: no check runs on the loop's thread, the loop stays mostly free (the time it is blocked is
    a part of the hashing time: the hashing threads share the machine's cores with it), a healthy
    client's pings are answered throughout, and every bad login is still refused (0x86)."""
    cost = one_check_seconds(PasswordFile.load(passwords.path))
    checked_on: list[int] = []
    verify = PasswordFile.verify

    def noting_the_thread(self: PasswordFile, username: str, password: bytes | str) -> bool:
        checked_on.append(threading.get_ident())
        return verify(self, username, password)

    monkeypatch.setattr(PasswordFile, "verify", noting_the_thread)
    loop_thread = server.call(_thread_ident())
    attempts = max(40, int(2.0 / cost))  # at least ~2 s of hashing in all
    healthy = RawClient(server.port, 5)
    assert healthy.connect("healthy").reason_code == 0
    lag = LoopLag(server)
    attackers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(attempts)]
    bad = encode(p.Connect("", 5, True, 60, username="alice", password=b"guess"), 5)
    for sock in attackers:
        sock.sendall(bad)
    worst_ping = 0.0
    deadline = time.monotonic() + 60
    while server.broker.stats.auth_failures < attempts:
        assert time.monotonic() < deadline, "the checks did not finish"
        started = time.perf_counter()
        healthy.send(p.Pingreq())
        healthy.expect(p.Pingresp)
        worst_ping = max(worst_ping, time.perf_counter() - started)
        time.sleep(0.01)
    lag.stop()
    serial = attempts * cost
    assert len(checked_on) >= attempts and loop_thread not in checked_on  # the structural promise
    # On the loop, the loop would be blocked for about ``serial``; off it, for a part of that
    # (generous: on a loaded 2-core machine the hashing threads take the loop's core too).
    assert lag.blocked < serial * 0.6, f"loop blocked {lag.blocked:.2f}s of {serial:.2f}s hashing ({attempts} checks)"
    assert worst_ping < max(1.0, serial / 2), f"worst ping {worst_ping:.3f}s"
    for sock in attackers:
        sock.settimeout(10)
        data = sock.recv(64)  # CONNACK 0x86 Bad user name or password
        assert data[:1] == b"\x20" and data[3] == ReasonCode.BAD_USER_NAME_OR_PASSWORD, data
        sock.close()
    healthy.close()


def test_packets_after_connect_wait_for_the_check_in_order(server: WrenmqServer) -> None:
    """CONNECT, SUBSCRIBE, PUBLISH and PINGREQ in one write, with a password that needs hashing: the
    CONNACK comes first, then the rest answered in order, the publish reaching the subscription."""
    with RawClient(server.port, 5) as client:
        client.send(
            encode(p.Connect("eager", 5, True, 60, username="alice", password=b"wonderland"), 5)
            + encode(p.Subscribe(1, [p.Subscription("t/#", 1)]), 5)
            + encode(p.Publish("t/x", b"hello", 1, False, 2), 5)
            + encode(p.Pingreq(), 5)
        )
        assert client.expect(p.Connack).reason_code == 0
        assert client.expect(p.Suback).reason_codes == [1]
        answers = [client.recv(), client.recv(), client.recv()]
        kinds = [type(packet) for packet in answers]
        assert kinds.count(p.Publish) == 1 and kinds.count(p.Puback) == 1 and kinds[-1] is p.Pingresp
        assert kinds.index(p.Puback) < kinds.index(p.Pingresp)


def test_refused_check_drops_what_followed(server: WrenmqServer) -> None:
    """A wrong password: CONNACK 0x86 and close; the PUBLISH that followed CONNECT goes nowhere."""
    with RawClient(server.port, 5) as watcher, RawClient(server.port, 5) as client:
        assert watcher.connect("watcher").reason_code == 0
        watcher.subscribe("t/#")
        client.send(
            encode(p.Connect("wrong", 5, True, 60, username="alice", password=b"nope"), 5)
            + encode(p.Publish("t/x", b"sneaked", 0, False), 5)
        )
        assert client.expect(p.Connack).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
        client.expect_closed()
        server.publish("t/sentinel", b"end")
        assert watcher.expect(p.Publish).topic == "t/sentinel"


def test_client_gone_during_the_check(server: WrenmqServer) -> None:
    """A client that closes before its check ends leaves no connection and no session behind, and
    the broker goes on answering."""
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(encode(p.Connect("ghost", 4, False, 60, username="alice", password=b"wonderland2"), 4))
        sock.close()
    with RawClient(server.port, 4) as client:
        assert client.connect("after", username="alice", password=b"wonderland").reason_code == 0
    deadline = time.monotonic() + 10
    while server.broker.connections or "ghost" in server.broker.sessions:
        assert time.monotonic() < deadline, "a connection or session was left behind"
        time.sleep(0.05)
