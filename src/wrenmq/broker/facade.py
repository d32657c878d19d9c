"""``BrokerFacade``: what the API and services may know and do of a running broker.

The broker's own rooms (sessions, connections, the router, the retain store, its counters) change
shape as the broker does; the API and services read them only through this facade, as values
(``ClientView``, ``SubscriptionView``, ``BrokerCounts``) taken at the moment they ask. Access
questions go through the broker's one rule for each: ``check_login`` for logins, the hooks'
ACL for topics (``authorize``, ``read_access``), and a denial is counted once, here.

Plain Python, outside the compiled hot path: nothing here runs per message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..hooks import PARTIAL, AuthResult, ClientInfo
from ..mqtt.topics import parse_shared

if TYPE_CHECKING:
    from ..config import Config
    from ..mqtt import packets as p
    from ..transports import Listener
    from .broker import Broker
    from .message import Message
    from .router import Subscriber
    from .session import Session
    from .stats import Stats

__all__ = ["BrokerCounts", "BrokerFacade", "ClientView", "SubscriptionView"]


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    topic_filter: str  # as subscribed, ``$share/<group>/`` included
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    subscription_id: int | None
    share_group: str | None

    @property
    def inner_filter(self) -> str:
        """The filter without its ``$share/<group>/``."""
        return parse_shared(self.topic_filter)[1] if self.share_group is not None else self.topic_filter


@dataclass(frozen=True, slots=True)
class ClientView:
    """A session (every session is a client, connected or not) and its connection, if any."""

    client_id: str
    connected: bool
    username: str | None
    address: str | None
    protocol_version: int
    listener: str | None
    keep_alive: int | None
    session_expiry_interval: int
    connected_since: float | None  # Unix time
    subscriptions: tuple[SubscriptionView, ...]
    inflight: int
    queued: int
    dropped: int


@dataclass(frozen=True, slots=True)
class BrokerCounts:
    connections: int
    sessions: int
    subscriptions: int
    retained: int
    queued: int  # messages waiting in session queues
    queued_bytes: int  # their topic and payload bytes
    inflight: int  # outgoing QoS 1/2 messages sent, not yet acknowledged


class BrokerFacade:
    """The broker as the API and services see it (see the module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    # -- what it is -----------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._broker.config

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._broker.loop

    @property
    def running(self) -> bool:
        return self._broker.running

    @property
    def started_at(self) -> float:
        """Unix time of start-up (0 before)."""
        return self._broker.started_at

    @property
    def listeners(self) -> list[Listener]:
        return list(self._broker.listeners)

    @property
    def stats(self) -> Stats:
        """The broker's counters, to read (they only grow)."""
        return self._broker.stats

    def storage_writable(self) -> bool:
        return self._broker.storage.writable()

    def counts(self) -> BrokerCounts:
        """Sizes taken now (one pass over the sessions)."""
        queued = queued_bytes = inflight = online = 0
        for session in self._broker.sessions.values():
            queued += len(session.queue)
            queued_bytes += session.queued_bytes
            inflight += len(session.inflight_out)
            if session.connection is not None:
                online += 1
        return BrokerCounts(
            connections=online,
            sessions=len(self._broker.sessions),
            subscriptions=self._broker.router.count,
            retained=len(self._broker.retained),
            queued=queued,
            queued_bytes=queued_bytes,
            inflight=inflight,
        )

    def connections_by_listener(self) -> dict[tuple[str, int], int]:
        """Open MQTT connections that completed CONNECT, by (listener name, protocol level);
        in-process connections (no listener) under ``"embedded"``."""
        found: dict[tuple[str, int], int] = {}
        for conn in self._broker.connections:
            if conn.connected:
                key = (conn.listener.name if conn.listener is not None else "embedded", conn.version)
                found[key] = found.get(key, 0) + 1
        return found

    # -- clients and sessions ---------------------------------------------------------------------

    def client_ids(
        self, prefix: str | None = None, connected: bool | None = None, username: str | None = None
    ) -> list[str]:
        """Client ids of the sessions that pass the filters (cheap: no view is built)."""
        return [
            client_id
            for client_id, session in self._broker.sessions.items()
            if (prefix is None or client_id.startswith(prefix))
            and (connected is None or (session.connection is not None) == connected)
            and (username is None or (session.connection is not None and session.connection.username == username))
        ]

    def clients(self) -> Iterator[ClientView]:
        """Every session, connected or not (a view of each, taken as the iterator reaches it)."""
        for session in list(self._broker.sessions.values()):
            yield self._view(session)

    def client(self, client_id: str) -> ClientView | None:
        session = self._broker.sessions.get(client_id)
        return None if session is None else self._view(session)

    def subscriptions(
        self, client_id: str | None = None, prefix: str | None = None
    ) -> list[tuple[str, bool, SubscriptionView]]:
        """(client id, connected, subscription) of every subscription, or of ``client_id``'s,
        whose filter (as subscribed) starts with ``prefix``."""
        sessions = self._broker.sessions
        if client_id is not None:
            found = sessions.get(client_id)
            chosen = [found] if found is not None else []
        else:
            chosen = list(sessions.values())
        return [
            (session.client_id, session.connection is not None, _subscription_view(sub))
            for session in chosen
            for topic_filter, sub in session.subscriptions.items()
            if prefix is None or topic_filter.startswith(prefix)
        ]

    def subscribed_filters(self) -> Iterator[str]:
        """Every session's every filter, as subscribed (one per session that holds it)."""
        for session in list(self._broker.sessions.values()):
            yield from session.subscriptions

    def disconnect(self, client_id: str, discard_session: bool = False) -> bool:
        """See ``Broker.disconnect_client``; False if there is no such client."""
        return self._broker.disconnect_client(client_id, discard_session)

    def _view(self, session: Session) -> ClientView:
        conn = session.connection
        since = None
        if conn is not None:
            since = time.time() - (self._broker.loop.time() - conn.opened_at)
        return ClientView(
            client_id=session.client_id,
            connected=conn is not None,
            username=conn.username if conn is not None else None,
            address=conn.peer if conn is not None else None,
            protocol_version=session.protocol_version,
            listener=conn.listener.name if conn is not None and conn.listener is not None else None,
            keep_alive=conn.keep_alive if conn is not None else None,
            session_expiry_interval=session.expiry_interval,
            connected_since=since,
            subscriptions=tuple(_subscription_view(sub) for sub in session.subscriptions.values()),
            inflight=len(session.inflight_out),
            queued=len(session.queue),
            dropped=session.dropped,
        )

    # -- messages ---------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
    ) -> int:
        """Publish as the broker itself (see ``Broker.publish``); the number of matching subscriptions."""
        return await self._broker.publish(topic, payload, qos, retain, properties)

    def retained(self, topic: str) -> Message | None:
        """The unexpired retained message on ``topic``."""
        message = self._broker.retained.get(topic)
        if message is None or message.expired(self._broker.loop.time()):
            return None
        return message

    def retained_matching(self, topic_filter: str) -> Iterator[Message]:
        """Unexpired retained messages whose topics match ``topic_filter``."""
        now = self._broker.loop.time()
        return (message for message in self._broker.retained.match(topic_filter) if not message.expired(now))

    def retained_topics(self) -> Iterator[str]:
        return (message.topic for message in self._broker.retained)

    async def delete_retained(self, topic: str, only: Message | None = None) -> bool:
        return await self._broker.delete_retained(topic, only)

    def message_id(self, message: Message) -> str:
        return self._broker.message_id(message)

    # -- who may do what --------------------------------------------------------------------------

    def anonymous_allowed(self) -> bool:
        """Whether sign-ins no authentication source vouches for are let in (the API's ways in)."""
        return self._broker.anonymous_allowed(None)

    def check_login(
        self, client: ClientInfo, packet: p.Connect, anonymous: bool
    ) -> AuthResult | asyncio.Future[AuthResult]:
        """The broker's one login rule (``Broker.check_login``)."""
        return self._broker.check_login(client, packet, anonymous)

    def login_failed(self, host: str) -> None:
        self._broker.login_failed(host)

    def login_throttled(self, host: str) -> bool:
        return self._broker.login_throttled(host)

    def authorize(self, client: ClientInfo, topic: str, access: int, count: bool = True) -> bool:
        """May ``client`` publish to (``WRITE``) or receive from (``READ``) ``topic``? A denial is
        counted (``acl_denied``) unless ``count`` is False (a list filtered quietly)."""
        hooks = self._broker.hooks
        if not hooks.acl_check or hooks.run_acl_check(client, topic, access):
            return True
        if count:
            self._broker.stats.acl_denied += 1
        return False

    def read_access(self, client: ClientInfo, topic_filter: str, partial: bool = False) -> bool:
        """May ``client`` subscribe to ``topic_filter``: readable whole, or with ``partial`` also in
        part (``PARTIAL``: then check each message with ``authorize(..., READ)``). A denial is counted."""
        hooks = self._broker.hooks
        if not hooks.acl_check:
            return True
        answer = hooks.run_read_check(client, topic_filter)
        if answer == 1 or (partial and answer == PARTIAL):
            return True
        self._broker.stats.acl_denied += 1
        return False

    def may_read_whole(self, client: ClientInfo, topic_filter: str) -> bool:
        """Without counting: is every topic under ``topic_filter`` readable by ``client``?"""
        hooks = self._broker.hooks
        return not hooks.acl_check or hooks.run_read_check(client, topic_filter) == 1


def _subscription_view(sub: Subscriber) -> SubscriptionView:
    group = parse_shared(sub.topic_filter)[0]
    return SubscriptionView(
        topic_filter=sub.topic_filter,
        qos=sub.qos,
        no_local=sub.no_local,
        retain_as_published=sub.retain_as_published,
        retain_handling=sub.retain_handling,
        subscription_id=sub.subscription_id,
        share_group=group,
    )
