"""Running ``wrenmq serve`` (or another ``wrenmq`` command) as a real subprocess in tests.

One place for what every such test needs: a free port, an environment without the developer's
``WRENMQ_*`` settings, and a ``serve`` command line with the test defaults (TCP only: no WebSocket
or API listener on their fixed default ports; memory storage; no $SYS).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

__all__ = ["clean_env", "free_port", "serve_command"]


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
