"""A realtime reader (a Socket.IO socket or a poll session): its filters, which are in-process
subscriptions in the broker's router, and the inbox the router's handler fills."""

from __future__ import annotations

from time import time as _now
from typing import TYPE_CHECKING

from ...hooks import DropReason
from .inbox import Delivery, Inbox
from .signin import RealtimeClient

if TYPE_CHECKING:
    from ...broker.message import Message
    from .service import RealtimeService

__all__ = ["Subscriber"]


class Subscriber:
    """A realtime reader (a Socket.IO socket or a poll session): its filters, with QoS, and inbox.
    Its filters are in-process subscriptions in the broker's router, owned as ``local_id``."""

    def __init__(self, key: str, client: RealtimeClient, service: RealtimeService) -> None:
        self.key = key
        self.local_id = "realtime:" + key
        self.client = client
        self.service = service
        self.filters: dict[str, int] = {}
        self.inbox: Inbox[Delivery] = Inbox(service.broker.config.api.stream_buffer)
        self.presence_id: str | None = None

    def deliver(self, message: Message, qos: int, sub_ids: list[int] | None) -> None:
        """The router's handler: a message one of the filters matched, at ``qos`` (the highest
        granted, capped by the message's). A full inbox loses its oldest, told to ``on_dropped``."""
        inbox = self.inbox
        oldest = inbox.buffer[0] if len(inbox.buffer) >= inbox.capacity else None
        if not inbox.add((message.seq, message.routed_at or _now(), message, qos)):
            self.service.messages_dropped += 1
            hooks = self.service.broker.hooks
            if hooks.dropped and oldest is not None:
                lost = oldest[2]
                detail = "the realtime client's inbox was full (stream_buffer)"
                hooks.notify(hooks.dropped, self.client.client_id, lost.topic, DropReason.QUEUE_FULL, detail, lost)
        self.service._notify(self)
