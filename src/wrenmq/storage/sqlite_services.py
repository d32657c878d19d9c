"""The services' state in SQLite: device presence, resources and their change events, bridge outboxes.

Each service keeps the file it always had beside ``wrenmq.db`` (``presence.db``, ``resources.db``,
``bridges.db``, same tables), so a data directory written by an older wrenmq is read as it is. They are
ATTACHed to the one connection of ``SqliteStorage``: one writer thread does all the SQLite work, and
every table name here is qualified by its file's schema name (two of them have an ``events`` table).

Writes the services do not wait for are folded into the writer's batches (``batch``) and become steps
here; reads and ``resource_commit`` run on the writer thread between batches, in the order they were
asked for (``SqliteStorage._ask``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import batch as ops
from .base import Json, OutboxRecord, ResourceConflict, StoredMessage
from .private import prepare_database

# One statement of a batch: SQL, the items it applies to, and how an item becomes parameters.
Step = tuple[str, list[Any], Callable[[Any], tuple[Any, ...]]]

SCHEMAS = {
    "presence": """
CREATE TABLE IF NOT EXISTS presence.devices (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presence.events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS presence.events_by_device ON events (device, seq);
""",
    "resources": """
CREATE TABLE IF NOT EXISTS resources.resources (
    kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS resources.events (
    kind TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, seq)
);
""",
    "bridges": """
CREATE TABLE IF NOT EXISTS bridges.outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, connection TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, properties BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS bridges.outbox_connection ON outbox (connection, id);
""",
}


def attach(conn: sqlite3.Connection, directory: Path, synchronous: str) -> int:
    """Attach (creating, private) every service file in ``directory``; the next free outbox key."""
    for name, schema in SCHEMAS.items():
        path = directory / f"{name}.db"
        prepare_database(path)
        conn.execute("ATTACH DATABASE ? AS " + name, (str(path),))
        conn.execute(f"PRAGMA {name}.journal_mode = WAL")
        conn.execute(f"PRAGMA {name}.synchronous = {synchronous}")
        conn.executescript(schema)
    # Keys are never reused, not even those of rows deleted before a restart (AUTOINCREMENT's promise).
    (top,) = conn.execute(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM bridges.outbox), 0),"
        " COALESCE((SELECT seq FROM bridges.sqlite_sequence WHERE name = 'outbox'), 0))"
    ).fetchone()
    return int(top) + 1


def same(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """A ``Step``'s ``to_row`` for items that are rows already (the writer passes them on as they are)."""
    return item


def _outbox_row(record: OutboxRecord) -> tuple[Any, ...]:
    m = record.message
    return (record.key, record.connection, m.topic, m.payload, m.qos, 1 if m.retain else 0, m.properties)


_OUTBOX_CLEAR = "DELETE FROM bridges.outbox WHERE connection = ?"
_OUTBOX_DELETE = "DELETE FROM bridges.outbox WHERE id = ?"
_OUTBOX_ADD = (
    "INSERT OR REPLACE INTO bridges.outbox (id, connection, topic, payload, qos, retain, properties)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DEVICE_PUT = "INSERT OR REPLACE INTO presence.devices (id, body) VALUES (?, ?)"
_DEVICE_DELETES = ("DELETE FROM presence.devices WHERE id = ?", "DELETE FROM presence.events WHERE device = ?")
_DEVICE_EVENT = "INSERT INTO presence.events (device, body) VALUES (?, ?)"
_DEVICE_EVENTS_TRIM = (
    "DELETE FROM presence.events WHERE device = ? AND seq NOT IN"
    " (SELECT seq FROM presence.events WHERE device = ? ORDER BY seq DESC LIMIT ?)"
)


def plan(b: ops.Batch) -> list[Step]:
    """The statements for the services' part of ``b``: outbox clears first, device ops in order."""
    steps: list[Step] = [
        (_OUTBOX_CLEAR, [(c,) for c in b.outbox_clears], same),
        (_OUTBOX_DELETE, [(k,) for k, r in b.outbox.items() if r is None], same),
        (_OUTBOX_ADD, [r for r in b.outbox.values() if r is not None], _outbox_row),
    ]
    for op in b.devices:
        kind = op[0]
        if kind == ops.DEVICE_PUT:
            steps.append((_DEVICE_PUT, op[1], same))
        elif kind == ops.DEVICE_DELETE:
            steps.extend((sql, [(op[1],)], same) for sql in _DEVICE_DELETES)
        else:
            steps.append((_DEVICE_EVENT, [(op[1], op[2])], same))
            steps.append((_DEVICE_EVENTS_TRIM, [(op[1], op[1], op[3])], same))
    return steps


# -- reads and the resource commit: called on the writer thread with its connection ---------------------


def devices_load(conn: sqlite3.Connection) -> list[Json]:
    return [json.loads(body) for (body,) in conn.execute("SELECT body FROM presence.devices ORDER BY id")]


def device_events(conn: sqlite3.Connection, device_id: str, limit: int) -> list[Json]:
    rows = conn.execute(
        "SELECT body FROM presence.events WHERE device = ? ORDER BY seq DESC LIMIT ?", (device_id, limit)
    ).fetchall()
    return [json.loads(body) for (body,) in rows]


def _last_seq(conn: sqlite3.Connection, kind: str) -> int:
    (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM resources.events WHERE kind = ?", (kind,)).fetchone()
    return int(last)


def resource_get(conn: sqlite3.Connection, kind: str, resource_id: str) -> Json | None:
    row = conn.execute("SELECT body FROM resources.resources WHERE kind = ? AND id = ?", (kind, resource_id)).fetchone()
    return json.loads(row[0]) if row else None


def resource_state(conn: sqlite3.Connection, kind: str, resource_id: str) -> tuple[Json | None, int]:
    return resource_get(conn, kind, resource_id), _last_seq(conn, kind)


def resource_commit(
    conn: sqlite3.Connection, kind: str, resource_id: str, resource: str | None, seq: int, event: str
) -> None:
    """``resource`` and ``event`` are JSON text already (encoded on the loop, where a bad value is
    the caller's error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = _last_seq(conn, kind)
        if seq != last + 1:
            raise ResourceConflict(f"event seq {seq} of {kind!r} is not its last seq + 1 ({last + 1})")
        if resource is None:
            conn.execute("DELETE FROM resources.resources WHERE kind = ? AND id = ?", (kind, resource_id))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO resources.resources (kind, id, body) VALUES (?, ?, ?)",
                (kind, resource_id, resource),
            )
        conn.execute("INSERT INTO resources.events (kind, seq, body) VALUES (?, ?, ?)", (kind, seq, event))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def resource_page(conn: sqlite3.Connection, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, Json]], int]:
    rows = conn.execute(
        "SELECT id, body FROM resources.resources WHERE kind = ? ORDER BY id LIMIT ? OFFSET ?", (kind, limit, offset)
    ).fetchall()
    (total,) = conn.execute("SELECT COUNT(*) FROM resources.resources WHERE kind = ?", (kind,)).fetchone()
    return [(rid, json.loads(body)) for rid, body in rows], int(total)


def resource_events(conn: sqlite3.Connection, kind: str, since: int, limit: int) -> tuple[list[Json], int]:
    rows = conn.execute(
        "SELECT body FROM resources.events WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?", (kind, since, limit)
    ).fetchall()
    return [json.loads(body) for (body,) in rows], _last_seq(conn, kind)


def outbox_load(conn: sqlite3.Connection) -> list[OutboxRecord]:
    rows = conn.execute(
        "SELECT id, connection, topic, payload, qos, retain, properties FROM bridges.outbox ORDER BY id"
    ).fetchall()
    return [
        OutboxRecord(key, connection, StoredMessage(topic, payload, qos, bool(retain), properties, None))
        for key, connection, topic, payload, qos, retain, properties in rows
    ]
