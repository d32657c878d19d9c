"""Bounds on what a request may cost before anyone knows who sent it: a pure ASGI middleware in
front of everything the API listener serves (the FastAPI app and Socket.IO).

* **Body size.** A body is at most ``api_max_body_size`` bytes, except a publish (``/api/v1/publish``,
  ``/publish/batch``, ``POST /publish``, a poll session's ``publish``, Socket.IO) by a caller with
  credentials, which may carry a PUBLISH of ``max_packet_size`` as base64 in JSON. A
  ``Content-Length`` over the bound is refused before a byte of the body is read; a chunked (or
  understated) body is counted as it arrives and refused the moment it passes the bound, so memory
  stays bounded whatever the client sends. The answer is 413, a problem, and the connection closes.
* **Concurrency.** Requests with a body and no credentials (console sign-ins, poll opens with
  Basic, Socket.IO handshakes, wrong keys) are at most ``api_max_unauthenticated_requests`` at once;
  beyond that 503 with ``Retry-After``, answered without reading them.

Credentials here are only a cheap look-up (a key's SHA-256, a poll session id, an engine.io sid):
the routes still authenticate and authorize; this only decides which bound applies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .keys import SESSION_PREFIX
from .problems import Problem

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["BodyTooLarge", "RequestLimits", "limit_requests"]

log = logging.getLogger("wrenmq.api")

PUBLISH_PATHS = frozenset({"/api/v1/publish", "/api/v1/publish/batch", "/publish"})
POLL_PREFIX = "/api/v1/realtime/poll/"
SOCKETIO_PREFIX = "/socket.io/"
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes its bound; an HTTPException, so the API's
    handlers answer it as a 413 problem wherever the body is being read."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"the request body is over {limit} bytes ({setting})", {"Connection": "close"})


class RequestLimits:
    """See the module docstring. ``credentialed(scope)`` says whether the request carries
    credentials worth the larger bound; ``publishes(path)`` whether its path takes a PUBLISH."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        max_publish_body: int,
        max_unauthenticated: int,
        credentialed: Callable[[Scope], bool],
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_publish_body = max_publish_body
        self.max_unauthenticated = max_unauthenticated
        self.credentialed = credentialed
        self.unauthenticated = 0  # requests with a body and no credentials, now
        self.refused_size = 0
        self.refused_busy = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        credentialed = self.credentialed(scope)
        if credentialed and _publishes(scope["path"]):
            limit, setting = self.max_publish_body, "max_packet_size"
        else:
            limit, setting = self.max_body, "api_max_body_size"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            self.refused_size += 1
            await _answer(scope, receive, send, BodyTooLarge(limit, setting))
            return
        if not credentialed:
            if self.unauthenticated >= self.max_unauthenticated:
                self.refused_busy += 1
                detail = "too many requests without credentials at once (api_max_unauthenticated_requests); retry"
                await _answer(scope, receive, send, HTTPException(503, detail, {"Retry-After": "1"}))
                return
            self.unauthenticated += 1
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self.refused_size += 1
                    raise BodyTooLarge(limit, setting)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # raised where no handler answers it (Socket.IO)
            if not started:
                await _answer(scope, receive, send, exc)
        finally:
            if not credentialed:
                self.unauthenticated -= 1


def limit_requests(app: FastAPI, asgi: ASGIApp) -> RequestLimits:
    """``asgi`` (the API app, or Socket.IO around it) behind the bounds of ``app``'s broker config."""
    config = app.state.broker.config
    max_body = config.api.max_body_size
    # A PUBLISH of max_packet_size given as base64 (4/3 of it) in JSON, with room for the rest.
    max_publish = max(max_body, config.limits.max_packet_size * 4 // 3 + max_body)

    def credentialed(scope: Scope) -> bool:
        path: str = scope["path"]
        if path.startswith(POLL_PREFIX):
            session_id = path[len(POLL_PREFIX) :].partition("/")[0]
            if session_id in getattr(app.state, "poll_sessions", {}):
                return True
        elif path.startswith(SOCKETIO_PREFIX):
            bridge = getattr(app.state, "socketio", None)
            sid = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sid", [""])[0]
            if bridge is not None and sid and bridge.has_socket(sid):
                return True
        token = _bearer(scope)
        if token is None:
            return False
        store = app.state.api_keys
        return (store.session(token) if token.startswith(SESSION_PREFIX) else store.verify(token)) is not None

    limits = RequestLimits(
        asgi,
        max_body=max_body,
        max_publish_body=max_publish,
        max_unauthenticated=config.api.max_unauthenticated_requests,
        credentialed=credentialed,
    )
    app.state.request_limits = limits
    return limits


def _publishes(path: str) -> bool:
    if path in PUBLISH_PATHS or path.startswith(SOCKETIO_PREFIX):
        return True
    return path.startswith(POLL_PREFIX) and path.endswith("/publish")


def _has_body(scope: Scope) -> bool:
    if scope["method"] not in _NO_BODY_METHODS:
        return True
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one itself
    return None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


async def _answer(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    """The problem for ``exc``, with ``Connection: close`` (the unread body is not drained)."""
    headers: dict[str, Any] = {**(exc.headers or {}), "Connection": "close"}
    response = Problem(exc.status_code, str(exc.detail)).response(headers)
    await response(scope, receive, send)
