"""Named connections to other MQTT brokers, and bridges to and from them (Mosquitto's bridge style).

Each ``[[brokers]]`` entry (or one added at runtime through ``POST /api/v1/brokers``) is a
:class:`BrokerConnection`: one :class:`wrenmq.client.Client` that connects in the background and
reconnects with backoff, an :class:`Outbox` of messages for the remote, and the connection's
bridges (:class:`wrenmq.config.Bridge`).

* ``out`` (and ``both``): a local message whose topic matches ``local_prefix + pattern`` (an
  in-process subscription in the broker's router, so it is matched with everyone else's, after
  every publish hook) is put in the outbox with the prefix swapped, at ``min(its QoS, the
  bridge's)``. The outbox is bounded (``queue_size``) and durable (kept by the broker's storage:
  ``<data_dir>/bridges.db``; in memory with ``storage = "memory"``): a message leaves it only
  when the remote has acknowledged it, so
  nothing waiting or in flight is lost when the remote, or wrenmq, goes away; what waited is sent
  in order once the connection is back. A full outbox drops the new message and counts it.
* ``in`` (and ``both``): the client subscribes on the remote to ``remote_prefix + pattern`` and
  each message it receives is published here with the prefix swapped (``await broker.publish``).
* Loops: at MQTT 5 the remote subscriptions carry No Local, so the remote does not send back what
  this connection published there; locally, the same rule: a message that came in over a
  connection is published with that connection as its origin, and the connection's own
  subscription has No Local, so it is not sent back out over it. At 3.1.1 the client connects with Mosquitto's
  bridge bit (protocol level 0x84), with which Mosquitto (and wrenmq) give its subscriptions No
  Local; only where the remote refuses the bit (and the connection falls back to plain 3.1.1) is a
  message that comes in right after the same topic and payload went out taken for the echo and dropped.

The service is started and stopped beside the broker by ``wrenmq serve`` and the pytest plugin, like the API server:
``connections = BrokerConnections(broker); await connections.start()``. Connections added at
runtime last until the broker stops (put them in the config file to keep them).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..broker.router import LocalSubscriber
from ..config import Bridge, ConfigError, ExternalBrokerConfig
from ..hooks import Reject
from ..mqtt.properties import PropertyId
from ..mqtt.topics import client_may_publish
from .outbox import Outbox, OutboxFull, Outgoing

if TYPE_CHECKING:
    import ssl

    from ..broker.broker import Broker
    from ..broker.message import Message
    from ..client import Client
    from ..client import Message as RemoteMessage
    from ..storage import OutboxRecord

__all__ = ["BrokerConnection", "BrokerConnections", "Outgoing", "Unavailable", "check_connection"]

log = logging.getLogger("wrenmq.brokers")

WINDOW = 100  # messages handed to the client at once (in flight or waiting in its own queue)
SESSION_EXPIRY = 86_400  # MQTT 5: the remote keeps our session (and what it queued for us) a day
ECHO_MEMORY = 10_000  # 3.1.1: how many sent (topic, payload) pairs are remembered to spot echoes
_PER_HOP = (PropertyId.TOPIC_ALIAS, PropertyId.SUBSCRIPTION_IDENTIFIER)

State = Literal["connecting", "connected", "reconnecting", "stopped"]


class Unavailable(Exception):
    """The remote cannot take a message now (not connected, or its queue is full): HTTP 503."""


class BrokerConnection:
    """One named external broker: its client, its outbox and its bridges."""

    def __init__(self, config: ExternalBrokerConfig, service: BrokerConnections, source: str) -> None:
        self.config = config
        self.name = config.name
        self.source = source  # "config" or "api"
        self.bridges: list[Bridge] = config.parsed_bridges()
        self.out_bridges = [bridge for bridge in self.bridges if bridge.direction != "in"]
        # The out bridges by local filter (each with its place in the configuration), in the order
        # the filters first appear: the in-process subscriptions and their identifiers.
        by_filter: dict[str, list[tuple[int, Bridge]]] = {}
        for place, bridge in enumerate(self.out_bridges):
            by_filter.setdefault(bridge.local_filter, []).append((place, bridge))
        self._out_filters = list(by_filter)
        self._out_groups = list(by_filter.values())
        self.in_bridges = [bridge for bridge in self.bridges if bridge.direction != "out"]
        self.service = service
        # Who the out bridges' in-process subscriptions belong to, and the origin of what the in
        # bridges bring in (No Local between the two). A NUL is in no MQTT client id [MQTT-1.5.4-2].
        self.local_id = "\x00bridge:" + config.name
        self.client = _make_client(config)
        self.outbox = Outbox(config.name, config.queue_size, service.broker.storage, service.stored(config.name))
        self.messages_in = 0  # received from the remote and published here
        self.messages_out = 0  # acknowledged (QoS 1/2) or sent (QoS 0) by the remote
        self.dropped = 0  # bridged messages dropped because the outbox was full
        self.refused = 0  # messages the remote refused (a PUBACK failure code), or this broker refused
        self.subscribed = False  # the in bridges' subscriptions were granted
        self.subscribe_error: str | None = None
        # 3.1.1 has no No Local: remember what went out where an in bridge could bring it back.
        self._echoes: Counter[tuple[str, bytes]] | None = None
        self._echo_order: deque[tuple[str, bytes]] = deque()
        if config.version < 5 and self.in_bridges and self.out_bridges:
            self._echoes = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._window = asyncio.Semaphore(WINDOW)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.start()
        self._spawn(self._pump())
        if self.in_bridges:
            self._spawn(self._bring_in())

    async def stop(self) -> None:
        # Disconnecting fails what the client holds; those messages stay stored (Outbox.returned).
        await self.client.disconnect()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"wrenmq broker {self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- status -----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        client = self.client
        if client.state == "connected":
            return "connected"
        if client.state == "closed":
            return "stopped"
        return "reconnecting" if client.next_attempt_at is not None else "connecting"

    @property
    def connected(self) -> bool:
        return self.client.connected

    def status(self) -> dict[str, Any]:
        client = self.client
        return {
            "name": self.name,
            "url": _public_url(self.config.url),
            "source": self.source,
            "version": self.config.version,
            "client_id": client.client_id,
            "state": self.state,
            "connected": client.connected,
            "next_attempt_at": _rfc3339(client.next_attempt_at) if client.next_attempt_at else None,
            "last_error": str(client.last_error) if client.last_error is not None else None,
            "subscribed": self.subscribed,
            "subscribe_error": self.subscribe_error,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "queued": len(self.outbox),
            "queue_size": self.outbox.size,
            "dropped": self.dropped,
            "refused": self.refused,
            "bridges": [str(bridge) for bridge in self.bridges],
        }

    # --- out: this broker to the remote -----------------------------------------------------------

    def subscribe_out(self, broker: Broker) -> None:
        """Subscribe in-process to the out bridges' local filters, one subscription per distinct
        filter; its Subscription Identifier (from 1) names the bridges with that filter, so a
        message says which bridges it matched."""
        for index, topic_filter in enumerate(self._out_filters, 1):
            broker.subscribe_local(
                LocalSubscriber(self.local_id, topic_filter, self.bridge_out, 2, True, index, node_only=True)
            )

    def unsubscribe_out(self, broker: Broker) -> None:
        for topic_filter in self._out_filters:
            broker.unsubscribe_local(self.local_id, topic_filter)

    def bridge_out(self, message: Message, qos: int, sub_ids: list[int] | None) -> None:
        """The router's handler: queue ``message`` for the remote through the first out bridge
        (in configuration order) among those whose filters matched that takes its topic."""
        if not sub_ids:
            return
        groups = self._out_groups
        if len(sub_ids) == 1:
            candidates = groups[sub_ids[0] - 1]
        else:
            candidates = sorted(pair for sub_id in sub_ids for pair in groups[sub_id - 1])
        for _, bridge in candidates:
            remote = bridge.to_remote(message.topic)  # ("a/#" matches "a" too: not this bridge's)
            if remote is None:
                continue
            props = {k: v for k, v in message.properties.items() if k not in _PER_HOP}
            retain = message.retain and self.config.outgoing_retain
            item = Outgoing(remote, message.payload, min(message.qos, bridge.qos), retain, props)
            try:
                self.outbox.put(item)
            except OutboxFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("broker %s: the queue is full; %d bridged messages dropped", self.name, self.dropped)
            return

    async def publish(self, item: Outgoing, queue: bool, timeout: float) -> int | None:
        """Publish through this connection for the API: the remote's reason code once it has
        acknowledged, or None if the message was queued (``queue``: the remote is down, or slow)."""
        if not self.client.connected:
            if not queue:
                raise Unavailable(f"broker {self.name!r} is not connected{_why(self.client)}")
            self._queue(item)
            await self.outbox.stored()  # the 202 promises it is stored
            return None
        item.done = asyncio.get_running_loop().create_future()
        self._queue(item)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(item.done)
        except TimeoutError:
            if queue:
                return None
            raise Unavailable(
                f"broker {self.name!r} did not acknowledge within {timeout:g}s; the message stays queued"
            ) from None

    def _queue(self, item: Outgoing) -> None:
        try:
            self.outbox.put(item)
        except OutboxFull as exc:
            raise Unavailable(str(exc)) from None

    async def _pump(self) -> None:
        """Hand queued messages to the client in order, up to WINDOW at a time."""
        while True:
            item = await self.outbox.take()
            await self._window.acquire()
            if self._echoes is not None and not self.client.bridge:
                self._remember_echo(item)
            self._spawn(self._send(item))  # tasks start in the order they are made: the order holds

    async def _send(self, item: Outgoing) -> None:
        from ..client import ClientError, PublishError

        try:
            code = await self.client.publish(item.topic, item.payload, item.qos, item.retain, item.properties)
        except PublishError as exc:
            self.refused += 1
            log.warning("broker %s refused a message: %s", self.name, exc)
            self.outbox.done(item)
            _settle(item, exc)
        except ClientError as exc:  # the client is closed (we are stopping): keep it for the next start
            self.outbox.returned(item)
            _settle(item, exc)
        except asyncio.CancelledError:
            self.outbox.returned(item)
            raise
        except Exception as exc:  # a message the client will never take (e.g. a bad stored row)
            log.exception("broker %s: dropping a message the client refused", self.name)
            self.refused += 1
            self.outbox.done(item)
            _settle(item, exc)
        else:
            self.messages_out += 1
            self.outbox.done(item)
            if item.done is not None and not item.done.done():
                item.done.set_result(code)
        finally:
            self._window.release()

    def _remember_echo(self, item: Outgoing) -> None:
        assert self._echoes is not None
        if not any(bridge.to_local(item.topic) is not None for bridge in self.in_bridges):
            return
        key = (item.topic, item.payload)
        self._echoes[key] += 1
        self._echo_order.append(key)
        if len(self._echo_order) > ECHO_MEMORY:
            self._forget_echo(self._echo_order.popleft())

    def _forget_echo(self, key: tuple[str, bytes]) -> None:
        assert self._echoes is not None
        self._echoes[key] -= 1
        if self._echoes[key] <= 0:
            del self._echoes[key]

    # --- in: the remote to this broker ------------------------------------------------------------

    async def _bring_in(self) -> None:
        from ..client import ClientError, Subscription

        stream = self.client.messages()  # opened first: nothing that arrives after SUBACK is missed
        subscriptions = [Subscription(b.remote_filter, b.qos, True, True, 0) for b in self.in_bridges]
        self._spawn(self._subscribe(subscriptions))
        try:
            async for message in stream:
                await self._receive(message)
        except ClientError:
            pass  # the client closed

    async def _subscribe(self, subscriptions: list[Any]) -> None:
        from ..client import ClientError

        try:
            codes = await self.client.subscribe(subscriptions)
        except ClientError:
            return
        failed = [
            f"{sub.topic_filter} (0x{code:02X})"
            for sub, code in zip(subscriptions, codes, strict=False)
            if code >= 0x80
        ]
        if failed:
            self.subscribe_error = "the remote refused: " + ", ".join(failed)
            log.warning("broker %s: %s", self.name, self.subscribe_error)
        else:
            self.subscribed = True

    async def _receive(self, message: RemoteMessage) -> None:
        if self._echoes and (message.topic, message.payload) in self._echoes:
            self._forget_echo((message.topic, message.payload))
            return
        for bridge in self.in_bridges:
            local = bridge.to_local(message.topic)
            if local is not None:
                break
        else:
            return
        if not client_may_publish(local):  # another broker does not speak for this one's $SYS
            self.refused += 1
            log.info("broker %s: a message for %s was refused here: $SYS is this broker's", self.name, local)
            return
        props = {k: v for k, v in message.properties.items() if k not in _PER_HOP}
        try:
            await self.service.bring_in(self, local, message.payload, message.qos, message.retain, props)
        except (Reject, ValueError) as exc:
            self.refused += 1
            log.info("broker %s: a message for %s was refused here: %s", self.name, local, exc)
        else:
            self.messages_in += 1


class BrokerConnections:
    """The external broker connections of one broker (``Services.connections``); out bridges are
    in-process subscriptions of the router."""

    name = "brokers"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: dict[str, BrokerConnection] = {}
        self._stored: dict[str, list[OutboxRecord]] = {}  # loaded outboxes no connection has taken yet
        self._running = False

    async def start(self) -> None:
        """Load the stored outboxes and start every configured connection."""
        config = self.broker.config
        self._stored = {}
        for record in await self.broker.storage.outbox_load():
            self._stored.setdefault(record.connection, []).append(record)
        self._running = True
        for found in config.brokers:
            self.add(found, source="config")

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        connections, self.connections = list(self.connections.values()), {}
        for connection in connections:
            connection.unsubscribe_out(self.broker)
        await asyncio.gather(*(connection.stop() for connection in connections))

    def add(self, config: ExternalBrokerConfig, source: str = "api") -> BrokerConnection:
        """Start a connection; ``KeyError`` if the name is taken, ``ConfigError`` if its settings
        do not load (a cafile that is not a CA bundle)."""
        if not self._running:
            raise RuntimeError("the external broker connections are not running")
        if config.name in self.connections:
            raise KeyError(config.name)
        try:
            connection = BrokerConnection(config, self, source)
        except (ValueError, OSError) as exc:  # e.g. a cafile that does not load
            raise ConfigError(f"broker {config.name!r}: {exc}") from None
        self.connections[config.name] = connection
        connection.start()
        connection.subscribe_out(self.broker)
        log.info("broker %s: connecting to %s", config.name, _public_url(config.url))
        return connection

    async def remove(self, name: str) -> bool:
        """Stop and forget a connection, with what its queue held; False if there is none."""
        connection = self.connections.pop(name, None)
        if connection is None:
            return False
        connection.unsubscribe_out(self.broker)
        await connection.stop()
        connection.outbox.clear()
        return True

    def stored(self, name: str) -> list[OutboxRecord]:
        """What storage held at start-up for the connection ``name`` (once: then its outbox has it)."""
        return self._stored.pop(name, [])

    async def replace(self, config: ExternalBrokerConfig) -> BrokerConnection:
        """Restart the connection ``config.name`` with new settings (``PUT /api/v1/brokers/{name}``):
        ``KeyError`` if there is none, ``ConfigError`` (the old one left running) if the new
        settings do not load. What its queue holds (in storage: what the old connection had not
        had acknowledged) is what the new connection sends first."""
        old = self.connections.get(config.name)
        if old is None:
            raise KeyError(config.name)
        problem = check_connection(config)
        if problem is not None:
            raise ConfigError(problem)
        del self.connections[config.name]
        old.unsubscribe_out(self.broker)
        await old.stop()
        # Storage reads follow its writes in order: this sees every acknowledgement the old one had.
        held = [record for record in await self.broker.storage.outbox_load() if record.connection == config.name]
        self._stored[config.name] = held
        return self.add(config, source="api")

    def get(self, name: str) -> BrokerConnection | None:
        return self.connections.get(name)

    async def bring_in(
        self, connection: BrokerConnection, topic: str, payload: bytes, qos: int, retain: bool, props: dict[int, Any]
    ) -> None:
        """Publish a message that came in over ``connection``, as its origin: the connection's own
        out subscriptions (No Local) do not send it back."""
        await self.broker.publish(topic, payload, qos, retain, props, origin=connection.local_id)


def check_connection(config: ExternalBrokerConfig) -> str | None:
    """What would stop the connection ``config`` from starting (its cafile does not load), or None."""
    try:
        _make_client(config)
    except (ValueError, OSError) as exc:
        return f"broker {config.name!r}: {exc}"
    return None


def _make_client(config: ExternalBrokerConfig) -> Client:
    from ..client import Client

    settings: dict[str, Any] = {
        "client_id": config.client_id or f"{socket.gethostname()}.{config.name}",
        "version": config.version,
        # Keep the session at the remote (what it queues for us while we are away), unless asked not to.
        "clean_start": config.clean_start,
        "session_expiry": SESSION_EXPIRY if config.version == 5 and not config.clean_start else 0,
        "keepalive": config.keepalive,
        "reconnect": True,
        "backoff": (min(0.5, config.reconnect_max), config.reconnect_max),
        "max_queued": WINDOW,
        # Mosquitto's try_private: the remote then sends no echoes.
        "bridge": config.version < 5 and config.bridge_bit,
    }
    if config.username is not None:
        settings["username"] = config.username
    if config.password is not None:
        settings["password"] = config.password
    if config.cafile is not None or config.certfile is not None or config.tls_insecure:
        settings["tls"] = _tls_context(config)
    return Client.from_url(config.url, **settings)


def _tls_context(config: ExternalBrokerConfig) -> ssl.SSLContext:
    """The remote is checked against ``cafile`` (else the system's CAs), by name unless
    ``tls_insecure``; ``certfile``/``keyfile`` are this side's certificate."""
    import ssl

    cafile = None if config.cafile is None else str(config.cafile)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # ssl.SSLError too
        raise ValueError(f"cafile {config.cafile}: cannot load it: {exc.strerror or exc}") from None
    if config.certfile is not None:
        try:
            context.load_cert_chain(str(config.certfile), str(config.keyfile))
        except OSError as exc:
            raise ValueError(
                f"certfile {config.certfile} / keyfile {config.keyfile}: cannot load them: {exc.strerror or exc}"
            ) from None
    if config.tls_insecure:
        context.check_hostname = False
    return context


def _settle(item: Outgoing, exc: BaseException) -> None:
    if item.done is not None and not item.done.done():
        item.done.set_exception(exc)
        item.done.exception()  # retrieved: nobody may be waiting any more


def _why(client: Client) -> str:
    parts = []
    if client.last_error is not None:
        parts.append(f"last error: {client.last_error}")
    if client.next_attempt_at is not None:
        parts.append(f"next attempt at {_rfc3339(client.next_attempt_at)}")
    return f" ({'; '.join(parts)})" if parts else ""


def _public_url(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"
