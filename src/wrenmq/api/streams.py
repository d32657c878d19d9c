"""Live message streams: ``GET /api/v1/stream?filter=...`` as Server-Sent Events, and the same as
JSON messages over a WebSocket at ``/api/v1/stream/ws?filter=...``.

A stream sees what an MQTT subscriber to its filters would see from the moment it opens (no
retained messages), under the same ACL: the filters are checked with ``READ`` access for a client
named ``api-stream:<key name>`` whose username is the API key's name. Each stream's filters are
in-process subscriptions in the broker's router (``Broker.subscribe_local``), matched with MQTT
clients' by the one trie match per message, so the broker pays nothing for streams when there are
none, and nothing per stream for messages it does not want.

Each stream buffers at most ``stream_buffer`` messages for its reader. A reader slower than the
messages loses the *oldest* ones (what it gets next is the newest), and before the next message it
is told how many it lost (SSE: ``event: dropped``; WebSocket: ``{"type": "dropped"}``).

Browsers cannot set an Authorization header on ``EventSource`` or ``WebSocket``, so both accept the
API key as ``?token=`` too. A query string ends up in access logs and browser history: prefer the
header where the client can send one, and a read-only key for browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Query, Security
from fastapi.responses import Response, StreamingResponse
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..broker.router import LocalSubscriber
from ..hooks import READ, Hook
from ..mqtt.properties import PropertyId
from ..mqtt.topics import SHARE_PREFIX, valid_topic_filter
from ..services.realtime import Inbox, message_json
from ..services.realtime.inbox import Delivery
from .deps import authenticate
from .principal import Principal
from .problems import Problem, field_error, problem_responses
from .routing import BEARER

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.message import Message

__all__ = ["HEARTBEAT", "MAX_FILTERS", "Stream", "StreamHub", "install"]

T = TypeVar("T")

log = logging.getLogger("wrenmq.api.streams")

HEARTBEAT = 15.0  # seconds of silence after which a stream sends a keep-alive (proxies close idle ones)
MAX_FILTERS = 16  # filters per stream: each costs a match per published message

_P = PropertyId


class Stream(Inbox[Delivery]):
    """One open stream: its filters (in-process subscriptions owned as ``local_id``), and the
    bounded inbox (``services.realtime.Inbox``) its reader takes (sequence number, time, message,
    QoS) from."""

    def __init__(self, hub: StreamHub, filters: tuple[str, ...], capacity: int, local_id: str) -> None:
        super().__init__(capacity)
        self.hub = hub
        self.filters = filters
        self.local_id = local_id
        self.seq = 0  # numbers every matching message, dropped ones too: a gap shows what was lost

    def offer(self, message: Message, qos: int, sub_ids: list[int] | None) -> None:
        """The router's handler: one call per message, however many of the filters match it."""
        self.seq += 1
        if not self.add((self.seq, time.time(), message, message.qos)):
            self.hub.messages_dropped += 1

    async def take(self, timeout: float) -> tuple[list[tuple[int, float, Message, int]], int] | None:
        got = await super().take(timeout)
        if got is not None:
            self.hub.messages_sent += len(got[0])
        return got


class StreamHub(Hook):
    """The open streams of one API; each subscribes in-process while it is open. While any is open
    the hub is a hook too, for ``on_stop`` alone: streams end when the broker stops."""

    name = "api-streams"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.streams: set[Stream] = set()
        self.closed = False  # the API is stopping: streams end, and no new ones open
        self.messages_sent = 0
        self.messages_dropped = 0
        self._opened = 0  # numbers the streams: each owns its subscriptions as api-stream:<n>

    def open(self, filters: tuple[str, ...]) -> Stream:
        self._opened += 1
        stream = Stream(self, filters, self.broker.config.api.stream_buffer, f"api-stream:{id(self):x}:{self._opened}")
        if self.closed:
            stream.close()
            return stream
        if not self.streams:
            self.broker.hooks.add(self)
        self.streams.add(stream)
        for topic_filter in filters:
            self.broker.subscribe_local(LocalSubscriber(stream.local_id, topic_filter, stream.offer))
        return stream

    def release(self, stream: Stream) -> None:
        stream.close()
        if stream in self.streams:
            self.streams.discard(stream)
            for topic_filter in stream.filters:
                self.broker.unsubscribe_local(stream.local_id, topic_filter)
        if not self.streams and self in self.broker.hooks.hooks:
            self.broker.hooks.remove(self)

    def close(self) -> None:
        """End every stream (the API or the broker is stopping: uvicorn waits for open responses)."""
        self.closed = True
        for stream in list(self.streams):
            stream.close()

    def on_stop(self) -> None:
        self.close()


