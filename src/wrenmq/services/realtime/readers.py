"""A realtime reader (a Socket.IO socket or a poll session): its filters, which are in-process
subscriptions in the broker's router, and the inbox the router's handler fills."""

from __future__ import annotations

from time import time as _now
from typing import TYPE_CHECKING, Protocol

from .inbox import Delivery, Inbox
from .signin import RealtimeClient

if TYPE_CHECKING:
    from ...broker.message import Message

__all__ = ["ReaderOwner", "Subscriber"]


class ReaderOwner(Protocol):
    """What a reader needs of the service that owns it (``RealtimeService``)."""

    def reader_dropped(self, subscriber: Subscriber, lost: Message | None) -> None:
        """Its full inbox lost its oldest message (None: not known)."""

    def reader_woke(self, subscriber: Subscriber) -> None:
        """Its inbox got something."""


class Subscriber:
    """A realtime reader (a Socket.IO socket or a poll session): its filters, with QoS, and inbox.
    Its filters are in-process subscriptions in the broker's router, owned as ``local_id``."""

    def __init__(self, key: str, client: RealtimeClient, owner: ReaderOwner, capacity: int) -> None:
        self.key = key
        self.local_id = "realtime:" + key
        self.client = client
        self.owner = owner
        self.filters: dict[str, int] = {}
        self.inbox: Inbox[Delivery] = Inbox(capacity)
        self.presence_id: str | None = None

    def deliver(self, message: Message, qos: int, sub_ids: list[int] | None) -> None:
        """The router's handler: a message one of the filters matched, at ``qos`` (the highest
        granted, capped by the message's). A full inbox loses its oldest, told to ``on_dropped``."""
        inbox = self.inbox
        oldest = inbox.buffer[0] if len(inbox.buffer) >= inbox.capacity else None
        if not inbox.add((message.seq, message.routed_at or _now(), message, qos)):
            self.owner.reader_dropped(self, None if oldest is None else oldest[2])
        self.owner.reader_woke(self)
