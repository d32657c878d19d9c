"""The asyncio MQTT client: the public API, connecting and reconnecting, and message delivery.

::

    async with Client("127.0.0.1", 1883, client_id="sensor-1") as client:
        await client.subscribe("commands/#", qos=1)
        await client.publish("sensors/1/temperature", b"21.5", qos=1)
        async for message in client.messages():
            print(message.topic, message.payload)

Each operation completes when its flow does: ``publish`` at PUBACK (QoS 1) or PUBCOMP (QoS 2),
``subscribe`` at SUBACK. The connection underneath may come and go (``reconnect=True``): a lost
connection is retried with exponential backoff and jitter; on the new connection the client
resends its unacknowledged QoS 1/2 messages with their packet identifiers (DUP set, when the broker
kept the session [MQTT-4.4.0-1]), resubscribes (when it did not), re-sends SUBSCRIBE/UNSUBSCRIBE
requests still waiting, then sends what was published while offline, in order. The QoS flows
themselves are :class:`~wrenmq.client.session.Session`'s; a network connection is a
:class:`~wrenmq.client.connection.Connection`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast
from weakref import WeakSet

from ..mqtt import packets as p
from ..mqtt.errors import ProtocolError as MqttProtocolError
from ..mqtt.packets import Properties, Subscription, Will
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import parse_shared, valid_topic_filter
from .connection import Connection
from .errors import ClientError, ConnectError, Disconnected, ProtocolError, describe_reason
from .message import Message, MessageStream
from .session import MAX_PACKET_SIZE, ClientStats, Outbound, QueueFullPolicy, Send, Session
from .transport import open_transport

if TYPE_CHECKING:
    import ssl
    from types import TracebackType

__all__ = ["Client", "ClientStats", "backoff_delay"]

log = logging.getLogger("wrenmq.client")

Payload = bytes | bytearray | memoryview | str | None
SubscribeArg = str | Subscription | tuple[str, int]
State = Literal["new", "connecting", "connected", "reconnecting", "closed"]

_DEFAULT_PORTS = {(False, False): 1883, (True, False): 8883, (False, True): 80, (True, True): 443}


def backoff_delay(failures: int, low: float, high: float) -> float:
    """Seconds to wait after ``failures`` failed attempts: exponential from ``low`` up to ``high``,
    with "equal jitter" (a random point in the upper half), so clients that lost the same broker
    do not all come back at the same instant."""
    cap = min(high, low * 2 ** min(failures, 32))
    return random.uniform(cap / 2, cap)


class Client:
    """An MQTT 3.1, 3.1.1 or 5.0 client on asyncio. Use ``async with``, or :meth:`connect` /
    :meth:`start` and :meth:`disconnect`.

    ``version``: 5, 4 (3.1.1) or 3 (3.1). ``clean_start`` asks for a new session on the first
    connect; at MQTT 5 reconnects then resume the session (Clean Start 0) and ``session_expiry``
    (seconds; 0xFFFFFFFF: never) decides whether the broker keeps it; at 3.1.1 the flag is sent as
    given every time (Clean Session 0 keeps the session). Without ``client_id`` a 3.x client makes
    up a random one and a 5.0 client lets the broker assign one.

    ``tls``: an ``ssl.SSLContext``, or True for the system's default trust. ``transport``: "tcp" or
    "ws" (MQTT over WebSocket at ``ws_path``; with ``tls``, wss). ``reconnect``: retry lost
    connections, waiting ``backoff=(min, max)`` seconds with exponential growth and jitter.
    ``max_queued`` bounds the messages waiting to be sent (published while disconnected, or beyond
    the broker's Receive Maximum); when full, ``queue_full="raise"`` makes publish() raise
    :class:`QueueFull` and ``"drop_oldest"`` fails the oldest waiting publish with
    :class:`MessageDropped`. ``max_buffered`` bounds each message stream's queue (past it, reading
    pauses) and the backlog of messages no stream wanted (past it, the oldest are dropped).

    ``bridge`` (3.1 and 3.1.1 only) sets Mosquitto's bridge bit in CONNECT (protocol level 0x84 or
    0x83, Mosquitto's ``try_private``): a broker that knows it does not send the client back what it
    published and keeps the RETAIN flag as published. A broker that refuses it (return code 1) is
    asked again at once without it, as Mosquitto does; ``bridge`` then reads False.

    ``fallbacks``: more ``(host, port)`` addresses of the same broker service, tried in turn when an
    attempt fails (``host``/``port`` then name the one in use). A lost connection starts again from
    the first address, or with ``round_robin`` from the next one (Mosquitto's bridge ``address``
    with several hosts and ``round_robin``). ``local_address``: the local IP address to connect from.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        client_id: str | None = None,
        version: int = 5,
        clean_start: bool = True,
        session_expiry: int = 0,
        keepalive: int = 60,
        username: str | None = None,
        password: str | bytes | None = None,
        will: Will | None = None,
        tls: ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        transport: Literal["tcp", "ws"] = "tcp",
        ws_path: str = "/mqtt",
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 30.0),
        connect_timeout: float = 10.0,
        max_queued: int = 1000,
        queue_full: QueueFullPolicy = "raise",
        max_buffered: int = 10_000,
        max_packet_size: int | None = None,
        connect_properties: Properties | None = None,
        bridge: bool = False,
        fallbacks: Sequence[tuple[str, int]] = (),
        round_robin: bool = False,
        local_address: str | None = None,
    ) -> None:
        if version not in (p.MQTT_3_1, p.MQTT_3_1_1, p.MQTT_5):
            raise ValueError(f"version must be 5, 4 (3.1.1) or 3 (3.1), not {version!r}")
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be 'tcp' or 'ws', not {transport!r}")
        if not 0 <= keepalive <= 65535:
            raise ValueError("keepalive must be 0 to 65535 seconds")
        if not 0 <= session_expiry <= 0xFFFFFFFF:
            raise ValueError("session_expiry must be 0 to 4294967295 seconds")
        if password is not None and username is None and version < 5:  # [MQTT-3.1.2-22]
            raise ValueError("MQTT 3.1.1 sends a password only with a username [MQTT-3.1.2-22]")
        low, high = backoff
        if not 0 < low <= high:
            raise ValueError("backoff must be (min, max) with 0 < min <= max")
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        if tls is True:
            import ssl

            tls = ssl.create_default_context()
        self.host = host
        self.port = port if port is not None else _DEFAULT_PORTS[(bool(tls), transport == "ws")]
        self._addresses = [(self.host, self.port), *fallbacks]
        self._address = 0  # the index of (host, port) in _addresses
        self.round_robin = round_robin
        self.local_address = local_address  # the local IP address connections are made from
        if client_id is None:
            # 3.x: an empty id needs Clean Session 1 [MQTT-3.1.3-7], so make one up (as mosquitto_pub does).
            client_id = f"wrenmq-{secrets.token_hex(8)}" if version < 5 else ""
        self.client_id = client_id
        self.version = version
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.username = username
        self.password = password.encode() if isinstance(password, str) else password
        self.will = will
        self.tls: ssl.SSLContext | None = tls or None
        self.server_hostname = server_hostname
        self.transport = transport
        self.ws_path = ws_path
        self.reconnect = reconnect
        self.backoff = (low, high)
        self.connect_timeout = connect_timeout
        self.max_buffered = max_buffered
        self.max_packet_size = max_packet_size
        self.connect_properties: Properties = dict(connect_properties or {})
        self.bridge = bridge and version < 5  # the bridge bit is sent (and, once connected, was accepted)
        # Told True once a connection is up (its session resumed), False when one is lost (not on
        # disconnect()): a bridge's state notifications hang on it.
        self.on_connection: Callable[[bool], None] | None = None

        self.state: State = "new"
        self.connack: p.Connack | None = None  # the latest accepted CONNACK
        self.last_error: BaseException | None = None  # why the last connection ended or attempt failed
        self.next_attempt_at: float | None = None  # time.time() of the next reconnect attempt
        self.stats = ClientStats()
        self._session = Session(version, max_queued, queue_full, self.stats)
        self._conn: Connection | None = None  # the connection being made, or made
        self._ready = False  # connected and session resumed: operations go straight out
        self._task: asyncio.Task[None] | None = None
        self._closed_reason: ClientError | None = None  # raised by operations once closed
        self._final_error: ClientError | None = None  # streams end with it (None: closed by the application)
        self._waiters: list[asyncio.Future[None]] = []  # wait_connected() calls
        self._first_connect = True
        self._streams: WeakSet[MessageStream] = WeakSet()
        self._backlog: deque[Message] = deque()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Client:
        """A client for ``mqtt://``, ``mqtts://``, ``ws://`` or ``wss://[user[:password]@]host[:port][/path]``
        (see :mod:`wrenmq.client.url`); keyword arguments override what the URL says."""
        from .url import parse_url

        parsed = parse_url(url)
        settings: dict[str, Any] = {"transport": parsed.transport}
        if parsed.tls:
            settings["tls"] = True
        if parsed.username is not None:
            settings["username"] = parsed.username
        if parsed.password is not None:
            settings["password"] = parsed.password
        if parsed.transport == "ws" and parsed.path:
            settings["ws_path"] = parsed.path
        settings.update(kwargs)
        return cls(parsed.host, parsed.port, **settings)

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready

    @property
    def session_present(self) -> bool:
        return bool(self.connack and self.connack.session_present)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Connect, raising :class:`ConnectError` if this first attempt fails; later losses are
        retried in the background (``reconnect=True``)."""
        if self.state != "new":
            raise ClientError(f"connect() on a client that is {self.state}")
        self.state = "connecting"
        try:
            await self._connect_once()
        except BaseException as exc:
            self._finish(exc if isinstance(exc, ClientError) else Disconnected("connect() was interrupted"))
            raise
        self._task = asyncio.get_running_loop().create_task(self._supervise(connected=True))

    def start(self) -> None:
        """Connect in the background, retrying until it succeeds (``reconnect=True``); operations
        made meanwhile wait (publishes in the offline queue). For services that must start even
        when the broker is down."""
        if self.state != "new":
            raise ClientError(f"start() on a client that is {self.state}")
        self.state = "connecting"
        self._task = asyncio.get_running_loop().create_task(self._supervise(connected=False))

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client is connected; raises its final error if it closes first."""
        async with asyncio.timeout(timeout):
            while not self._ready:
                self._check_open()
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def disconnect(
        self, reason_code: int = ReasonCode.NORMAL_DISCONNECTION, properties: Properties | None = None
    ) -> None:
        """Send DISCONNECT and close (the broker then discards the will, unless ``reason_code`` is
        0x04 at MQTT 5). Operations still waiting fail with :class:`Disconnected`; message streams end."""
        if self.state == "closed":
            return
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ready, self._ready = self._ready, False
        conn, self._conn = self._conn, None
        if conn is not None and conn.is_open:
            if ready:
                conn.send(p.Disconnect(reason_code, properties))
            conn.close()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await asyncio.shield(conn.closed)
            except TimeoutError:
                conn.abort()
        self._finish(None)

    def drop_connection(self) -> None:
        """Close the network connection at once, without DISCONNECT (the broker publishes the will),
        and reconnect as after any lost connection (from the first address, unless ``round_robin``)."""
        if self._conn is not None and self._ready:
            self._conn.abort()

    @property
    def on_first_address(self) -> bool:
        """Whether the connection is (or is being) made to the first of the addresses."""
        return self._address == 0

    # --- operations -------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Publish, returning when the QoS flow is complete: at once for QoS 0 (when sent, if
        offline), at PUBACK for QoS 1, at PUBCOMP for QoS 2. Returns the ack's reason code (0 at
        3.1.1; MQTT 5 may say 0x10 No matching subscribers); a failure code raises
        :class:`PublishError`. ``properties`` are MQTT 5 PUBLISH properties (ignored at 3.x)."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if not topic or "+" in topic or "#" in topic or "\x00" in topic:
            raise ValueError(f"invalid topic name {topic!r}: not empty, no wildcards [MQTT-3.3.2-2]")
        self._check_open()
        packet = p.Publish(topic, _payload_bytes(payload), qos, retain, None, False, dict(properties or {}))
        entry = Outbound(packet, asyncio.get_running_loop().create_future())
        session = self._session
        session.submit(entry, self._sender())
        if qos == 0 and entry.future.done() and self._conn is not None:
            await self._conn.drain()  # a QoS 0 burst waits for the socket rather than the buffer growing
        try:
            return await entry.future
        except asyncio.CancelledError:
            session.withdraw(entry)
            raise

    async def subscribe(
        self,
        topic: SubscribeArg | Sequence[SubscribeArg],
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        properties: Properties | None = None,
    ) -> list[int]:
        """Subscribe to one filter or several (strings, ``(filter, qos)`` pairs or
        :class:`Subscription` objects); returns the SUBACK's reason codes, one per filter: the
        granted QoS, or a failure code (0x80 or above). The options are MQTT 5's (ignored at 3.x).
        The client remembers what was granted, to resubscribe after a reconnect that lost the session."""
        items: Sequence[SubscribeArg]
        if isinstance(topic, (str, Subscription)) or (
            isinstance(topic, tuple) and len(topic) == 2 and isinstance(topic[1], int)
        ):
            items = [cast(SubscribeArg, topic)]
        else:
            items = cast(Sequence[SubscribeArg], topic)
        subscriptions: list[Subscription] = []
        for item in items:
            if isinstance(item, Subscription):
                sub = item
            elif isinstance(item, tuple):
                sub = Subscription(item[0], item[1], no_local, retain_as_published, retain_handling)
            else:
                sub = Subscription(item, qos, no_local, retain_as_published, retain_handling)
            _check_filter(sub.topic_filter)
            if sub.qos not in (0, 1, 2) or sub.retain_handling not in (0, 1, 2):
                raise ValueError(f"invalid QoS or retain handling for {sub.topic_filter!r}")
            subscriptions.append(sub)
        if not subscriptions:
            raise ValueError("subscribe() needs at least one topic filter [MQTT-3.8.3-3]")
        props = dict(properties or {})
        codes = await self._request(p.Subscribe(0, subscriptions, props))
        if len(codes) != len(subscriptions):
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.9.3-1] SUBACK with the wrong number of codes")
        for sub, code in zip(subscriptions, codes, strict=True):
            if code < 0x80:  # kept, to subscribe again on a connection whose broker lost the session
                self._session.subscriptions[sub.topic_filter] = (sub, props)
        return codes

    async def unsubscribe(self, topic: str | Sequence[str], properties: Properties | None = None) -> list[int]:
        """Unsubscribe; returns the UNSUBACK's reason codes (MQTT 5), or 0 per filter at 3.x (whose
        UNSUBACK carries none)."""
        filters = [topic] if isinstance(topic, str) else list(topic)
        if not filters:
            raise ValueError("unsubscribe() needs at least one topic filter [MQTT-3.10.3-2]")
        for topic_filter in filters:
            _check_filter(topic_filter)
        codes = await self._request(p.Unsubscribe(0, filters, dict(properties or {})))
        if self.version < 5:
            codes = [0] * len(filters)
        for topic_filter in filters:
            self._session.subscriptions.pop(topic_filter, None)
        return codes

    def messages(self, topic_filter: str | None = None) -> MessageStream:
        """A stream of received messages (those matching ``topic_filter``, if given): ``async for
        message in client.messages(): ...``. Messages that arrived before any stream wanted them
        are handed to the first stream that does. See :class:`MessageStream`."""
        stream = MessageStream(self, topic_filter)
        if self._backlog:
            keep: deque[Message] = deque()
            for message in self._backlog:
                (stream.put if stream.accepts(message.topic) else keep.append)(message)
            self._backlog = keep
        if self.state == "closed":
            stream.finish(self._final_error)
        else:
            self._streams.add(stream)
        return stream

    @property
    def queued(self) -> int:
        """Messages waiting to be sent."""
        return len(self._session.pending)

    @property
    def inflight(self) -> int:
        """QoS 1/2 messages sent and not yet completely acknowledged."""
        return len(self._session.inflight)

    @property
    def dropped(self) -> int:
        """Messages dropped from the full offline queue (``queue_full="drop_oldest"``)."""
        return self._session.dropped

    # --- connecting -------------------------------------------------------------------------------

    async def _supervise(self, connected: bool) -> None:
        """Keep a connection: wait for it to end, then reconnect with backoff (or finish)."""
        loop = asyncio.get_running_loop()
        failures = 0
        immediate = not connected  # start(): the first attempt is made at once
        connected_at = loop.time()
        while True:
            if connected:
                conn = self._conn
                assert conn is not None
                await asyncio.shield(conn.closed)  # connection_closed() has run already
                if self.state == "closed":
                    return
                connected = False
                # A connection the broker drops at once counts as a failure, so a broker that
                # accepts and then kicks us out is not hammered at the minimum delay.
                failures = 0 if loop.time() - connected_at >= self.backoff[1] else failures + 1
                self._move_address(0 if not self.round_robin else self._address + 1)
            if not immediate:
                delay = backoff_delay(failures, *self.backoff)
                self.next_attempt_at = time.time() + delay
                await asyncio.sleep(delay)
            immediate = False
            self.next_attempt_at = None
            try:
                await self._connect_once()
            except Exception as exc:
                failures += 1
                if not isinstance(exc, ClientError):  # a bug: say so, but keep the client alive
                    log.exception("unexpected error connecting to %s:%d", self.host, self.port)
                    exc = ConnectError(f"unexpected error: {exc!r}")
                if not self.reconnect:
                    self._finish(exc)
                    return
                log.info("connecting to %s:%d failed (%s); retrying", self.host, self.port, exc)
                self._move_address(self._address + 1)
                continue
            connected, connected_at = True, loop.time()

    def _move_address(self, index: int) -> None:
        """Make the next attempt at ``_addresses[index]`` (wrapping round)."""
        addresses = self._addresses
        if len(addresses) > 1:
            self._address = index % len(addresses)
            self.host, self.port = addresses[self._address]

    async def _connect_once(self) -> None:
        """One attempt: open the transport, CONNECT, wait for CONNACK, resume the session."""
        self.stats.connect_attempts += 1
        conn = Connection(self, self.version, self.max_packet_size or MAX_PACKET_SIZE)
        self._conn = conn
        try:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await open_transport(
                        conn,
                        self.host,
                        self.port,
                        tls=self.tls,
                        server_hostname=self.server_hostname,
                        websocket=self.transport == "ws",
                        ws_path=self.ws_path,
                        local_address=self.local_address,
                    )
                    clean_start = self.clean_start if (self._first_connect or self.version < 5) else False
                    conn.send(self._connect_packet(clean_start))
                    connack = await conn.connack
            except TimeoutError:
                where = f"{self.host}:{self.port}"
                raise ConnectError(f"no connection to {where} within {self.connect_timeout:g}s") from None
            if connack.reason_code == 1 and self.bridge and self.version < 5:
                # Unacceptable protocol version: a broker that does not know the bridge bit.
                log.info("%s:%d refused the bridge bit; connecting without it", self.host, self.port)
                self.bridge = False
                conn.abort()
                if self._conn is conn:
                    self._conn = None
                await self._connect_once()
                return
            if connack.reason_code != 0:
                raise ConnectError(
                    f"connection refused: {describe_reason(connack.reason_code, self.version, connack=True)}",
                    connack.reason_code,
                    connack.properties.get(PropertyId.REASON_STRING),
                )
            if connack.session_present and clean_start:  # [MQTT-3.2.2-4] (5.0), [MQTT-3.2.2-1] (3.1.1)
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "Session Present after Clean Start [MQTT-3.2.2-4]")
            if not conn.is_open:  # it failed right after CONNACK (e.g. a malformed packet came with it)
                raise conn.reason or Disconnected("the broker closed the connection after CONNACK")
        except BaseException as exc:
            conn.abort()
            if self._conn is conn:
                self._conn = None
            if isinstance(exc, ClientError):
                self.last_error = exc
            raise
        self._first_connect = False
        self._accepted(conn, connack)

    def _connect_packet(self, clean_start: bool) -> p.Connect:
        props: Properties = {}
        if self.version == 5:
            props.update(self.connect_properties)
            if self.session_expiry:
                props[PropertyId.SESSION_EXPIRY_INTERVAL] = self.session_expiry
            if self.max_packet_size:
                props[PropertyId.MAXIMUM_PACKET_SIZE] = self.max_packet_size
        return p.Connect(
            self.client_id,
            self.version,
            clean_start,
            self.keepalive,
            self.will,
            self.username,
            self.password,
            props,
            bridge=self.bridge,
        )

    def _accepted(self, conn: Connection, connack: p.Connack) -> None:
        """CONNACK 0: note the broker's limits, then resume the session on this connection."""
        props = connack.properties
        self.connack = connack
        self._session.limits(props)
        assigned = props.get(PropertyId.ASSIGNED_CLIENT_IDENTIFIER)
        if assigned:
            self.client_id = assigned  # reconnects resume this id's session
        conn.start_keepalive(props.get(PropertyId.SERVER_KEEP_ALIVE, self.keepalive))  # [MQTT-3.2.2-21]
        self.stats.connects += 1
        self.state = "connected"
        self.last_error = None
        log.info(
            "connected to %s:%d as %r (MQTT %s, session present: %s)",
            self.host,
            self.port,
            self.client_id,
            {3: "3.1", 4: "3.1.1", 5: "5.0"}[self.version],
            connack.session_present,
        )
        self._session.resume(conn.send, connack.session_present)
        self._ready = True
        self._wake_waiters()
        if self.on_connection is not None:
            self.on_connection(True)

    def connection_closed(self, conn: Connection, reason: ClientError) -> None:
        """Called by the connection as it ends (before the supervisor hears of it)."""
        if self._conn is not conn:
            return
        self._conn = None
        was_ready, self._ready = self._ready, False
        self.last_error = reason
        log.info("connection to %s:%d lost: %s", self.host, self.port, reason)
        if was_ready and self.on_connection is not None:
            self.on_connection(False)
        if self.reconnect:
            self.state = "reconnecting"
        else:
            self._finish(reason)

    def _finish(self, reason: ClientError | None) -> None:
        """The client is closed for good: fail what waits, end the streams."""
        if self._conn is not None:
            self._conn.abort()
            self._conn = None
        self._ready = False
        self.state = "closed"
        self.next_attempt_at = None
        self._closed_reason = reason or Disconnected("the client is closed")
        self._final_error = reason
        self._session.fail_all(self._closed_reason)
        self._wake_waiters()
        for stream in list(self._streams):
            stream.finish(reason)
        self._streams = WeakSet()
        self._backlog.clear()

    def _check_open(self) -> None:
        if self.state == "closed":
            raise self._closed_reason or Disconnected("the client is closed")
        if self.state == "new":
            raise ClientError("not connected: use 'async with Client(...)', connect() or start()")

    # --- sending ----------------------------------------------------------------------------------

    def _sender(self) -> Send | None:
        """The current connection's send, if operations may go straight out on it."""
        conn = self._conn
        return conn.send if self._ready and conn is not None and conn.is_open else None

    async def _request(self, packet: p.Subscribe | p.Unsubscribe) -> list[int]:
        self._check_open()
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._session.request(packet, future)
        send = self._sender()
        if send is not None:
            send(packet)
        return await future

    # --- receiving --------------------------------------------------------------------------------

    def packet_received(self, conn: Connection, packet: p.AnyPacket) -> None:
        """Everything but CONNACK, PINGRESP and DISCONNECT, which the connection handles."""
        session = self._session
        kind = packet.type
        if kind == p.PUBLISH:
            publish = cast(p.Publish, packet)
            if session.on_publish(publish, conn.send):
                self._deliver(publish)
        elif kind in (p.PUBACK, p.PUBREC, p.PUBCOMP):
            session.on_ack(cast(p.Puback | p.Pubrec | p.Pubcomp, packet), conn.send)
            if session.pending and self._ready:
                session.drain(conn.send)
        elif kind == p.PUBREL:
            session.on_pubrel(cast(p.Pubrel, packet), conn.send)
        elif kind in (p.SUBACK, p.UNSUBACK):
            session.on_request_ack(cast(p.Suback | p.Unsuback, packet))
        else:
            name = p.PACKET_NAMES.get(kind, str(kind))
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"a client does not expect {name} from the server")

    def _deliver(self, packet: p.Publish) -> None:
        message = Message(
            packet.topic, packet.payload, packet.qos, packet.retain, packet.properties, packet.dup, packet.packet_id
        )
        self.stats.messages_in += 1
        taken = False
        for stream in self._streams:
            if stream.accepts(message.topic):
                stream.put(message)
                taken = True
                if len(stream) >= self.max_buffered and self._conn is not None:
                    self._conn.pause_reading()  # resumed by _stream_drained
        if not taken:
            if len(self._backlog) >= self.max_buffered:
                self._backlog.popleft()
                self.stats.received_dropped += 1
                if self.stats.received_dropped == 1:
                    log.warning("received messages are dropped: no message stream takes them (client.messages())")
            self._backlog.append(message)

    def _stream_drained(self, stream: MessageStream) -> None:
        conn = self._conn
        if conn is not None and conn.reading_paused:
            low = self.max_buffered // 2
            if all(len(s) <= low for s in self._streams):
                conn.resume_reading()

    def _remove_stream(self, stream: MessageStream) -> None:
        self._streams.discard(stream)
        self._stream_drained(stream)


def _payload_bytes(payload: Payload) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")


def _check_filter(topic_filter: str) -> None:
    try:
        inner = parse_shared(topic_filter)[1]
    except MqttProtocolError as exc:  # a malformed share name
        raise ValueError(exc.args[0]) from None
    if not valid_topic_filter(inner):
        raise ValueError(f"invalid topic filter {topic_filter!r} [MQTT-4.7.1-1]")
