"""Log output for ``wrenmq serve``: the standard ``logging`` module, made cheap enough for a line
per connect and per disconnect at tens of thousands of connections a second.

Three costs dominate a default ``logging`` record: walking the stack for the caller's file and line
(which the format never shows), formatting the timestamp, and a flush (a system call) per line. Here
the stack walk is off, the timestamp text is reused within a second, and lines below WARNING are
flushed in batches by an event-loop timer at most ``FLUSH_DELAY`` seconds later; warnings and errors still flush
at once.

Timestamps are UTC with their zone (``2026-12-05T10:15:02.133Z``), so lines from hosts and
containers in different zones sort and compare. ``log_format = "json"`` writes one JSON object per
line (``time``, ``level``, ``logger``, ``message``, and ``exception`` with a traceback) for log
shippers that would otherwise have to parse the text layout.

Lines go to ``log_dest``: stderr (the default), stdout, a file (``log_file``, reopened when
logrotate moves it, as the stdlib's WatchedFileHandler does) and syslog (``syslog_address``,
``/dev/log`` by default), as Mosquitto's ``log_dest`` lines say.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FLUSH_DELAY = 0.2


LogFormat = Literal["text", "json"]


class CachedTimeFormatter(logging.Formatter):
    """Formats the date and time (UTC, ISO 8601, ``Z``) once per second instead of once per record."""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int(record.msecs):03d}Z"


class JsonFormatter(CachedTimeFormatter):
    """One JSON object per record, on one line (newlines in a message are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class _Batching(logging.StreamHandler):  # type: ignore[type-arg]
    """Flushes INFO/DEBUG lines in batches, WARNING and above at once."""

    _flush_pending = False

    def _write(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(text)
                if record.levelno >= logging.WARNING:
                    self.stream.flush()
                elif not self._flush_pending:
                    self._flush_pending = True
                    self._schedule_flush()
        except Exception:
            self.handleError(record)

    def _schedule_flush(self) -> None:
        # On the broker's event loop a timer callback is nearly free; a thread would contend for the GIL.
        try:
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush_batch)
        except RuntimeError:  # logging from a thread with no loop
            timer = threading.Timer(FLUSH_DELAY, self._flush_batch)
            timer.daemon = True
            timer.start()

    def _flush_batch(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_pending = False
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()


class BatchedStreamHandler(_Batching):
    """A StreamHandler that flushes INFO/DEBUG lines in batches, WARNING and above at once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._flush_pending = False

    def emit(self, record: logging.LogRecord) -> None:
        self._write(record)

    def close(self) -> None:
        self.flush()
        super().close()


def setup_logging(
    level: str,
    stream: TextIO | None = None,
    log_format: LogFormat = "text",
    dests: Sequence[str] = ("stderr",),
    log_file: Path | None = None,
    syslog_address: str = "/dev/log",
    syslog_facility: str = "daemon",
) -> None:
    """Configure the root logger for the broker process: ``log_format`` text or json lines, to each
    of ``dests`` (stderr, stdout, file, syslog). ``OSError`` (a log file or syslog socket that
    cannot be opened) names the setting."""
    logging._srcfile = None  # type: ignore[attr-defined]  # no stack walk: the format has no file/line
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = JsonFormatter() if log_format == "json" else CachedTimeFormatter()
    handlers: list[logging.Handler] = []
    for dest in dict.fromkeys(dests):
        handler: logging.Handler
        if dest in ("stderr", "stdout"):
            if stream is None or dest == "stdout":
                # sys.stderr is line-buffered (a write system call per line); write through a buffer of
                # our own on the same file descriptor and let the handler decide when to flush.
                fd = (sys.stderr if dest == "stderr" else sys.stdout).fileno()
                handler = BatchedStreamHandler(
                    open(fd, "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
                )
            else:
                handler = BatchedStreamHandler(stream)
            handler.setFormatter(formatter)
        elif dest == "file":
            assert log_file is not None, "log_dest file needs log_file"
            from .log_sinks import BatchedFileHandler  # logging.handlers only for a file or syslog

            try:
                handler = BatchedFileHandler(log_file)
            except OSError as exc:
                raise OSError(exc.errno, f"log_file {log_file}: {exc.strerror}") from exc
            handler.setFormatter(formatter)
        elif dest == "syslog":
            from .log_sinks import SyslogFormatter, syslog_handler

            try:
                handler = syslog_handler(syslog_address, syslog_facility)
            except (OSError, ValueError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                raise OSError(getattr(exc, "errno", None), f"syslog_address {syslog_address}: {why}") from exc
            handler.setFormatter(JsonFormatter() if log_format == "json" else SyslogFormatter())
        else:
            raise ValueError(f"log_dest: unknown destination {dest!r}")
        handlers.append(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    if not handlers:
        root.addHandler(logging.NullHandler())
    root.setLevel(level.upper())
