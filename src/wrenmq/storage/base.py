"""The storage interface and the records that cross it: every durable thing wrenmq keeps goes here.

The broker keeps its live state in memory and reports every change to a ``Storage``. Mutating calls only
enqueue, so the event loop never waits on the disk; a caller that needs durability (strict mode, before
acknowledging a QoS 1/2 PUBLISH) asks for it with ``barrier`` and carries on when the callback runs.

The services keep theirs here too, through small typed methods that name what they store (a device's
registry entry, a resource and its change event, a message in a bridge's outbox), so no SQL reaches a
service and a second backend (Redis, for a cluster) is a second implementation of this class. Writes a
service does not wait for are enqueued like the broker's (``device_put``, ``outbox_add``); reads, and
the one write that must be known to have landed (``resource_commit``), are coroutines.

Records handed to a mutating call are read later, on a writer thread: treat them as immutable from then
on and build a new record for a change.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]
"""A JSON object as a service hands it over; stored as JSON, so a read returns a fresh copy."""

NEVER_EXPIRES = 0xFFFFFFFF
"""Session Expiry Interval meaning the session outlives every disconnect."""

QUEUED, SENT, RELEASED = 0, 1, 2
"""``StoredSessionMessage.state``: not sent yet; PUBLISH sent, awaiting PUBACK/PUBREC; PUBREC received,
awaiting PUBCOMP (the body is kept though it is no longer needed)."""


@dataclass(slots=True)
class StoredMessage:
    """An application message as it must survive a restart."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes  # an encoded MQTT 5 property block, opaque to storage
    expiry_at: float | None  # wall clock (time.time()) when it expires; None = never
    message_id: str | None = None  # Broker.message_id, kept for session messages; None: not recorded


@dataclass(slots=True)
class StoredSubscription:
    topic_filter: str  # as subscribed, including any "$share/group/" prefix
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    subscription_id: int | None


@dataclass(slots=True)
class StoredSession:
    client_id: str
    protocol_version: int  # 3, 4 or 5
    expiry_interval: int  # seconds; NEVER_EXPIRES = never
    disconnected_at: float | None  # wall clock; None while the client is connected
    subscriptions: list[StoredSubscription]
    will: StoredMessage | None  # only a will still pending (delayed) is stored
    will_delay: int  # seconds
    next_seq: int = 0
    owner: str | None = None  # the user it belongs to (broker.session_owner); None: not recorded


@dataclass(slots=True)
class StoredSessionMessage:
    """One message in a session's outbound queue or in flight to it."""

    seq: int  # order within the session; monotonic, never reused while the session lives
    qos: int  # delivery QoS to this session
    packet_id: int | None  # set once sent
    state: int  # QUEUED, SENT or RELEASED
    message: StoredMessage


@dataclass(slots=True)
class LoadedSession:
    session: StoredSession
    messages: list[StoredSessionMessage]  # ordered by seq
    inbound_qos2: list[int]  # packet ids of inbound QoS 2 PUBLISHes (PUBREC sent) awaiting PUBREL


@dataclass(slots=True)
class LoadedState:
    retained: list[StoredMessage]
    sessions: list[LoadedSession]


@dataclass(slots=True)
class OutboxRecord:
    """A message waiting in an external broker connection's outbox (``services.outbox``)."""

    key: int  # what ``outbox_add`` returned; increasing in the order messages were added
    connection: str  # the connection's name
    message: StoredMessage  # expiry_at is not kept


class ResourceConflict(Exception):
    """``resource_commit`` with a seq that is not the kind's last + 1: someone else changed the kind."""


