"""What every versioned route shares: the ``/api/v1`` prefix, the API key check (documented as a
bearer security scheme, so the interactive docs offer "Authorize"), the error responses, and paging.

The key is checked before anything else about the request (``KeyCheckedRoute``): FastAPI parses
a JSON body before it runs dependencies, and someone without a key should learn nothing about
what the endpoint accepts. GET reads; any other method changes something and needs a key that
is not read-only.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Coroutine, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from .deps import require_key, require_write
from .problems import problem_responses

__all__ = [
    "API_V1",
    "BEARER",
    "BODY_RESPONSES",
    "WRITE_RESPONSES",
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

# For routes that change something (KeyCheckedRoute gives a read-only key 403 on them): documents it.
WRITE_RESPONSES = problem_responses(403)
# For routes with a JSON body: FastAPI answers 400 for a body it cannot decode (not UTF-8).
BODY_RESPONSES = problem_responses(400)


class KeyCheckedRoute(APIRoute):
    """A route that answers 401 (no valid key) or 403 (read-only key, method other than GET)
    before its body is read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method in ("GET", "HEAD"):
                require_key(request)
            else:
                require_write(request)
            return await handler(request)

        return checked


def authenticated_router(prefix: str, tag: str) -> APIRouter:
    """A router whose every route needs a valid API key. Operation ids are the handlers' names
    (``list_clients``), for clients generated from the OpenAPI document."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        dependencies=[Security(BEARER)],  # documents the scheme; KeyCheckedRoute checks the key, once
        responses=problem_responses(401),
        route_class=KeyCheckedRoute,
        generate_unique_id_function=lambda route: route.name,
    )


def v1_router(tag: str) -> APIRouter:
    return authenticated_router(API_V1, tag)


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
