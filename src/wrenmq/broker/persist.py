"""The bridge between the broker's live state and the storage records.

Every change to a persistent session or to the retained set is reported here; this module turns
live objects into :mod:`wrenmq.storage` records (once per message, shared by every session that
stores it) and back again at start-up. ``writes`` counts enqueued writes so the connection can
tell whether routing a PUBLISH made anything that strict durability must wait for.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..mqtt.properties import WILL, decode_properties, encode_properties
from ..storage import MemoryStorage, Storage, StoredMessage, StoredSession, StoredSessionMessage, StoredSubscription
from .message import Message

if TYPE_CHECKING:
    from collections.abc import Callable

    from .connection import Connection
    from .router import Subscriber
    from .session import Delivery, Session

# A delivery's RETAIN flag can differ from the message's (Retain As Published, retained-on-subscribe),
# so it travels in bit 2 of the stored delivery QoS.
_RETAIN_BIT = 4


class Persistence:
    def __init__(self, storage: Storage, loop: asyncio.AbstractEventLoop, strict: bool, boot_id: str = "") -> None:
        self.storage = storage
        self.loop = loop
        self.boot_id = boot_id  # Broker.boot_id: a stored message keeps its Broker.message_id
        self.enabled = not isinstance(storage, MemoryStorage)
        self.strict = strict and self.enabled
        self.writes = 0
        self.held: list[Connection] = []  # connections with held output no barrier covers yet
        # What a barrier waits for besides the storage commit: the cluster's forwards to other nodes
        # (an object with ``barrier(callback)`` that chains the storage's), None on a single node.
        self.gate: Any = None
        # Where session records go: the storage, or in a cluster its Redis session store, so that
        # another node can take a session over (an object with the storage's session methods).
        self.sessions: Any = storage
        self._seal_scheduled = False

    @staticmethod
    def split_qos(stored_qos: int) -> tuple[int, bool]:
        return stored_qos & 3, bool(stored_qos & _RETAIN_BIT)

    # -- output held for commits (strict durability) ------------------------------------

    def hold(self, conn: Connection) -> None:
        """``conn`` holds output that must wait for everything enqueued so far to be committed."""
        self.held.append(conn)
        if not self._seal_scheduled:
            self._seal_scheduled = True
            self.loop.call_soon(self.seal)  # output held outside a read (timers, the API, wills)

    def seal(self) -> None:
        """Register one storage barrier that releases all held output not yet covered by one."""
        self._seal_scheduled = False
        conns = self.held
        if not conns:
            return
        self.held = []
        covered: list[tuple[Connection, int]] = []
        for conn in conns:
            count = conn.cover_held()
            if count:
                covered.append((conn, count))
        if covered:
            self.barrier(lambda: _release(covered))

    def barrier(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything enqueued so far is committed (and forwarded)."""
        gate = self.gate
        if gate is not None:
            gate.barrier(callback)
        else:
            self.storage.barrier(callback)

    async def flush(self) -> None:
        """Wait until everything enqueued so far is committed (and forwarded)."""
        future: asyncio.Future[None] = self.loop.create_future()

        def release() -> None:
            if not future.done():
                future.set_result(None)

        self.barrier(release)
        await future

    # -- records ------------------------------------------------------------------------

    def stored_message(self, message: Message) -> StoredMessage:
        """The record, built once; again only for a message numbered since (a will is stored
        before it is routed), so a replay after a restart carries the same ``Broker.message_id``."""
        record = message._stored
        if isinstance(record, StoredMessage) and (record.message_id is not None or not message.seq):
            return record
        expiry_at = None
        if message.expires_at is not None:
            expiry_at = time.time() + (message.expires_at - self.loop.time())
        message_id = message.stored_id
        if message_id is None and message.seq:
            message_id = f"{self.boot_id}-{message.seq}"  # as Broker.message_id
        stored = StoredMessage(
            message.topic,
            bytes(message.payload),
            message.qos,
            message.retain,
            encode_properties(message.properties) if message.properties else b"",
            expiry_at,
            message_id,
        )
        message._stored = stored
        return stored

    def live_message(self, record: StoredMessage, origin: str | None = None) -> Message:
        props: dict[int, Any] = {}
        if record.properties:
            props, _ = decode_properties(record.properties, 0, len(record.properties), WILL)
        expires_at = None
        if record.expiry_at is not None:
            expires_at = self.loop.time() + (record.expiry_at - time.time())
        message = Message(record.topic, record.payload, record.qos, record.retain, props, expires_at, origin)
        message._stored = record
        message.stored_id = record.message_id
        return message

    def stored_session(self, session: Session, connected: bool) -> StoredSession:
        subs = [_stored_sub(s) for s in session.subscriptions.values()]
        will = self.stored_message(session.will) if session.will is not None else None
        return StoredSession(
            session.client_id,
            session.protocol_version,
            session.expiry_interval,
            None if connected else time.time(),
            subs,
            will,
            session.will_delay,
            session.next_seq,
            session.owner,
        )

    # -- writes -------------------------------------------------------------------------

    def session_put(self, session: Session, connected: bool) -> None:
        if self.enabled and session.persistent:
            self.writes += 1
            self.sessions.session_put(self.stored_session(session, connected))

    def session_delete(self, client_id: str) -> None:
        if self.enabled:
            self.writes += 1
            self.sessions.session_delete(client_id)

    def message_add(self, session: Session, delivery: Delivery) -> None:
        if self.enabled:
            self.writes += 1
            self.sessions.message_add(
                session.client_id,
                StoredSessionMessage(
                    delivery.seq,
                    delivery.qos | (_RETAIN_BIT if delivery.retain else 0),
                    delivery.packet_id or None,
                    delivery.state,
                    self.stored_message(delivery.message),
                ),
            )

    def message_update(self, session: Session, delivery: Delivery) -> None:
        if self.enabled:
            self.writes += 1
            self.sessions.message_update(session.client_id, delivery.seq, delivery.packet_id or None, delivery.state)

    def message_delete(self, session: Session, delivery: Delivery) -> None:
        if self.enabled:
            self.writes += 1
            self.sessions.message_delete(session.client_id, delivery.seq)

    def inbound_add(self, session: Session, packet_id: int) -> None:
        if self.enabled:
            self.writes += 1
            self.sessions.inbound_add(session.client_id, packet_id)

    def inbound_delete(self, session: Session, packet_id: int) -> None:
        if self.enabled:
            self.writes += 1
            self.sessions.inbound_delete(session.client_id, packet_id)

    def retain_set(self, message: Message) -> None:
        if self.enabled:
            self.writes += 1
            self.storage.retain_set(self.stored_message(message))

    def retain_delete(self, topic: str) -> None:
        if self.enabled:
            self.writes += 1
            self.storage.retain_delete(topic)


def _stored_sub(sub: Subscriber) -> StoredSubscription:
    return StoredSubscription(
        sub.topic_filter, sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub.subscription_id
    )


def _release(covered: list[tuple[Connection, int]]) -> None:
    for conn, count in covered:
        conn.release_held(count)
