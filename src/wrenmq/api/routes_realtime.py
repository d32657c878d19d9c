"""HTTP long polling, the last of the browser client's three transports, and the realtime pieces
the API app serves: the Socket.IO bridge (``socketio_bridge``) and the browser client at
``/static/wrenmq-realtime.js``.

``POST /api/v1/realtime/poll`` opens a poll session for some topic filters and answers its id;
``GET /api/v1/realtime/poll/{id}`` then waits up to ``timeout`` seconds for messages and returns
them all at once; the client asks again at once. Messages that arrive between two polls wait in
the session (bounded by ``stream_buffer``, oldest dropped first, with a count). A session nobody
polls for ``realtime_poll_expiry`` seconds ends. The session id is its credential: it is only
given to whoever opened the session, so keep it like a password.

Signing in, when opening a session: ``Authorization: Bearer <API key>``, or ``Authorization:
Basic`` with a broker user's name and password, or nothing where anonymous MQTT is allowed
(see ``services.realtime``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..services.realtime import Denied, RealtimeService, Subscriber, message_json
from .models import PublishRequest, PublishResult
from .poll_cors import PollCors
from .problems import Problem, problem_responses
from .routes_publish import broker_problems
from .routing import API_V1, BODY_RESPONSES
from .socketio_bridge import SocketIOBridge

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..cluster import Cluster

__all__ = ["install"]

MAX_POLL_WAIT = 60.0
CHALLENGE = {"WWW-Authenticate": 'Bearer, Basic realm="wrenmq"'}  # on every 401 (RFC 9110, 11.6.1)


class PresenceInfo(BaseModel):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[^/+#\x00]+$", description="The user's presence id.")
    name: str | None = Field(default=None, max_length=256, description="A display name others see.")


class PollOpen(BaseModel):
    filters: list[str] = Field(
        default_factory=list, max_length=64, description="MQTT topic filters to receive (more can be added later)."
    )
    qos: Literal[0, 1] = Field(default=1, description="Highest QoS to receive with (as in an MQTT subscription).")
    since: float | None = Field(
        default=None, description="Server time (seconds) to replay recent messages from, as a resuming client does."
    )
    replay: float | None = Field(
        default=None, ge=0, description="Or: replay the recent messages of the last so many seconds (no clock sync)."
    )
    retained: bool = Field(default=True, description="Send the filters' retained messages first, as MQTT does.")
    client_id: str | None = Field(default=None, max_length=128, description="A client id (default: generated).")
    presence: PresenceInfo | None = Field(default=None, description="Be present (online) while the session lives.")


class PollSubscribe(BaseModel):
    filters: list[str] = Field(min_length=1, max_length=64)
    qos: Literal[0, 1] = 1
    since: float | None = None
    replay: float | None = Field(default=None, ge=0)
    retained: bool = True


class PollFilters(BaseModel):
    filters: list[str] = Field(min_length=1, max_length=64)


class PollSession(BaseModel):
    id: str = Field(description="The session id: the only credential the other poll requests need.")
    client_id: str
    username: str | None
    filters: list[str]
    now: float = Field(description="Server time, to compute `since` when resuming.")
    expires_after: float = Field(description="Seconds without a poll after which the session ends.")


class PollBatch(BaseModel):
    messages: list[dict[str, Any]] = Field(description="Messages in the format of the streams (see /api/v1/stream).")
    dropped: int = Field(description="Messages lost before these because the session held too many.")
    now: float


class _Session:
    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.last_seen = time.monotonic()
        self.polling = 0


def install(app: FastAPI, broker: Broker, service: RealtimeService | None, cluster: Cluster | None = None) -> None:
    """Poll routes, the static files, and (unless ``realtime`` is off) the realtime service and
    Socket.IO bridge, which ``ApiServer`` starts and wraps around the app."""
    static = resources.files("wrenmq") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if service is None:  # realtime = false
        return
    if broker.config.realtime.cors_origins:
        app.add_middleware(PollCors, origins=frozenset(broker.config.realtime.cors_origins))
    bridge = SocketIOBridge(broker, service, cluster)
    app.state.socketio = bridge  # ApiServer serves it around the app
    sessions: dict[str, _Session] = {}
    expiry = broker.config.realtime.poll_expiry

    def session_of(session_id: str) -> _Session:
        found = sessions.get(session_id)
        if found is None:
            raise Problem(404, "no such poll session (it expired or was closed): open a new one")
        found.last_seen = time.monotonic()
        return found

    def end(session_id: str, goodbye: bool = True, reason: str = "") -> None:
        if sessions.pop(session_id, None) is not None:
            service.close("poll:" + session_id, goodbye, reason)

    async def expire() -> None:
        while True:
            await asyncio.sleep(min(5.0, expiry / 3))
            deadline = time.monotonic() - expiry
            for session_id, found in list(sessions.items()):
                if not found.polling and found.last_seen < deadline:
                    end(session_id, reason=f"expired: no request for {expiry:g} s")

    tasks: list[asyncio.Task[None]] = []

    def start() -> None:
        service.start()
        bridge.start()
        tasks.append(asyncio.get_running_loop().create_task(expire()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for session_id in list(sessions):
            end(session_id, reason="the server is stopping")
        await bridge.stop()
        service.stop()

    app.state.on_start.append(start)
    app.state.on_stop.append(stop)
    app.state.poll_sessions = sessions

    router = APIRouter(prefix=API_V1 + "/realtime", tags=["realtime"], generate_unique_id_function=lambda r: r.name)

    @router.post(
        "/poll",
        status_code=201,
        summary="Open a long-poll session",
        responses={**problem_responses(401, 403, 429), **BODY_RESPONSES},
    )
    async def open_poll(request: Request, body: PollOpen) -> PollSession:
        client = await _sign_in(service, request, body.client_id)
        try:
            filters = service.check_filters(client, body.filters)
        except Denied as denied:
            raise Problem(denied.status, denied.reason) from None
        session_id = secrets.token_urlsafe(24)
        subscriber = service.open("poll:" + session_id, client)
        sessions[session_id] = _Session(subscriber)
        if body.presence is not None:
            try:
                service.join_presence(subscriber, body.presence.model_dump(exclude_none=True), "polling")
            except Denied as denied:
                service.close(subscriber.key, reason="refused: " + denied.reason)
                del sessions[session_id]
                raise Problem(denied.status, denied.reason) from None
        service.subscribe(subscriber, dict.fromkeys(filters, body.qos), _since(body.since, body.replay), body.retained)
        return PollSession(
            id=session_id,
            client_id=client.client_id,
            username=client.username,
            filters=filters,
            now=time.time(),
            expires_after=expiry,
        )

    @router.get("/poll/{id}", summary="Wait for messages", responses=problem_responses(404))
    async def poll(
        id: str,
        timeout: Annotated[float, Query(ge=0, le=MAX_POLL_WAIT, description="Seconds to wait for a message.")] = 20.0,
    ) -> PollBatch:
        found = session_of(id)
        found.polling += 1
        try:
            taken = await found.subscriber.inbox.take(timeout)
        finally:
            found.polling -= 1
            found.last_seen = time.monotonic()
        if taken is None:
            raise Problem(404, "the poll session ended")
        batch, dropped = taken
        message_id = broker.message_id
        messages = [message_json(s, stamp, m, qos, message_id(m)) for s, stamp, m, qos in batch]
        return PollBatch(messages=messages, dropped=dropped, now=time.time())

    @router.post(
        "/poll/{id}/subscribe",
        summary="Add topic filters",
        responses={**problem_responses(403, 404), **BODY_RESPONSES},
    )
    async def poll_subscribe(id: str, body: PollSubscribe) -> PollSession:
        found = session_of(id)
        subscriber = found.subscriber
        try:
            filters = service.check_filters(subscriber.client, body.filters, subscriber)
        except Denied as denied:
            raise Problem(denied.status, denied.reason) from None
        service.subscribe(subscriber, dict.fromkeys(filters, body.qos), _since(body.since, body.replay), body.retained)
        return _session(id, subscriber, expiry)

    @router.post(
        "/poll/{id}/unsubscribe",
        summary="Remove topic filters",
        responses={**problem_responses(404), **BODY_RESPONSES},
    )
    async def poll_unsubscribe(id: str, body: PollFilters) -> PollSession:
        found = session_of(id)
        service.unsubscribe(found.subscriber, body.filters)
        return _session(id, found.subscriber, expiry)

    @router.post(
        "/poll/{id}/publish",
        summary="Publish as the session's client (its ACL applies)",
        responses={**problem_responses(403, 404), **BODY_RESPONSES},
    )
    async def poll_publish(id: str, body: Annotated[PublishRequest, Body()]) -> PublishResult:
        found = session_of(id)
        problems = broker_problems(broker, body, ("body",))
        if problems:
            raise Problem.invalid(problems)
        payload = body.payload_bytes()
        try:
            matched = await service.publish(
                found.subscriber.client, body.topic, payload, body.qos, body.retain, body.properties.to_mqtt()
            )
        except Denied as denied:
            raise Problem(denied.status, denied.reason) from None
        return PublishResult(
            topic=body.topic, qos=body.qos, retain=body.retain, payload_size=len(payload), matched=matched
        )

    @router.delete("/poll/{id}", status_code=204, summary="Close a poll session", responses=problem_responses(404))
    async def close_poll(
        id: str,
        goodbye: Annotated[
            bool,
            Query(
                description="false: the client moves to another transport (a switch, not a goodbye); "
                "its user stays present for realtime_presence_grace if that transport is lost too."
            ),
        ] = True,
    ) -> Response:
        session_of(id)
        end(id, goodbye, "the client left" if goodbye else "moved to another transport")
        return Response(status_code=204)

    app.include_router(router)


def _since(since: float | None, replay: float | None) -> float | None:
    return time.time() - replay if replay is not None else since


def _session(session_id: str, subscriber: Subscriber, expiry: float) -> PollSession:
    client = subscriber.client
    return PollSession(
        id=session_id,
        client_id=client.client_id,
        username=client.username,
        filters=list(subscriber.filters),
        now=time.time(),
        expires_after=expiry,
    )


async def _sign_in(service: RealtimeService, request: Request, client_id: str | None) -> Any:
    """Bearer API key, Basic user credentials, or anonymous; a refusal is a 401 problem."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = username = password = None
    if scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    elif scheme.lower() == "basic" and credentials.strip():
        try:
            username, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise HTTPException(401, "the Basic credentials are not base64 of user:password", CHALLENGE) from None
    client_addr = request.client
    peer = f"{client_addr.host}:{client_addr.port}" if client_addr else "http"
    try:
        return await service.authenticate(
            token, username, password, client_id or "", peer, client_addr.host if client_addr else None
        )
    except Denied as denied:
        if denied.status != 401:
            raise Problem(denied.status, denied.reason) from None
        raise HTTPException(401, denied.reason, CHALLENGE) from None
