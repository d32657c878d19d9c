"""The broker's tables in SQLite (``wrenmq.db``): retained messages and persistent sessions with their
queued and in-flight messages and inbound QoS 2 packet ids. The schema and its migrations, the statements
a folded ``batch.Batch`` becomes, and the load at start-up; ``sqlite.SqliteStorage`` runs them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from . import batch as ops
from . import sqlite_services as tables
from .base import (
    LoadedSession,
    LoadedState,
    StoredMessage,
    StoredSession,
    StoredSessionMessage,
    StoredSubscription,
)

log = logging.getLogger("wrenmq.storage")

SCHEMA_VERSION = 3

SCHEMA = """
BEGIN;
CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    properties BLOB NOT NULL,
    expiry_at REAL
);
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    protocol_version INTEGER NOT NULL,
    expiry_interval INTEGER NOT NULL,
    disconnected_at REAL,
    subscriptions TEXT NOT NULL,
    will_topic TEXT,
    will_payload BLOB,
    will_qos INTEGER,
    will_retain INTEGER,
    will_properties BLOB,
    will_expiry_at REAL,
    will_delay INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    owner TEXT
);
CREATE TABLE session_messages (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    packet_id INTEGER,
    state INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    msg_qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties BLOB NOT NULL,
    expiry_at REAL,
    message_id TEXT,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
CREATE TABLE inbound_qos2 (
    client_id TEXT NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
) WITHOUT ROWID;
PRAGMA user_version = 3;
COMMIT;
"""
# Each step brings a store from the version before it to this one, in one transaction.
MIGRATIONS = {
    # 2: sessions record their owner (the user); older ones have none until a client resumes them.
    2: "BEGIN; ALTER TABLE sessions ADD COLUMN owner TEXT; PRAGMA user_version = 2; COMMIT;",
    # 3: queued messages keep their Broker.message_id across a restart; older ones get a new one.
    3: "BEGIN; ALTER TABLE session_messages ADD COLUMN message_id TEXT; PRAGMA user_version = 3; COMMIT;",
}

_SESSION_COLUMNS = (
    "client_id, protocol_version, expiry_interval, disconnected_at, subscriptions, will_topic, will_payload,"
    " will_qos, will_retain, will_properties, will_expiry_at, will_delay, next_seq, owner"
)
_MESSAGE_COLUMNS = (
    "client_id, seq, qos, packet_id, state, topic, payload, msg_qos, retain, properties, expiry_at, message_id"
)
_RETAIN_UPSERT = "INSERT OR REPLACE INTO retained VALUES (?, ?, ?, ?, ?)"
_RETAIN_DELETE = "DELETE FROM retained WHERE topic = ?"
_SESSION_UPSERT = f"INSERT OR REPLACE INTO sessions ({_SESSION_COLUMNS}) VALUES ({', '.join('?' * 14)})"
_SESSION_DELETES = (
    "DELETE FROM sessions WHERE client_id = ?",
    "DELETE FROM session_messages WHERE client_id = ?",
    "DELETE FROM inbound_qos2 WHERE client_id = ?",
)
_MESSAGE_UPSERT = f"INSERT OR REPLACE INTO session_messages ({_MESSAGE_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_QUEUED_MESSAGE_UPSERT = (
    "INSERT OR REPLACE INTO session_messages (client_id, seq, qos, state, topic, payload, msg_qos, retain,"
    " properties, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MESSAGE_UPDATE = "UPDATE session_messages SET packet_id = ?, state = ? WHERE client_id = ? AND seq = ?"
_MESSAGE_DELETE = "DELETE FROM session_messages WHERE client_id = ? AND seq = ?"
_INBOUND_ADD = "INSERT OR IGNORE INTO inbound_qos2 VALUES (?, ?)"
_INBOUND_DELETE = "DELETE FROM inbound_qos2 WHERE client_id = ? AND packet_id = ?"

_Step = tables.Step
_same = tables.same


# Row builders hand sqlite3 bytearray and int where the record has bytes and bool: CPython 3.11's sqlite3
# binds only exact int/float/str/bytearray directly and sends bytes, bool and None through its adapter
# lookup, which made binding most of a message row's cost. Hot rows also avoid binding NULL (see _plan).


def _retain_row(item: tuple[str, StoredMessage]) -> tuple[Any, ...]:
    topic, m = item
    return (topic, bytearray(m.payload), m.qos, bytearray(m.properties), m.expiry_at)


def _queued_message_row(item: tuple[str, StoredSessionMessage]) -> tuple[Any, ...]:
    """A message not sent yet and without expiry: the bulk of an offline client's queue."""
    client_id, sm = item
    m = sm.message
    return (client_id, sm.seq, sm.qos, sm.state, m.topic, bytearray(m.payload), m.qos, 1 if m.retain else 0,
            bytearray(m.properties), m.message_id or "")  # fmt: skip


def _message_row(item: tuple[str, StoredSessionMessage]) -> tuple[Any, ...]:
    client_id, sm = item
    m = sm.message
    return (client_id, sm.seq, sm.qos, sm.packet_id, sm.state, m.topic, bytearray(m.payload), m.qos,
            1 if m.retain else 0, bytearray(m.properties), m.expiry_at, m.message_id or "")  # fmt: skip


def _session_row(s: StoredSession) -> tuple[Any, ...]:
    subs = json.dumps(
        [
            [x.topic_filter, x.qos, x.no_local, x.retain_as_published, x.retain_handling, x.subscription_id]
            for x in s.subscriptions
        ],
        separators=(",", ":"),
    )
    w = s.will
    will = (None,) * 6 if w is None else (w.topic, w.payload, w.qos, int(w.retain), w.properties, w.expiry_at)
    return (s.client_id, s.protocol_version, s.expiry_interval, s.disconnected_at, subs, *will,
            s.will_delay, s.next_seq, s.owner)  # fmt: skip


def plan(b: ops.Batch) -> list[_Step]:
    """The statements that apply ``b``, session deletes first (see ``batch`` for why that order is safe)."""
    deletes = [(c,) for c in b.session_deletes]
    steps: list[_Step] = [(sql, deletes, _same) for sql in _SESSION_DELETES]
    steps.append((_RETAIN_UPSERT, [(t, m) for t, m in b.retained.items() if m is not None], _retain_row))
    steps.append((_RETAIN_DELETE, [(t,) for t, m in b.retained.items() if m is None], _same))
    steps.append((_SESSION_UPSERT, list(b.sessions.values()), _session_row))
    upserts, updates, message_deletes = b.split_messages()
    steps.append((_MESSAGE_DELETE, message_deletes, _same))
    queued = [u for u in upserts if u[1].packet_id is None and u[1].message.expiry_at is None]
    if len(queued) < len(upserts):
        upserts = [u for u in upserts if u[1].packet_id is not None or u[1].message.expiry_at is not None]
        steps.append((_MESSAGE_UPSERT, upserts, _message_row))
    steps.append((_QUEUED_MESSAGE_UPSERT, queued, _queued_message_row))
    steps.append((_MESSAGE_UPDATE, updates, _same))
    inbound = [(c, pid, add) for c, rows in b.inbound.items() for pid, add in rows.items()]
    steps.append((_INBOUND_ADD, [(c, p) for c, p, add in inbound if add], _same))
    steps.append((_INBOUND_DELETE, [(c, p) for c, p, add in inbound if not add], _same))
    steps.extend(tables.plan(b))
    return [step for step in steps if step[1]]


def load(conn: sqlite3.Connection) -> LoadedState:
    """Everything the store holds; a session's ``next_seq`` is raised past its highest stored message."""
    retained = [
        StoredMessage(topic, payload, qos, True, properties, expiry_at)
        for topic, payload, qos, properties, expiry_at in conn.execute(
            "SELECT topic, payload, qos, properties, expiry_at FROM retained"
        )
    ]
    loaded: dict[str, LoadedSession] = {}
    for row in conn.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY client_id"):
        session = _session_from_row(row)
        loaded[session.client_id] = LoadedSession(session, [], [])
    orphans = 0
    for row in conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM session_messages ORDER BY client_id, seq"):
        owner = loaded.get(row[0])
        if owner is None:
            orphans += 1
            continue
        message = StoredMessage(row[5], row[6], row[7], bool(row[8]), row[9], row[10], row[11] or None)
        owner.messages.append(StoredSessionMessage(row[1], row[2], row[3], row[4], message))
    for client_id, packet_id in conn.execute("SELECT client_id, packet_id FROM inbound_qos2"):
        owner = loaded.get(client_id)
        if owner is None:
            orphans += 1
        else:
            owner.inbound_qos2.append(packet_id)
    if orphans:
        log.warning("ignored %d stored rows that belong to no session", orphans)
    for owner in loaded.values():
        if owner.messages:
            owner.session.next_seq = max(owner.session.next_seq, owner.messages[-1].seq + 1)
    return LoadedState(retained=retained, sessions=list(loaded.values()))


def _session_from_row(row: tuple[Any, ...]) -> StoredSession:
    (client_id, protocol_version, expiry_interval, disconnected_at, subs, will_topic, will_payload, will_qos,
     will_retain, will_properties, will_expiry_at, will_delay, next_seq, owner) = row  # fmt: skip
    subscriptions = [
        StoredSubscription(f, qos, bool(nl), bool(rap), rh, sid) for f, qos, nl, rap, rh, sid in json.loads(subs)
    ]
    will = None
    if will_topic is not None:
        will = StoredMessage(will_topic, will_payload, will_qos, bool(will_retain), will_properties, will_expiry_at)
    return StoredSession(
        client_id,
        protocol_version,
        expiry_interval,
        disconnected_at,
        subscriptions,
        will,
        will_delay,
        next_seq,
        owner,
    )