# -- the routes ---------------------------------------------------------------------------------


def install(app: FastAPI, broker: Broker) -> None:
    hub = StreamHub(broker)
    app.state.streams = hub
    app.state.on_stop.append(hub.close)

    @app.get(
        "/api/v1/stream",
        tags=["streams"],
        summary="Live messages matching topic filters, as Server-Sent Events",
        description=(
            "Each message is an SSE event whose `id` is the stream's sequence number and whose `data` is JSON: "
            "`topic`, `qos`, `retain`, `payload` (text when it is valid UTF-8, else base64, as `encoding` says), "
            "`properties` (MQTT 5: content_type, payload_format_indicator, message_expiry_interval, "
            "response_topic, correlation_data as base64, user_properties as [name, value] pairs) and "
            "`timestamp` (Unix time). A reader too slow for the messages loses the oldest beyond "
            "`stream_buffer` and gets an `event: dropped` with their count. A comment is sent every "
            f"{HEARTBEAT:.0f} s of silence. The filters are checked against the ACL as a subscription by "
            "the API key's name would be (403 when denied). The key may be passed as `?token=` for EventSource."
        ),
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The event stream."},
            **problem_responses(401, 422),
            403: {"description": "The ACL does not let the API key's name read a filter"},
        },
        dependencies=[Security(BEARER)],
    )
    async def stream_sse(
        key: Annotated[Principal, Depends(stream_key)],
        filter: Annotated[list[str], Query(description="MQTT topic filter; repeat for several (at most 16).")],
    ) -> StreamingResponse:
        filters = _check(broker, key, filter)
        return StreamingResponse(
            _sse(hub, filters),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},  # nginx: do not buffer
        )

    @app.websocket("/api/v1/stream/ws")
    async def stream_ws(websocket: WebSocket) -> None:
        try:
            key = await stream_key(websocket, websocket.query_params.get("token"))
            filters = _check(broker, key, websocket.query_params.getlist("filter"))
        except HTTPException as exc:
            headers = dict(exc.headers) if exc.headers else None
            await _refuse(websocket, Problem(exc.status_code, str(exc.detail)).response(headers))
            return
        except Problem as problem:
            await _refuse(websocket, problem.response())
            return
        await websocket.accept()
        await _websocket(hub, websocket, filters)


async def stream_key(
    connection: HTTPConnection,
    token: Annotated[
        str | None,
        Query(description="The API key, for clients that cannot send an Authorization header (it is logged)."),
    ] = None,
) -> Principal:
    """Who opens the stream, from ``Authorization: Bearer`` or ``?token=`` (an API key or a
    console session), as client ``api-stream:<name>``; else 401."""
    try:
        principal = await authenticate(connection, token)
    except HTTPException as exc:
        exc.detail = (
            "a valid API key is required (Authorization: Bearer <key>, or ?token=<key> where headers cannot be set)"
        )
        raise
    return principal.acting_as(f"api-stream:{principal.username}")


