"""SUBSCRIBE and UNSUBSCRIBE policy: what a client may subscribe to, at which QoS, and which
retained messages it is sent on subscribing.

A filter is granted whole, in part (only some topics under it are readable: each message is
then checked as it is delivered, as Mosquitto does) or not at all; a shared one whole or not at
all. Strict durability covers subscriptions: a persistent session's SUBACK, and everything after
it on the connection, waits for their commit (``Connection.send_suback``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..hooks import PARTIAL, READ, DropReason
from ..mqtt import packets as p
from ..mqtt.codec import encode
from ..mqtt.errors import ProtocolError
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import parse_shared, valid_topic_filter
from .message import Message
from .router import Subscriber

if TYPE_CHECKING:
    from .broker import Broker
    from .connection import Connection

log = logging.getLogger("wrenmq.broker")


class SubscriptionPolicy:
    """Answers SUBSCRIBE and UNSUBSCRIBE for the broker's sessions."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def subscribe(self, conn: Connection, packet: p.Subscribe) -> None:
        broker = self.broker
        session = conn.session
        assert session is not None
        v5 = conn.version == 5
        sub_id = packet.properties.get(PropertyId.SUBSCRIPTION_IDENTIFIER) if v5 else None
        hooks = broker.hooks
        limits = broker.limits
        invalid = ReasonCode.TOPIC_FILTER_INVALID if v5 else 0x80
        granted: list[tuple[str, int]] = []
        codes: list[int] = []
        retained: list[tuple[Subscriber, Message]] = []
        for request in packet.subscriptions:
            topic_filter = request.topic_filter
            try:
                group, inner = parse_shared(topic_filter)
            except ProtocolError:
                codes.append(invalid)
                continue
            if not valid_topic_filter(inner):
                codes.append(invalid)
                continue
            if len(inner) > limits.max_topic_length or inner.count("/") >= limits.max_topic_levels:
                codes.append(invalid)  # beyond our limits
                continue
            if (
                limits.max_subscriptions
                and session.subscription(topic_filter) is None
                and session.subscription_count >= limits.max_subscriptions
            ):
                log.info("client %s is at max_subscriptions", conn.client_id)
                if hooks.dropped:
                    detail = f"max_subscriptions is {limits.max_subscriptions}"
                    hooks.notify(hooks.dropped, conn.client_id, topic_filter, DropReason.SUBSCRIBE_QUOTA, detail, None)
                codes.append(ReasonCode.QUOTA_EXCEEDED if v5 else 0x80)
                continue
            if group is not None and request.no_local:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.8.3-4] No Local on a shared subscription")
            readable = 1 if not hooks.acl_check else hooks.run_read_check(conn, inner)
            if not readable or (readable == PARTIAL and group is not None):
                broker.stats.acl_denied += 1
                log.info("client %s may not subscribe to %s", conn.client_id, topic_filter)
                if hooks.dropped:
                    hooks.notify(
                        hooks.dropped, conn.client_id, topic_filter, DropReason.SUBSCRIBE_DENIED, "the ACL", None
                    )
                codes.append(ReasonCode.NOT_AUTHORIZED if v5 else 0x80)
                continue
            qos = min(request.qos, limits.maximum_qos)  # QoS downgrade [MQTT-3.9.3-1 context]
            # A Mosquitto bridge (3.1.x with the bridge bit) is not sent back what it published, and
            # gets the RETAIN flag as published, so the broker behind it keeps retained messages: as
            # Mosquitto treats its bridges' subscriptions.
            bridged = conn.bridge and group is None
            sub = Subscriber(
                session,
                topic_filter,
                qos,
                request.no_local or bridged,
                request.retain_as_published or bridged,
                request.retain_handling,
                sub_id,
            )
            if readable == PARTIAL:
                sub.reader = conn
            existed = broker.router.subscribe(sub)
            session.add_subscription(sub)
            codes.append(qos)
            granted.append((topic_filter, qos))
            # Retained messages on subscribe: Retain Handling 0 always, 1 only for a new
            # subscription, 2 never; never for shared subscriptions [MQTT-3.3.1-9..11], [MQTT-3.8.4-4].
            if group is None and (request.retain_handling == 0 or (request.retain_handling == 1 and not existed)):
                reader = sub.reader
                retained.extend(
                    (sub, m)
                    for m in broker.retained.match(inner)
                    if reader is None or hooks.run_acl_check(reader, m.topic, READ)
                )
        suback = encode(p.Suback(packet.packet_id, codes), conn.version)
        broker.persist.session_put(session, connected=True)
        if hooks.subscribe:
            for topic_filter, qos in granted:
                hooks.notify(hooks.subscribe, conn, topic_filter, qos)
        conn.send_suback(suback)
        now = broker.loop.time()
        for sub, message in retained:
            if message.expired(now):
                continue
            sid = sub.subscription_id
            qos = sub.qos if sub.qos < message.qos else message.qos
            # Sent with the RETAIN flag set because it is a retained message [MQTT-3.3.1-8].
            session.deliver(message, qos, True, None if sid is None else [sid], None, now)

    def unsubscribe(self, conn: Connection, packet: p.Unsubscribe) -> None:
        broker = self.broker
        session = conn.session
        assert session is not None
        codes: list[int] = []
        hooks = broker.hooks
        for topic_filter in packet.topic_filters:
            if not valid_filter(topic_filter):  # answered per filter, not by closing [MQTT-3.11.3-2]
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            existed = broker.router.unsubscribe(session.client_id, topic_filter)
            session.remove_subscription(topic_filter)
            if existed and hooks.unsubscribe:
                hooks.notify(hooks.unsubscribe, conn, topic_filter)
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        broker.persist.session_put(session, connected=True)
        conn.send_suback(encode(p.Unsuback(packet.packet_id, codes), conn.version))  # [MQTT-3.10.4-4]


def valid_filter(topic_filter: str) -> bool:
    """A well-formed topic filter, shared [MQTT-4.8.2-1], [MQTT-4.8.2-2] or not [MQTT-4.7.1-1]."""
    try:
        _, inner = parse_shared(topic_filter)
    except ProtocolError:
        return False
    return valid_topic_filter(inner)
