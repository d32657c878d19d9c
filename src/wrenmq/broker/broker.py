"""The broker: lifecycle, CONNECT policy, the in-process API and routing.

Its collaborators, each in its own module: the session table (``sessions.SessionTable``: detach,
expiry, end), wills (``wills.WillScheduler``), SUBSCRIBE policy (``subscriptions``), restore at
start-up (``restore``).

``Broker.route`` is the hot path: one cached trie match, then one ``Session.deliver`` per
subscriber, which writes shared pre-encoded bytes to the subscriber's connection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
from typing import Any

from .. import __version__, auth, hot_path
from ..config import Config, ConfigError
from ..hooks import LET_IN, READ, WRITE, AuthResult
from ..mqtt import packets as p
from ..mqtt.errors import ProtocolError
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import client_may_publish, is_bridge_state
from ..storage import Storage, open_storage
from ..storage.private import make_private_dir, warn_if_open
from ..transports import Listener
from .connection import Connection
from .hookset import HookSet
from .limits import Limits
from .message import Message
from .persist import Persistence
from .restore import restore
from .retain import RetainStore
from .router import Router, Subscriber
from .session import NEVER_EXPIRES, Session
from .sessions import SessionTable
from .stats import Stats
from .subscriptions import SubscriptionPolicy
from .sys_topics import SysTopics
from .wills import WillScheduler

MESSAGE_IDS_REQUEST = "wrenmq-message-ids"  # CONNECT user property: "1" asks for wrenmq-message-id

log = logging.getLogger("wrenmq.broker")

# How often connect timeouts and keep alives are checked: they are enforced up to this much late.
SWEEP_INTERVAL = 0.25
# Failed logins are counted per source address over this many seconds (auth_failure_limit).
AUTH_FAILURE_WINDOW = 60.0

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
            config = Config(**{**config.model_dump(), **overrides})
        self.config = config
        self.limits = Limits(config)
        self.router = Router()
        self.retained = RetainStore()
        # Every routed message is numbered (Message.seq); with the boot id the number is unique
        # across restarts too: Broker.message_id. Realtime clients drop repeats by it.
        self.boot_id = secrets.token_hex(4)
        self.message_seq = 0
        self.wills = WillScheduler(self)
        self.table = SessionTable(self, self.wills)
        self.sessions: dict[str, Session] = self.table.sessions  # the table's, by client id
        self.subscriptions = SubscriptionPolicy(self)
        self.connections: set[Connection] = set()
        self.lingering: set[Any] = set()  # sockets closed with a reason, still being closed (transports.linger)
        self.stats = Stats()
        self.started_at = 0.0
        self.hooks = HookSet()
        self.listeners: list[Listener] = []
        self._running = False
        self._bound = False  # listeners bound (bind), not yet serving
        self._checked: list[str] | None = None  # check()'s answer
        self._auth_failures: dict[str, list[float]] = {}  # source host -> recent failed logins
        self._sys: SysTopics | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None

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
            listener = Listener(listener_config, config.anonymous_allowed(listener_config))
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
                await listener.bind(self)
        except BaseException:
            self._unbind()
            raise
        self._bound = True

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
            self.persist = Persistence(self.storage, self.loop, config.durability == "strict")
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
        self._warn_if_no_one_can_log_in()
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
        if self._auth_failures:
            for host in [h for h, t in self._auth_failures.items() if t[-1] < now - AUTH_FAILURE_WINDOW]:
                del self._auth_failures[host]
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
    ) -> int:
        """Publish as the broker itself; returns the number of subscriptions that matched.

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
        message = Message(topic, data, qos, retain, props, expires_at)
        if self.hooks.publish:
            message = self.hooks.run_publish(None, message)  # a Reject reaches the caller
        self.stats.messages_received_qos[qos] += 1
        before = self.persist.writes
        matched = self.route(message)
        if self.persist.strict and qos and self.persist.writes != before:
            await self.storage.flush()
        return matched

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
        if self.persist.strict and self.persist.writes != before:
            await self.storage.flush()
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
        transport (MQTT user property ``wrenmq-message-id``, Socket.IO and polling ``message_id``)."""
        return f"{self.boot_id}-{self.number(message)}"

    # -- the hot path -----------------------------------------------------------------------

    def route(self, message: Message) -> int:
        """Deliver ``message`` to every matching subscription; returns how many matched."""
        if not message.seq:
            self.message_seq += 1
            message.seq = self.message_seq
        if message.retain:
            self._retain(message)
        match = self.router.match(message.topic)
        subs = match.subs
        now = self.loop.time()
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
        for group in match.groups:
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

    # -- CONNECT ---------------------------------------------------------------------------

    def accept_connect(self, conn: Connection, packet: p.Connect) -> None:
        version = packet.protocol_level
        props = packet.properties
        client_id = packet.client_id
        clean = packet.clean_start
        if version == 5:
            if _P.AUTHENTICATION_METHOD in props:
                return self._refuse(conn, ReasonCode.BAD_AUTHENTICATION_METHOD, "enhanced authentication unsupported")
            if props.get(_P.RECEIVE_MAXIMUM) == 0:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.2-??] Receive Maximum of 0")
            if props.get(_P.MAXIMUM_PACKET_SIZE) == 0:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.2-24] Maximum Packet Size of 0")
        if not client_id:
            if version == 5 or (version == 4 and clean):  # [MQTT-3.1.3-6], [MQTT-3.1.3-7]
                client_id = "wrenmq-" + secrets.token_hex(8)
            else:  # [MQTT-3.1.3-8]
                return self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")
        conn.client_id = client_id
        conn.username = packet.username
        decision = self._authenticate(conn, packet)
        if decision is None:
            return
        if isinstance(decision, AuthResult):
            self._login_decided(conn, packet, decision)
            return
        # A hook checks off the loop (a password hash): the connection reads nothing more meanwhile.
        conn.hold_for_login(decision)
        decision.add_done_callback(lambda done: self._login_finished(conn, packet, done))

    def _login_finished(self, conn: Connection, packet: p.Connect, done: asyncio.Future[AuthResult]) -> None:
        """A login checked off the loop is decided: go on with the CONNECT, then with what the
        client sent meanwhile. A client that went away meanwhile has cancelled the check."""
        if done.cancelled():
            return
        error = done.exception()
        result = done.result() if error is None else AuthResult.deny(0x80, "authentication failed")
        if conn.closed:
            if not result.allowed:
                self.login_failed(conn.peer_host)
            return
        try:
            self._login_decided(conn, packet, result)
        except ProtocolError as exc:
            conn.protocol_violation(exc)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("internal error accepting %s", conn.client_id)
            conn.close_with(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
        conn.login_decided()

    def _login_decided(self, conn: Connection, packet: p.Connect, result: AuthResult) -> None:
        if not result.allowed:
            self.login_failed(conn.peer_host)
            return self._refuse(conn, result.reason_code, result.reason or "bad credentials")
        if result is not LET_IN:
            conn.auth = result
        if result.username is not None:
            conn.username = result.username
        if result.expires_at is not None:
            conn.protocol.login_expires_at = self.loop.time() + max(0.001, result.expires_at - time.time())
        self._admit(conn, packet)

    def _admit(self, conn: Connection, packet: p.Connect) -> None:
        """The client is who it says it is: its will, keep alive, session and CONNACK."""
        limits = self.limits
        version = packet.protocol_level
        props = packet.properties
        client_id = conn.client_id
        conn.bridge = packet.bridge
        clean = packet.clean_start
        assigned = client_id if not packet.client_id else None
        # (3.1.x has no properties: reading the enum's members costs more than the rest here)
        expiry = props.get(_P.SESSION_EXPIRY_INTERVAL, 0) if version == 5 else (0 if clean else NEVER_EXPIRES)
        granted_expiry = min(expiry, limits.max_session_expiry_interval)
        will = packet.will
        if will is not None:
            if not client_may_publish(will.topic) and not (packet.bridge and is_bridge_state(will.topic, client_id)):
                self.stats.acl_denied += 1
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, f"a will on {will.topic} (the broker's topics)")
            if self.hooks.acl_check and not self.hooks.run_acl_check(conn, will.topic, WRITE):
                self.stats.acl_denied += 1
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, f"may not publish its will to {will.topic}")
            if will.qos > limits.maximum_qos:
                return self._refuse(conn, ReasonCode.QOS_NOT_SUPPORTED, "will QoS above Maximum QoS")
            if will.retain and not limits.retain_available:
                return self._refuse(conn, ReasonCode.RETAIN_NOT_SUPPORTED, "will retain unsupported")
            will_props = {k: v for k, v in will.properties.items() if k != _P.WILL_DELAY_INTERVAL}
            expires_at = None
            if _P.MESSAGE_EXPIRY_INTERVAL in will_props:
                expires_at = self.loop.time() + will_props[_P.MESSAGE_EXPIRY_INTERVAL]  # counted from publication below
            conn.will = Message(will.topic, will.payload, will.qos, will.retain, will_props, expires_at, client_id)
            conn.will_delay = will.properties.get(_P.WILL_DELAY_INTERVAL, 0)

        # Keep alive: the server may impose its own value [MQTT-3.2.2-21].
        keep_alive = packet.keep_alive
        server_keep_alive = None
        if keep_alive > limits.max_keepalive or (keep_alive == 0 and limits.max_keepalive < 65535):
            if version != 5:
                # 3.1.x cannot be told a Server Keep Alive, and holding a client to a shorter one than
                # it asked for would cut it off while it obeys [MQTT-3.1.2-24]: refuse (as Mosquitto does).
                return self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "keep alive above max_keepalive")
            server_keep_alive = keep_alive = limits.max_keepalive
        if version == 5 and _P.USER_PROPERTY in props:
            conn.message_ids = (MESSAGE_IDS_REQUEST, "1") in props[_P.USER_PROPERTY]

        owner = session_owner(conn.username, conn.cert_identity)
        session = self.sessions.get(client_id)
        if session is not None and session.owner is not None and session.owner != owner:
            # A session never passes to another user (a client id is only a name).
            self.stats.session_owner_conflicts += 1
            if session.connection is not None:
                log.warning(
                    "client id %s is in use by another user: refused %s from %s", client_id, conn.username, conn.peer
                )
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, "client id in use by another user")
            log.warning(
                "session %s belonged to another user: discarded as %s from %s connected with its client id",
                client_id,
                conn.username,
                conn.peer,
            )
            self.table.end(session)
            session = None
        # A stored session discarded by Clean Start: CONNACK must not run ahead of that commit, or a
        # crash could bring back the session the client was told is gone.
        discarded = clean and session is not None and session.persistent and self.persist.strict
        if session is not None and session.connection is not None:
            old = session.connection
            old.disconnect_reason = "session taken over"
            old.close_with(ReasonCode.SESSION_TAKEN_OVER, "session taken over")  # [MQTT-3.1.4-3]
            self.table.detach(old, session_continues=not clean)
            session = self.sessions.get(client_id)
        session_present = False
        if session is not None and not clean:
            session_present = True  # [MQTT-3.2.2-2]
            session.cancel_timers()
            session.will = None  # the client is back in time: its delayed will is cancelled [MQTT-3.1.3-9]
        else:
            if session is not None:
                self.table.end(session)  # Clean Start discards the old session [MQTT-3.1.2-4]
            session = Session(self, client_id, version, granted_expiry)
            self.sessions[client_id] = session
        session.owner = owner  # (a session restored from a store without owners is claimed here)
        if session_present:
            for sub in session.subscriptions.values():
                if sub.reader is not None:
                    sub.reader = conn  # its ACL checks: of the client as it is now (same owner)
        session.protocol_version = version
        session.expiry_interval = granted_expiry
        session.connection = conn
        conn.session = session
        self.stats.clients_by_version[version] += 1

        ack_props: dict[int, Any] | None = None
        if version == 5:
            ack_props = {}
            if assigned:
                ack_props[_P.ASSIGNED_CLIENT_IDENTIFIER] = assigned
            if server_keep_alive is not None:
                ack_props[_P.SERVER_KEEP_ALIVE] = server_keep_alive
            if granted_expiry != expiry:
                ack_props[_P.SESSION_EXPIRY_INTERVAL] = granted_expiry
            if limits.receive_maximum != 65535:
                ack_props[_P.RECEIVE_MAXIMUM] = limits.receive_maximum
            ack_props[_P.MAXIMUM_PACKET_SIZE] = limits.max_packet_size
            if limits.topic_alias_maximum:
                ack_props[_P.TOPIC_ALIAS_MAXIMUM] = limits.topic_alias_maximum
            if limits.maximum_qos < 2:
                ack_props[_P.MAXIMUM_QOS] = limits.maximum_qos
            if not limits.retain_available:
                ack_props[_P.RETAIN_AVAILABLE] = 0
        conn.accept(packet, session_present, keep_alive, ack_props, discarded)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "client %s connected from %s (MQTT %s, clean=%s, keep_alive=%d%s)",
                client_id,
                conn.peer,
                _VERSION_NAMES.get(version, version),
                clean,
                keep_alive,
                ", session present" if session_present else "",
            )
        self.persist.session_put(session, connected=True)
        if self.hooks.connect:
            self.hooks.notify(self.hooks.connect, conn, packet)
        if session_present:
            now = self.loop.time()
            session.resend_inflight(conn, now)
            session.fill(now)

    def _authenticate(self, conn: Connection, packet: p.Connect) -> AuthResult | asyncio.Future[AuthResult] | None:
        """Connection limits, failed-login throttling, certificate identity, then the login rule
        (``check_login``). None: the client has been refused already."""
        if conn.over_limit:
            self._refuse(conn, ReasonCode.SERVER_BUSY, "too many connections")
            return None
        if self.login_throttled(conn.peer_host):
            self._refuse(conn, ReasonCode.CONNECTION_RATE_EXCEEDED, "too many failed logins from this address")
            return None
        listener = conn.listener
        certified = False
        if listener is not None and listener.use_identity_as_username:
            if conn.cert_identity is None:
                self._refuse(conn, ReasonCode.NOT_AUTHORIZED, "no client certificate")
                return None
            conn.username = conn.cert_identity
            certified = True  # a verified certificate vouches for its CN
        return self.check_login(conn, packet, certified or self.anonymous_allowed(listener))

    def anonymous_allowed(self, listener: Listener | None = None) -> bool:
        """Whether clients no authentication source vouches for may come in by ``listener`` (None:
        the API's sign-ins). See ``Config.anonymous_allowed``."""
        if listener is not None:
            return listener.anonymous
        return self.config.anonymous_allowed(None)

    def check_login(self, client: Any, packet: p.Connect, anonymous: bool) -> AuthResult | asyncio.Future[AuthResult]:
        """The one login rule, for every way in (MQTT CONNECT, console sign-in, Socket.IO, long
        polling): the first authentication hook that decides wins (a password file, a JWT, an
        application's hook); if none decides, the client is let in only where ``anonymous`` access
        is allowed, with or without a user name, since a name no source vouched for is a claim,
        not an identity [MQTT-3.1.4-2]. A decision reached off the event loop (a password hash)
        comes as a future. The caller counts a refusal toward the failed-login throttle."""
        hooks = self.hooks
        found = hooks.run_authenticate(client, packet) if hooks.authenticate else None
        if found is None or isinstance(found, AuthResult):
            return _login_rule(found, client.username, anonymous)
        return asyncio.ensure_future(_settle_login(found, client.username, anonymous))

    def _warn_if_no_one_can_log_in(self) -> None:
        """With anonymous access off and no authentication source, every login is refused: say so."""
        if self.hooks.authenticate:
            return
        for listener in self.listeners:
            if not listener.anonymous and not listener.use_identity_as_username:
                log.warning(
                    "no one can log in on %s: allow_anonymous is off and no authentication source "
                    "(password_file, JWT, client certificates, an auth hook) is configured",
                    listener.url,
                )

    def login_failed(self, host: str) -> None:
        """Count a failed login from ``host``. Services that sign clients in their own way (Socket.IO,
        long polling) report here too, so one throttle covers every way in."""
        self.stats.auth_failures += 1
        if self.config.auth_failure_limit:
            self._auth_failures.setdefault(host, []).append(self.loop.time())

    def login_throttled(self, host: str) -> bool:
        """``auth_failure_limit`` failed logins from ``host`` within a minute refuse it for the rest."""
        if not self._auth_failures:
            return False
        times = self._auth_failures.get(host)
        if not times:
            return False
        horizon = self.loop.time() - AUTH_FAILURE_WINDOW
        while times and times[0] < horizon:
            del times[0]
        if not times:
            del self._auth_failures[host]
            return False
        return len(times) >= self.config.auth_failure_limit

    def _refuse(self, conn: Connection, code: int, reason: str) -> None:
        log.info("refused client %s from %s: %s", conn.client_id or "-", conn.peer, reason)
        conn.refuse(code, reason)  # the CONNACK must arrive, whatever the client sent after CONNECT

    # -- sessions, subscriptions ---------------------------------------------------------

    def on_connection_closed(self, conn: Connection) -> None:
        self.table.connection_closed(conn)

    def subscribe(self, conn: Connection, packet: p.Subscribe) -> None:
        self.subscriptions.subscribe(conn, packet)

    def unsubscribe(self, conn: Connection, packet: p.Unsubscribe) -> None:
        self.subscriptions.unsubscribe(conn, packet)


def _login_rule(result: AuthResult | None, username: str | None, anonymous: bool) -> AuthResult:
    """See ``Broker.check_login``."""
    if result is not None:
        return result
    if anonymous:
        return LET_IN
    if username is None:
        return AuthResult.deny(ReasonCode.NOT_AUTHORIZED, "anonymous access is disabled")
    return AuthResult.deny(
        ReasonCode.NOT_AUTHORIZED, f"no authentication source vouches for {username!r} (anonymous access is off)"
    )


async def _settle_login(pending: Any, username: str | None, anonymous: bool) -> AuthResult:
    result: AuthResult | None = await pending
    return _login_rule(result, username, anonymous)


def session_owner(username: str | None, cert_identity: str | None) -> str:
    """Who a session belongs to: the user name (anonymous clients are an owner of their own) and,
    over TLS with a client certificate, its identity; a session never passes to another owner."""
    owner = "anonymous" if username is None else "user:" + username
    if cert_identity is not None:
        owner += "\ncert:" + cert_identity
    return owner


_VERSION_NAMES = {3: "3.1", 4: "3.1.1", 5: "5.0"}
