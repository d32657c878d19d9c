"""A real Mosquitto broker (Debian's /usr/sbin/mosquitto) on a free port, for interop tests.

``mosquitto_factory(**options)`` starts one with a generated config (``listener <port> 127.0.0.1``,
``allow_anonymous true``, ``persistence false``); ``mosquitto`` is one with the defaults. A broker
can be stopped and started again on the same port (``restart()``), to test reconnection. All stop
after the test. Tests that use them are skipped where Mosquitto is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["MOSQUITTO", "MosquittoBroker", "free_port", "mosquitto", "mosquitto_factory"]

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One Mosquitto process; ``port`` (and ``ws_port`` with ``websockets=True``) stay fixed across restarts."""

    host = "127.0.0.1"

    def __init__(
        self, directory: Path, *, allow_anonymous: bool = True, websockets: bool = False, port: int | None = None
    ) -> None:
        assert MOSQUITTO is not None
        self.directory = directory
        self.port = port or free_port()
        self.ws_port = free_port() if websockets else None
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "persistence false",
            "log_type all",
        ]
        if self.ws_port is not None:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets"]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MosquittoBroker:
        assert MOSQUITTO is not None and self.process is None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_open(self.port) and (self.ws_port is None or port_open(self.ws_port))):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"<MosquittoBroker {self.host}:{self.port}>"


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start Mosquitto brokers, e.g. ``mosquitto_factory(allow_anonymous=False)``; all stop after the test."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    brokers: list[MosquittoBroker] = []

    def start(**options: object) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), **options)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A Mosquitto broker on 127.0.0.1 and a free port: anonymous access, no persistence."""
    return mosquitto_factory()
