"""What every versioned route shares: the ``/api/v1`` prefix, the API key check (documented as a
bearer security scheme, so the interactive docs offer "Authorize"), the error responses, and paging.

The key is checked before anything else about the request (``KeyCheckedRoute``): FastAPI parses
a JSON body before it runs dependencies, and someone without a key should learn nothing about
what the endpoint accepts. The check finds the :class:`~.principal.Principal` (who acts) and
keeps it on ``request.state`` for the handler (``Depends(acting)``). GET reads; any other method
changes something and needs a principal that is not read-only; the routes of a management router
(``v1_router(tag, manage=True)``) need one that manages. Topic access is the handler's to check,
with the principal's ``may_read`` / ``may_write``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Coroutine, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from .deps import acting, authenticate
from .principal import Principal
from .problems import Problem, problem_responses

__all__ = [
    "API_V1",
    "BEARER",
    "BODY_RESPONSES",
    "WRITE_RESPONSES",
    "Acting",
    "Paging",
    "authenticated_router",
    "v1_router",
]

T = TypeVar("T")

API_V1 = "/api/v1"

# Documents the scheme; KeyCheckedRoute does the checking (and answers 401 as a problem).
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `wrenmq apikey create NAME`, sent as `Authorization: Bearer <key>`.",
)

Acting = Annotated[Principal, Depends(acting)]  # who acts in this request

# For routes that change something (KeyCheckedRoute gives a read-only key 403 on them): documents it.
WRITE_RESPONSES = problem_responses(403)
# For routes with a JSON body: FastAPI answers 400 for a body it cannot decode (not UTF-8).
BODY_RESPONSES = problem_responses(400)


class KeyCheckedRoute(APIRoute):
    """A route that answers 401 (no valid key or session) or 403 (read-only, method other than
    GET; or not a manager, on a management route) before its body is read."""

    manages = False  # a management route: only principals that manage may use it

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        manages = self.manages

        async def checked(request: Request) -> Response:
            principal = request.state.principal = await authenticate(request)
            refusal = principal.manage_refusal() if manages else None
            if refusal is None and request.method not in ("GET", "HEAD"):
                refusal = principal.change_refusal()
            if refusal is not None:
                raise Problem(403, refusal)
            return await handler(request)

        return checked


class ManagementRoute(KeyCheckedRoute):
    manages = True


def authenticated_router(prefix: str, tag: str, manage: bool = False) -> APIRouter:
    """A router whose every route needs a valid API key or console session (``manage``: one
    that manages). Operation ids are the handlers' names (``list_clients``), for clients
    generated from the OpenAPI document."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        dependencies=[Security(BEARER)],  # documents the scheme; KeyCheckedRoute checks the key, once
        responses=problem_responses(401, 403) if manage else problem_responses(401),
        route_class=ManagementRoute if manage else KeyCheckedRoute,
        generate_unique_id_function=lambda route: route.name,
    )


def v1_router(tag: str, manage: bool = False) -> APIRouter:
    return authenticated_router(API_V1, tag, manage)


class Paging:
    """``limit`` and ``offset`` query parameters, and the page of a sorted listing they select."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="Items to skip (the sort order is stable).")] = 0,
    ) -> None:
        self.limit = limit
        self.offset = offset

    def page(self, items: Iterable[T], key: Callable[[T], Any]) -> tuple[list[T], int]:
        """(this page of ``items`` sorted by ``key``, how many there are in all); costs
        O(n log(offset + limit)), not a full sort."""
        found = list(items)
        end = self.offset + self.limit
        return heapq.nsmallest(end, found, key=key)[self.offset : end], len(found)
