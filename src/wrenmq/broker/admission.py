"""Admission: the broker's CONNECT policy and the failed-login throttle.

What a CONNECT must satisfy beyond the protocol's own rules (``mqtt/server.py`` checks those):
connection limits, the login rule (the first authentication hook that decides, else anonymous
access where allowed), client identifiers, wills, keep alive, the session owner; then the session
is taken over, resumed or created and the protocol is told to accept (CONNACK) or refuse.
Failed logins are counted per source address, so one throttle covers every way in (MQTT, the
console, Socket.IO, long polling).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..hooks import LET_IN, WRITE, AuthResult
from ..mqtt import packets as p
from ..mqtt.errors import ProtocolError
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import client_may_publish, is_bridge_state
from .message import Message
from .session import NEVER_EXPIRES, Session

if TYPE_CHECKING:
    from ..transports import Listener
    from .broker import Broker
    from .connection import Connection

MESSAGE_IDS_REQUEST = "wrenmq-message-ids"  # CONNECT user property: "1" asks for wrenmq-message-id
# Failed logins are counted per source address over this many seconds (auth_failure_limit).
AUTH_FAILURE_WINDOW = 60.0

log = logging.getLogger("wrenmq.broker")

_P = PropertyId


class Admission:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.failures: dict[str, list[float]] = {}  # source host -> recent failed logins

    def forget_failures(self, now: float) -> None:
        """Drop the failed-login records older than the window (the broker's sweep)."""
        failures = self.failures
        if failures:
            for host in [h for h, t in failures.items() if t[-1] < now - AUTH_FAILURE_WINDOW]:
                del failures[host]

    def accept_connect(self, conn: Connection, packet: p.Connect) -> None:
        """A CONNECT that passed the protocol's rules: decide it (at once, or once a login checked
        off the loop is decided), then ``conn.accept`` or ``conn.refuse``."""
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
                client_id = "wrenmq-" + os.urandom(8).hex()  # (as secrets.token_hex: os.urandom)
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
            self.broker.stats.internal_errors += 1
            log.exception("internal error accepting %s", conn.client_id)
            conn.close_with(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
        if conn.holding(done):  # (not if the cluster now holds it for a session handover)
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
            conn.protocol.login_expires_at = self.broker.loop.time() + max(0.001, result.expires_at - time.time())
        cluster = self.broker.cluster
        if cluster is not None:
            # In a cluster the client id may be held on another node: it hands the session over
            # (closing the connection there) before this one is admitted with it.
            claim = cluster.claim(conn.client_id, packet.clean_start)
            if claim is not None:
                conn.hold_for_login(claim)
                claim.add_done_callback(lambda done: self._claim_finished(conn, packet, done))
                return
        self._admit(conn, packet)

    def _claim_finished(self, conn: Connection, packet: p.Connect, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or conn.closed:
            return
        try:
            self._admit(conn, packet)
        except ProtocolError as exc:
            conn.protocol_violation(exc)
        except Exception:
            self.broker.stats.internal_errors += 1
            log.exception("internal error accepting %s", conn.client_id)
            conn.close_with(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
        conn.login_decided()

    def _admit(self, conn: Connection, packet: p.Connect) -> None:
        """The client is who it says it is: its will, keep alive, session and CONNACK."""
        limits = self.broker.limits
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
                self.broker.stats.acl_denied += 1
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, f"a will on {will.topic} (the broker's topics)")
            if self.broker.hooks.acl_check and not self.broker.hooks.run_acl_check(conn, will.topic, WRITE):
                self.broker.stats.acl_denied += 1
                return self._refuse(conn, ReasonCode.NOT_AUTHORIZED, f"may not publish its will to {will.topic}")
            if will.qos > limits.maximum_qos:
                return self._refuse(conn, ReasonCode.QOS_NOT_SUPPORTED, "will QoS above Maximum QoS")
            if will.retain and not limits.retain_available:
                return self._refuse(conn, ReasonCode.RETAIN_NOT_SUPPORTED, "will retain unsupported")
            will_props = {k: v for k, v in will.properties.items() if k != _P.WILL_DELAY_INTERVAL}
            expires_at = None
            if _P.MESSAGE_EXPIRY_INTERVAL in will_props:
                # (counted from publication: see WillScheduler)
                expires_at = self.broker.loop.time() + will_props[_P.MESSAGE_EXPIRY_INTERVAL]
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
        session = self.broker.sessions.get(client_id)
        if session is not None and session.owner is not None and session.owner != owner:
            # A session never passes to another user (a client id is only a name).
            self.broker.stats.session_owner_conflicts += 1
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
            self.broker.table.end(session)
            session = None
        # A stored session discarded by Clean Start: CONNACK must not run ahead of that commit, or a
        # crash could bring back the session the client was told is gone.
        discarded = clean and session is not None and session.persistent and self.broker.persist.strict
        if session is not None and session.connection is not None:
            old = session.connection
            old.disconnect_reason = "session taken over"
            old.close_with(ReasonCode.SESSION_TAKEN_OVER, "session taken over")  # [MQTT-3.1.4-3]
            self.broker.table.detach(old, session_continues=not clean)
            session = self.broker.sessions.get(client_id)
        session_present = False
        if session is not None and not clean:
            session_present = True  # [MQTT-3.2.2-2]
            session.cancel_timers()
            session.will = None  # the client is back in time: its delayed will is cancelled [MQTT-3.1.3-9]
        else:
            if session is not None:
                self.broker.table.end(session)  # Clean Start discards the old session [MQTT-3.1.2-4]
            session = Session(self.broker, client_id, version, granted_expiry)
            self.broker.sessions[client_id] = session
        session.owner = owner  # (a session restored from a store without owners is claimed here)
        if session_present:
            for sub in session.subscriptions.values():
                if sub.reader is not None:
                    sub.reader = conn  # its ACL checks: of the client as it is now (same owner)
        session.protocol_version = version
        session.expiry_interval = granted_expiry
        session.connection = conn
        conn.session = session
        self.broker.stats.clients_by_version[version] += 1

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
        self.broker.persist.session_put(session, connected=True)
        if self.broker.cluster is not None:  # the client id is this connection's, cluster-wide
            self.broker.cluster.client_connected(client_id, conn.will, conn.will_delay)
        if self.broker.hooks.connect:
            self.broker.hooks.notify(self.broker.hooks.connect, conn, packet)
        if session_present:
            now = self.broker.loop.time()
            session.resend_inflight(conn, now)
            session.fill(now)

    def _authenticate(self, conn: Connection, packet: p.Connect) -> AuthResult | asyncio.Future[AuthResult] | None:
        """Connection limits, failed-login throttling, certificate identity, then the login rule
        (``check_login``). None: the client has been refused already."""
        if conn.over_limit:
            self._refuse(conn, ReasonCode.SERVER_BUSY, "too many connections")
            return None
        if self.failures and self.login_throttled(conn.peer_host):  # no failures: no address lookup
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
        return self.broker.config.anonymous_allowed(None)

    def check_login(self, client: Any, packet: p.Connect, anonymous: bool) -> AuthResult | asyncio.Future[AuthResult]:
        """The one login rule, for every way in (MQTT CONNECT, console sign-in, Socket.IO, long
        polling): the first authentication hook that decides wins (a password file, a JWT, an
        application's hook); if none decides, the client is let in only where ``anonymous`` access
        is allowed, with or without a user name, since a name no source vouched for is a claim,
        not an identity [MQTT-3.1.4-2]. A decision reached off the event loop (a password hash)
        comes as a future. The caller counts a refusal toward the failed-login throttle."""
        hooks = self.broker.hooks
        found = hooks.run_authenticate(client, packet) if hooks.authenticate else None
        if found is None or isinstance(found, AuthResult):
            return _login_rule(found, client.username, anonymous)
        return asyncio.ensure_future(_settle_login(found, client.username, anonymous))

    def warn_if_no_one_can_log_in(self) -> None:
        """With anonymous access off and no authentication source, every login is refused: say so."""
        if self.broker.hooks.authenticate:
            return
        for listener in self.broker.listeners:
            if not listener.anonymous and not listener.use_identity_as_username:
                log.warning(
                    "no one can log in on %s: allow_anonymous is off and no authentication source "
                    "(password_file, JWT, client certificates, an auth hook) is configured",
                    listener.url,
                )

    def login_failed(self, host: str) -> None:
        """Count a failed login from ``host``. Services that sign clients in their own way (Socket.IO,
        long polling) report here too, so one throttle covers every way in."""
        self.broker.stats.auth_failures += 1
        if self.broker.config.auth_failure_limit:
            self.failures.setdefault(host, []).append(self.broker.loop.time())

    def login_throttled(self, host: str) -> bool:
        """``auth_failure_limit`` failed logins from ``host`` within a minute refuse it for the rest."""
        if not self.failures:
            return False
        times = self.failures.get(host)
        if not times:
            return False
        horizon = self.broker.loop.time() - AUTH_FAILURE_WINDOW
        while times and times[0] < horizon:
            del times[0]
        if not times:
            del self.failures[host]
            return False
        return len(times) >= self.broker.config.auth_failure_limit

    def _refuse(self, conn: Connection, code: int, reason: str) -> None:
        log.info("refused client %s from %s: %s", conn.client_id or "-", conn.peer, reason)
        conn.refuse(code, reason)  # the CONNACK must arrive, whatever the client sent after CONNECT


def _login_rule(result: AuthResult | None, username: str | None, anonymous: bool) -> AuthResult:
    """See ``Admission.check_login``."""
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
