"""The log destinations beyond stderr and stdout: a file (``log_dest file``, reopened when logrotate
moves it) and syslog. Apart from ``logs.py`` because they need ``logging.handlers``, which imports
``pickle``, ``queue`` and more with it (0.6 MiB of an idle broker's RSS, issue 19): a broker that
logs to stderr, the default, never imports it.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from .logs import _Batching

__all__ = ["BatchedFileHandler", "SyslogFormatter", "syslog_handler"]


class BatchedFileHandler(_Batching, logging.handlers.WatchedFileHandler):
    """``log_dest file``: the stdlib's WatchedFileHandler (it reopens the path when logrotate has
    moved or removed the file: one ``stat`` per line), flushed in batches as the stream handler is."""

    def __init__(self, path: Path) -> None:
        logging.handlers.WatchedFileHandler.__init__(self, path, encoding="utf-8", errors="backslashreplace")
        self._flush_pending = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()  # it flushes what the old file was still owed before it closes it
        except Exception:
            self.handleError(record)
            return
        self._write(record)


class SyslogFormatter(logging.Formatter):
    """Syslog stamps each line itself: level, logger and message only, after ``wrenmq[pid]: ``."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")


def syslog_handler(address: str, facility: str) -> logging.handlers.SysLogHandler:
    """A SysLogHandler on ``address``: a Unix datagram socket path (``/dev/log``) or ``host:port`` (UDP)."""
    target: str | tuple[str, int]
    if address.startswith("/"):
        target = address
    else:
        host, _, port = address.rpartition(":")
        target = (host.strip("[]") or "localhost", int(port or 514))
    code = logging.handlers.SysLogHandler.facility_names[facility]
    handler = logging.handlers.SysLogHandler(target, facility=code)
    handler.ident = f"wrenmq[{os.getpid()}]: "
    return handler