def _check(broker: Broker, principal: Principal, filters: list[str]) -> tuple[str, ...]:
    """The filters, if well-formed (else 422) and readable by ``principal`` under the ACL (else 403)."""
    where = ("query", "filter")
    if not filters:
        raise Problem.invalid([field_error(where, "give at least one topic filter: ?filter=sensors/%23", "missing")])
    if len(filters) > MAX_FILTERS:
        raise Problem.invalid([field_error(where, f"at most {MAX_FILTERS} filters per stream")])
    limits = broker.limits
    errors = []
    for topic_filter in filters:
        if topic_filter.startswith(SHARE_PREFIX):
            errors.append(field_error(where, f"{topic_filter!r}: a stream cannot join a shared subscription"))
        elif not valid_topic_filter(topic_filter):
            errors.append(field_error(where, f"{topic_filter!r} is not a valid topic filter [MQTT-4.7.1-1]"))
        elif len(topic_filter) > limits.max_topic_length or topic_filter.count("/") >= limits.max_topic_levels:
            errors.append(field_error(where, f"{topic_filter!r} is beyond max_topic_length or max_topic_levels"))
    if errors:
        raise Problem.invalid(errors)
    for topic_filter in filters:
        refusal = principal.refusal(topic_filter, READ)
        if refusal is not None:
            raise Problem(403, refusal)  # here, not Forbidden: the WebSocket route answers it itself
    return tuple(dict.fromkeys(filters))


# -- formats ------------------------------------------------------------------------------------


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def sse_events(inbox: Inbox[T], hello: bytes, render: Callable[[list[T], int], str]) -> AsyncIterator[bytes]:
    """Server-Sent Events from ``inbox`` until it closes: ``hello`` at once (the client knows it is
    subscribed, and proxies see a live response), then each batch as ``render(batch, dropped)``
    gives it, and a comment every HEARTBEAT seconds without one."""
    yield hello
    while True:
        got = await inbox.take(HEARTBEAT)
        if got is None:
            return
        batch, dropped = got
        yield render(batch, dropped).encode() if batch or dropped else b": keep-alive\n\n"


def _render_messages(batch: list[Delivery], dropped: int) -> str:
    parts = []
    if dropped:
        parts.append(f"event: dropped\ndata: {_dumps({'dropped': dropped, 'next_id': batch[0][0]})}\n\n")
    for seq, timestamp, message, _qos in batch:
        parts.append(f"id: {seq}\ndata: {_dumps(message_json(seq, timestamp, message))}\n\n")
    return "".join(parts)


async def _sse(hub: StreamHub, filters: tuple[str, ...]) -> AsyncIterator[bytes]:
    """The event stream. The stream is registered here, so it lives exactly as long as this
    generator: until the client goes away (Starlette cancels it) or the API stops (``hub.close``)."""
    stream = hub.open(filters)
    try:
        hello = f": wrenmq stream {_dumps({'filters': list(filters)})}\n\n".encode()
        async for chunk in sse_events(stream, hello, _render_messages):
            yield chunk
    finally:
        hub.release(stream)


async def _websocket(hub: StreamHub, websocket: WebSocket, filters: tuple[str, ...]) -> None:
    """Send JSON messages until either side closes; what the client sends is read and ignored
    (reading is how a close from the client is noticed)."""
    stream = hub.open(filters)

    async def read_until_closed() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
        stream.close()

    reader = asyncio.get_running_loop().create_task(read_until_closed())
    try:
        await websocket.send_text(_dumps({"type": "subscribed", "filters": list(filters)}))
        while True:
            got = await stream.take(HEARTBEAT)
            if got is None:
                break
            batch, dropped = got
            if not batch and not dropped:
                await websocket.send_text('{"type":"keep-alive"}')
                continue
            if dropped:
                await websocket.send_text(_dumps({"type": "dropped", "dropped": dropped, "next_id": batch[0][0]}))
            for seq, timestamp, message, _qos in batch:
                await websocket.send_text(_dumps({"type": "message", **message_json(seq, timestamp, message)}))
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away mid-send
    finally:
        hub.release(stream)
        if not reader.done():
            reader.cancel()
            # The server is stopping (or the stream was closed here): say so with 1001 Going away.
            with contextlib.suppress(Exception):
                await websocket.close(1001 if hub.closed else 1000)


async def _refuse(websocket: WebSocket, response: Response) -> None:
    """Refuse the upgrade with the problem's HTTP status and body where the server can (browsers
    only see that it failed); else close before accepting (the server then answers 403)."""
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(1008)
