"""What a reader gets first when it subscribes: the journal's messages since a server timestamp
it was sent (a client falling back from another transport loses nothing), then the retained
messages of its new filters."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ...mqtt.topics import topic_matches

if TYPE_CHECKING:
    from ...broker.journal import Journal
    from ...broker.retain import RetainStore
    from .inbox import Delivery, Inbox

__all__ = ["queue_first"]


def queue_first(
    inbox: Inbox[Delivery],
    journal: Journal,
    retained: RetainStore,
    filters: dict[str, int],
    new: list[str],
    since: float | None,
    with_retained: bool,
) -> int:
    """Queue in ``inbox`` the journal's messages after ``since`` that ``filters`` match, then
    (``with_retained``) the retained messages of the ``new`` filters; how many were queued."""
    queued = 0
    if since is not None:
        for seq, stamp, message in journal.since(since):
            qos = _qos_in(filters, message.topic)
            if qos >= 0:
                inbox.add((seq, stamp, message, min(qos, message.qos)))
                queued += 1
    if with_retained:
        now = time.time()
        seen: set[str] = set()
        for topic_filter in new:
            for message in retained.match(topic_filter):
                if message.topic not in seen:
                    seen.add(message.topic)
                    inbox.add((0, now, message, min(filters[topic_filter], message.qos)))
                    queued += 1
    return queued


def _qos_in(filters: dict[str, int], topic: str) -> int:
    best = -1
    for topic_filter, qos in filters.items():
        if qos > best and topic_matches(topic_filter, topic):
            best = qos
    return best
