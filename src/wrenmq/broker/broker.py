"""The broker: lifecycle, the in-process API and routing.

Its collaborators, each in its own module: CONNECT policy and the login throttle
(``admission.Admission``), the session table (``sessions.SessionTable``: detach, expiry, end),
wills (``wills.WillScheduler``), SUBSCRIBE policy (``subscriptions``), restore at start-up
(``restore``).

``Broker.route`` is the hot path: one cached trie match, then one ``Session.deliver`` per
subscriber, which writes shared pre-encoded bytes to the subscriber's connection.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .. import __version__, auth, hot_path
from ..config import Config, ConfigError
from ..hooks import READ, AuthResult, DropReason, Reject
from ..mqtt import packets as p
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..storage import Storage, open_storage
from ..storage.private import make_private_dir, warn_if_open
from ..transports import Listener
from .admission import Admission
from .connection import Connection
from .hookset import HookSet
from .journal import Journal
from .limits import Limits
from .message import Message
from .persist import Persistence
from .restore import restore
from .retain import RetainStore
from .router import LocalSubscriber, Match, Router, Subscriber
from .session import Session
from .sessions import SessionTable
from .stats import Stats
from .subscriptions import SubscriptionPolicy
from .sys_topics import SysTopics
from .wills import WillScheduler

log = logging.getLogger("wrenmq.broker")

# How often connect timeouts and keep alives are checked: they are enforced up to this much late.
SWEEP_INTERVAL = 0.25

_P = PropertyId


def tune_gc() -> None:
    """Make the garbage collector fit a message broker's allocation pattern.

    Every message allocates a few short-lived objects that never form cycles, so CPython's default
    gen-0 threshold (700) runs the collector thousands of times a second, and each full collection
    walks every live session and retained message. The profile of the fan-in benchmark put 24-41%
    of broker CPU in ``gc_collect_main``. After start-up, move what was loaded into the permanent
    generation (``gc.freeze``) and collect young objects every 100k allocations instead.
    ``wrenmq serve`` calls this; an application embedding the broker may choose to.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


