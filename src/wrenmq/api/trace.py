"""Trace: follow one client id, or one topic filter, live: ``GET /api/v1/trace?client_id=...`` or
``?filter=...`` as Server-Sent Events, for the console's Trace page (as EMQX's and MQTTX's traces).

Events are what the hooks see: ``connect`` (an MQTT client's CONNACK was sent: user, address,
protocol, clean start, keep alive; or a browser realtime client signed in over Socket.IO or long
polling: ``transport`` says which), ``disconnect`` (the reason, and whether it was a normal one),
``subscribe`` (the filter and the QoS granted), ``unsubscribe``, ``publish`` (a message routed:
topic, QoS, retain, size, how many subscriptions it matched; from the client, or from the broker
itself: API, wills), ``deliver`` (a PUBLISH written to a client) and ``drop`` (what the broker
dropped, and why: a ``hooks.DropReason``, e.g. a full queue, an expired message, QoS 0 for a client
that is away, a publish or subscription the ACL refused, a slow consumer disconnected). A client
trace has every event of that client id (a drop of a delivery belongs to the subscriber it was
meant for, a refused publish to its publisher); a topic trace the publishes, deliveries and drops
of matching topics and the subscriptions and unsubscriptions whose filter falls under it. Payloads
are not sent (the message streams and the MQTT client page show them, under the ACL); what a trace
shows is who did what, on which topic, when. A refused message (ACL, limits, any publish hook) has
no publish event, only its drop: a publish is traced once routed (``on_published``), and the
deliveries made while it was routed are held until then, so that it still comes first.

Tracing is a management action (it shows every client's activity). A :class:`TraceHub` is a hook
registered only while a trace is open, so the broker pays nothing for traces when there are none;
while one is, every publish and delivery costs a comparison per trace. Each trace holds at most
``TRACE_BUFFER`` events for its reader: a slower reader loses the oldest and is told how many
(``event: dropped``). At most ``MAX_TRACES`` traces are open at once (503 beyond).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Query, Security
from fastapi.responses import StreamingResponse

from ..hooks import ClientInfo, DropReason, Hook
from ..mqtt.topics import topic_matches, valid_topic_filter
from ..services.realtime.inbox import Inbox
from .principal import Principal
from .problems import Problem, field_error, problem_responses
from .routing import BEARER
from .streams import sse_events, stream_key

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.message import Message
    from ..mqtt import packets as p

__all__ = ["MAX_TRACES", "TRACE_BUFFER", "Trace", "TraceHub", "install"]

_DROP_REASONS = [value for name, value in vars(DropReason).items() if name.isupper()]
TRACE_BUFFER = 1000  # events a trace holds for a slow reader
MAX_TRACES = 8  # traces open at once: each costs a comparison per publish and delivery


class Trace(Inbox[dict[str, Any]]):
    """One open trace: what it follows, and its bounded queue of events (oldest dropped first)."""

    def __init__(self, client_id: str | None, topic_filter: str | None) -> None:
        super().__init__(TRACE_BUFFER)
        self.client_id = client_id
        self.topic_filter = topic_filter
        self.seq = 0

    def follows(self, client_id: str | None, topic: str | None) -> bool:
        if self.client_id is not None:
            return client_id == self.client_id
        return topic is not None and self.topic_filter is not None and topic_matches(self.topic_filter, topic)

    def event(self, event: dict[str, Any]) -> None:
        self.seq += 1
        event["seq"] = self.seq
        self.add(event)


def _client(client: ClientInfo) -> dict[str, Any]:
    return {"client_id": client.client_id, "username": client.username}


class TraceHub(Hook):
    """The open traces of one API, and the hook that feeds them while there are any."""

    name = "api-trace"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.traces: set[Trace] = set()
        self.closed = False
        # Deliveries of the message being routed, held for its publish (on_published): its number,
        # the events, and whether a flush is due on the loop's next turn (a message routed with
        # no on_published, as $SYS, is never held longer).
        self._published_seq = 0
        self._held_seq = 0
        self._held: list[tuple[str | None, str | None, dict[str, Any]]] = []
        self._flush_due = False

    def open(self, client_id: str | None, topic_filter: str | None) -> Trace:
        trace = Trace(client_id, topic_filter)
        if self.closed:
            trace.close()
            return trace
        if not self.traces:
            self.broker.hooks.add(self)
        self.traces.add(trace)
        return trace

    def release(self, trace: Trace) -> None:
        trace.close()
        self.traces.discard(trace)
        if not self.traces and self in self.broker.hooks.hooks:
            self.broker.hooks.remove(self)

    def close(self) -> None:
        self.closed = True
        for trace in list(self.traces):
            trace.close()

    def _emit(self, client_id: str | None, topic: str | None, event: dict[str, Any]) -> None:
        for trace in self.traces:
            if trace.follows(client_id, topic):
                trace.event({**event, "at": time.time()})

    # -- hook events ------------------------------------------------------------------------------

    def on_connect(self, client: ClientInfo, packet: p.Connect) -> None:
        self._emit(
            client.client_id,
            None,
            {
                "event": "connect",
                **_client(client),
                "transport": "mqtt",
                "peer": client.peer,
                "protocol": client.version,
                "clean_start": packet.clean_start,
                "keep_alive": packet.keep_alive,
            },
        )

    def on_disconnect(self, client: ClientInfo, reason: str, expected: bool) -> None:
        self._emit(
            client.client_id,
            None,
            {"event": "disconnect", **_client(client), "transport": "mqtt", "reason": reason, "expected": expected},
        )

    def on_realtime_connect(self, client: ClientInfo, transport: str) -> None:
        self._emit(
            client.client_id, None, {"event": "connect", **_client(client), "transport": transport, "peer": client.peer}
        )

    def on_realtime_disconnect(self, client: ClientInfo, transport: str, reason: str, expected: bool) -> None:
        self._emit(
            client.client_id,
            None,
            {"event": "disconnect", **_client(client), "transport": transport, "reason": reason, "expected": expected},
        )

    def on_dropped(
        self, client_id: str | None, topic: str | None, reason: str, detail: str, message: Message | None
    ) -> None:
        event: dict[str, Any] = {"event": "drop", "client_id": client_id, "topic": topic, "reason": reason}
        if detail:
            event["detail"] = detail
        if message is not None:
            event["qos"] = message.qos
            event["bytes"] = len(message.payload)
        self._emit(client_id, topic, event)

    def on_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> None:
        self._emit(
            client.client_id,
            topic_filter,
            {"event": "subscribe", **_client(client), "topic_filter": topic_filter, "qos": qos},
        )

    def on_unsubscribe(self, client: ClientInfo, topic_filter: str) -> None:
        self._emit(
            client.client_id, topic_filter, {"event": "unsubscribe", **_client(client), "topic_filter": topic_filter}
        )

    def on_published(self, client: ClientInfo | None, message: Message, matched: int) -> None:
        who = _client(client) if client is not None else {"client_id": None, "username": None}
        self._flush_held(message.seq)
        self._emit(
            who["client_id"],
            message.topic,
            {
                "event": "publish",
                **who,
                "topic": message.topic,
                "qos": message.qos,
                "retain": message.retain,
                "bytes": len(message.payload),
                "matched": matched,
            },
        )
        self._published_seq = message.seq
        if self._held_seq == message.seq:
            self._flush_held()

    def on_message_delivered(self, client: ClientInfo, message: Message) -> None:
        event = {
            "event": "deliver",
            **_client(client),
            "topic": message.topic,
            "qos": message.qos,
            "bytes": len(message.payload),
        }
        seq = message.seq
        if seq == self.broker.message_seq and seq != self._published_seq:  # being routed: after its publish
            self._flush_held(seq)
            self._held_seq = seq
            self._held.append((client.client_id, message.topic, {**event, "at": time.time()}))
            if not self._flush_due:
                self._flush_due = True
                self.broker.loop.call_soon(self._flush_held)
            return
        self._emit(client.client_id, message.topic, event)

    def _flush_held(self, unless: int = -1) -> None:
        """Emit the held deliveries, unless they are of message ``unless``."""
        self._flush_due = False
        if self._held_seq == unless or not self._held:
            return
        held, self._held = self._held, []
        for client_id, topic, event in held:
            for trace in self.traces:
                if trace.follows(client_id, topic):
                    trace.event(dict(event))

    def on_stop(self) -> None:
        self.close()


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _render(batch: list[dict[str, Any]], dropped: int) -> str:
    parts = [f"event: dropped\ndata: {_dumps({'dropped': dropped})}\n\n"] if dropped else []
    parts += [f"id: {event['seq']}\nevent: trace\ndata: {_dumps(event)}\n\n" for event in batch]
    return "".join(parts)


async def _sse(hub: TraceHub, client_id: str | None, topic_filter: str | None) -> AsyncIterator[bytes]:
    """The event stream. The trace is opened here, so it lives exactly as long as this generator:
    until the client goes away (Starlette cancels it) or the API stops (``hub.close``)."""
    trace = hub.open(client_id, topic_filter)
    following = {"client_id": client_id} if client_id is not None else {"filter": topic_filter}
    try:
        hello = f"event: tracing\ndata: {_dumps(following)}\n\n".encode()
        async for chunk in sse_events(trace, hello, _render):
            yield chunk
    finally:
        hub.release(trace)


def install(app: FastAPI, broker: Broker) -> None:
    hub = TraceHub(broker)
    app.state.traces = hub
    app.state.on_stop.append(hub.close)

    @app.get(
        "/api/v1/trace",
        tags=["trace"],
        summary="Follow one client id or topic filter live, as Server-Sent Events",
        description=(
            "Give exactly one of `client_id` and `filter`. Each `event: trace` has JSON `data`: `seq`, `at` "
            "(Unix time), `event` (connect, disconnect, subscribe, unsubscribe, publish, deliver, drop), "
            "`client_id`, `username`, and what the event is about (`topic`, `topic_filter`, `qos`, `retain`, "
            "`bytes`, `reason`, `detail`, `expected`, `transport` (mqtt, socketio, poll), `peer`, `protocol`, "
            "`clean_start`, `keep_alive`; a publish's `matched`: the subscriptions it reached); never payloads. "
            "A `drop` has `reason`: one of "
            f"{', '.join(_DROP_REASONS)}. The "
            f"first event is `tracing` (what is followed). A reader slower than the events loses the oldest "
            f"beyond {TRACE_BUFFER} (`event: dropped`). A management route: API keys and console_admins."
        ),
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The event stream."},
            **problem_responses(401, 403, 422, 503),
        },
        dependencies=[Security(BEARER)],
    )
    async def trace(
        key: Annotated[Principal, Depends(stream_key)],
        client_id: Annotated[str | None, Query(max_length=65535, description="The client id to follow.")] = None,
        filter: Annotated[str | None, Query(description="The topic filter to follow (sensors/#).")] = None,
    ) -> StreamingResponse:
        refusal = key.manage_refusal()
        if refusal is not None:
            raise Problem(403, refusal)
        if (client_id is None) == (filter is None):
            raise Problem.invalid([field_error(("query",), "give exactly one of client_id and filter", "missing")])
        if filter is not None and not valid_topic_filter(filter):
            raise Problem.invalid([field_error(("query", "filter"), f"{filter!r} is not a valid topic filter")])
        if len(hub.traces) >= MAX_TRACES:
            raise Problem(503, f"{MAX_TRACES} traces are open already; close one", title="Too many traces")
        return StreamingResponse(
            _sse(hub, client_id, filter),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
