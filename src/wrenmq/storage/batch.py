"""Group commit: fold a run of queued storage ops into their net effect, at most one write per row.

A QoS 1 message acknowledged quickly is added and deleted before the writer commits, so it never has to
touch the disk; that arithmetic is the same for every write-behind backend, so it lives here, free of SQL.

Why a ``Batch`` may be applied table by table rather than op by op: a session delete drops every earlier
op of its client, so the deletes can all run first; after that every row has at most one net op, and ops
on different rows commute. An outbox clear is a session delete for a bridge's outbox, and a bridged
message the remote acknowledges within the batch never touches the disk either. Device presence ops are
few (debounced) and do not commute (an event log trimmed to its newest entries), so they stay in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import OutboxRecord, StoredMessage, StoredSession, StoredSessionMessage

# Op kinds; an op is a tuple whose first item is its kind (see ``SqliteStorage`` for the shapes).
RETAIN_SET = 0  # (kind, topic, StoredMessage)
RETAIN_DELETE = 1  # (kind, topic)
SESSION_PUT = 2  # (kind, client_id, StoredSession)
SESSION_DELETE = 3  # (kind, client_id)
MESSAGE_ADD = 4  # (kind, client_id, StoredSessionMessage)
MESSAGE_UPDATE = 5  # (kind, client_id, seq, packet_id, state)
MESSAGE_DELETE = 6  # (kind, client_id, seq)
INBOUND_ADD = 7  # (kind, client_id, packet_id)
INBOUND_DELETE = 8  # (kind, client_id, packet_id)
OUTBOX_ADD = 9  # (kind, key, OutboxRecord)
OUTBOX_DELETE = 10  # (kind, key)
OUTBOX_CLEAR = 11  # (kind, connection)
DEVICE_PUT = 12  # (kind, [(device_id, entry as JSON text), ...])
DEVICE_DELETE = 13  # (kind, device_id)
DEVICE_EVENT = 14  # (kind, device_id, event as JSON text, kept)
CALL = 15  # (kind, fn, args, concurrent.futures.Future): fn(connection, *args) on the writer; never folded
DEVICE_OPS = (DEVICE_PUT, DEVICE_DELETE, DEVICE_EVENT)

Op = tuple[Any, ...]

# Net op on one session message row, kept in ``Batch.messages``:
#   StoredSessionMessage  insert it; the row did not exist before the batch
#   _Replace(msg)         insert or replace it; the row may exist already
#   _Update(pid, state)   update an existing row
#   None                  delete the row
_NOT_SEEN = object()


@dataclass(slots=True, frozen=True)
class _Replace:
    message: StoredSessionMessage


@dataclass(slots=True, frozen=True)
class _Update:
    packet_id: int | None
    state: int


MessageOp = StoredSessionMessage | _Replace | _Update | None
Upsert = tuple[str, StoredSessionMessage]  # (client_id, message)
Update = tuple[int | None, int, str, int]  # (packet_id, state, client_id, seq)
Delete = tuple[str, int]  # (client_id, seq)


@dataclass(slots=True)
class Batch:
    """The net effect of a run of ops. Apply ``session_deletes`` first, then the rest in any order."""

    session_deletes: dict[str, None] = field(default_factory=dict)  # an ordered set
    sessions: dict[str, StoredSession] = field(default_factory=dict)
    retained: dict[str, StoredMessage | None] = field(default_factory=dict)  # None = delete
    messages: dict[str, dict[int, MessageOp]] = field(default_factory=dict)
    inbound: dict[str, dict[int, bool]] = field(default_factory=dict)  # False = delete
    outbox_clears: dict[str, None] = field(default_factory=dict)  # connections; apply first, like session deletes
    outbox: dict[int, OutboxRecord | None] = field(default_factory=dict)  # by key; None = delete
    devices: list[Op] = field(default_factory=list)  # device ops, in order

    def split_messages(self) -> tuple[list[Upsert], list[Update], list[Delete]]:
        """Net message rows as (upserts, updates, deletes), each ready to feed a statement."""
        upserts: list[Upsert] = []
        updates: list[Update] = []
        deletes: list[Delete] = []
        for client_id, rows in self.messages.items():
            for seq, op in rows.items():
                if op is None:
                    deletes.append((client_id, seq))
                elif isinstance(op, StoredSessionMessage):
                    upserts.append((client_id, op))
                elif isinstance(op, _Replace):
                    upserts.append((client_id, op.message))
                else:
                    updates.append((op.packet_id, op.state, client_id, seq))
        return upserts, updates, deletes


def fold(ops: list[Op]) -> Batch:
    """Reduce ``ops`` (in the order they were enqueued) to a ``Batch``.

    Relies on the interface's promise that ``message_add`` uses a fresh ``seq``: an add cancelled by a
    delete in the same batch must never have replaced a row that was already stored.
    """
    batch = Batch()
    messages = batch.messages
    for op in ops:
        kind = op[0]
        if kind == MESSAGE_ADD:
            msg: StoredSessionMessage = op[2]
            rows = messages.get(op[1])
            if rows is None:
                rows = messages[op[1]] = {}
            prev = rows.get(msg.seq, _NOT_SEEN)
            fresh = prev is _NOT_SEEN or isinstance(prev, StoredSessionMessage)
            # Over a pending delete or update the row exists on disk, so the add must replace it.
            rows[msg.seq] = msg if fresh else _Replace(msg)
        elif kind == MESSAGE_DELETE:
            rows = messages.get(op[1])
            if rows is None:
                rows = messages[op[1]] = {}
            if isinstance(rows.get(op[2]), StoredSessionMessage):
                del rows[op[2]]  # added and deleted within the batch: it never reaches the disk
            else:
                rows[op[2]] = None
        elif kind == MESSAGE_UPDATE:
            _fold_update(messages, op[1], op[2], op[3], op[4])
        elif kind in (INBOUND_ADD, INBOUND_DELETE):
            batch.inbound.setdefault(op[1], {})[op[2]] = kind == INBOUND_ADD
        elif kind == OUTBOX_ADD:
            batch.outbox[op[1]] = op[2]  # keys are never reused: nothing on disk to replace
        elif kind == OUTBOX_DELETE:
            if batch.outbox.get(op[1]) is not None:
                del batch.outbox[op[1]]  # added and acknowledged within the batch
            else:
                batch.outbox[op[1]] = None
        elif kind == OUTBOX_CLEAR:
            outbox = batch.outbox
            for key in [k for k, r in outbox.items() if r is not None and r.connection == op[1]]:
                del outbox[key]
            batch.outbox_clears[op[1]] = None
        elif kind in DEVICE_OPS:
            batch.devices.append(op)
        elif kind == RETAIN_SET:
            batch.retained[op[1]] = op[2]
        elif kind == RETAIN_DELETE:
            batch.retained[op[1]] = None
        elif kind == SESSION_PUT:
            batch.sessions[op[1]] = op[2]
        elif kind == SESSION_DELETE:
            client_id = op[1]
            batch.sessions.pop(client_id, None)
            messages.pop(client_id, None)
            batch.inbound.pop(client_id, None)
            batch.session_deletes[client_id] = None
        else:
            raise ValueError(f"unknown storage op kind {kind!r}")
    return batch


def _fold_update(
    messages: dict[str, dict[int, MessageOp]], client_id: str, seq: int, packet_id: int | None, state: int
) -> None:
    rows = messages.setdefault(client_id, {})
    prev = rows.get(seq, _NOT_SEEN)
    if prev is None:
        return  # updating a deleted row changes nothing
    if isinstance(prev, StoredSessionMessage):
        rows[seq] = StoredSessionMessage(prev.seq, prev.qos, packet_id, state, prev.message)
    elif isinstance(prev, _Replace):
        old = prev.message
        rows[seq] = _Replace(StoredSessionMessage(old.seq, old.qos, packet_id, state, old.message))
    else:
        rows[seq] = _Update(packet_id, state)
