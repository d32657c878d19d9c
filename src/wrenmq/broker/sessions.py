"""The session table: which sessions exist, and what happens when one loses its connection.

A session outlives its connection for its Session Expiry Interval [MQTT-3.1.2-23]: ``detach``
hands the session's shared-subscription deliveries to other members, settles the will (now, or
after its delay) and starts the expiry clock; ``end`` discards a session (Clean Start, expiry,
an administrator, a session found to belong to another user). Taking a session over at CONNECT
is the CONNECT policy's (it decides who may); the table does the detaching.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .session import NEVER_EXPIRES, Delivery, Session
from .wills import WillScheduler

if TYPE_CHECKING:
    from .broker import Broker
    from .connection import Connection

log = logging.getLogger("wrenmq.broker")

_VERSION_NAMES = {3: "3.1", 4: "3.1.1", 5: "5.0"}


class SessionTable:
    """Every session by client id, live or waiting for its client."""

    def __init__(self, broker: Broker, wills: WillScheduler) -> None:
        self.broker = broker
        self.wills = wills
        self.sessions: dict[str, Session] = {}

    def connection_closed(self, conn: Connection) -> None:
        """``conn`` is gone (the transport closed, whatever the reason)."""
        session = conn.session
        if not conn.connected or session is None:
            return
        if log.isEnabledFor(logging.INFO):
            log.info(
                "client %s disconnected from %s (MQTT %s): %s",
                conn.client_id,
                conn.peer,
                _VERSION_NAMES.get(conn.version, conn.version),
                conn.disconnect_reason,
            )
        hooks = self.broker.hooks
        if hooks.disconnect:  # before the session may end (on_session_expired comes second)
            expected = conn.disconnect_reason == "client disconnected"
            hooks.notify(hooks.disconnect, conn, conn.disconnect_reason, expected)
        if session.connection is conn:
            self.detach(conn, session_continues=True)

    def detach(self, conn: Connection, session_continues: bool) -> None:
        """The session loses its connection: hand shared deliveries on, settle the will, and
        end the session or start its expiry clock."""
        session = conn.session
        assert session is not None
        session.connection = None
        now = self.broker.loop.time()
        for delivery in session.take_shared():
            self._redeliver_shared(session, delivery, now)
        will, conn.will = conn.will, None
        cluster = self.broker.cluster
        if session.expiry_interval == 0 or not session_continues:
            if cluster is not None:
                cluster.will_pending(session.client_id, None, 0)
            if will is not None:
                self.wills.publish(will)
            self.end(session)
            return
        if will is not None and conn.will_delay:  # [MQTT-3.1.3-9]: wait, unless the session ends first
            self.wills.delay(session, will, conn.will_delay, conn.will_delay)
            if cluster is not None:  # (published by another node if this one dies before it is due)
                cluster.will_pending(session.client_id, will, conn.will_delay)
        else:
            if cluster is not None:
                cluster.will_pending(session.client_id, None, 0)
            if will is not None:
                self.wills.publish(will)
        self.schedule_expiry(session, session.expiry_interval)
        self.broker.persist.session_put(session, connected=False)

    def _redeliver_shared(self, session: Session, delivery: Delivery, now: float) -> None:
        group = delivery.share
        assert group is not None
        other = group.pick(exclude=session)
        if other is None or other.session.connection is None:
            if session.persistent:
                session.enqueue(delivery)  # nobody else can take it: keep it for this member
            return
        # The new member's own subscription decides QoS, RETAIN and Subscription Identifier
        # [MQTT-4.8.2-3], [MQTT-3.3.1-12], [MQTT-3.3.4-3].
        message = delivery.message
        qos = min(message.qos, other.qos)
        retain = message.retain and other.retain_as_published
        sid = other.subscription_id
        other.session.deliver(message, qos, retain, None if sid is None else [sid], group, now)

    def schedule_expiry(self, session: Session, delay: float) -> None:
        if session.expiry_interval != NEVER_EXPIRES:
            session.expiry_handle = self.broker.loop.call_later(max(0.0, delay), self._expire, session)

    def _expire(self, session: Session) -> None:
        session.expiry_handle = None
        if session.connection is None and self.sessions.get(session.client_id) is session:
            log.info("session %s expired", session.client_id)
            self.broker.stats.sessions_expired += 1
            self.end(session)

    def release(self, session: Session) -> None:
        """Forget ``session`` here without ending it: another node of the cluster takes it over
        from its stored state (no will is published, nothing stored is deleted)."""
        session.cancel_timers()
        session.will = None
        for topic_filter in session.clear_subscriptions():
            self.broker.router.unsubscribe(session.client_id, topic_filter)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def end(self, session: Session) -> None:
        """Discard a session; a will still waiting out its delay is sent now [MQTT-3.1.3-9]."""
        broker = self.broker
        session.cancel_timers()
        for topic_filter in session.clear_subscriptions():
            broker.router.unsubscribe(session.client_id, topic_filter)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        broker.persist.session_delete(session.client_id)
        if broker.cluster is not None:  # its will and client id are no longer this node's
            broker.cluster.session_ended(session.client_id)
        will, session.will = session.will, None
        if will is not None:
            self.wills.publish(will)
        hooks = broker.hooks
        if hooks.session_expired:
            hooks.notify(hooks.session_expired, session.client_id)
