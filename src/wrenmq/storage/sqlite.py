"""SQLite persistence with one writer thread and group commit.

The event loop only appends ops to a list; the writer takes everything queued, folds it (``batch.fold``),
writes it in one transaction and then runs the barrier callbacks that were waiting for it.

Ops are staged on the loop and handed to the writer together at the end of the loop callback that made
them (or at a ``barrier``), so what one packet changed lands in one commit: a routed QoS 2 message and
its publisher's packet id can never be split across a crash, which would deliver the message twice. In strict mode
it commits as soon as there is work, so batches grow by themselves while a commit (an fsync) runs; in
relaxed mode it also waits up to ``commit_interval`` after the first op to gather more.

The services' files are attached to the same connection (``sqlite_services``): their writes join the
same batches, and their reads run on the same thread, in order with the writes (``_ask``), so nothing
SQLite does ever runs on the event loop and there is one writer for every file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from . import batch as ops
from . import sqlite_services as tables
from . import sqlite_sessions as sessions
from .base import (
    Json,
    LoadedState,
    OutboxRecord,
    Storage,
    StoredMessage,
    StoredSession,
    StoredSessionMessage,
)
from .private import connect_sqlite
from .sqlite_sessions import SCHEMA_VERSION

log = logging.getLogger("wrenmq.storage")

T = TypeVar("T")

__all__ = ["SCHEMA_VERSION", "SqliteStorage"]


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("storage barrier callback %r failed", callback)


class SqliteStorage(Storage):
    """Persistent sessions and retained messages in one SQLite file (WAL mode)."""

    def __init__(self, path: Path, durability: str = "strict", commit_interval: float = 0.05) -> None:
        if durability not in ("strict", "relaxed"):
            raise ValueError(f"durability must be 'strict' or 'relaxed', not {durability!r}")
        if commit_interval < 0:
            raise ValueError(f"commit_interval must be >= 0, not {commit_interval!r}")
        self.path = Path(path)
        self.durability = durability
        # Strict mode never waits on purpose: the fsync of the previous batch is the batching window.
        self._interval = commit_interval if durability == "relaxed" else 0.0
        self.commits = 0
        self.ops_written = 0
        self.ops_enqueued = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition(threading.Lock())
        self._ops: list[ops.Op] = []  # guarded by _cond, like every field down to _barriers
        self._first_op_at = 0.0
        self._committed = 0  # ops_enqueued as of the last completed batch
        self._barriers: deque[tuple[int, Callable[[], None]]] = deque()
        self._urgent = False
        self._stopping = False
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None
        self._dropped_after_close = 0
        self._staged: list[ops.Op] = []  # the loop's ops not yet handed to the writer (loop thread only)
        self._hand_over_scheduled = False
        self._next_outbox_key = 1  # loop thread only

    # -- start-up ---------------------------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> LoadedState:
        if self._conn is not None or self._closed:
            raise RuntimeError("SqliteStorage.open() may be called once")
        self._loop = loop
        # The loading thread hands the connection to the writer thread and never touches it again.
        conn = connect_sqlite(self.path, isolation_level=None, check_same_thread=False)  # 0600, in a 0700 dir
        try:
            self._prepare(conn)
            synchronous = "FULL" if self.durability == "strict" else "NORMAL"
            self._next_outbox_key = tables.attach(conn, self.path.parent, synchronous)
            state = sessions.load(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="wrenmq-storage", daemon=True)
        self._thread.start()
        return state

    def _prepare(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite at %s refused WAL mode (got %r); commits will be slower", self.path, mode)
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'strict' else 'NORMAL'}")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: a large offline queue stays in memory
        conn.execute("PRAGMA temp_store = MEMORY")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.executescript(sessions.SCHEMA)
            return
        while version + 1 in sessions.MIGRATIONS:
            conn.executescript(sessions.MIGRATIONS[version + 1])
            version += 1
            log.info("migrated %s to storage schema version %d", self.path, version)
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has storage schema version {version}; this wrenmq understands {SCHEMA_VERSION}"
            )

    # -- the event loop's side: enqueue only -------------------------------------------------------------

    def _enqueue(self, op: ops.Op) -> None:
        if self._closed:
            self._drop_late(1, op)
            return
        staged = self._staged
        staged.append(op)
        if not self._hand_over_scheduled:
            self._hand_over_scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        """Give the writer every op staged so far, in one piece (see the module docstring)."""
        self._hand_over_scheduled = False
        staged = self._staged
        if not staged:
            return
        self._staged = []
        with self._cond:
            if self._stopping or self._closed:
                self._drop_late(len(staged), staged[0])
                return
            was_idle = not self._ops
            self._ops.extend(staged)
            self.ops_enqueued += len(staged)
            if was_idle:
                self._first_op_at = time.monotonic()
                self._cond.notify()

    def _drop_late(self, count: int, first: ops.Op) -> None:
        if not self._dropped_after_close:  # once: a shutdown can race many late writes
            log.warning("storage is closed; dropping writes (first: op kind %d)", first[0])
        self._dropped_after_close += count

    def retain_set(self, msg: StoredMessage) -> None:
        self._enqueue((ops.RETAIN_SET, msg.topic, msg))

    def retain_delete(self, topic: str) -> None:
        self._enqueue((ops.RETAIN_DELETE, topic))

    def session_put(self, session: StoredSession) -> None:
        self._enqueue((ops.SESSION_PUT, session.client_id, session))

    def session_delete(self, client_id: str) -> None:
        self._enqueue((ops.SESSION_DELETE, client_id))

    def message_add(self, client_id: str, msg: StoredSessionMessage) -> None:
        self._enqueue((ops.MESSAGE_ADD, client_id, msg))

    def message_update(self, client_id: str, seq: int, packet_id: int | None, state: int) -> None:
        self._enqueue((ops.MESSAGE_UPDATE, client_id, seq, packet_id, state))

    def message_delete(self, client_id: str, seq: int) -> None:
        self._enqueue((ops.MESSAGE_DELETE, client_id, seq))

    def inbound_add(self, client_id: str, packet_id: int) -> None:
        self._enqueue((ops.INBOUND_ADD, client_id, packet_id))

    def inbound_delete(self, client_id: str, packet_id: int) -> None:
        self._enqueue((ops.INBOUND_DELETE, client_id, packet_id))

    # -- the services' state: writes enqueue like the broker's, reads run in order on the writer --------

    def device_put(self, entries: list[Json]) -> None:
        self._enqueue((ops.DEVICE_PUT, [(entry["deviceId"], json.dumps(entry)) for entry in entries]))

    def device_delete(self, device_id: str) -> None:
        self._enqueue((ops.DEVICE_DELETE, device_id))

    def device_event_add(self, device_id: str, event: Json, kept: int) -> None:
        self._enqueue((ops.DEVICE_EVENT, device_id, json.dumps(event), kept))

    async def devices_load(self) -> list[Json]:
        return await self._ask(tables.devices_load)

    async def device_events(self, device_id: str, limit: int) -> list[Json]:
        return await self._ask(tables.device_events, device_id, limit)

    async def resource_state(self, kind: str, resource_id: str) -> tuple[Json | None, int]:
        return await self._ask(tables.resource_state, kind, resource_id)

    async def resource_commit(self, kind: str, resource_id: str, resource: Json | None, seq: int, event: Json) -> None:
        body = None if resource is None else json.dumps(resource)
        await self._ask(tables.resource_commit, kind, resource_id, body, seq, json.dumps(event))

    async def resource_get(self, kind: str, resource_id: str) -> Json | None:
        return await self._ask(tables.resource_get, kind, resource_id)

    async def resource_page(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, Json]], int]:
        return await self._ask(tables.resource_page, kind, limit, offset)

    async def resource_events(self, kind: str, since: int, limit: int) -> tuple[list[Json], int]:
        return await self._ask(tables.resource_events, kind, since, limit)

    async def outbox_load(self) -> list[OutboxRecord]:
        return await self._ask(tables.outbox_load)

    def outbox_add(self, connection: str, message: StoredMessage) -> int:
        key = self._next_outbox_key
        self._next_outbox_key = key + 1
        self._enqueue((ops.OUTBOX_ADD, key, OutboxRecord(key, connection, message)))
        return key

    def outbox_delete(self, key: int) -> None:
        self._enqueue((ops.OUTBOX_DELETE, key))

    def outbox_clear(self, connection: str) -> None:
        self._enqueue((ops.OUTBOX_CLEAR, connection))

    async def _ask(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the writer thread, after everything enqueued before this call."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._hand_over()
        with self._cond:
            if self._stopping or self._closed or not self.writable():
                raise RuntimeError(f"storage {self.path} is closed")
            if not self._ops:
                self._first_op_at = time.monotonic()
            self._ops.append((ops.CALL, fn, args, future))
            self.ops_enqueued += 1
            self._urgent = True  # someone waits: a relaxed-mode writer does not wait for more
            self._cond.notify()
        return await asyncio.wrap_future(future)

    @property
    def dirty(self) -> bool:
        return bool(self._staged) or self.ops_enqueued != self._committed

    def writable(self) -> bool:
        thread = self._thread
        return not self._closed and thread is not None and thread.is_alive()

    def barrier(self, callback: Callable[[], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._hand_over()
        with self._cond:
            if self.ops_enqueued == self._committed:
                loop.call_soon(callback)
            else:
                self._barriers.append((self.ops_enqueued, callback))

    async def flush(self) -> None:
        """Like ``Storage.flush``, but a relaxed-mode writer stops waiting for more ops and commits now."""
        self._hand_over()
        with self._cond:
            if self._ops:
                self._urgent = True
                self._cond.notify()
        await super().flush()

    async def close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            await self.flush()
        with self._cond:
            self._closed = self._stopping = True
            self._cond.notify()
        if thread is not None:  # the writer closes its connection on the way out
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    # -- the writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._conn is not None
        try:
            while (taken := self._take()) is not None:
                batch_ops, upto = taken
                self._process(batch_ops)
                self._complete(upto)
        except BaseException:
            log.critical("storage writer thread died; writes are no longer persisted", exc_info=True)
            raise
        finally:
            self._conn.close()

    def _take(self) -> tuple[list[ops.Op], int] | None:
        """Wait for work (and in relaxed mode for the commit window); None once stopping and idle."""
        with self._cond:
            while not self._ops and not self._stopping:
                self._cond.wait()
            if not self._ops:
                return None
            if self._interval > 0:
                deadline = self._first_op_at + self._interval
                while not (self._urgent or self._stopping) and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
            taken, self._ops, self._urgent = self._ops, [], False
            return taken, self.ops_enqueued

    def _complete(self, upto: int) -> None:
        with self._cond:
            self._committed = upto
            ready = []
            while self._barriers and self._barriers[0][0] <= upto:
                ready.append(self._barriers.popleft()[1])
            if ready and self._loop is not None:
                # Scheduled under the lock, so a later barrier() that finds nothing pending and uses
                # call_soon lands behind these callbacks.
                try:
                    self._loop.call_soon_threadsafe(_run_callbacks, ready)
                except RuntimeError:
                    log.error("event loop closed; %d storage barrier callbacks dropped", len(ready))

    def _process(self, taken: list[ops.Op]) -> None:
        """Write the ops between calls as batches, and run each call where it was asked for."""
        run: list[ops.Op] = []
        for op in taken:
            if op[0] != ops.CALL:
                run.append(op)
                continue
            if run:
                self._write(run)
                run = []
            self._call(op[1], op[2], op[3])
        if run:
            self._write(run)

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], future: concurrent.futures.Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # the caller stopped waiting
        try:
            result = fn(self._conn, *args)
        except BaseException as exc:
            self._rollback()
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _write(self, batch_ops: list[ops.Op]) -> None:
        try:
            steps = sessions.plan(ops.fold(batch_ops))
        except Exception:
            log.exception("could not prepare a storage batch; %d writes lost", len(batch_ops))
            return
        if not steps:
            return  # everything cancelled out; nothing to commit
        try:
            self.ops_written += self._apply(steps, self._execute_many)
        except Exception:
            log.exception("storage batch failed; retrying it row by row")
            self._rollback()
            try:
                self.ops_written += self._apply(steps, self._execute_each)
            except Exception:
                log.exception("storage batch failed again; %d writes lost", len(batch_ops))
                self._rollback()
                return
        self.commits += 1

    def _apply(self, steps: list[tables.Step], execute: Callable[[tables.Step], int]) -> int:
        assert self._conn is not None
        self._conn.execute("BEGIN")
        written = sum(execute(step) for step in steps)
        self._conn.execute("COMMIT")
        return written

    def _execute_many(self, step: tables.Step) -> int:
        assert self._conn is not None
        sql, items, to_row = step
        rows: Iterable[tuple[Any, ...]] = items if to_row is tables.same else map(to_row, items)
        self._conn.executemany(sql, rows)
        return len(items)

    def _execute_each(self, step: tables.Step) -> int:
        """The fallback: a row that cannot be written is logged and skipped; the rest of the batch lands."""
        assert self._conn is not None
        sql, items, to_row = step
        written = 0
        for item in items:
            try:
                self._conn.execute(sql, to_row(item))
                written += 1
            except (sqlite3.InterfaceError, sqlite3.IntegrityError, sqlite3.DataError, TypeError,
                    ValueError, OverflowError):  # fmt: skip
                log.error("storage dropped an unwritable row for %r", sql, exc_info=True)
        return written

    def _rollback(self) -> None:
        assert self._conn is not None
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("storage rollback failed")
