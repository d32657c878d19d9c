"""One node of a wrenmq cluster on Redis: membership, routes, forwarding, retained, wills.

What lives in Redis (every key under ``wrenmq:<cluster>:``, so several clusters can share one Redis):

- ``nodes`` (hash): node name -> JSON about it (started, pid, listeners, API); ``alive:<node>``: a key
  refreshed every ``HEARTBEAT`` seconds with a TTL of ``HEARTBEAT_TTL``, holding its live counts.
- ``routes:<node>`` (set): the node's distinct filters (shared ones whole, ``$share/g/f``); changes
  are announced on the ``routes`` channel so every node keeps a replica (``routes.RouteTable``).
- ``in:<node>`` (stream, consumer group ``wrenmq``): messages forwarded to the node, one entry per
  message and node, read with XREADGROUP and acknowledged once routed (and, with strict durability,
  committed), so a node that restarts under the same name reads what it had not finished.
- ``retained`` (hash): topic -> the retained message, for nodes that start later.
- ``wills:<node>`` (hash): client id -> the will of each client connected there (and of each whose
  Will Delay Interval is running), published by a surviving node when the node dies.
- ``owner:<client id>``: the node holding the client's connection; a CONNECT elsewhere kicks it
  (``ctl:<node>`` channel): a client id is one connection cluster-wide [MQTT-3.1.4-3].

A node that stops heartbeating is dead after ``HEARTBEAT_TTL``: each node drops its routes from
its replica, and one (the one that takes ``reaping:<node>``) publishes its clients' wills and
deletes its keys. See README.md, "Cluster on Redis", for what this does and does not guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from ..aio import cancelling
from ..broker.message import Message
from ..config import ConfigError
from .handover import Handover
from .routes import NO_ROUTE, LocalFilters, RouteTable
from .sessions import SessionStore
from .url import connect, safe_url
from .wire import decode_message, encode_message, event, pack, unpack
from .writer import Writer

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.session import Session

__all__ = ["HEARTBEAT", "HEARTBEAT_TTL", "Cluster", "ClusterError"]

log = logging.getLogger("wrenmq.cluster")

HEARTBEAT = 1.0  # seconds between heartbeats
HEARTBEAT_TTL = 3.0  # a node silent this long is dead
START_TTL = 30.0  # the first claim of a node's name lasts this long, until heartbeats begin
GROUP = "wrenmq"  # the consumer group of every inbox stream
INBOX_MAXLEN = 1_000_000  # entries an inbox keeps at most (approximately) for a node that is down
MIN_REDIS = (6, 2)  # streams, consumer groups and XAUTOCLAIM
_READ_BATCH = 512


class ClusterError(ConfigError):
    """Redis cannot be used (unreachable, too old, the node name taken): start-up stops."""


def default_node_name(port: int | None) -> str:
    return f"{socket.gethostname()}:{port if port is not None else os.getpid()}"


class _Peer:
    """What this node knows of another."""

    __slots__ = ("alive", "info", "last_seen", "status")

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.status: dict[str, Any] = {}
        self.alive = True
        self.last_seen = time.time()


class Cluster:
    """This node's membership of the cluster at ``config.cluster_url``."""

    def __init__(self, broker: Broker, url: str, node: str, prefix: str = "wrenmq:default:") -> None:
        self.broker = broker
        self.url = url
        self.node = node
        self.prefix = prefix
        # (Any: redis-py types every reply as bytes | str; with decode_responses=False they are bytes)
        self.redis: Any = connect(url)
        self.routes = RouteTable()
        self.local = LocalFilters()
        self.peers: dict[str, _Peer] = {}
        self.started_at = time.time()
        self.redis_version = ""
        self.writer = Writer(self)  # everything this node writes to Redis, in order
        self.command = self.writer.command
        self._assigned: list[tuple[Message, str, str]] = []  # (message, node, group) decided in route
        self._group_turn: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False  # the writer ends once idle
        self._closing = False  # set first thing by stop: channel followers end
        self.connected = False  # to Redis, as last seen
        self.forwarded = 0  # messages sent to other nodes (one per node)
        self.received = 0  # messages other nodes forwarded here
        self.dropped = 0  # forwards given up (the queue past its bound while Redis was away)
        self.max_queue = 100_000
        # Called with a node's name once it is dead and its sessions adopted (services that keep
        # per-node state in Redis clean it up there), and with this node's own when it stops.
        self.reapers: list[Callable[[str], Awaitable[None]]] = []
        self.sessions = SessionStore(self)
        self.handover = Handover(self)

    # -- keys ------------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: check Redis, claim the node name, publish routes, load retained messages, start
        the heartbeat, the inbox reader and the sender. ``ClusterError`` if Redis cannot be used."""
        r = self.redis
        try:
            info = await r.info("server")
        except (RedisError, OSError) as exc:
            raise ClusterError(f"cluster_url: cannot reach Redis at {safe_url(self.url)}: {exc}") from exc
        version = str(info.get("redis_version", "0"))
        self.redis_version = version
        if tuple(int(x) for x in version.split(".")[:2]) < MIN_REDIS:
            raise ClusterError(f"cluster_url: Redis {version} is too old (streams need {MIN_REDIS[0]}.{MIN_REDIS[1]})")
        broker = self.broker
        persist = broker.persist
        # Sessions are kept in Redis from now on (any node may take one over); with strict
        # durability an ack waits for Redis to take what it depends on (see barrier).
        persist.sessions = self.sessions
        persist.enabled = True
        persist.strict = broker.config.durability == "strict"
        await self._claim_name()
        await self._carry_local_sessions()
        if await r.hexists(self.key("nodes"), self.node):
            await self._wait_reaped_elsewhere()
            await self._reap(self.node)  # this name's last run died: its wills are due, its sessions back
        await r.hset(self.key("nodes"), self.node, json.dumps(self._info()))
        # This node's filters: its sessions' subscriptions (local subscribers come later).
        for session in broker.sessions.values():
            for full_filter in session.subscriptions:
                self.local.add(full_filter)
        broker.router.watch = self._route_changed
        await self._publish_own_routes()
        await self._sync_retained()
        try:
            await r.xgroup_create(self.key("in", self.node), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.connected = True
        broker.cluster = self
        broker.persist.gate = self.writer
        pubsub = r.pubsub()
        await pubsub.subscribe(self.key("routes"), self.key("ctl", self.node))
        await self._resync_routes()
        # START_TTL again until the first heartbeat (at the loop's next free turn): what starts after
        # the cluster (the API's imports) can hold the loop for seconds on a busy machine, and this
        # node must not be reaped meanwhile.
        await r.set(self.key("alive", self.node), self._status_json(), px=int(START_TTL * 1000))
        self._tasks = [
            asyncio.create_task(self._listen(pubsub), name="cluster-listen"),
            asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
            asyncio.create_task(self._read_inbox(), name="cluster-inbox"),
            asyncio.create_task(self.writer.run(), name="cluster-send"),
        ]
        log.info("cluster: node %s joined at %s (Redis %s)", self.node, safe_url(self.url), version)

    async def stop(self) -> None:
        """Leave. The broker stops first (its clients are disconnected without their wills, as a
        restart is no client going away) and what that stored is flushed to Redis. A node that
        holds persistent sessions then only stops heartbeating: another node adopts its sessions
        and drains its inbox, as for a node that died (or it takes them back itself if it comes
        back first), so no message for them is lost while it is down. A node without any leaves
        the cluster outright."""
        broker = self.broker
        self._closing = True  # (what follows a channel for a service ends with it)
        for reaper in list(self.reapers):  # what services keep per node goes with it
            with contextlib.suppress(Exception):
                await reaper(self.node)
        await broker.stop()
        self.stopping = True
        if broker.router.watch == self._route_changed:
            broker.router.watch = None
        self.writer.wake.set()
        for task in self._tasks:
            if task.get_name() != "cluster-send":
                task.cancel()
        for task in self._tasks:
            if task.get_name() == "cluster-send":
                try:
                    await asyncio.wait_for(task, 5.0)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            else:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks = []
        with contextlib.suppress(RedisError, OSError):
            homed = await self.redis.scard(self.key("home", self.node))
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key("wills", self.node), self.key("alive", self.node))
                if not homed:
                    pipe.delete(self.key("routes", self.node), self.key("in", self.node))
                    pipe.hdel(self.key("nodes"), self.node)
                    pipe.publish(self.key("routes"), event("drop", self.node))
                await pipe.execute()
        if broker.cluster is self:
            broker.cluster = None
        if broker.persist.gate is self.writer:
            broker.persist.gate = None
        self.writer.release_all()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
        log.info("cluster: node %s left", self.node)

    async def _claim_name(self) -> None:
        """Take ``alive:<node>``; a live node of the same name is an error. A dead predecessor of
        this name (killed, not yet reaped) is reaped first, as any other node would."""
        r = self.redis
        alive_key = self.key("alive", self.node)
        deadline = time.monotonic() + HEARTBEAT_TTL * 2 + 1
        # (a longer TTL while starting: adopting sessions may take a while before heartbeats begin)
        while not await r.set(alive_key, self._status_json(), nx=True, px=int(START_TTL * 1000)):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"node_name: {self.node!r} is in use by a running node of this cluster; give each node its own"
                )
            await asyncio.sleep(0.25)

    def _info(self) -> dict[str, Any]:
        return {
            "name": self.node,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started_at,
            "listeners": [listener.url for listener in self.broker.listeners],
        }

    async def _rejoin(self) -> None:
        """After Redis was away: this node's entry, its inbox's group, and, if Redis came back
        without them (restarted with no persistence), everything this node keeps there again: its
        sessions with their messages, its client ids, its clients' wills, the retained messages."""
        r = self.redis
        broker = self.broker
        await r.hset(self.key("nodes"), self.node, json.dumps(self._info()))
        with contextlib.suppress(ResponseError):
            await r.xgroup_create(self.key("in", self.node), GROUP, id="0", mkstream=True)
        if not await r.exists(self.key("retained", "seeded")):
            await self._sync_retained()
        if await r.exists(self.key("home", self.node)):
            return  # (Redis kept what it had)
        restored = 0
        for session in list(broker.sessions.values()):
            client_id = session.client_id
            self.command("SET", self.key("owner", client_id), self.node)
            if session.persistent:
                self._store_whole(session)
                restored += 1
        for conn in list(broker.connections):
            if conn.will is not None and conn.client_id:
                self.will_pending(conn.client_id, conn.will, conn.will_delay)
        if restored:
            log.warning("cluster: Redis came back without this node's state: %d session(s) stored again", restored)

    def _store_whole(self, session: Session) -> None:
        """Write ``session`` to Redis whole: its record, queued and in-flight messages, inbound
        QoS 2 ids (a session Redis does not have: carried over, or Redis came back empty)."""
        persist = self.broker.persist
        persist.session_put(session, connected=session.connection is not None)
        for delivery in [*session.inflight_out.values(), *session.queue]:
            persist.message_add(session, delivery)
        for packet_id in session.inbound_qos2:
            persist.inbound_add(session, packet_id)

    async def _wait_reaped_elsewhere(self) -> None:
        """Another node may be reaping this name's last run: let it finish first."""
        r = self.redis
        deadline = time.monotonic() + 40
        while await r.exists(self.key("reaping", self.node)) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)

    async def _carry_local_sessions(self) -> None:
        """Sessions this node's own store held (from before it joined a cluster) move to Redis,
        unless the cluster has them already; the local copies are deleted either way."""
        broker = self.broker
        r = self.redis
        local = list(broker.sessions.values())
        carried = 0
        for session in local:
            client_id = session.client_id
            if (
                await r.set(self.key("owner", client_id), self.node, nx=True)
                or (await r.get(self.key("owner", client_id))) == self.node.encode()
            ):
                if not await r.exists(self.key("s", client_id)):
                    self._store_whole(session)
                    carried += 1
                self.handover.owned.add(client_id)
            else:
                broker.table.release(session)  # the cluster's copy is the one
            broker.storage.session_delete(client_id)
        if local:
            log.info("cluster: %d session(s) of this node's own store carried into the cluster", carried)

    # -- routes ----------------------------------------------------------------------------

    def _route_changed(self, full_filter: str, added: bool) -> None:
        """The router's watch: a subscription was added or removed on this node."""
        if (self.local.add(full_filter) if added else self.local.remove(full_filter)) and not full_filter.startswith(
            "$SYS"
        ):
            self.writer.announce(full_filter, added)

    async def _publish_own_routes(self) -> None:
        own = [f for f in self.local.counts if not f.startswith("$SYS")]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key("routes", self.node))
            if own:
                pipe.sadd(self.key("routes", self.node), *own)
            pipe.publish(self.key("routes"), event("sync", self.node))
            await pipe.execute()

    async def _resync_routes(self) -> None:
        """Read every other node's routes afresh (at start and after the connection came back)."""
        r = self.redis
        nodes = {name.decode(): json.loads(raw) for name, raw in (await r.hgetall(self.key("nodes"))).items()}
        for name in list(self.routes.nodes()):
            if name not in nodes:
                self.routes.drop(name)
        for name, info in nodes.items():
            if name == self.node:
                continue
            peer = self.peers.get(name)
            if peer is None:
                self.peers[name] = _Peer(info)
            else:
                peer.info = info
            await self._read_routes_of(name)
        for name in list(self.peers):
            if name not in nodes:
                del self.peers[name]

    async def _read_routes_of(self, name: str) -> None:
        members = await self.redis.smembers(self.key("routes", name))
        self.routes.replace(name, {m.decode() for m in members})

    # -- the hot path's calls (from Broker.route, compiled) ---------------------------------

    def serves_group(self, key: str, message: Message) -> bool:
        """Whether this node's members of shared group ``key`` take ``message``: for a message
        forwarded here, if the sender chose this node; for one published here, the group's turn
        among the nodes with members (round robin), recording the choice for ``forward``."""
        hop = message.hop
        if hop is not None:
            return key in hop.groups
        others = self.routes.match(message.topic).groups.get(key)
        if not others:
            return True
        candidates = sorted({self.node, *others})
        turn = self._group_turn.get(key, 0)
        self._group_turn[key] = turn + 1
        chosen = candidates[turn % len(candidates)]
        if chosen == self.node:
            return True
        self._assigned.append((message, chosen, key))
        return False

    def forward(self, message: Message) -> int:
        """Queue ``message`` once for each other node with matching subscribers (and, retained,
        for every node); returns how many nodes it goes to."""
        topic = message.topic
        match = self.routes.cache.get(topic)
        if match is None:
            match = self.routes.match(topic)
        if match is NO_ROUTE and not message.retain and not self._assigned:
            return 0  # (the common case: a topic no other node wants, known from one dict lookup)
        if topic.startswith("$SYS"):
            return 0
        targets: dict[str, list[str]] = {node: [] for node in match.nodes}
        assigned = self._assigned
        if assigned:
            for entry in assigned:
                if entry[0] is message:
                    targets.setdefault(entry[1], []).append(entry[2])
            self._assigned = [entry for entry in assigned if entry[0] is not message]
        if match.groups:
            here = {group.key for group in self.broker.router.match(topic).groups}  # (a cached match)
        for key, nodes in match.groups.items():
            if key not in here:
                # A group with no member here: serves_group never saw it; take its turn now.
                candidates = sorted(nodes)
                turn = self._group_turn.get(key, 0)
                self._group_turn[key] = turn + 1
                targets.setdefault(candidates[turn % len(candidates)], []).append(key)
        retain_only: list[str] = []
        if message.retain:
            self._retained_changed(message)
            retain_only = [name for name, peer in self.peers.items() if peer.alive and name not in targets]
        if not targets and not retain_only:
            return 0
        broker = self.broker
        message_id = broker.message_id(message)
        now = broker.loop.time()
        for node, groups in targets.items():
            self.send_to(node, encode_message(message, self.node, message_id, groups, now))
        for node in retain_only:
            self.send_to(node, encode_message(message, self.node, message_id, [], now, retain_only=True))
        if message.qos and broker.persist.strict:
            broker.persist.writes += 1  # the publisher's ack waits for these (see barrier)
        self.forwarded += len(targets)
        return len(targets)

    def retain_cleared(self, topic: str) -> None:
        """``Broker.delete_retained`` cleared ``topic`` here without routing: clear it everywhere."""
        empty = Message(topic, b"", 0, True)
        self._retained_changed(empty)
        now = self.broker.loop.time()
        for name, peer in self.peers.items():
            if peer.alive:
                self.send_to(name, encode_message(empty, self.node, "", [], now, retain_only=True))

    def send_to(self, node: str, fields: dict[bytes, bytes]) -> None:
        """Queue a message entry for ``node``'s inbox (dropped past ``max_queue``, Redis away)."""
        if len(self.writer.out) >= self.max_queue:
            self.dropped += 1
            log.warning("cluster: forward queue full (Redis unreachable?): a message for %s is dropped", node)
            return
        flat: list[Any] = []
        for name, value in fields.items():
            flat += (name, value)
        self.command("XADD", self.key("in", node), "MAXLEN", "~", INBOX_MAXLEN, "*", *flat)

    def _retained_changed(self, message: Message) -> None:
        """Keep ``retained``'s record of the topic (for nodes that start later) as it is here."""
        if message.payload:
            record = pack(encode_message(message, self.node, "", [], self.broker.loop.time()))
            self.command("HSET", self.key("retained"), message.topic, record)
        else:
            self.command("HDEL", self.key("retained"), message.topic)

    # -- wills and client ids ----------------------------------------------------------------

    def claim(self, client_id: str, clean: bool) -> asyncio.Future[Any] | None:
        """Before a CONNECT is admitted (see ``handover.Handover.claim``)."""
        return self.handover.claim(client_id, clean)

    def client_connected(self, client_id: str, will: Message | None, delay: int) -> None:
        """A client was admitted here: its will is kept in Redis for the surviving nodes to
        publish should this node die."""
        self.will_pending(client_id, will, delay)

    def will_pending(self, client_id: str, will: Message | None, delay: int) -> None:
        """Keep (or with None, forget) the will another node publishes if this one dies."""
        if will is None:
            self.writer.will(client_id, None)
        else:
            record = encode_message(will, self.node, "", [], self.broker.loop.time())
            record[b"d"] = b"%d" % delay
            self.writer.will(client_id, pack(record))

    def session_ended(self, client_id: str) -> None:
        """The client's session ended here: forget its will, and its client id if still ours."""
        self.writer.will(client_id, None)
        self.handover.owned.discard(client_id)
        self.command("EVAL", _RELEASE_OWNER, 1, self.key("owner", client_id), self.node)

    # -- channels for services -------------------------------------------------------------------

    async def follow(
        self,
        channel: str,
        handle: Callable[[bytes], None],
        subscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Call ``handle`` with each message on ``channel``, for as long as the task runs; after a
        lost connection subscribe again, then ``subscribed`` (read what was missed meanwhile). A
        message ``handle`` cannot read (ValueError, KeyError) is logged and skipped. Ends when
        the cluster stops (redis-py may turn a cancellation into a connection error)."""
        while not self._closing:
            pubsub: Any = self.redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                if subscribed is not None:
                    await subscribed()
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    try:
                        handle(message["data"])
                    except (ValueError, KeyError):
                        log.warning("cluster: an unreadable message on %s was skipped", channel)
            except (RedisError, OSError):
                if cancelling():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    # -- tasks -------------------------------------------------------------------------------

    async def _listen(self, pubsub: Any) -> None:
        """Route announcements and handoffs; after a lost connection, resubscribe, join again
        (Redis may have come back empty) and resync the route replica."""
        lost = False
        while True:
            if lost:
                try:
                    await pubsub.reset()
                    await pubsub.subscribe(self.key("routes"), self.key("ctl", self.node))
                    await self._rejoin()
                    await self._publish_own_routes()
                    await self._resync_routes()
                    lost = False
                    log.info("cluster: back in Redis; route replica resynchronised")
                except (RedisError, OSError, RuntimeError):
                    if cancelling():
                        raise asyncio.CancelledError from None
                    await asyncio.sleep(0.5)
                    continue
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError, RuntimeError):
                if cancelling():
                    raise asyncio.CancelledError from None
                lost = True
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            parts = message["data"].decode().split("\x00")
            kind = parts[0]
            if kind == "handoff" and len(parts) == 4:
                self.handover.hand_over(parts[1], parts[2], parts[3] == "1")
            elif kind == "released" and len(parts) == 2:
                self.handover.released(parts[1])
            elif len(parts) < 2 or parts[1] == self.node:
                continue
            elif kind == "+" and len(parts) == 3:
                self.routes.add(parts[1], parts[2])
            elif kind == "-" and len(parts) == 3:
                self.routes.remove(parts[1], parts[2])
            elif kind == "sync":
                self.peers.setdefault(parts[1], _Peer({"name": parts[1]}))
                with contextlib.suppress(RedisError, OSError):
                    await self._read_routes_of(parts[1])
            elif kind == "drop":
                self.routes.drop(parts[1])
                self.peers.pop(parts[1], None)

    async def _heartbeat(self) -> None:
        """Refresh ``alive:<node>``; find nodes that stopped, drop their routes and reap them. The
        first beat comes at the loop's first free turn, ending start-up's longer TTL at once."""
        r = self.redis
        first = True
        while True:
            if not first:
                await asyncio.sleep(HEARTBEAT)
            first = False
            try:
                await r.set(self.key("alive", self.node), self._status_json(), px=int(HEARTBEAT_TTL * 1000))
                names = [name.decode() for name in await r.hkeys(self.key("nodes"))]
                others = [name for name in names if name != self.node]
                statuses = await r.mget([self.key("alive", name) for name in others]) if others else []
            except (RedisError, OSError):
                if cancelling():
                    raise asyncio.CancelledError from None
                continue
            for name, status in zip(others, statuses, strict=True):
                peer = self.peers.get(name)
                if peer is None:
                    peer = self.peers[name] = _Peer({"name": name})
                    with contextlib.suppress(RedisError, OSError):
                        await self._read_routes_of(name)
                if status is not None:
                    peer.status = json.loads(status)
                    peer.last_seen = time.time()
                    peer.alive = True
                    continue
                if peer.alive:
                    log.warning("cluster: node %s stopped heartbeating", name)
                peer.alive = False
                # Its routes stay until it is reaped: what is forwarded to it meanwhile waits in its
                # inbox for the node that adopts its sessions.
                with contextlib.suppress(RedisError, OSError):
                    await self._reap(name)

    async def _reap(self, name: str) -> None:
        """A node died: publish its clients' wills, adopt its persistent sessions, drop its routes
        and drain its inbox into the adopted sessions; once cluster-wide (``reaping:<node>``)."""
        r = self.redis
        if not await r.set(self.key("reaping", name), self.node, nx=True, px=30_000):
            return
        wills = await r.hgetall(self.key("wills", name))
        now = self.broker.loop.time()
        for raw in wills.values():
            fields = unpack(raw)
            delay = int(fields.pop(b"d", b"0"))
            will, _ = decode_message(fields, now)
            will.hop = None  # published here, as this node's own
            will.stored_id = None
            if delay:
                self.broker.loop.call_later(delay, self._publish_will, will)
            else:
                self._publish_will(will)
        adopted = await self.handover.adopt(name)
        for reaper in list(self.reapers):
            try:
                await reaper(name)
            except Exception:
                log.exception("cluster: cleaning up after node %s failed", name)
        if name == self.node:  # this node's own last run: its inbox is read as usual
            await r.delete(self.key("wills", name), self.key("reaping", name))
            log.warning(
                "cluster: this node's last run died: %d will(s) published, %d session(s) back", len(wills), len(adopted)
            )
            return
        self.writer.wake.set()  # the adopted sessions' routes go out before the others drop the dead node's
        while not self.writer.idle:
            await asyncio.sleep(0.01)
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(self.key("wills", name), self.key("routes", name))
            pipe.hdel(self.key("nodes"), name)
            pipe.publish(self.key("routes"), event("drop", name))
            await pipe.execute()
        self.routes.drop(name)
        self.peers.pop(name, None)
        log.warning(
            "cluster: node %s is dead: %d will(s) of its clients published, %d session(s) adopted",
            name,
            len(wills),
            len(adopted),
        )
        drain = asyncio.create_task(self.handover.drain(name, adopted), name="cluster-drain")
        self._tasks.append(drain)  # (not awaited here: the heartbeat must go on)

    def _publish_will(self, will: Message) -> None:
        if self.broker.running:
            self.broker.wills.publish(will)

    async def _read_inbox(self) -> None:
        """Route what other nodes forward here. Each batch's XACK is queued on the writer after
        the session records its routing queued, so they land in one MULTI/EXEC: an entry is
        acknowledged exactly when what it did is stored. Entries left unacknowledged by this
        node's last run are read first."""
        r = self.redis
        stream = self.key("in", self.node)
        after: str | None = "0"  # first our own pending entries (after this id), then new ones
        while True:
            try:
                found = await r.xreadgroup(
                    GROUP,
                    self.node,
                    {stream: after if after is not None else ">"},
                    count=_READ_BATCH,
                    block=None if after is not None else 1000,
                )
            except (RedisError, OSError):
                if cancelling():
                    raise asyncio.CancelledError from None
                await asyncio.sleep(0.5)
                with contextlib.suppress(RedisError, OSError):
                    await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
                continue
            entries = found[0][1] if found else []
            if not entries:
                after = None
                continue
            if after is not None:
                last = entries[-1][0]
                after = last.decode() if isinstance(last, bytes) else str(last)
            self._route_entries(stream, entries)

    def _route_entries(self, stream: str, entries: list[Any]) -> None:
        broker = self.broker
        now = broker.loop.time()
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue  # (an entry trimmed away while pending)
            try:
                message, retain_only = decode_message(fields, now)
            except (KeyError, ValueError):
                log.warning("cluster: a malformed entry %s in %s was skipped", entry_id, stream)
                continue
            self.received += 1
            target = fields.get(b"c")
            if target is not None:
                self.handover.targeted(message, target.decode())
            elif retain_only:
                broker._retain(message)
            else:
                broker.route(message)
        self.command("XACK", stream, GROUP, *ids)

    # -- status ------------------------------------------------------------------------------

    def _status_json(self) -> str:
        broker = self.broker
        stats = broker.stats
        return json.dumps(
            {
                "connections": len(broker.connections),
                "sessions": len(broker.sessions),
                "subscriptions": broker.router.count,
                "messages_received": sum(stats.messages_received_qos),
                "messages_sent": sum(stats.messages_sent_qos),
                "forwarded": self.forwarded,
                "received_from_nodes": self.received,
                "time": time.time(),
            }
        )

    def status(self) -> dict[str, Any]:
        """This node and every node it knows, for ``GET /api/v1/cluster``."""
        me = json.loads(self._status_json())
        nodes = [{"name": self.node, "self": True, "state": "alive", "last_heartbeat": me["time"], **me}]
        for name, peer in sorted(self.peers.items()):
            entry: dict[str, Any] = {
                "name": name,
                "self": False,
                "state": "alive" if peer.alive else "dead",
                "last_heartbeat": peer.last_seen,
            }
            entry.update({k: v for k, v in peer.status.items() if k != "time"})
            nodes.append(entry)
        totals = {
            key: sum(int(n.get(key) or 0) for n in nodes if n["state"] == "alive")
            for key in ("connections", "sessions", "subscriptions", "messages_received", "messages_sent")
        }
        return {
            "node": self.node,
            "totals": totals,
            "redis": safe_url(self.url),
            "redis_version": self.redis_version,
            "connected": self.connected,
            "nodes": nodes,
            "routes": len(self.routes),
            "forward_queue": len(self.writer.out),
            "dropped": self.dropped,
        }

    async def _sync_retained(self) -> None:
        """Load the cluster's retained messages; the first node seeds them from its own store."""
        r = self.redis
        broker = self.broker
        seeded = self.key("retained", "seeded")
        if await r.set(seeded, self.node, nx=True):
            records = {}
            for message in broker.retained:
                if not message.topic.startswith("$SYS"):
                    records[message.topic] = pack(encode_message(message, self.node, "", [], broker.loop.time()))
            if records:
                await r.hset(self.key("retained"), mapping=records)  # type: ignore[arg-type]
            return
        stored = await r.hgetall(self.key("retained"))
        now = broker.loop.time()
        keep = set()
        for topic, raw in stored.items():
            message, _ = decode_message(unpack(raw), now)
            message.hop = None
            message.stored_id = None
            broker._retain(message)
            keep.add(topic.decode())
        for message in list(broker.retained):
            if message.topic not in keep and not message.topic.startswith("$SYS"):
                broker._retain(Message(message.topic, b"", 0, True))


# Delete a client id's owner key only if this node still holds it (another may have taken it since).
_RELEASE_OWNER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
