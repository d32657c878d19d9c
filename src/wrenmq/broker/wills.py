"""Last Will and Testament: publish a will now, or after its Will Delay Interval [MQTT-3.1.3-9].

A will waiting out its delay lives on the session (``Session.will``, ``will_delay``,
``will_handle``), so a client back in time cancels it by resuming the session, and a session
that ends first sends it at once (``SessionTable.end``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..hooks import Reject
from ..mqtt.properties import PropertyId
from .message import Message
from .session import Session

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("wrenmq.broker")


class WillScheduler:
    """Publishes wills through the broker's publish hooks and router."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def delay(self, session: Session, will: Message, delay: int, remaining: float) -> None:
        """Keep ``will`` on ``session`` and publish it ``remaining`` seconds from now, unless the
        client comes back first (``delay`` is the interval the client asked for, kept for storage)."""
        session.will = will
        session.will_delay = delay
        session.will_handle = self.broker.loop.call_later(max(0.0, remaining), self.fire, session)

    def fire(self, session: Session) -> None:
        """The delay is over: publish the session's will, and store the session without it."""
        session.will_handle = None
        will, session.will = session.will, None
        if will is not None:
            if self.broker.cluster is not None:
                self.broker.cluster.will_pending(session.client_id, None, 0)
            self.publish(will)
            self.broker.persist.session_put(session, connected=False)

    def publish(self, will: Message) -> None:
        broker = self.broker
        # Message Expiry counts from publication, not from CONNECT.
        expiry = will.properties.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
        if expiry is not None:
            will.expires_at = broker.loop.time() + expiry
        broker.stats.messages_received_qos[will.qos] += 1
        broker.stats.publish_bytes_received += len(will.payload)
        hooks = broker.hooks
        if hooks.publish:
            try:
                will = hooks.run_publish(None, will)
            except Reject as reject:
                log.info("will on %s rejected by a hook: %s", will.topic, reject)
                return
        matched = broker.route(will)
        if hooks.published and hooks.wants_published(will.topic):
            hooks.run_published(None, will, matched)
