"""Bring back what storage holds at start-up: retained messages, sessions with their
subscriptions, queued and in-flight messages, inbound QoS 2 state, delayed wills and expiry clocks.

Cold code, run once: plain Python, outside the compiled hot path.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..hooks import RestoredClient
from ..mqtt.topics import parse_shared, topic_matches
from ..storage import QUEUED, LoadedState
from .router import Subscriber
from .session import NEVER_EXPIRES, Delivery, Session

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("wrenmq.broker")


def restore(broker: Broker, state: LoadedState) -> None:
    persist = broker.persist
    table = broker.table
    hooks = broker.hooks
    now_wall = time.time()
    for record in state.retained:
        message = persist.live_message(record)
        if not message.expired(broker.loop.time()):
            broker.number(message)
            broker.retained.set(message)
    for loaded in state.sessions:
        stored = loaded.session
        session = Session(broker, stored.client_id, stored.protocol_version, stored.expiry_interval)
        session.owner = stored.owner
        table.sessions[stored.client_id] = session
        subject = restored_client(stored.client_id, stored.owner, stored.protocol_version)
        for s in stored.subscriptions:
            sub = Subscriber(
                session,
                s.topic_filter,
                s.qos,
                s.no_local,
                s.retain_as_published,
                s.retain_handling,
                s.subscription_id,
            )
            if hooks.acl_check and hooks.run_read_check(subject, parse_shared(s.topic_filter)[1]) != 1:
                sub.reader = subject  # not (any longer) readable whole: check each message until it is back
            broker.router.subscribe(sub)
            session.add_subscription(sub)
        next_seq = stored.next_seq
        waiting: list[Delivery] = []
        for queued in loaded.messages:
            qos, retain = persist.split_qos(queued.qos)
            message = persist.live_message(queued.message)
            delivery = Delivery(message, qos, retain, _subscription_ids(session, message.topic), None, queued.seq)
            next_seq = max(next_seq, queued.seq + 1)
            if queued.state == QUEUED or not queued.packet_id:
                waiting.append(delivery)
            else:
                delivery.packet_id = queued.packet_id
                delivery.state = queued.state
                session.own_inflight()[queued.packet_id] = delivery
        over = session.restore_queued(waiting)  # today's queue bounds may be lower than when stored
        if over:
            log.warning("session %s: %d stored messages over its queue bounds dropped", session.client_id, len(over))
            for delivery in over:
                persist.message_delete(session, delivery)
        session.next_seq = next_seq
        if loaded.inbound_qos2:  # (otherwise the shared empty NO_IDS: see Session)
            session.inbound_qos2 = set(loaded.inbound_qos2)
        elapsed = now_wall - (stored.disconnected_at or now_wall)
        if stored.will is not None:
            will = persist.live_message(stored.will, stored.client_id)
            table.wills.delay(session, will, stored.will_delay, stored.will_delay - elapsed)
        if session.expiry_interval != NEVER_EXPIRES:
            table.schedule_expiry(session, session.expiry_interval - elapsed)
    if state.sessions or state.retained:
        log.info("restored %d sessions and %d retained messages", len(state.sessions), len(broker.retained))


def restored_client(client_id: str, owner: str | None, version: int) -> RestoredClient:
    """Who a restored session's ACL checks are about until its client reconnects (see session_owner)."""
    user = (owner or "").split("\n")[0]
    return RestoredClient(client_id, user[5:] if user.startswith("user:") else None, version)


def _subscription_ids(session: Session, topic: str) -> list[int] | None:
    """The Subscription Identifiers a restored delivery carries [MQTT-3.3.4-3]: storage keeps none per
    message, so they are taken again from the session's matching subscriptions."""
    if session.protocol_version != 5:
        return None
    ids = [
        sub.subscription_id
        for sub in session.subscriptions.values()
        if sub.subscription_id is not None and topic_matches(parse_shared(sub.topic_filter)[1], topic)
    ]
    return ids or None