class Storage(abc.ABC):
    """Write-behind persistence of retained messages, persistent sessions and the services' state.

    Every method except ``open`` is called on the event loop thread and must not block it. Reads and
    writes of one caller are seen in the order they were made: a read returns what was enqueued before it.
    """

    commits: int = 0
    """Transactions committed, for metrics."""
    ops_written: int = 0
    """Row writes that reached the store (after coalescing), for metrics."""

    @abc.abstractmethod
    def open(self, loop: asyncio.AbstractEventLoop) -> LoadedState:
        """Create the schema if needed and load everything; may block, as it runs at start-up."""

    @abc.abstractmethod
    def retain_set(self, msg: StoredMessage) -> None: ...

    @abc.abstractmethod
    def retain_delete(self, topic: str) -> None: ...

    @abc.abstractmethod
    def session_put(self, session: StoredSession) -> None:
        """Upsert the session's metadata, its full subscription list and its pending will."""

    @abc.abstractmethod
    def session_delete(self, client_id: str) -> None:
        """Delete the session together with its messages and inbound QoS 2 packet ids."""

    @abc.abstractmethod
    def message_add(self, client_id: str, msg: StoredSessionMessage) -> None:
        """Add a message under a ``seq`` the session has not used before."""

    @abc.abstractmethod
    def message_update(self, client_id: str, seq: int, packet_id: int | None, state: int) -> None: ...

    @abc.abstractmethod
    def message_delete(self, client_id: str, seq: int) -> None: ...

    @abc.abstractmethod
    def inbound_add(self, client_id: str, packet_id: int) -> None: ...

    @abc.abstractmethod
    def inbound_delete(self, client_id: str, packet_id: int) -> None: ...

    # -- device presence (services.presence) ---------------------------------------------------

    @abc.abstractmethod
    async def devices_load(self) -> list[Json]:
        """Every device's registry entry, ordered by device id."""

    @abc.abstractmethod
    def device_put(self, entries: list[Json]) -> None:
        """Upsert registry entries, each keyed by its ``deviceId``."""

    @abc.abstractmethod
    def device_delete(self, device_id: str) -> None:
        """Forget the device's entry and its events."""

    @abc.abstractmethod
    def device_event_add(self, device_id: str, event: Json, kept: int) -> None:
        """Append ``event`` to the device's events and keep only the newest ``kept``."""

    @abc.abstractmethod
    async def device_events(self, device_id: str, limit: int) -> list[Json]:
        """The device's newest ``limit`` events, newest first (enqueued ones included)."""

    # -- resources and their change events (services.changes) ------------------------------------

    @abc.abstractmethod
    async def resource_state(self, kind: str, resource_id: str) -> tuple[Json | None, int]:
        """The resource (None: there is none) and the kind's last event seq (0: no events yet)."""

    @abc.abstractmethod
    async def resource_commit(self, kind: str, resource_id: str, resource: Json | None, seq: int, event: Json) -> None:
        """Store ``resource`` (None: delete it) and append ``event`` as the kind's event ``seq``, in one
        transaction, committed when this returns. ``ResourceConflict`` (and nothing stored) unless
        ``seq`` is the kind's last seq + 1: the log stays gap-free whoever writes it."""

    @abc.abstractmethod
    async def resource_get(self, kind: str, resource_id: str) -> Json | None: ...

    @abc.abstractmethod
    async def resource_page(self, kind: str, limit: int, offset: int) -> tuple[list[tuple[str, Json]], int]:
        """(id, resource) pairs of a kind ordered by id, and how many the kind has in all."""

    @abc.abstractmethod
    async def resource_events(self, kind: str, since: int, limit: int) -> tuple[list[Json], int]:
        """Events with seq > ``since`` (at most ``limit``, oldest first), and the kind's last seq."""

    # -- external broker outboxes (services.outbox) -----------------------------------------------

    @abc.abstractmethod
    async def outbox_load(self) -> list[OutboxRecord]:
        """Every outbox message of every connection, in the order they were added."""

    @abc.abstractmethod
    def outbox_add(self, connection: str, message: StoredMessage) -> int:
        """Enqueue ``message`` for ``connection``; the key returned names it to ``outbox_delete``."""

    @abc.abstractmethod
    def outbox_delete(self, key: int) -> None: ...

    @abc.abstractmethod
    def outbox_clear(self, connection: str) -> None:
        """Delete every message of ``connection`` added so far."""

    # -- commit tracking --------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def dirty(self) -> bool:
        """True while some enqueued write is not yet committed."""

    def writable(self) -> bool:
        """Whether writes are being accepted and committed (readiness checks ask this)."""
        return True

    @abc.abstractmethod
    def barrier(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop once everything enqueued before this call is committed.

        Callbacks run in the order ``barrier`` was called, never synchronously inside it.
        """

    async def flush(self) -> None:
        """Wait until everything enqueued so far is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def release() -> None:
            if not future.done():  # the waiter may have been cancelled
                future.set_result(None)

        self.barrier(release)
        await future

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush, then release the store; calling it again does nothing."""
