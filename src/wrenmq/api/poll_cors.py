"""CORS for the long-polling routes (``/api/v1/realtime/poll``): the same origins as Socket.IO.

Polling is the browser client's last fallback, for networks where WebSockets break, and a page
served from another origin (listed in ``realtime_cors_origins``) must reach it as it reaches
Socket.IO. Its requests carry ``Authorization`` and JSON bodies, so the browser sends a preflight
``OPTIONS`` first: this middleware answers it (before any route or authentication runs) and adds
``Access-Control-Allow-Origin`` to the answers for a listed origin. Nothing else of the API becomes
reachable from another origin, and no cookies are involved (credentials travel in
``Authorization``), so ``Access-Control-Allow-Credentials`` is never sent.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["POLL_PATH", "PollCors"]

POLL_PATH = "/api/v1/realtime/poll"
_ALLOW_METHODS = b"GET, POST, DELETE"
_ALLOW_HEADERS = b"Authorization, Content-Type"
_MAX_AGE = b"600"


class PollCors:
    """ASGI middleware: CORS for ``POLL_PATH`` and below, for ``origins`` (``"*"``: any)."""

    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    def allowed(self, origin: str) -> bool:
        return origin in self.origins or "*" in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == POLL_PATH or path.startswith(POLL_PATH + "/")):
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None or not self.allowed(origin.decode("latin-1")):
            await self.app(scope, receive, send)  # same origin, or refused: the browser enforces it
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        (b"access-control-allow-origin", origin),
                        (b"access-control-allow-methods", _ALLOW_METHODS),
                        (b"access-control-allow-headers", _ALLOW_HEADERS),
                        (b"access-control-max-age", _MAX_AGE),
                        (b"vary", b"Origin"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"access-control-allow-origin", origin))
                headers.append((b"vary", b"Origin"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None
