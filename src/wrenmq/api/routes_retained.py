"""``/api/v1/retained``: list the retained messages a topic filter matches (paged, optionally
only those whose topic or text payload contains a search string), read one, or clear one (as a
retained PUBLISH with an empty payload would, and persisted).

Under the ACL of who asks: a listing leaves out the topics it may not read, reading one it may
not read is 403, and clearing one needs ``WRITE`` on the topic, as the empty PUBLISH would."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Query, Response

from ..hooks import READ, WRITE
from ..mqtt.topics import valid_topic_filter
from .models import MessageProperties, Page, RetainedMessage, RetainedSummary, string_problem, topic_problem
from .problems import Problem, field_error, problem_responses
from .routing import WRITE_RESPONSES, Acting, Paging, v1_router

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade


def _check_topic(topic: str) -> None:
    problem = topic_problem(topic)
    if problem:
        raise Problem.invalid([field_error(("path", "topic"), problem)])


SEARCHED_BYTES = 64 * 1024  # of a payload, for ?search=: a listing never reads megabytes per message


def _contains(topic: str, payload: bytes, needle: str) -> bool:
    if needle in topic.casefold():
        return True
    return needle in payload[:SEARCHED_BYTES].decode("utf-8", "ignore").casefold()


def install(app: FastAPI, broker: BrokerFacade) -> None:
    router = v1_router("retained")

    @router.get("/retained", summary="List retained messages matching a topic filter")
    async def list_retained(
        principal: Acting,
        paging: Annotated[Paging, Depends()],
        topic_filter: Annotated[
            str,
            Query(alias="filter", description="A topic filter (+ and # wildcards); '#' does not include $SYS/..."),
        ] = "#",
        search: Annotated[
            str,
            Query(
                max_length=1024,
                description="Only messages whose topic, or UTF-8 payload (the first 64 KiB), contains this text "
                "(ignoring case).",
            ),
        ] = "",
    ) -> Page[RetainedSummary]:
        problem = string_problem(topic_filter)
        if problem is None and not valid_topic_filter(topic_filter):
            problem = f"{topic_filter!r} is not a valid topic filter (+ and # must be whole levels, # the last)"
        if problem:
            raise Problem.invalid([field_error(("query", "filter"), problem)])
        now = broker.loop.time()
        found = broker.retained_matching(topic_filter)
        if not principal.may_read(topic_filter):  # else every topic it matches is readable
            found = (message for message in found if principal.may_read(message.topic))
        if search:
            needle = search.casefold()
            found = (message for message in found if _contains(message.topic, message.payload, needle))
        page, total = paging.page(found, key=lambda message: message.topic)
        items = []
        for message in page:
            properties = MessageProperties.from_message(message, now)
            items.append(
                RetainedSummary(
                    topic=message.topic,
                    qos=message.qos,
                    payload_size=len(message.payload),
                    content_type=properties.content_type,
                    message_expiry_interval=properties.message_expiry_interval,
                )
            )
        return Page[RetainedSummary](items=items, total=total, limit=paging.limit, offset=paging.offset)

    @router.get("/retained/{topic:path}", summary="One retained message", responses=problem_responses(403, 404))
    async def get_retained(principal: Acting, topic: str) -> RetainedMessage:
        _check_topic(topic)
        principal.require(topic, READ)
        message = broker.retained(topic)
        now = broker.loop.time()
        if message is None:
            raise Problem(404, f"no retained message on {topic!r}")
        return RetainedMessage.from_message(message, now)

    @router.delete(
        "/retained/{topic:path}",
        summary="Clear a retained message",
        status_code=204,
        responses={**WRITE_RESPONSES, **problem_responses(404)},
    )
    async def delete_retained(principal: Acting, topic: str) -> Response:
        """As a retained PUBLISH with an empty payload would: new subscribers no longer receive it,
        and the deletion is stored (with strict durability, committed before the response)."""
        _check_topic(topic)
        principal.require(topic, WRITE)
        if not await broker.delete_retained(topic):
            raise Problem(404, f"no retained message on {topic!r}")
        return Response(status_code=204)

    app.include_router(router)
