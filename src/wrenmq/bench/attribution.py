"""Where the bytes of one idle connection go: tracemalloc on an in-process broker, by allocation site.

``wrenmq bench --memory-sites N`` starts a wrenmq broker in this process (on its own event loop
thread, uvloop where installed, as ``wrenmq serve``), lets a crowd worker process (not traced)
open a warm-up batch and then ``N`` more idle MQTT 5 connections with one subscription each, and
compares tracemalloc snapshots taken before and after the ``N``. Each allocation still alive is
charged to the innermost frame inside the wrenmq package that made it (file, then the enclosing
class and function, found with ``ast``); allocations made with no wrenmq frame on the stack (uvloop
accepting a socket and building its transport, in C under ``run_forever``) are charged to "event
loop". The table prints bytes per connection per site and per concept.

Run it on a pure-Python install: compiled (mypyc) modules allocate native objects with no Python
frame of their own, so tracemalloc would charge them to their Python caller. The RSS figure of a
compiled install comes from the ``idle_memory`` scenario instead.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import linecache
import os
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .crowd import CrowdSpec, run_crowd
from .generator import RUN
from .measure import Workers
from .procfs import raise_nofile_limit, rss_kib

__all__ = ["CONCEPTS", "attribute", "main", "table"]

PACKAGE = Path(__file__).resolve().parent.parent  # src/wrenmq
WARMUP = 200  # connections opened before the first snapshot (first-use caches, pools, trie root)
FRAMES = 12  # deep enough to reach the innermost wrenmq frame of the broker's allocations

# Concepts by file (relative to the wrenmq package), for the summary table.
CONCEPTS: dict[str, str] = {
    "transports/": "transport adapter (listener, linger)",
    "broker/connection.py": "protocol: Connection",
    "mqtt/codec.py": "parser and codec",
    "mqtt/packets.py": "packets kept (CONNECT, SUBSCRIBE, Subscription)",
    "mqtt/properties.py": "packets kept (CONNECT, SUBSCRIBE, Subscription)",
    "broker/session.py": "Session",
    "broker/sessions.py": "session table",
    "broker/router.py": "router: trie nodes and Subscriber",
    "broker/subscriptions.py": "router: trie nodes and Subscriber",
    "broker/broker.py": "broker: CONNECT/SUBSCRIBE handling",
    "broker/limits.py": "limits",
    "hooks.py": "hooks",
}
EVENT_LOOP = "event loop (uvloop transport and socket, no wrenmq frame)"


class _Sites:
    """Maps (file, line) to ``file:Class.function`` by parsing each wrenmq file once."""

    def __init__(self) -> None:
        self._spans: dict[str, list[tuple[int, int, str]]] = {}

    def name(self, filename: str, lineno: int) -> str:
        rel = self.relative(filename)
        spans = self._spans.get(filename)
        if spans is None:
            spans = self._spans[filename] = self._parse(filename)
        best = ""
        for start, end, qualname in spans:
            if start <= lineno <= end:
                best = qualname  # spans are outer-first, so the last match is the innermost
        return f"{rel}:{lineno} {best}" if best else f"{rel}:{lineno}"

    @staticmethod
    def relative(filename: str) -> str:
        return Path(filename).resolve().relative_to(PACKAGE).as_posix()

    @staticmethod
    def _parse(filename: str) -> list[tuple[int, int, str]]:
        try:
            tree = ast.parse(Path(filename).read_text())
        except (OSError, SyntaxError):
            return []
        spans: list[tuple[int, int, str]] = []

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    qualname = f"{prefix}{child.name}"
                    spans.append((child.lineno, child.end_lineno or child.lineno, qualname))
                    visit(child, qualname + ".")

        visit(tree, "")
        return spans

    def in_package(self, filename: str) -> bool:
        try:
            rel = Path(filename).resolve().relative_to(PACKAGE)
        except ValueError:
            return False
        return rel.parts[0] != "bench"  # the crowd's coordinator, not the broker


def _concept(site: str) -> str:
    for prefix, concept in CONCEPTS.items():
        if site.startswith(prefix):
            return concept
    return EVENT_LOOP if site == EVENT_LOOP else "other wrenmq: " + site.split(":", 1)[0]


class _BrokerThread:
    """A wrenmq broker on an event loop of its own thread, so this thread may block on workers."""

    def __init__(self) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            self.loop_name = "uvloop"
        except ImportError:
            self.loop = asyncio.new_event_loop()
            self.loop_name = "asyncio"
        self.thread = threading.Thread(target=self.loop.run_forever, name="broker", daemon=True)
        self.thread.start()
        from ..broker.broker import Broker

        self.broker = Broker(host="127.0.0.1", port=0, ws_port=None, storage="memory", sys_interval=0.0)
        self.call(self.broker.start())

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(60)

    def sessions(self) -> int:
        return len(self.broker.sessions)

    def close(self) -> None:
        self.call(self.broker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _open(workers: Workers, port: int, slot: int, count: int, prefix: str) -> dict[str, Any]:
    spec = CrowdSpec("127.0.0.1", port, slot, count, prefix, topic_filter="dev/{id}/cmd", qos=1, timeout=300)
    index = workers.start("crowd", run_crowd, spec)
    workers.expect(index, "ready", 30)
    workers.set(RUN)
    report: dict[str, Any] = workers.expect(index, "connected", 300)
    if report["connected"] != count:
        raise RuntimeError(f"only {report['connected']} of {count} connections: {report['error_samples']}")
    return report


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot()


def attribute(connections: int, warmup: int = WARMUP) -> dict[str, Any]:
    """Open ``connections`` idle MQTT 5 connections to an in-process broker; bytes per site."""
    raise_nofile_limit(connections + warmup + 1024)
    tracemalloc.start(FRAMES)
    broker = _BrokerThread()
    warm = Workers(1)
    crowd = Workers(1)
    try:
        _open(warm, broker.broker.port, 0, warmup, "warm")
        time.sleep(0.5)
        before, rss_before, sessions_before = _snapshot(), rss_kib(os.getpid()), broker.sessions()
        _open(crowd, broker.broker.port, 0, connections, "mem")
        time.sleep(0.5)
        after, rss_after, sessions_after = _snapshot(), rss_kib(os.getpid()), broker.sessions()
    finally:
        crowd.close()
        warm.close()
        broker.close()
        tracemalloc.stop()
    if sessions_after - sessions_before != connections:
        raise RuntimeError(f"the broker holds {sessions_after - sessions_before} new sessions, not {connections}")
    sites = _Sites()
    by_site: dict[str, int] = defaultdict(int)
    for stat in after.compare_to(before, "traceback"):
        frames = list(stat.traceback)  # oldest first
        site = next(
            (sites.name(f.filename, f.lineno) for f in reversed(frames) if sites.in_package(f.filename)), EVENT_LOOP
        )
        by_site[site] += stat.size_diff
    return {
        "connections": connections,
        "loop": broker.loop_name,
        "traced_bytes": sum(by_site.values()),
        "rss_delta_kib": rss_after - rss_before,
        "sites": dict(sorted(by_site.items(), key=lambda kv: -kv[1])),
    }


def table(result: dict[str, Any], top: int = 25) -> str:
    """Two Markdown tables: bytes per connection by concept, then by site (the ``top`` largest)."""
    n = result["connections"]
    total = result["traced_bytes"]
    concepts: dict[str, int] = defaultdict(int)
    for site, size in result["sites"].items():
        concepts[_concept(site)] += size
    lines = [
        f"{n:,} idle MQTT 5 connections, one subscription each, pure Python on {result['loop']}: "
        f"{total / n:,.0f} traced bytes per connection (RSS grew {result['rss_delta_kib'] * 1024 / n:,.0f} "
        "bytes per connection, tracemalloc's own bookkeeping included).",
        "",
        "| concept | bytes/connection | share |",
        "|---|---|---|",
    ]
    for concept, size in sorted(concepts.items(), key=lambda kv: -kv[1]):
        if size < n:  # under a byte per connection
            continue
        lines.append(f"| {concept} | {size / n:,.0f} | {100 * size / max(total, 1):.0f}% |")
    lines += ["", "| allocation site (innermost wrenmq frame) | source line | bytes/connection |", "|---|---|---|"]
    items = list(result["sites"].items())
    for site, size in items[:top]:
        lines.append(f"| `{site}` | `{_source(site)}` | {size / n:,.0f} |")
    rest = sum(size for _, size in items[top:])
    if items[top:]:
        lines.append(f"| {len(items) - top} other sites | {rest / n:,.0f} |")
    return "\n".join(lines)


def _source(site: str) -> str:
    """The source line of a ``file:line function`` site, for the table."""
    where = site.split(" ", 1)[0]
    if ":" not in where:
        return ""
    rel, _, lineno = where.partition(":")
    if not lineno.isdigit():
        return ""
    return linecache.getline(str(PACKAGE / rel), int(lineno)).strip().replace("|", "\\|")[:70]


def main(connections: int) -> int:
    result = attribute(connections)
    print(table(result))
    return 0
