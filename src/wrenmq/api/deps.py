"""Signing in to the API: the :class:`~.principal.Principal` a bearer token stands for.

``KeyCheckedRoute`` (routing.py) calls :func:`authenticate` before anything else about a request
and keeps the principal on ``request.state``; handlers take it with ``Depends(acting)``. Streams
and the realtime service use :func:`principal_for_token`, so every way in has the same rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from .keys import SESSION_PREFIX, ApiKeyStore
from .principal import Principal

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade

__all__ = ["acting", "authenticate", "bearer_token", "principal_for_token"]

UNAUTHORIZED = "a valid API key is required (Authorization: Bearer <key>; create one with `wrenmq apikey create NAME`)"


def bearer_token(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def principal_for_token(
    broker: BrokerFacade, store: ApiKeyStore, token: str, client_id: str | None = None, peer: str = "api"
) -> Principal | None:
    """Who ``token`` signs in: an API key (may manage; read-only if the key is), or a console
    session (a console_admins user manages and writes, a console_users one only reads); else None.
    The ACL sees the key's or the user's name either way."""
    if token.startswith(SESSION_PREFIX):
        session = await store.lookup_session(token)
        if session is None:
            return None
        name, read_only = session.key.name, session.key.read_only
        return Principal(
            broker,
            "console",
            name,
            client_id or f"api:{name}",
            read_only=read_only,
            manages=not read_only,
            auth=session.auth,
            peer=peer,
        )
    key = await store.lookup(token)
    if key is None:
        return None
    return Principal(
        broker, "key", key.name, client_id or f"api:{key.name}", read_only=key.read_only, manages=True, peer=peer
    )


async def authenticate(connection: HTTPConnection, token: str | None = None) -> Principal:
    """The principal of the request's ``Authorization: Bearer`` token (or ``token``), else 401."""
    token = bearer_token(connection) or token
    app = connection.app
    principal = await principal_for_token(app.state.facade, app.state.api_keys, token) if token else None
    if principal is None:
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return principal


async def acting(request: Request) -> Principal:
    """FastAPI dependency: who acts in this request (set by KeyCheckedRoute; else signed in here)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        principal = request.state.principal = await authenticate(request)
    return principal
