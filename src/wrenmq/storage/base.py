"""The storage interface and the records that cross it.

The broker keeps its live state in memory and reports every change to a ``Storage``. Mutating calls only
enqueue, so the event loop never waits on the disk; a caller that needs durability (strict mode, before
acknowledging a QoS 1/2 PUBLISH) asks for it with ``barrier`` and carries on when the callback runs.

Records handed to a mutating call are read later, on a writer thread: treat them as immutable from then
on and build a new record for a change.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass

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


class Storage(abc.ABC):
    """Write-behind persistence of retained messages and persistent sessions.

    Every method except ``open`` is called on the event loop thread and must not block it.
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
