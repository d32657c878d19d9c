"""What the broker does with each event of a client's protocol (``mqtt.server.ServerProtocol``):
the broker's side of a PUBLISH (its limits and ACL, the publish hooks, routing, then the ack
through the protocol), the session's side of the QoS 1/2 flows, SUBSCRIBE, DISCONNECT.
``Connection`` pulls the events and calls ``HANDLERS`` (PUBLISH, the hot one, directly).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..hooks import WRITE, DropReason, Reject
from ..mqtt import packets as p
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import client_may_publish, is_bridge_state
from .hookset import WANT_PUBLISH, WANT_PUBLISHED
from .message import Message
from .session import RECEIVED, SENT

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("wrenmq.connection")

_EXPIRY = PropertyId.MESSAGE_EXPIRY_INTERVAL


def on_connect(conn: Connection, packet: p.Connect) -> None:
    conn.broker.admission.accept_connect(conn, packet)


def on_publish(conn: Connection, packet: p.Publish) -> None:
    """A PUBLISH that passed the protocol's rules (QoS, retain, alias, Receive Maximum): the
    broker's limits and ACL, the publish hooks, routing, then its ack."""
    limits = conn.limits
    if limits.max_publish_rate:
        conn.rate_limit(limits.max_publish_rate)
    topic = packet.topic
    # Levels are at most len + 1: count them only for a topic long enough to have too many.
    if len(topic) > limits.max_topic_length or (
        len(topic) >= limits.max_topic_levels and topic.count("/") >= limits.max_topic_levels
    ):
        log.info("client %s published to a topic beyond max_topic_length/levels", conn.client_id)
        _deny_publish(conn, packet, ReasonCode.TOPIC_NAME_INVALID, DropReason.TOPIC_LIMITS, "", None)
        return
    if (
        topic[0] == "$"  # (a topic is never empty here)
        and not client_may_publish(topic)
        and not (conn.bridge and is_bridge_state(topic, conn.client_id))
    ):
        conn.broker.stats.acl_denied += 1
        log.info("client %s may not publish to %s (the broker's topics)", conn.client_id, topic)
        _deny_publish(
            conn, packet, ReasonCode.NOT_AUTHORIZED, DropReason.PUBLISH_DENIED, "the broker's own topic", None
        )
        return
    qos = packet.qos
    props = packet.properties
    expires_at = None
    if props:
        expiry = props.get(_EXPIRY)
        if expiry is not None:
            expires_at = conn.loop.time() + expiry
    message = Message(topic, packet.payload, qos, packet.retain, props, expires_at, conn.client_id)
    broker = conn.broker
    stats = broker.stats
    stats.messages_received_qos[qos] += 1
    stats.publish_bytes_received += len(packet.payload)
    persist = broker.persist
    writes = persist.writes
    hooks = broker.hooks
    match = broker.router.match(topic)
    # The hooks that want this topic (publish hooks may want some topics only: presence), as
    # cached on the router's match: no prefix test per message.
    wants = hooks.wants(match) if hooks.publish or hooks.published else 0
    if hooks.acl_check or wants & WANT_PUBLISH:
        screened = _screen_publish(conn, packet, message)
        if screened is None:
            return
        if screened.topic != topic:  # (a hook replaced the message with one on another topic)
            match = broker.router.match(screened.topic)
            wants = hooks.wants(match)
        message = screened
    matched = broker.route_match(message, match)
    if wants & WANT_PUBLISHED:
        hooks.run_published(conn, message, matched)
    if not qos:
        return
    # Strict durability: a message that had to be stored is acknowledged after its commit.
    durable = persist.strict and persist.writes != writes
    if qos == 2:
        session = conn.session
        assert session is not None
        if session.persistent:
            persist.inbound_add(session, packet.packet_id)  # type: ignore[arg-type]
            # The packet id is what makes a resent PUBLISH a duplicate [MQTT-4.3.3-10]: PUBREC
            # waits for it to be committed even when nothing stored the message itself.
            durable = persist.strict
        conn.protocol.ack_publish(packet, matched != 0, durable)
        session.inbound_qos2 = conn.protocol.inbound_qos2  # (made on the first id: NO_IDS until then)
        return
    conn.protocol.ack_publish(packet, matched != 0, durable)


