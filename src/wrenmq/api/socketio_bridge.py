"""The Socket.IO bridge: python-socketio on the API listener (``/socket.io/``), on the broker's loop.

A Socket.IO client joins rooms named by MQTT topic filters and gets the messages an MQTT
subscriber to them would get; what it emits is published to MQTT. Everything goes through the
realtime service (``services.realtime``): the same sign-in, ACL and journal as long polling.

Connecting (``io(url, {auth: {...}})``), all optional:
    ``token`` (an API key) or ``username`` + ``password`` (the broker's users); ``clientId``;
    ``presence``: ``{"id": "alice", "name": "Alice"}`` makes the user present while connected.
    A refused connection gets ``connect_error`` with the reason. The server then emits
    ``welcome``: ``{"clientId", "username", "now"}`` (``now`` is server time in seconds).

Client to server, each answering through the Socket.IO acknowledgement:
    ``subscribe`` ``{"filters": [...], "qos": 0|1, "replay": <seconds>, "retained": true}`` ->
        ``{"ok": true, "filters": [...], "now": ...}`` or ``{"ok": false, "status": 403, "error": "..."}``.
        Rooms are the filters (ACL-checked as READ). ``replay`` first sends the journal's messages of
        the last so many seconds (or ``since``, a server time), for a client that resumes;
        ``retained`` (default true) sends the new filters' retained messages, as MQTT does.
    ``unsubscribe`` ``{"filters": [...]}`` -> ``{"ok": true}``.
    ``leave`` -> ``{"ok": true}``: the client is about to disconnect on purpose, so its presence
        goes offline at once; a connection that ends without it (lost, or ended by the server)
        keeps the user online for ``realtime_presence_grace`` seconds. A client-side
        ``disconnect()`` without ``leave`` is a goodbye too (what socket.io-client apps do to close).
    ``handover`` -> ``{"ok": true}``: the client moves to another transport that is already
        attached; its disconnect is not a goodbye, so if the new transport is lost at once the user
        still gets the grace instead of going offline.
    ``publish`` with the body of ``POST /api/v1/publish`` (``topic``, ``payload`` | ``payload_json``
        | ``payload_base64``, ``qos``, ``retain``, ``properties``) -> ``{"ok": true, "matched": n}``.
    Any other event name is a topic: ``socket.emit("chat/room1", {...})`` publishes the data as JSON
        at QoS 0 (QoS 1 when the client asks for an acknowledgement).

Across cluster nodes (``cluster_url``): a socket's messages reach it through its own node (the
realtime service's readers are routes like any subscriber's, so the cluster forwards what they
match to that node); the Socket.IO server runs on python-socketio's ``AsyncRedisManager`` on the
channel ``wrenmq:<cluster name>:socketio``, so what the server emits to a room (a topic filter the
sockets joined) or to a socket (``SocketIOBridge.emit``), and a disconnect of a socket, reach it
on whichever node it is attached to. Per-socket deliveries skip that channel (``ignore_queue``):
the socket is on this node, and the Redis round trip would buy nothing.

Server to client:
    ``message``: the JSON a stream sends (``api.streams``): ``id`` (journal seq; 0 for a retained
        message sent on subscribe), ``message_id`` (``Broker.message_id``: the same on every
        transport, for dropping repeats), ``topic``, ``qos``, ``retain``, ``payload``, ``encoding``,
        ``properties``, ``timestamp``. At QoS 1 the server asks for an acknowledgement and resends
        (``"dup": true``) after ``realtime_ack_timeout`` until it gets one, at most 3 times.
    ``dropped``: ``{"count": n}`` when a client too slow for its messages lost the oldest.

python-socketio is imported on the first request to ``/socket.io/``, in a worker thread so the
broker's loop keeps running, not at start-up: its package imports its clients and queue managers
too (engineio's clients with aiohttp and requests, redis), about 23 MiB of an API process that may
never see a Socket.IO client (BENCHMARKS.md, idle footprint).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..services.realtime import Denied, RealtimeService, Subscriber, message_json
from .models import PublishRequest
from .routes_publish import broker_problems

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..cluster import Cluster

__all__ = ["SocketIOBridge"]

log = logging.getLogger("wrenmq.socketio")

RESENDS = 3  # times an unacknowledged QoS 1 message is sent again
MAX_INFLIGHT = 1000  # unacknowledged QoS 1 messages per socket; beyond it they go out unacknowledged
RESERVED = frozenset(
    {"connect", "disconnect", "connect_error", "subscribe", "unsubscribe", "publish", "message", "leave", "handover"}
)


class _Inflight:
    __slots__ = ("attempts", "data", "sent_at")

    def __init__(self, data: dict[str, Any], sent_at: float) -> None:
        self.data = data
        self.sent_at = sent_at
        self.attempts = 1


class SocketIOBridge:
    """The Socket.IO server and the task that sends each socket what its inbox holds."""

    def __init__(self, broker: Broker, service: RealtimeService, cluster: Cluster | None = None) -> None:
        config = broker.config
        self.broker = broker
        self.service = service
        self.accepting = True  # False: new connections are refused (operators, and the fallback tests)
        self.ack_timeout = config.realtime.ack_timeout
        self._sio: Any = None  # the socketio.AsyncServer, made with the first request (the module docstring)
        self._app: Any = None  # its ASGI app
        self._loading = asyncio.Lock()
        self.cluster = cluster
        self.manager: Any = None  # with a cluster: python-socketio's Redis manager (made with the server)
        self.inflight: dict[str, dict[int, _Inflight]] = {}
        self._ready: dict[str, Subscriber] = {}
        self._leaving: set[str] = set()  # sids that said leave: their disconnect is a goodbye
        self._handing_over: set[str] = set()  # sids that said handover: their disconnect is not
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.messages_sent = 0
        self.resent = 0

    @property
    def sio(self) -> Any:
        """The ``socketio.AsyncServer`` (made on first use, imported at once if not yet)."""
        if self._sio is None:
            self._sio = self._server(importlib.import_module("socketio"))
        return self._sio

    def _server(self, socketio: Any) -> Any:
        config = self.broker.config
        listed = frozenset(config.realtime.cors_origins)  # besides the API's own origin
        if self.cluster is not None:  # emits to rooms and to sockets on other nodes travel through Redis
            self.manager = socketio.AsyncRedisManager(self.cluster.url, channel=self.cluster.key("socketio"))
        sio = socketio.AsyncServer(
            client_manager=self.manager,
            async_mode="asgi",
            cors_allowed_origins=partial(_origin_allowed, listed) if listed else None,  # None: same origin only
            logger=False,
            engineio_logger=False,
            ping_interval=10,
            ping_timeout=10,
            max_http_buffer_size=config.limits.max_packet_size,
        )
        sio.on("connect", self._connect)
        sio.on("disconnect", self._disconnect)
        sio.on("subscribe", self._subscribe)
        sio.on("unsubscribe", self._unsubscribe)
        sio.on("publish", self._publish)
        sio.on("leave", self._leave)
        sio.on("handover", self._handover)
        sio.on("*", self._any_event)
        return sio

    def has_socket(self, sid: str) -> bool:
        """Whether ``sid`` is an open Engine.IO session (never, before the first Socket.IO request)."""
        return self._sio is not None and sid in self._sio.eio.sockets

    def asgi(self, other: Any) -> Any:
        """The ASGI app serving ``/socket.io/`` and passing everything else (the lifespan too, as
        python-socketio's ``ASGIApp`` does) to ``other``."""

        async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):  # (a lifespan scope has no path)
                path: str = scope["path"]
                if (path if path.endswith("/") else path + "/").startswith("/socket.io/"):
                    app = self._app or await self._load(other)
                    await app(scope, receive, send)
                    return
            await other(scope, receive, send)

        return serve

    async def _load(self, other: Any) -> Any:
        async with self._loading:
            if self._app is None:
                socketio = await asyncio.to_thread(importlib.import_module, "socketio")
                if self._sio is None:
                    self._sio = self._server(socketio)
                self._app = socketio.ASGIApp(self._sio, other_asgi_app=other, socketio_path="socket.io")
        return self._app

    def start(self) -> None:
        self.service.listeners.append(self._inbox_filled)
        self._task = asyncio.get_running_loop().create_task(self._send_loop())

    async def stop(self) -> None:
        self.accepting = False
        with contextlib.suppress(ValueError):
            self.service.listeners.remove(self._inbox_filled)
        for sid in list(self.inflight):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        manager = self.manager
        if manager is not None:  # its listener task and Redis connection (started on first use)
            listener = getattr(manager, "thread", None)
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
            if manager.redis is not None:
                with contextlib.suppress(Exception):
                    await manager.redis.aclose()

    async def emit(self, event: str, data: Any, room: str | None = None, to: str | None = None) -> None:
        """Emit ``event`` to the sockets in ``room`` (a topic filter they subscribed to), to the
        socket ``to`` (a sid), or to every socket; with a cluster, on every node."""
        await self.sio.emit(event, data, room=room, to=to)

    async def disconnect_all(self) -> None:
        """End every Socket.IO connection (their clients reconnect, or fall back)."""
        for sid in list(self.inflight):
            await self.sio.disconnect(sid)

    @property
    def connected(self) -> int:
        return len(self.inflight)

    # -- connection ---------------------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not self.accepting:
            raise _refused("Socket.IO is not accepting connections")
        auth = auth if isinstance(auth, dict) else {}
        scope = environ.get("asgi.scope") or {}
        client_addr = scope.get("client")
        peer = f"{client_addr[0]}:{client_addr[1]}" if client_addr else "socketio"
        presence = auth.get("presence")
        key = "sio:" + sid
        try:
            client = await self.service.authenticate(
                token=_text(auth.get("token")),
                username=_text(auth.get("username")),
                password=_text(auth.get("password")),
                client_id=_text(auth.get("clientId")) or "sio-" + sid,
                peer=peer,
                host=client_addr[0] if client_addr else None,
            )
            subscriber = self.service.open(key, client)
            if isinstance(presence, dict):
                self.service.join_presence(subscriber, presence, "socketio")
        except Denied as denied:
            self.service.close(key, reason="refused: " + denied.reason)
            log.info("Socket.IO connection from %s refused: %s", peer, denied.reason)
            raise _refused(denied.reason) from None
        self.inflight[sid] = {}
        await self.sio.emit(
            "welcome",
            {"clientId": client.client_id, "username": client.username, "now": time.time()},
            to=sid,
            ignore_queue=True,
        )

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        # A client that said ``leave`` (or whose DISCONNECT packet was handled before its transport
        # closed) said goodbye; a lost connection, or one the server ended, may come back over
        # another transport within realtime_presence_grace, and is not announced offline before.
        handover = sid in self._handing_over
        left = sid in self._leaving
        goodbye = left or (reason == self.sio.reason.CLIENT_DISCONNECT and not handover)
        self._leaving.discard(sid)
        self._handing_over.discard(sid)
        said = "moved to another transport" if handover else "the client left" if left else str(reason or "closed")
        self.service.close("sio:" + sid, goodbye=goodbye, reason=said)
        self.inflight.pop(sid, None)
        self._ready.pop(sid, None)

    # -- requests -------------------------------------------------------------------------------------

    async def _subscribe(self, sid: str, data: Any) -> dict[str, Any]:
        subscriber = self.service.subscribers.get("sio:" + sid)
        if subscriber is None or not isinstance(data, dict):
            return _error(422, "subscribe takes {filters: [...], qos, since, retained}")
        filters = data.get("filters", data.get("filter"))
        if isinstance(filters, str):
            filters = [filters]
        qos = data.get("qos", 0)
        since = data.get("since")
        if not isinstance(filters, list) or not filters:
            return _error(422, "give at least one topic filter")
        if qos not in (0, 1, 2):
            return _error(422, "qos must be 0, 1 or 2")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
            return _error(422, "since is a server time in seconds")
        replay = data.get("replay")
        if replay is not None:
            if isinstance(replay, bool) or not isinstance(replay, int | float) or replay < 0:
                return _error(422, "replay is a number of seconds")
            since = time.time() - replay
        try:
            checked = self.service.check_filters(subscriber.client, filters, subscriber)
        except Denied as denied:
            return _error(denied.status, denied.reason)
        for topic_filter in checked:
            await self.sio.enter_room(sid, topic_filter)
        granted = min(int(qos), 1)  # QoS 2 is delivered as QoS 1: Socket.IO acks are one-way
        self.service.subscribe(
            subscriber, dict.fromkeys(checked, granted), since=since, retained=data.get("retained", True) is not False
        )
        return {"ok": True, "filters": checked, "qos": granted, "now": time.time()}

    async def _unsubscribe(self, sid: str, data: Any) -> dict[str, Any]:
        subscriber = self.service.subscribers.get("sio:" + sid)
        filters = data.get("filters", data.get("filter")) if isinstance(data, dict) else None
        if isinstance(filters, str):
            filters = [filters]
        if subscriber is None or not isinstance(filters, list):
            return _error(422, "unsubscribe takes {filters: [...]}")
        for topic_filter in filters:
            if isinstance(topic_filter, str):
                await self.sio.leave_room(sid, topic_filter)
        self.service.unsubscribe(subscriber, [f for f in filters if isinstance(f, str)])
        return {"ok": True}

    async def _leave(self, sid: str, data: Any = None) -> dict[str, Any]:
        """The client is about to disconnect on purpose: its presence ends at once, no grace."""
        self._leaving.add(sid)
        return {"ok": True}

    async def _handover(self, sid: str, data: Any = None) -> dict[str, Any]:
        """The client moves to another transport, already attached: its disconnect is no goodbye."""
        if sid in self.inflight:
            self._handing_over.add(sid)
        return {"ok": True}

    async def _publish(self, sid: str, data: Any) -> dict[str, Any]:
        subscriber = self.service.subscribers.get("sio:" + sid)
        if subscriber is None:
            return _error(401, "not connected")
        return await publish_for(self.broker, self.service, subscriber, data)

    async def _any_event(self, event: str, sid: str, data: Any = None) -> dict[str, Any] | None:
        """An event that is not one of ours: its name is the topic, its data the JSON payload."""
        if event in RESERVED:
            return None
        subscriber = self.service.subscribers.get("sio:" + sid)
        if subscriber is None:
            return _error(401, "not connected")
        result = await publish_for(self.broker, self.service, subscriber, {"topic": event, "payload_json": data})
        return result

    # -- delivery -------------------------------------------------------------------------------------

    def _inbox_filled(self, subscriber: Subscriber) -> None:
        if subscriber.key.startswith("sio:"):
            self._ready[subscriber.key[4:]] = subscriber
            self._wake.set()

    async def _send_loop(self) -> None:
        """One task sends everything, in order per socket (python-socketio's emit is not meant to be
        called concurrently for one client), and resends what was not acknowledged."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            ready, self._ready = self._ready, {}
            for sid, subscriber in ready.items():
                try:
                    await self._drain(sid, subscriber)
                except Exception:  # one socket's trouble must not stop the others' delivery
                    log.exception("Socket.IO delivery to %s failed", sid)
            await self._resend_overdue()

    async def _drain(self, sid: str, subscriber: Subscriber) -> None:
        inbox = subscriber.inbox
        if inbox.closed:
            return
        batch, dropped = list(inbox.buffer), inbox.dropped
        inbox.buffer.clear()
        inbox.dropped = 0
        if dropped:
            await self.sio.emit("dropped", {"count": dropped}, to=sid, ignore_queue=True)
        inflight = self.inflight.get(sid)
        now = time.time()
        for seq, stamp, message, qos in batch:
            data = message_json(seq, stamp, message, qos, self.broker.message_id(message))
            if qos and inflight is not None and seq and len(inflight) < MAX_INFLIGHT:
                inflight[seq] = _Inflight(data, now)
                await self.sio.emit("message", data, to=sid, callback=partial(self._acked, sid, seq), ignore_queue=True)
            else:
                await self.sio.emit("message", data, to=sid, ignore_queue=True)
        self.messages_sent += len(batch)

    def _acked(self, sid: str, seq: int, *args: Any) -> None:
        inflight = self.inflight.get(sid)
        if inflight is not None:
            inflight.pop(seq, None)

    async def _resend_overdue(self) -> None:
        deadline = time.time() - self.ack_timeout
        for sid, inflight in list(self.inflight.items()):
            for seq, entry in list(inflight.items()):
                if entry.sent_at > deadline:
                    continue
                if entry.attempts > RESENDS:
                    del inflight[seq]
                    self.service.messages_dropped += 1
                    log.info("Socket.IO client %s never acknowledged message %d", sid, seq)
                    continue
                entry.attempts += 1
                entry.sent_at = time.time()
                self.resent += 1
                data = {**entry.data, "dup": True}
                await self.sio.emit("message", data, to=sid, callback=partial(self._acked, sid, seq), ignore_queue=True)


async def publish_for(broker: Broker, service: RealtimeService, subscriber: Subscriber, data: Any) -> dict[str, Any]:
    """Publish ``data`` (the body of ``POST /api/v1/publish``) for a realtime client: the answer
    is ``{"ok": true, "matched": n}`` or ``{"ok": false, "status", "error"}``."""
    if not isinstance(data, dict):
        return _error(422, "publish takes {topic, payload | payload_json | payload_base64, qos, retain}")
    try:
        request = PublishRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return _error(422, f"{where}: {first['msg']}")
    problems = broker_problems(broker, request, ())
    if problems:
        return _error(422, "; ".join(f"{error.field}: {error.message}" for error in problems))
    try:
        matched = await service.publish(
            subscriber.client,
            request.topic,
            request.payload_bytes(),
            request.qos,
            request.retain,
            request.properties.to_mqtt(),
        )
    except Denied as denied:
        return _error(denied.status, denied.reason)
    return {"ok": True, "matched": matched}


def _refused(reason: str) -> Exception:
    """What a connect handler raises to refuse (python-socketio is loaded: it is calling us)."""
    refused: type[Exception] = importlib.import_module("socketio.exceptions").ConnectionRefusedError
    return refused(reason)


def _error(status: int, reason: str) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": reason}


def _origin_allowed(listed: frozenset[str], origin: str | None, environ: dict[str, Any]) -> bool:
    """The API's own origin (python-engineio's default, which a list would replace) or a listed one."""
    own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
    return origin == own or origin in listed or "*" in listed


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
