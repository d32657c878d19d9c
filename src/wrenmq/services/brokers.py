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

In a cluster (``BrokerConnections(broker, cluster)``) each connection is run by one node at a time:
the one holding its lease in Redis (``services.lease``; the others keep it in ``standby``), taken
over by another node within seconds when its holder dies. The holder's out bridges subscribe
cluster-wide (not ``node_only``), so a message published on any node is forwarded to the holder and
goes out once; what it brings in is published there and forwarded by the cluster like any message.
The connection's default client id is then the cluster's (``wrenmq.<cluster.name>.<name>``), so
the node that takes over resumes the session the remote kept. Its outbox stays in the storage of
the node that queued it: what a dead holder had not sent goes out when that node runs it again.
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
from ..mqtt.codec import publish_size
from ..mqtt.properties import PropertyId, encode_properties
from ..mqtt.topics import client_may_publish
from .outbox import Outbox, OutboxFull, Outgoing
from .remote_client import WINDOW, check_connection, local_address, make_client, notification_topic

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.message import Message
    from ..client import Client
    from ..client import Message as RemoteMessage
    from ..cluster import Cluster
    from ..storage import OutboxRecord
    from .lease import Lease

__all__ = ["BrokerConnection", "BrokerConnections", "Outgoing", "Unavailable", "check_connection"]

log = logging.getLogger("wrenmq.brokers")

PRIMARY_RETRY = 5.0  # seconds between checks that the first address is back (Mosquitto's too)
ECHO_MEMORY = 10_000  # 3.1.1: how many sent (topic, payload) pairs are remembered to spot echoes
_PER_HOP = (PropertyId.TOPIC_ALIAS, PropertyId.SUBSCRIPTION_IDENTIFIER)

