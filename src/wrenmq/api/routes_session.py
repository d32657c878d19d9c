"""``/api/v1/session``: signing in to the web console (or any API client) with a broker user's name
and password instead of an API key.

The credentials are checked by the broker's authentication hooks, as for an MQTT CONNECT, and
count toward its failed-login throttle. Only users named in ``console_admins`` (read-write) or
``console_users`` (read-only) get a session: a device's credentials must not open the management
API. The answer is a token that works as an API key named after the user, for
``console_session_hours``, held in memory (a restart signs everyone out; in a cluster, in Redis,
valid on every node: ``cluster_keys``). Everything the session
reads, publishes and subscribes to (API routes, streams, Socket.IO, polling) is checked by the ACL
as that user, with what its authentication answered (a JWT's claims); only ``console_admins`` may
use the management routes (see ``principal``).

``GET /api/v1/session`` answers for any token (a session or an API key): who it is, whether it
may change things or manage, and the configured topic prefixes, so the console hides what the
caller may not use and subscribes where this broker publishes (not where the defaults would).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, Security
from pydantic import BaseModel, Field

from ..services.realtime import Denied, sign_in_user
from .deps import authenticate
from .keys import ApiKeyStore
from .problems import Problem, problem_responses
from .routing import API_V1, BEARER, BODY_RESPONSES

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["install"]


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=65535)
    password: str = Field(max_length=65535)


class Session(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`, like an API key.")
    name: str = Field(description="The user: the name the session acts as (and the ACL sees).")
    read_only: bool
    expires: float = Field(description="Unix time the session ends.")


class ConsoleTopics(BaseModel):
    """The configured topic prefixes, so a console or panel subscribes where this broker publishes."""

    events_prefix: str = Field(description="`events_prefix`: resource change events on <prefix>/<kind>/<id>.")
    presence: bool = Field(description="`presence`: whether the device registry runs.")
    presence_devices_root: str = Field(description="`presence_devices_root`: devices' own topics.")
    presence_admin_root: str = Field(description="`presence_admin_root`: <root>/devices/snapshot.")
    presence_sessions_root: str = Field(description="`presence_sessions_root`: session commands.")
    realtime_presence_prefix: str = Field(description="`realtime_presence_prefix`: application users' presence.")


class Caller(BaseModel):
    """Who the bearer token signs in, and what it may do: the console shows only what it may use."""

    kind: Literal["key", "console"] = Field(description="An API key or a console session.")
    name: str = Field(description="The key's or the user's name (the name the ACL sees).")
    read_only: bool = Field(description="May only read: every method but GET answers 403.")
    manages: bool = Field(description="May use the management routes (clients, subscriptions, users, ACL, brokers).")
    topics: ConsoleTopics
    password_file: bool = Field(description="Whether a `password_file` is configured (`/users` manages it).")
    acl_file: bool = Field(description="Whether an `acl_file` is configured (`/acl` manages it).")


def install(app: FastAPI, broker: Broker) -> None:
    keys: ApiKeyStore = app.state.api_keys
    router = APIRouter(prefix=API_V1, tags=["session"], generate_unique_id_function=lambda route: route.name)

    @router.post(
        "/session",
        status_code=201,
        summary="Sign in with a broker user's name and password",
        responses={**problem_responses(401, 403, 429), **BODY_RESPONSES},
    )
    async def sign_in(request: Request, credentials: Credentials) -> Session:
        config = broker.config
        host = request.client.host if request.client else "http"
        if broker.login_throttled(host):
            raise Problem(429, "too many failed logins from this address; try again in a minute")
        try:
            client = await sign_in_user(broker, credentials.username, credentials.password, "console", host, host)
        except Denied as denied:
            raise HTTPException(401, denied.reason, {"WWW-Authenticate": "Bearer"}) from None
        name = client.username or credentials.username
        if name in config.console.admins:
            read_only = False
        elif name in config.console.users:
            read_only = True
        else:
            raise Problem(403, f"user {name!r} may not use the console (list it in console_users or console_admins)")
        seconds = config.console.session_hours * 3600
        token = await keys.sign_in(name, read_only, seconds, client.auth)
        return Session(token=token, name=name, read_only=read_only, expires=time.time() + seconds)

    @router.get(
        "/session",
        summary="Who this token signs in, what it may do, and the topic prefixes a console needs",
        responses=problem_responses(401),
        dependencies=[Security(BEARER)],
    )
    async def who_am_i(request: Request) -> Caller:
        principal = await authenticate(request)
        config = broker.config
        topics = ConsoleTopics(
            events_prefix=config.events.prefix,
            presence=config.presence.enabled,
            presence_devices_root=config.presence.devices_root,
            presence_admin_root=config.presence.admin_root,
            presence_sessions_root=config.presence.sessions_root,
            realtime_presence_prefix=config.realtime.presence_prefix,
        )
        kind: Literal["key", "console"] = "console" if principal.kind == "console" else "key"
        return Caller(
            kind=kind,
            name=principal.username or "",
            read_only=principal.read_only,
            manages=principal.manages,
            topics=topics,
            password_file=config.password_file is not None,
            acl_file=config.acl_file is not None,
        )

    @router.delete(
        "/session",
        status_code=204,
        summary="Sign out (end this session)",
        responses=problem_responses(401),
        dependencies=[Security(BEARER)],
    )
    async def sign_out(request: Request) -> Response:
        await authenticate(request)
        token = request.headers["authorization"].partition(" ")[2].strip()
        await keys.sign_out(token)
        return Response(status_code=204)

    app.include_router(router)
