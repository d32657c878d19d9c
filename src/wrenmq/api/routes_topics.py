"""``/api/v1/subscriptions`` (every session's subscriptions, filterable) and ``/api/v1/topics``.

A topic is *active* when a session (connected or not) subscribes to it as a topic filter, or a
retained message is stored on it. ``/topics`` lists each such string once, with how many sessions
subscribe with exactly that filter (plainly or through ``$share`` groups, counted apart) and
whether a retained message is stored there. Subscribers are not matched across filters: a
retained ``a/b`` shows the subscribers of the filter ``a/b``, while those of ``a/#`` are listed
under ``a/#``. ``/topics`` lists only what the ACL lets who asks read; ``/subscriptions`` names
clients, so it is a management route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Query

from ..mqtt.topics import parse_shared
from .models import Page, SubscriptionEntry, TopicInfo
from .routes_clients import subscription_info
from .routing import Acting, Paging, v1_router

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade


@dataclass
class _Topic:
    subscribers: int = 0
    shared: int = 0
    retained: bool = False


def active_topics(broker: BrokerFacade) -> dict[str, _Topic]:
    topics: dict[str, _Topic] = {}
    for topic_filter in broker.subscribed_filters():
        group, inner = parse_shared(topic_filter)
        entry = topics.setdefault(inner, _Topic())
        if group is None:
            entry.subscribers += 1
        else:
            entry.shared += 1
    for topic in broker.retained_topics():
        topics.setdefault(topic, _Topic()).retained = True
    return topics


def install(app: FastAPI, broker: BrokerFacade) -> None:
    router = v1_router("topics")
    management = v1_router("topics", manage=True)

    @management.get("/subscriptions", summary="List subscriptions")
    async def list_subscriptions(
        paging: Annotated[Paging, Depends()],
        client_id: Annotated[str | None, Query(description="Only this client's subscriptions.")] = None,
        prefix: Annotated[
            str | None, Query(description="Only topic filters starting with this (as subscribed, $share/ included).")
        ] = None,
    ) -> Page[SubscriptionEntry]:
        subs = broker.subscriptions(client_id, prefix)
        page, total = paging.page(subs, key=lambda found: (found[2].topic_filter, found[0]))
        items = [
            SubscriptionEntry(**subscription_info(sub).model_dump(), client_id=owner, connected=connected)
            for owner, connected, sub in page
        ]
        return Page[SubscriptionEntry](items=items, total=total, limit=paging.limit, offset=paging.offset)

    @router.get("/topics", summary="Active topics: subscribed filters and retained topics")
    async def list_topics(
        principal: Acting,
        paging: Annotated[Paging, Depends()],
        prefix: Annotated[str | None, Query(description="Only topics starting with this.")] = None,
    ) -> Page[TopicInfo]:
        """A topic is active when a session subscribes to it as a filter or a retained message is
        stored on it; subscriber counts are of sessions subscribed with exactly that filter."""
        active = active_topics(broker).items()
        topics = [
            (topic, entry)
            for topic, entry in active
            if (prefix is None or topic.startswith(prefix)) and principal.may_read(topic)
        ]
        page, total = paging.page(topics, key=lambda item: item[0])
        items = [
            TopicInfo(
                topic=topic,
                wildcard="+" in topic or "#" in topic,  # topic names cannot contain them
                subscribers=entry.subscribers,
                shared_subscribers=entry.shared,
                retained=entry.retained,
            )
            for topic, entry in page
        ]
        return Page[TopicInfo](items=items, total=total, limit=paging.limit, offset=paging.offset)

    app.include_router(router)
    app.include_router(management)
