"""``/api/v1/resources``: the change-event service (``services.changes``). PUT creates or replaces a
resource, PATCH applies a JSON merge patch (RFC 7396), DELETE removes it; each change that changes
something is published as an event to ``<events_prefix>/all`` and ``<events_prefix>/<kind>/<id>``.
GET reads the current state, and ``/{kind}/events?since=seq`` the events a client missed.

``events`` is the one id a resource may not have: ``/{kind}/events`` is the event log.

Under the ACL of who asks, by the topic a resource's events go to (``<events_prefix>/<kind>/<id>``):
reading a resource or its events needs ``READ`` there (lists leave out the others; one item is
403), changing it ``WRITE``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Response
from pydantic import BaseModel, Field

from ..hooks import READ, WRITE
from ..services.change_events import kind_problem, name_problem
from ..services.changes import ChangeResult, ChangeService
from .models import Page
from .problems import FieldError, Problem, field_error, problem_responses
from .routing import BODY_RESPONSES, WRITE_RESPONSES, Acting, Paging, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from .principal import Principal

EVENTS = "events"


class Resource(BaseModel):
    id: str
    resource: dict[str, Any]


class Change(BaseModel):
    """The resource after the change, and the event published (null: the change changed nothing)."""

    resource: dict[str, Any] | None
    event: dict[str, Any] | None = Field(description="The event published; null when nothing changed.")


class EventPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="Events with seq > since, oldest first.")
    last_seq: int = Field(description="The kind's latest seq (0: no events yet).")
    next_since: int = Field(description="Pass as ?since= for the next page.")
    more: bool = Field(description="Whether events after this page exist.")


def _check(kind: str, resource_id: str | None = None) -> None:
    errors: list[FieldError] = []
    problem = kind_problem(kind)
    if problem:
        errors.append(field_error(("path", "kind"), problem))
    if resource_id is not None:
        problem = name_problem(resource_id)
        if problem is None and resource_id == EVENTS:
            problem = f"{EVENTS!r} is reserved (/resources/<kind>/events is the event log)"
        if problem:
            errors.append(field_error(("path", "id"), problem))
    if errors:
        raise Problem.invalid(errors)


def _change(result: ChangeResult) -> Change:
    return Change(resource=result.resource, event=result.event)


def install(app: FastAPI, broker: Broker, service: ChangeService) -> None:
    router = v1_router("resources")

    def topic(kind: str, resource_id: str) -> str:
        return f"{service.prefix}/{kind}/{resource_id}"

    def reads_all(principal: Principal, kind: str) -> bool:
        return principal.may_read(f"{service.prefix}/{kind}/+")

    @router.get("/resources/{kind}", summary="List the resources of a kind")
    async def list_resources(principal: Acting, kind: str, paging: Annotated[Paging, Depends()]) -> Page[Resource]:
        _check(kind)
        if reads_all(principal, kind):
            rows, total = await service.resources(kind, paging.limit, paging.offset)
        else:  # page what it may read: the store cannot ask the ACL
            every, _ = await service.resources(kind, 2**62, 0)
            readable = [row for row in every if principal.may_read(topic(kind, row[0]))]
            rows, total = readable[paging.offset : paging.offset + paging.limit], len(readable)
        items = [Resource(id=rid, resource=body) for rid, body in rows]
        return Page[Resource](items=items, total=total, limit=paging.limit, offset=paging.offset)

    @router.get("/resources/{kind}/events", summary="Events after a seq (what a reconnecting client missed)")
    async def list_resource_events(
        principal: Acting,
        kind: str,
        since: Annotated[
            int, Query(ge=0, le=2**63 - 1, description="The last seq the client has seen (0: from the start).")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most events in this page.")] = 100,
    ) -> EventPage:
        _check(kind)
        items, last = await service.events(kind, since, limit)
        next_since = int(items[-1]["seq"]) if items else since
        if not reads_all(principal, kind):
            items = [event for event in items if principal.may_read(topic(kind, str(event.get(f"{kind}_id"))))]
        return EventPage(items=items, last_seq=last, next_since=next_since, more=next_since < last)

    @router.get("/resources/{kind}/{id}", summary="One resource", responses=problem_responses(403, 404))
    async def get_resource(principal: Acting, kind: str, id: str) -> dict[str, Any]:
        _check(kind, id)
        principal.require(topic(kind, id), READ)
        found = await service.get(kind, id)
        if found is None:
            raise Problem(404, f"no {kind} {id!r}")
        return found

    @router.put(
        "/resources/{kind}/{id}",
        summary="Create or replace a resource",
        responses={201: {"model": Change, "description": "Created"}, **WRITE_RESPONSES, **BODY_RESPONSES},
    )
    async def put_resource(
        principal: Acting,
        kind: str,
        id: str,
        resource: Annotated[dict[str, Any], Body(description="The resource: a JSON object.")],
        response: Response,
    ) -> Change:
        _check(kind, id)
        principal.require(topic(kind, id), WRITE)
        result = await service.put(kind, id, resource)
        response.status_code = 201 if result.created else 200
        return _change(result)

    @router.patch(
        "/resources/{kind}/{id}",
        summary="Update a resource with a JSON merge patch (RFC 7396)",
        responses={**WRITE_RESPONSES, **BODY_RESPONSES, **problem_responses(404)},
    )
    async def patch_resource(
        principal: Acting,
        kind: str,
        id: str,
        patch: Annotated[
            dict[str, Any],
            Body(
                description="A JSON merge patch: members replace, null removes, objects merge.",
                media_type="application/merge-patch+json",
            ),
        ],
    ) -> Change:
        _check(kind, id)
        principal.require(topic(kind, id), WRITE)
        result = await service.patch(kind, id, patch)
        if result is None:
            raise Problem(404, f"no {kind} {id!r}")
        return _change(result)

    @router.delete(
        "/resources/{kind}/{id}",
        summary="Delete a resource",
        responses={**WRITE_RESPONSES, **problem_responses(404)},
    )
    async def delete_resource(principal: Acting, kind: str, id: str) -> Change:
        _check(kind, id)
        principal.require(topic(kind, id), WRITE)
        result = await service.delete(kind, id)
        if result is None:
            raise Problem(404, f"no {kind} {id!r}")
        return _change(result)

    @router.api_route("/resources/{kind}/{id:path}", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def resource_id_with_slash(kind: str, id: str) -> None:
        """An id with '/' (or a kind with more levels) is not one topic level: 422, not 404."""
        _check(kind, id)
        raise Problem(404, f"no such resource: /resources/{kind}/{id}")

    app.include_router(router)