State = Literal["connecting", "connected", "reconnecting", "stopped", "standby"]


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
        self.client = make_client(config, service.client_prefix)
        self.running = False  # started (in a cluster: while this node holds the lease)
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
        # Mosquitto's bridge notifications: the state, published here in order by one task.
        self.notification_topic = notification_topic(config, self.client.client_id)
        self._states: asyncio.Queue[bool] | None = None
        if self.notification_topic is not None:
            self._states = asyncio.Queue()
        in_filters = {bridge.remote_filter for bridge in self.in_bridges}
        self._stale_filters: list[str] = []
        if config.unsubscribe_out:
            found = {bridge.remote_filter for bridge in self.out_bridges} - in_filters
            self._stale_filters = sorted(found)
        if self._states is not None or self._stale_filters:
            self.client.on_connection = self._on_connection

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        if self._states is not None:
            self._states.put_nowait(False)  # Mosquitto's first notification: not connected yet
            self._spawn(self._notify(self._states))
        self.client.start()
        self._spawn(self._pump())
        if self.config.addresses and not self.config.round_robin:
            self._spawn(self._back_to_first())
        if self.in_bridges:
            self._spawn(self._bring_in())

    async def stop(self) -> None:
        # Disconnecting fails what the client holds; those messages stay stored (Outbox.returned).
        was_connected = self.client.connected
        await self.client.disconnect()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.notification_topic is not None and was_connected:
            await self._notify_local(False)  # (the remote keeps its "1": a clean DISCONNECT sends no will)

    async def _back_to_first(self) -> None:
        """As Mosquitto without round_robin: while connected to another address, check every few
        seconds whether the first one takes a TCP connection, and if so move back to it."""
        from ..client.url import parse_url

        url = parse_url(self.config.url)
        while True:
            await asyncio.sleep(PRIMARY_RETRY)
            client = self.client
            if not client.connected or client.on_first_address:
                continue
            try:
                async with asyncio.timeout(PRIMARY_RETRY):
                    _, writer = await asyncio.open_connection(url.host, url.port, local_addr=local_address(self.config))
            except (OSError, TimeoutError):
                continue
            writer.close()
            log.info("broker %s: %s:%d is back; moving to it", self.name, url.host, url.port)
            client.drop_connection()

    # --- state notifications (Mosquitto's `notifications`) ----------------------------------------

    async def _notify(self, states: asyncio.Queue[bool]) -> None:
        """Publish each change of state, retained: here (in order), and on the remote once connected
        ("1"; its "0" is the will the remote publishes when the connection drops)."""
        config = self.config
        while True:
            up = await states.get()
            if up and not config.notifications_local_only:
                self._spawn(self._notify_remote())
            await self._notify_local(up)

    def _on_connection(self, up: bool) -> None:
        """The client's connection came up (True) or went (False)."""
        if self._states is not None:
            self._states.put_nowait(up)
        if up and self._stale_filters:
            self._spawn(self._unsubscribe_stale())

    async def _unsubscribe_stale(self) -> None:
        """Mosquitto's bridge_attempt_unsubscribe: a session kept at the remote may still hold a
        subscription from when an out bridge was in or both; drop it, so the remote stops sending."""
        from ..client import ClientError

        try:
            await self.client.unsubscribe(self._stale_filters)
        except ClientError as exc:
            log.info("broker %s: UNSUBSCRIBE of the out bridges' filters failed: %s", self.name, exc)

    async def _notify_local(self, up: bool) -> None:
        topic = self.notification_topic
        assert topic is not None
        try:
            await self.service.broker.publish(topic, b"1" if up else b"0", 1, True, origin=self.local_id)
        except (Reject, ValueError) as exc:
            log.warning("broker %s: the state notification was refused here: %s", self.name, exc)

    async def _notify_remote(self) -> None:
        from ..client import ClientError

        assert self.notification_topic is not None
        try:
            await self.client.publish(self.notification_topic, b"1", 1, retain=True)
        except ClientError as exc:  # refused (an ACL there), or the connection went: the will says 0
            log.info("broker %s: the state notification was not published on the remote: %s", self.name, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"wrenmq broker {self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- status -----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        client = self.client
        if not self.running and self.service.cluster is not None:
            return "standby"  # another node runs it (or none yet)
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
            "node": self.service.runner(self.name),
        }

    # --- out: this broker to the remote -----------------------------------------------------------

    def subscribe_out(self, broker: Broker, node_only: bool = True) -> None:
        """Subscribe in-process to the out bridges' local filters, one subscription per distinct
        filter; its Subscription Identifier (from 1) names the bridges with that filter, so a
        message says which bridges it matched. ``node_only``: messages published on this node only
        (a single node); else on any node of the cluster (this node runs the connection for all)."""
        for index, topic_filter in enumerate(self._out_filters, 1):
            broker.subscribe_local(
                LocalSubscriber(self.local_id, topic_filter, self.bridge_out, 2, True, index, node_only=node_only)
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
            if self.config.max_packet_size and self._too_large(item):
                return
            try:
                self.outbox.put(item)
            except OutboxFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("broker %s: the queue is full; %d bridged messages dropped", self.name, self.dropped)
            return

    def _too_large(self, item: Outgoing) -> bool:
        """Over ``max_packet_size`` (Mosquitto's bridge_max_packet_size): dropped, and counted."""
        rest = len(item.payload) + (len(encode_properties(item.properties)) if self.config.version == 5 else 0)
        size = publish_size(len(item.topic.encode()), item.qos, rest)
        if size <= self.config.max_packet_size:
            return False
        self.dropped += 1
        log.info("broker %s: a %d-byte PUBLISH on %s is over max_packet_size; dropped", self.name, size, item.topic)
        return True

    async def publish(self, item: Outgoing, queue: bool, timeout: float) -> int | None:
        """Publish through this connection for the API: the remote's reason code once it has
        acknowledged, or None if the message was queued (``queue``: the remote is down, or slow)."""
        if not self.running and self.service.cluster is not None:
            runner = self.service.runner(self.name)
            where = f"node {runner!r}" if runner else "no node yet"
            raise Unavailable(f"broker {self.name!r} is run by {where} of the cluster; publish there")
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

    def __init__(self, broker: Broker, cluster: Cluster | None = None) -> None:
        self.broker = broker
        self.cluster = cluster  # with cluster_url: each connection runs where its lease is held
        # A cluster's connections are the cluster's: one client id, whichever node runs them.
        self.client_prefix = f"wrenmq.{broker.config.cluster.name}" if cluster is not None else socket.gethostname()
        self.connections: dict[str, BrokerConnection] = {}
        self._leases: dict[str, Lease] = {}
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
        leases, self._leases = list(self._leases.values()), {}
        connections, self.connections = list(self.connections.values()), {}
        for connection in connections:
            if connection.running:
                connection.unsubscribe_out(self.broker)
        await asyncio.gather(*(connection.stop() for connection in connections))
        await asyncio.gather(*(lease.stop() for lease in leases))  # after: no second runner meanwhile

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
        cluster = self.cluster
        if cluster is None:
            self._run(connection)
        elif config.name not in self._leases:
            from .lease import Lease  # (imports redis: only in a cluster)

            name = config.name
            lease = Lease(
                cluster.redis,
                cluster.key("broker", name),
                cluster.node,
                lambda: self._acquired(name),
                lambda: self._lost(name),
            )
            self._leases[name] = lease
            lease.start()
        elif self._leases[config.name].held:  # replaced while this node runs it
            self._run(connection)
        return connection

    def _run(self, connection: BrokerConnection) -> None:
        connection.start()
        connection.subscribe_out(self.broker, node_only=self.cluster is None)
        log.info("broker %s: connecting to %s", connection.name, _public_url(connection.config.url))

    def runner(self, name: str) -> str | None:
        """The cluster node that runs connection ``name`` as last seen (None on a single node)."""
        lease = self._leases.get(name)
        return lease.seen if lease is not None else None

    async def _acquired(self, name: str) -> None:
        """This node took the lease of ``name``: run it (with what storage holds for it)."""
        connection = self.connections.get(name)
        if connection is None or connection.running:
            return
        fresh = await self._fresh(connection)
        log.info("broker %s: this node runs it now (lease taken)", name)
        self._run(fresh)

    async def _lost(self, name: str) -> None:
        """This node no longer holds the lease of ``name``: stop running it, keep it in standby."""
        connection = self.connections.get(name)
        if connection is None or not connection.running:
            return
        log.warning("broker %s: the lease is lost: another node may run it now", name)
        connection.unsubscribe_out(self.broker)
        await connection.stop()
        await self._fresh(connection)

    async def _fresh(self, connection: BrokerConnection) -> BrokerConnection:
        """A new, unstarted connection in place of ``connection`` (a client runs once), with its
        outbox as storage holds it now."""
        name = connection.name
        held = [record for record in await self.broker.storage.outbox_load() if record.connection == name]
        self._stored[name] = held
        fresh = BrokerConnection(connection.config, self, connection.source)
        if self.connections.get(name) is connection:
            self.connections[name] = fresh
        return fresh

    async def remove(self, name: str) -> bool:
        """Stop and forget a connection, with what its queue held; False if there is none."""
        connection = self.connections.pop(name, None)
        if connection is None:
            return False
        if connection.running:
            connection.unsubscribe_out(self.broker)
        await connection.stop()
        lease = self._leases.pop(name, None)
        if lease is not None:
            await lease.stop()
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
        if old.running:
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
