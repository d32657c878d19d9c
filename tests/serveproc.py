"""Running ``wrenmq serve`` (or another ``wrenmq`` command) as a real subprocess in tests.

One place for what every such test needs: a free port, an environment without the developer's
``WRENMQ_*`` settings, and a ``serve`` command line with the test defaults (TCP only: no WebSocket
or API listener on their fixed default ports; memory storage; no $SYS).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mqttraw import RawClient

__all__ = ["START_TIMEOUT", "BrokerProcess", "clean_env", "free_port", "serve_command"]

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without ``WRENMQ_*`` variables, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WRENMQ_")}
    env.update(settings)
    return env


def serve_command(
    port: int | str, data_dir: Path | None = None, *extra: str, storage: str | None = "memory"
) -> list[str]:
    """``python -m wrenmq serve`` on ``port`` with the test defaults; ``extra`` flags come last.
    ``storage=None`` leaves the storage to the default (SQLite in ``data_dir``)."""
    args = [sys.executable, "-m", "wrenmq", "serve", "--port", str(port), "--ws-port", "off", "--api-port", "off"]
    if storage is not None:
        args += ["--storage", storage, "--sys-interval", "0"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    return [*args, *extra]


class BrokerProcess:
    """``python -m wrenmq serve`` on a fixed port and data directory, so it can be restarted in place."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.args = args
        self.env = clean_env(**(env or {}))
        self.log_path = data_dir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BrokerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = serve_command(self.port, self.data_dir, "--log-level", "info", *self.args, storage=None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"broker did not listen within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        """Graceful: SIGTERM, as a service manager would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(START_TIMEOUT) == 0, self.log()

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs, only what was committed survives."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(START_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def raw(self, version: int = 4) -> RawClient:
        from mqttraw import RawClient

        return RawClient(self.port, version)