def _screen_publish(conn: Connection, packet: p.Publish, message: Message) -> Message | None:
    """ACL and publish hooks: the message to route (a hook may have replaced it), or None once
    the PUBLISH has been denied and answered."""
    hooks = conn.broker.hooks
    if hooks.acl_check and not hooks.run_acl_check(conn, message.topic, WRITE):
        conn.broker.stats.acl_denied += 1
        log.info("client %s may not publish to %s", conn.client_id, message.topic)
        _deny_publish(conn, packet, ReasonCode.NOT_AUTHORIZED, DropReason.PUBLISH_DENIED, "the ACL", message)
        return None
    if not hooks.publish:
        return message
    try:
        return hooks.run_publish(conn, message)
    except Reject as reject:  # (a name of its own: mypyc types the except variable)
        log.info("publish by %s to %s rejected: %s", conn.client_id, message.topic, reject)
        code = reject.reason_code if reject.reason_code >= 0x80 else ReasonCode.UNSPECIFIED_ERROR
        _deny_publish(conn, packet, code, DropReason.REJECTED, reject.reason or str(reject), message)
        return None


def _deny_publish(
    conn: Connection, packet: p.Publish, code: int, reason: str, detail: str, message: Message | None
) -> None:
    """Refuse a PUBLISH (a reason code to an MQTT 5 publisher), counted and told to ``on_dropped``
    (``message``: None when it was refused before one was made)."""
    conn.broker.stats.dropped_denied += 1
    hooks = conn.broker.hooks
    if hooks.dropped:
        hooks.notify(hooks.dropped, conn.client_id, packet.topic, reason, detail, message)
    conn.protocol.deny_publish(packet, code)
    session = conn.session
    if packet.qos == 2 and session is not None:
        session.inbound_qos2 = conn.protocol.inbound_qos2  # (made on the first id: NO_IDS until then)


def on_puback(conn: Connection, packet: p.Puback) -> None:
    session = conn.session
    assert session is not None
    if session.acknowledge(packet.packet_id, SENT) is not None and session.backlog:
        conn.draining()
        session.fill(conn.loop.time())


def on_pubrec(conn: Connection, packet: p.Pubrec) -> None:
    session = conn.session
    assert session is not None
    delivery = session.inflight_out.get(packet.packet_id)
    if delivery is None or delivery.state != SENT:
        if delivery is None and conn.protocol.version == 5:
            conn.protocol.send_pubrel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, False)
        return
    if packet.reason_code >= 0x80:
        # The receiver refused the message: the flow ends here [MQTT-4.3.3-4 (5.0)].
        session.acknowledge(packet.packet_id, SENT)
        if session.backlog:
            conn.draining()
            session.fill(conn.loop.time())
        return
    delivery.state = RECEIVED
    if session.persistent:
        conn.broker.persist.message_update(session, delivery)
    conn.send_pubrel(packet.packet_id)


def on_pubrel(conn: Connection, packet: p.Pubrel) -> None:
    """A PUBREL for a packet id the session held (the protocol answers the others)."""
    session = conn.session
    assert session is not None
    durable = False
    if session.persistent:
        conn.broker.persist.inbound_delete(session, packet.packet_id)
        # The client may reuse the packet id once it has PUBCOMP: the id must be free in the
        # store by then, or a new message on it is taken for a resend and lost after a crash.
        durable = conn.broker.persist.strict
    conn.protocol.complete_pubrel(packet.packet_id, durable)


def on_pubcomp(conn: Connection, packet: p.Pubcomp) -> None:
    session = conn.session
    assert session is not None
    if session.acknowledge(packet.packet_id, RECEIVED) is not None and session.backlog:
        conn.draining()
        session.fill(conn.loop.time())


def on_subscribe(conn: Connection, packet: p.Subscribe) -> None:
    conn.broker.subscribe(conn, packet)


def on_unsubscribe(conn: Connection, packet: p.Unsubscribe) -> None:
    conn.broker.unsubscribe(conn, packet)


def on_disconnect(conn: Connection, packet: p.Disconnect) -> None:
    session = conn.session
    props = packet.properties
    expiry = props.get(PropertyId.SESSION_EXPIRY_INTERVAL) if props else None
    if expiry is not None and session is not None:
        session.expiry_interval = min(expiry, conn.limits.max_session_expiry_interval)
    if packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL:
        conn.will = None  # a normal DISCONNECT discards the will [MQTT-3.1.2-10]
        conn.disconnect_reason = "client disconnected"
    else:
        conn.disconnect_reason = "client disconnected with will"
    conn.close(conn.disconnect_reason)


HANDLERS: dict[int, Any] = {
    p.CONNECT: on_connect,
    p.PUBACK: on_puback,
    p.PUBREC: on_pubrec,
    p.PUBREL: on_pubrel,
    p.PUBCOMP: on_pubcomp,
    p.SUBSCRIBE: on_subscribe,
    p.UNSUBSCRIBE: on_unsubscribe,
    p.DISCONNECT: on_disconnect,
}