class Broker:
    """An MQTT broker that runs inside an asyncio event loop.

    ``async with Broker(config) as broker:`` starts it and stops it; ``broker.publish()`` injects
    a message in-process.
    """

    # Set by start(): the loop it runs on, and its storage.
    loop: asyncio.AbstractEventLoop
    storage: Storage
    persist: Persistence

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        if config is None:
            config = Config(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        self.limits = Limits(config.limits)
        self.router = Router()
        # Recent routed messages for realtime clients that resume: set by the realtime service.
        self.journal: Journal | None = None
        self.retained = RetainStore()
        # Every routed message is numbered (Message.seq); with the boot id the number is unique
        # across restarts too: Broker.message_id. Realtime clients drop repeats by it.
        self.boot_id = os.urandom(4).hex()  # (as secrets.token_hex: os.urandom)
        self.message_seq = 0
        self.wills = WillScheduler(self)
        self.table = SessionTable(self, self.wills)
        self.sessions: dict[str, Session] = self.table.sessions  # the table's, by client id
        self.subscriptions = SubscriptionPolicy(self)
        self.admission = Admission(self)
        # The open connections, as the keys of a dict (a set's table costs ~52 bytes per entry at
        # 10,000, a dict's ~21: BENCHMARKS.md); iterated in the order they came.
        self.connections: dict[Connection, None] = {}
        self.lingering: set[Any] = set()  # sockets closed with a reason, still being closed (transports.linger)
        self.stats = Stats()
        self.started_at = 0.0
        self.hooks = HookSet()
        self.listeners: list[Listener] = []
        self._running = False
        self._bound = False  # listeners bound (bind), not yet serving
        self._checked: list[str] | None = None  # check()'s answer
        self._sys: SysTopics | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        # The cluster this node belongs to (wrenmq.cluster.Cluster, set when it starts): it forwards
        # what route matched on other nodes, and picks the node that serves each shared group.
        self.cluster: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def check(self) -> list[str]:
        """What would stop start-up in the settings that name files (TLS certificates, keys and
        CAs; password, ACL and JWT key files): one message per problem, naming its key. Nothing is
        bound or created; the listeners are built and the auth hooks installed, once."""
        if self._checked is not None:
            return self._checked
        config = self.config
        errors: list[str] = []
        self.listeners = []
        for listener_config in config.effective_listeners():
            listener = Listener(listener_config, config.anonymous_allowed(listener_config), config.reuse_port)
            try:
                listener.prepare()
            except ConfigError as exc:
                errors.append(str(exc))
            self.listeners.append(listener)
        try:
            auth.install(config, self.hooks.add)
        except ConfigError as exc:
            errors.append(str(exc))
        password_files = {config.password_file, *(found.password_file for found in config.listeners)}
        for path in sorted(found for found in password_files if found is not None):
            warn_if_open(path, "password file")
        self._checked = errors
        return errors

    async def bind(self) -> None:
        """Check the settings (a ``ConfigError`` lists every problem) and bind every listener without
        accepting anyone (an ``OSError`` names the address): once this returns, no setting and no
        taken port can stop ``start``, and nothing has been created on disk."""
        if self._bound:
            return
        errors = self.check()
        if errors:
            raise ConfigError("\n".join(errors))
        try:
            for listener in self.listeners:
                await listener.bind(self._connections_for(listener), self.config.limits.connect_timeout)
        except BaseException:
            self._unbind()
            raise
        self._bound = True

    def _connections_for(self, listener: Listener) -> Callable[[], Connection]:
        """The factory of ``listener``'s connections: ours, called by the loop with no Python frame
        per accepted socket."""
        return functools.partial(Connection, self, listener)

    async def reopen(self, listener: Listener) -> None:
        """Bind and serve again one of ``listeners`` that was closed, on a running broker."""
        await listener.start(self._connections_for(listener), self.config.limits.connect_timeout)

    def _unbind(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        self._bound = False
        self._checked = None

    async def start(self, serve: bool = True) -> None:
        """Bind (see ``bind``), open the storage and restore what it holds, then accept clients;
        with ``serve=False`` the listeners wait for ``serve()`` (services start in between)."""
        config = self.config
        self.loop = asyncio.get_running_loop()
        await self.bind()
        try:
            if config.storage == "sqlite":
                make_private_dir(config.data_dir)  # 0700: queued and retained payloads live there
                warn_if_open(config.data_dir, "data directory")
            self.storage = open_storage(config.storage, config.sqlite_path, config.durability, config.commit_interval)
            self.persist = Persistence(self.storage, self.loop, config.durability == "strict", self.boot_id)
            state = self.storage.open(self.loop)
        except BaseException:
            self._unbind()
            raise
        try:
            restore(self, state)
        except BaseException:
            self._unbind()
            await self.storage.close()
            raise
        self.started_at = time.time()
        self._running = True
        self.admission.warn_if_no_one_can_log_in()
        self.hooks.notify(self.hooks.start, self)
        if config.sys_interval > 0:
            self._sys = SysTopics(self, config.sys_interval)
            self._sys.start()
        self._sweep_handle = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        if serve:
            try:
                await self.serve()
            except BaseException:
                await self.stop()
                raise

    async def serve(self) -> None:
        """Accept clients on every listener (after ``start(serve=False)``)."""
        config = self.config
        for listener in self.listeners:
            await listener.serve()
        where = "memory"
        if config.storage == "sqlite":
            where = f"sqlite {config.sqlite_path}, durability {config.durability}"
        log.info(
            "wrenmq %s listening on %s (storage: %s; hot path: %s)",
            __version__,
            ", ".join(listener.url for listener in self.listeners),
            where,
            hot_path(),
        )

    async def stop(self) -> None:
        if not self._running:
            self._unbind()  # bound (or checked) but never started
            return
        self._running = False
        listeners, self.listeners = self.listeners, []
        self._bound = False
        self._checked = None
        for listener in listeners:
            listener.close()
        self.hooks.notify(self.hooks.stop)
        if self._sys is not None:
            self._sys.stop()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for conn in list(self.connections):
            conn.disconnect_reason = "server shutting down"
            conn.will = None  # a restart is not the client going away
            conn.close_with(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down")
        # Give the transports a moment to flush their DISCONNECTs and report connection_lost.
        for _ in range(50):
            if not self.connections and not self.lingering:
                break
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()  # a client that stopped reading: its output will never be flushed
        for closing in list(self.lingering):
            closing.transport.abort()  # nor will a client's that has not closed its side
        if self.connections or self.lingering:
            await asyncio.sleep(0)  # connection_lost runs on the next turn
        for session in self.sessions.values():
            session.cancel_timers()
            if session.connection is not None:
                session.connection = None
                self.persist.session_put(session, connected=False)
        if not self.connections:
            for listener in listeners:
                await listener.wait_closed()
        await self.storage.close()
        log.info("wrenmq stopped")

    def _sweep(self) -> None:
        """Enforce connect timeouts and keep alives for every connection (see check_timeouts)."""
        now = self.loop.time()
        for conn in tuple(self.connections):
            conn.check_timeouts(now)
        self.admission.forget_failures(now)
        self._sweep_handle = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def reload(self) -> None:
        """Have every hook that reads files (password files, ACLs, keys) re-read them: SIGHUP in
        ``wrenmq serve``. A hook keeps what it had loaded if its files turn out bad."""
        log.info("reloading hooks' files")
        for hook in list(self.hooks.hooks):
            reload = getattr(hook, "reload", None)
            if callable(reload):
                try:
                    reload()
                except Exception:
                    log.exception("reloading %r failed", hook)

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def port(self) -> int:
        """The port of the first tcp listener, as bound (useful with ``port=0``)."""
        return self.listener_port("tcp")

    def listener_port(self, kind: str) -> int:
        """The bound port of the first listener of this type (tcp, tls, ws or wss)."""
        assert self._running, "broker not started"
        for listener in self.listeners:
            if listener.type == kind:
                port: int = listener.port
                return port
        raise LookupError(f"no {kind} listener")

    # -- in-process API -------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
        origin: str | None = None,
    ) -> int:
        """Publish as the broker itself; returns the number of subscriptions that matched.
        ``origin`` names the publisher for No Local (a bridge names what it brings in, so that its
        own local subscription does not send it back out).

        With strict durability this returns once any copy that had to be stored is committed.
        """
        if not topic or "+" in topic or "#" in topic or "\x00" in topic:
            raise ValueError(f"invalid topic name {topic!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos}")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        props = dict(properties or {})
        if _P.TOPIC_ALIAS in props or _P.SUBSCRIPTION_IDENTIFIER in props:
            # Per-hop properties: the broker sets them for each subscriber [MQTT-3.3.2-11], [MQTT-3.3.4-3].
            raise ValueError("Topic Alias and Subscription Identifier are not message properties")
        expires_at = None
        if _P.MESSAGE_EXPIRY_INTERVAL in props:
            expires_at = self.loop.time() + props[_P.MESSAGE_EXPIRY_INTERVAL]
        message = Message(topic, data, qos, retain, props, expires_at, origin)
        if self.hooks.publish:
            try:
                message = self.hooks.run_publish(None, message)
            except Reject as reject:  # (reaches the caller)
                if self.hooks.dropped:
                    detail = reject.reason or str(reject)
                    self.hooks.notify(self.hooks.dropped, None, topic, DropReason.REJECTED, detail, message)
                raise
        self.stats.messages_received_qos[qos] += 1
        self.stats.publish_bytes_received += len(data)
        before = self.persist.writes
        matched = self.route(message)
        if self.hooks.published and self.hooks.wants_published(message.topic):
            self.hooks.run_published(None, message, matched)
        if self.persist.strict and qos and self.persist.writes != before:
            await self.persist.flush()
        return matched

    def subscribe_local(self, sub: LocalSubscriber) -> None:
        """Subscribe in-process (Mochi's inline subscription): ``sub.handler`` gets every matching
        message from the one trie match that serves clients, after the publish hooks. No ACL is
        asked here: an owner that acts for a user checks its filters first. No retained messages
        are sent. ``ValueError`` for a filter that is invalid or shared."""
        self.router.subscribe_local(sub)

    def unsubscribe_local(self, client_id: str, topic_filter: str) -> bool:
        """End an in-process subscription; False if there was none."""
        return self.router.unsubscribe_local(client_id, topic_filter)

    def disconnect_client(self, client_id: str, discard_session: bool = False) -> bool:
        """Disconnect ``client_id`` as an administrator: an MQTT 5 client is sent DISCONNECT 0x98
        Administrative action, a 3.1.x connection is closed; its will is published as for any
        connection the server closes. ``discard_session`` ends the session too (else it stays for
        its expiry interval). False if there is no such client (session)."""
        session = self.sessions.get(client_id)
        if session is None:
            return False
        conn = session.connection
        if conn is not None:
            conn.close_with(ReasonCode.ADMINISTRATIVE_ACTION, "disconnected by an administrator")
            self.table.detach(conn, session_continues=not discard_session)
        elif discard_session:
            self.table.end(session)
        return True

    async def delete_retained(self, topic: str, only: Message | None = None) -> bool:
        """Clear ``topic``'s retained message from the store and from storage, as a retained PUBLISH
        with an empty payload would [MQTT-3.3.1-6], but without routing anything: no subscriber is
        sent an empty message. With ``only``, clear it only if that message is still the one
        retained (not one published since). With strict durability, returns once the deletion is
        committed. False if nothing was cleared."""
        current = self.retained.get(topic)
        if current is None or (only is not None and current is not only):
            return False
        before = self.persist.writes
        self._retain(Message(topic, b"", 0, True))
        if self.cluster is not None:
            self.cluster.retain_cleared(topic)
        if self.persist.strict and self.persist.writes != before:
            await self.persist.flush()
        return True

    def number(self, message: Message) -> int:
        """The broker's number for ``message``, given on first use (publish hooks may ask for it
        before the message is routed): monotonic within this run of the broker."""
        seq = message.seq
        if not seq:
            seq = self.message_seq = self.message_seq + 1
            message.seq = seq
        return seq

    def message_id(self, message: Message) -> str:
        """``<boot id>-<number>``: the same for every delivery of one routed message, whatever the
        transport (MQTT user property ``wrenmq-message-id``, Socket.IO and polling ``message_id``).
        A message restored from storage keeps the id it had before the restart."""
        stored_id = message.stored_id
        if stored_id is not None:
            return stored_id
        return f"{self.boot_id}-{self.number(message)}"

    # -- the hot path -----------------------------------------------------------------------

    def route(self, message: Message) -> int:
        """Deliver ``message`` to every matching subscription; returns how many client
        subscriptions matched (what PUBACK's 0x10 No matching subscribers speaks of)."""
        return self.route_match(message, self.router.match(message.topic))

    def route_match(self, message: Message, match: Match) -> int:
        """``route``, for a caller that has the router's match for the message's topic already."""
        if not message.seq:
            self.message_seq += 1
            message.seq = self.message_seq
        if message.retain:
            self._retain(message)
        subs = match.subs
        now = self.loop.time()
        journal = self.journal
        if journal is not None:  # kept for realtime clients that resume (stamps routed_at first)
            journal.record(message, now, match.topic)
        count = 0
        msg_qos = message.qos
        if subs:
            origin = message.origin
            if match.overlapping:
                count = self._deliver_merged(message, subs, now)
            else:
                for sub in subs:
                    session = sub.session
                    if sub.no_local and origin is not None and session.client_id == origin:
                        continue  # [MQTT-3.8.3-3]
                    if sub.reader is not None and not self.hooks.run_acl_check(sub.reader, message.topic, READ):
                        continue  # a filter the ACL grants in part: this topic is not readable
                    sid = sub.subscription_id
                    session.deliver(
                        message,
                        sub.qos if sub.qos < msg_qos else msg_qos,  # [MQTT-3.8.4-8]
                        message.retain and sub.retain_as_published,  # [MQTT-3.3.1-12], [MQTT-3.3.1-13]
                        None if sid is None else [sid],
                        None,
                        now,
                    )
                    count += 1
        cluster = self.cluster
        for group in match.groups:
            if cluster is not None and not cluster.serves_group(group.key, message):
                continue  # another node's members take this one
            member = group.pick()
            if member is None:
                continue
            sub = member
            sid = sub.subscription_id
            sub.session.deliver(
                message,
                sub.qos if sub.qos < msg_qos else msg_qos,
                message.retain and sub.retain_as_published,
                None if sid is None else [sid],
                group,
                now,
            )
            count += 1
        if match.local:  # in-process subscribers (realtime readers, API streams, bridges out): not counted
            match.deliver_local(message)
        if cluster is not None and message.hop is None:
            count += cluster.forward(message)  # once to each other node with matching subscribers
        return count

    def _deliver_merged(self, message: Message, subs: list[Subscriber], now: float) -> int:
        """A client matching through several filters gets one copy at the highest granted QoS,
        with every Subscription Identifier [MQTT-3.3.4-2], [MQTT-3.3.4-3]."""
        merged: dict[int, list[Any]] = {}
        origin = message.origin
        for sub in subs:
            session = sub.session
            if sub.no_local and origin is not None and session.client_id == origin:
                continue
            if sub.reader is not None and not self.hooks.run_acl_check(sub.reader, message.topic, READ):
                continue
            qos = sub.qos if sub.qos < message.qos else message.qos
            entry = merged.get(id(session))
            if entry is None:
                entry = merged[id(session)] = [session, qos, False, []]
            elif qos > entry[1]:
                entry[1] = qos
            entry[2] = entry[2] or (message.retain and sub.retain_as_published)
            if sub.subscription_id is not None:
                entry[3].append(sub.subscription_id)
        for session, qos, retain, sub_ids in merged.values():
            session.deliver(message, qos, retain, sub_ids or None, None, now)
        return len(merged)

    def _retain(self, message: Message) -> None:
        """[MQTT-3.3.1-5]: store (or with an empty payload, clear [MQTT-3.3.1-6]) the topic's retained message."""
        if message.payload:
            self.retained.set(message)
            if not message.topic.startswith("$SYS/"):
                self.persist.retain_set(message)
        elif self.retained.delete(message.topic):
            self.persist.retain_delete(message.topic)

    # -- logins (the CONNECT policy itself is admission.Admission) -------------------------

    def anonymous_allowed(self, listener: Listener | None = None) -> bool:
        """See ``Admission.anonymous_allowed``."""
        return self.admission.anonymous_allowed(listener)

    def check_login(self, client: Any, packet: p.Connect, anonymous: bool) -> AuthResult | asyncio.Future[AuthResult]:
        """The one login rule, for every way in: see ``Admission.check_login``."""
        return self.admission.check_login(client, packet, anonymous)

    def login_failed(self, host: str) -> None:
        """See ``Admission.login_failed``."""
        self.admission.login_failed(host)

    def login_throttled(self, host: str) -> bool:
        """See ``Admission.login_throttled``."""
        return self.admission.login_throttled(host)

    # -- sessions, subscriptions ---------------------------------------------------------

    def on_connection_closed(self, conn: Connection) -> None:
        self.table.connection_closed(conn)

    def subscribe(self, conn: Connection, packet: p.Subscribe) -> None:
        self.subscriptions.subscribe(conn, packet)

    def unsubscribe(self, conn: Connection, packet: p.Unsubscribe) -> None:
        self.subscriptions.unsubscribe(conn, packet)
