"""One client connection: the ``asyncio.Protocol`` that moves bytes between a socket and its
sans-I/O MQTT protocol (``mqtt.server.ServerProtocol``), and hands the protocol's events to the
broker (``inbound.HANDLERS``: the shape of uvicorn's protocols and aioquic's asyncio adapter).

The protocol owns every MQTT rule of the connection (CONNECT first, topic aliases, Receive
Maximum, inbound QoS 2, keep alive, acks) and the order of its output; this class owns the
socket: reads are fed to the protocol in one pass per ``data_received``; its output is flushed
with one ``writelines`` per event-loop turn, or at once when it passes the high-water mark (one
turn can carry megabytes). Flow control is explicit, and a slow client pays for itself only: once
its write buffer reaches ``max_write_buffer`` (a burst to a fast client fits below it), and until it
drains below ``write_buffer_low``, QoS 0 messages to it are dropped (counted) and QoS 1/2 wait in its
session queue, which is bounded (``max_queued_messages``, ``max_queued_bytes``). No publisher is ever
held back for a subscriber's sake. A client that stays at its cap (buffer past ``write_buffer_high``
and not draining, or queue full and not acknowledging) for ``slow_consumer_timeout`` seconds is
disconnected; past twice ``max_write_buffer`` (only replies it owes grow it then) it is dropped at once.

Strict durability: output that must wait for a storage commit is held by the protocol (it is a
rule of the connection's byte stream: see ``mqtt/server.py``); this side registers the connection
with the storage barrier when the protocol asks (``_pump``) and feeds the commit back
(``release_held``), as it feeds the clock to ``handle_timer``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from ..hooks import DropReason
from ..mqtt import packets as p
from ..mqtt.codec import UnsupportedProtocolVersion, publish_resent
from ..mqtt.errors import ProtocolError
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.server import ServerProtocol
from ..transports.linger import linger
from ..transports.tls import certificate_identity
from .inbound import HANDLERS, on_publish
from .message import Message
from .session import SENT, Delivery

if TYPE_CHECKING:
    from .broker import Broker
    from .session import Session
    from .stats import Stats

log = logging.getLogger("wrenmq.connection")

_STUCK_FACTOR = 2  # a connection whose unsent output passes this many max_write_buffer is dropped
_CLOSE_LINGER = 2.0  # seconds a closing connection has to flush its output before it is aborted


class _RateBucket:
    """A connection's ``max_publish_rate`` token bucket: made by its first PUBLISH under a rate
    limit, so a connection without one carries a pointer, not three fields."""

    __slots__ = ("at", "pause_timer", "tokens")

    def __init__(self) -> None:
        self.tokens = 1e9  # (capped to the burst on first use)
        self.at = 0.0
        self.pause_timer: asyncio.TimerHandle | None = None  # reads resume when it fires


class Connection:
    """The asyncio side of one client connection (see the module docstring); slotted: one
    per connection, so no instance ``__dict__``. An ``asyncio.Protocol`` by its methods, not by
    inheritance (event loops call a protocol's methods, they do not check its class): compiled,
    a subclass of that Python class would carry a ``__dict__`` and a ``__weakref__`` pointer, 16
    bytes per connection."""

    __slots__ = (
        "_buffer_seen",
        "_capped_since",
        "_flush_scheduled",
        "_login",
        "_peer",
        "_rate",
        "auth",
        "bridge",
        "broker",
        "cert_identity",
        "client_id",
        "closed",
        "congested",
        "disconnect_reason",
        "limits",
        "listener",
        "message_ids",
        "over_limit",
        "protocol",
        "reading_paused",
        "session",
        "transport",
        "username",
        "will",
        "will_delay",
        "writing_paused",
    )

    def __init__(self, broker: Broker, listener: Any = None) -> None:
        self.broker = broker
        # The broker's, read per delivery (_pump): a field, as compiled the object has room for
        # it within its allocation (184 bytes without, 192 with: pymalloc rounds to 16).
        self.limits = broker.limits
        self.listener = listener  # the transports.Listener that accepted it (None: embedded/tests)
        self.protocol = ServerProtocol(broker.limits, 0.0)  # its clocks start in connection_made
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.client_id = ""
        self.username: str | None = None
        self.auth: Any = None  # the AuthResult of the hook that let the client in
        self.cert_identity: str | None = None  # CN of a verified TLS client certificate
        self._peer: str | None = None  # "host:port", resolved on first use (a syscall or two)
        self.will: Message | None = None
        self.will_delay = 0
        self.disconnect_reason = "connection lost"
        self._rate: _RateBucket | None = None  # max_publish_rate's bucket (made on first use)
        self._capped_since = 0.0  # since when its output has been at its cap without draining (0: not)
        self._buffer_seen = 0  # write buffer size at the last sweep, to tell a slow reader from a stopped one
        # While a login is checked off the loop: the check (the protocol keeps what the client sends
        # meanwhile; its events are pulled once the login is decided: see hold_for_login).
        self._login: asyncio.Future[Any] | None = None
        # The flags last and together: compiled, a bool is one byte, and eight in a row share the
        # eight bytes each would take between pointers (mypyc lays fields out in this order).
        self.over_limit = False  # accepted past max_connections: CONNECT is refused with Server busy
        self.bridge = False  # a Mosquitto bridge (protocol level 0x83/0x84): see Broker.subscribe
        self.closed = False
        # The client asked for the broker's message id on each PUBLISH (a CONNECT user property;
        # the realtime browser client does, to drop what it got over another transport).
        self.message_ids = False
        self.congested = False  # buffer reached max_write_buffer, not yet below low: QoS 0 dropped, 1/2 queued
        self.writing_paused = False
        self.reading_paused = False
        self._flush_scheduled = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.broker.loop

    # -- what the protocol knows, for the broker, hooks and the API --------------------------------

    @property
    def version(self) -> int:
        return self.protocol.version

    @property
    def connected(self) -> bool:
        """CONNACK accepted."""
        return self.protocol.connected

    @property
    def keep_alive(self) -> int:
        return self.protocol.keep_alive

    @property
    def send_quota(self) -> int:
        """The client's Receive Maximum, capped by max_inflight_messages."""
        return self.protocol.send_quota

    @property
    def opened_at(self) -> float:
        return self.protocol.opened_at

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are duck-typed as one.
        self.transport = transport = cast(asyncio.Transport, transport)
        if log.isEnabledFor(logging.INFO):
            self._peer = self._resolve_peer()  # the disconnect line names it after the socket is gone
        limits = self.limits
        transport.set_write_buffer_limits(limits.write_buffer_high, limits.write_buffer_low)
        self.protocol.last_rx = self.protocol.opened_at = self.loop.time()
        # The connect timeout and keep alive are enforced by the broker's sweep (check_timeouts).
        self.broker.stats.sockets_total += 1
        connections = self.broker.connections
        if limits.max_connections and len(connections) >= limits.max_connections:
            self.over_limit = True
        connections[self] = None
        listener = self.listener
        if listener is not None:
            if listener.max_connections and listener.connections >= listener.max_connections:
                self.over_limit = True
            listener.connections += 1
            listener.connections_total += 1
            if listener.type in ("tls", "wss"):
                self.cert_identity = certificate_identity(transport)

    def eof_received(self) -> bool | None:
        return None  # MQTT has no half-closed state: let the transport close

    @property
    def peer(self) -> str:
        """The client's address, looked up only when someone asks (logs, the API)."""
        peer = self._peer
        if peer is None:
            peer = self._peer = self._resolve_peer()
        return peer

    @property
    def peer_host(self) -> str:
        """The client's address without the port (the key for per-address limits)."""
        return self.peer.rpartition(":")[0] or self.peer

    def _resolve_peer(self) -> str:
        transport = self.transport
        address = transport.get_extra_info("peername") if transport is not None else None
        return f"{address[0]}:{address[1]}" if address else "?"

    def data_received(self, data: bytes) -> None:
        self.broker.stats.bytes_received += len(data)
        self.protocol.receive_data(data, self.loop.time())
        if self._login is None:  # (while a login is checked, what arrives waits in the protocol)
            self._handle_events()

    def _handle_events(self) -> None:
        """Hand the protocol's events to the broker, in order, until there are none or a login
        must be checked off the loop first."""
        protocol = self.protocol
        try:
            while not self.closed:
                event = protocol.next_event()
                if event is None:
                    break
                if isinstance(event, p.Publish):
                    on_publish(self, event)
                elif isinstance(event, UnsupportedProtocolVersion):  # (before ProtocolError: a subclass)
                    protocol.refuse_version(event.level)
                    self.close_gracefully(f"unsupported protocol version {event.level}")
                elif isinstance(event, ProtocolError):
                    self.protocol_violation(event)
                else:
                    HANDLERS[event.type](self, event)  # type: ignore[union-attr]
                    if self._login is not None:
                        break
        except ProtocolError as exc:  # a rule the broker checks (CONNECT, SUBSCRIBE)
            self.protocol_violation(exc)
        except Exception:
            self.broker.stats.internal_errors += 1
            log.exception("internal error handling a packet from %s", self.client_id or self.peer)
            self.close_with(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
        self._pump()
        persist = self.broker.persist
        if persist.held:
            persist.seal()  # one barrier covers all output this read held back, on every connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return  # already forgotten (close_gracefully handed the socket on)
        self.closed = True
        self.transport = None
        self._forget(exc)

    def _forget(self, exc: Exception | None) -> None:
        """The connection is over for the broker: release what it holds and tell the broker."""
        if self._login is not None:
            self._login.cancel()  # nobody is waiting for the answer: free the check's place
        if self._rate is not None and self._rate.pause_timer is not None:
            self._rate.pause_timer.cancel()
        self.broker.connections.pop(self, None)
        stats = self.broker.stats
        stats.packets_in_closed += self.protocol.packets_in
        stats.packets_out_closed += self.protocol.packets_out
        if self.listener is not None:
            self.listener.connections -= 1
        if exc is not None and self.disconnect_reason == "connection lost":
            self.disconnect_reason = f"connection lost: {exc}"
        self.broker.on_connection_closed(self)

    def pause_writing(self) -> None:
        """Past high-water: the client is behind. Its slow-consumer clock runs until it drains, and
        from max_write_buffer on it is sent no more (see _check_congested); its publishers, and
        everyone else, carry on."""
        self.writing_paused = True
        self.at_cap()
        if self.transport is not None:
            self._buffer_seen = self.transport.get_write_buffer_size()
        self._check_congested()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.congested = False
        self._capped_since = 0.0
        session = self.session
        if session is not None and session.backlog and session.connection is self:
            session.fill(self.loop.time())

    # -- output --------------------------------------------------------------------------------

    def _pump(self) -> None:
        """After the protocol was given something to send: register its held output with the next
        storage barrier, and flush on this loop turn, or at once past high-water (one read can
        carry megabytes) so pause_writing can stop what follows."""
        protocol = self.protocol
        if protocol.wants_barrier:
            protocol.wants_barrier = False
            self.broker.persist.hold(self)
        size = protocol.out_size
        if size >= self.limits.write_buffer_high:
            self._flush()
        elif size and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        protocol = self.protocol
        size = protocol.out_size
        out = protocol.data_to_send()
        if not out:
            return
        transport = self.transport
        if transport is None:
            return
        self.broker.stats.bytes_sent += size
        transport.writelines(out)
        if self.writing_paused and transport.get_write_buffer_size() > _STUCK_FACTOR * self.limits.max_write_buffer:
            # Past the limit only replies we owe (acks, PINGRESP, SUBACK) keep growing the buffer, so a
            # client this far behind is reading nothing: stuck, not slow. Drop it rather than buffer forever.
            self._drop_slow_consumer("output buffer limit exceeded")

    def _drop_slow_consumer(self, why: str) -> None:
        """Disconnect a client that does not take what it is sent: counted, logged once. What is
        buffered for it could never reach it, so the connection is aborted, not closed gracefully."""
        self.broker.stats.slow_consumers_dropped += 1
        if not self.closed:
            log.warning("client %s (%s) disconnected as a slow consumer: %s", self.client_id or "-", self.peer, why)
            self.closed = True
            self.disconnect_reason = f"slow consumer: {why}"
            self._tell_dropped(DropReason.SLOW_CONSUMER, why, None)
        self.abort()

    def _tell_dropped(self, reason: str, detail: str, message: Message | None) -> None:
        """Tell the ``on_dropped`` hooks, if any, that something of this client's was dropped."""
        hooks = self.broker.hooks
        if hooks.dropped:
            hooks.notify(
                hooks.dropped, self.client_id, None if message is None else message.topic, reason, detail, message
            )

    def _check_slow_consumer(self, now: float, timeout: float) -> bool:
        """Whether the client has been at its output cap for ``timeout`` seconds without draining,
        and so was disconnected. A client whose buffer shrank since the last sweep is reading,
        slowly: its clock starts again. One stopped at a full queue (its Receive Maximum used up,
        no acknowledgement coming) reads, so it is told why: DISCONNECT 0x97 Quota exceeded."""
        transport = self.transport
        if self.writing_paused and transport is not None:
            size = transport.get_write_buffer_size()
            if size < self._buffer_seen:
                self._capped_since = now
            self._buffer_seen = size
        if now - self._capped_since < timeout:
            return False
        why = f"at its output cap for {timeout:g} s without draining"
        if self.writing_paused:
            self._drop_slow_consumer(why)
        else:
            self.broker.stats.slow_consumers_dropped += 1
            log.warning("client %s (%s) disconnected as a slow consumer: %s", self.client_id, self.peer, why)
            self._tell_dropped(DropReason.SLOW_CONSUMER, why, None)
            self.close_with(ReasonCode.QUOTA_EXCEEDED, f"slow consumer: {why}")
        return True

    def _check_congested(self) -> None:
        """Called while writing is paused: once the output waiting for this client reaches
        max_write_buffer it is congested (QoS 0 dropped, QoS 1/2 queued) until resume_writing."""
        transport = self.transport
        if (
            transport is not None
            and self.protocol.out_size + transport.get_write_buffer_size() >= self.limits.max_write_buffer
        ):
            self.congested = True

    def resume_reading(self) -> None:
        """Read from the client again: its ``max_publish_rate`` bucket has refilled, or its login
        is decided. (Nothing else pauses reading: no client waits on another's buffer.)"""
        bucket = self._rate
        if bucket is not None and bucket.pause_timer is not None:
            bucket.pause_timer.cancel()
            bucket.pause_timer = None
        if not self.reading_paused:
            return
        self.reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def at_cap(self) -> None:
        """The client's output hit a bound (write buffer past high-water, or a session queue full):
        start its slow-consumer clock, unless it is running already."""
        if not self._capped_since:
            self._capped_since = self.loop.time()

    def draining(self) -> None:
        """The client took something from its queue (an acknowledgement made room): not stuck."""
        if not self.writing_paused:
            self._capped_since = 0.0

    def send_qos0(self, message: Message, retain: bool, sub_ids: list[int] | None, now: float) -> None:
        if self.congested:
            self.broker.stats.dropped_congested += 1
            if self.broker.hooks.dropped:
                self._tell_dropped(DropReason.CONGESTED, "", message)
            return
        protocol = self.protocol
        if sub_ids is None and message.expires_at is None and not self.message_ids:
            data = message.wire(protocol.version, 0, retain)[0]
        else:
            message_id = self.broker.message_id(message) if self.message_ids else None
            data = message.wire_at(protocol.version, 0, retain, now, sub_ids, message_id)[0]
        limit = protocol.max_packet_out
        if limit and len(data) > limit:  # [MQTT-3.1.2-25]
            self.broker.stats.dropped_too_large += 1
            self._tell_dropped(DropReason.TOO_LARGE, f"{len(data)} bytes; the client takes at most {limit}", message)
            return
        protocol.send_publish(data, 0, b"", message.topic, message.payload, False)
        self._pump()
        broker = self.broker
        stats = broker.stats
        stats.messages_sent_qos[0] += 1
        stats.publish_bytes_sent += len(message.payload)
        if broker.hooks.delivered:
            broker.hooks.notify(broker.hooks.delivered, self, message)
        if self.writing_paused:
            self._check_congested()

    def send_publish(self, delivery: Delivery, now: float, dup: bool) -> None:
        message = delivery.message
        protocol = self.protocol
        if delivery.sub_ids is None and message.expires_at is None and not self.message_ids:
            head, tail = message.wire(protocol.version, delivery.qos, delivery.retain)
        else:
            message_id = self.broker.message_id(message) if self.message_ids else None
            head, tail = message.wire_at(
                protocol.version, delivery.qos, delivery.retain, now, delivery.sub_ids, message_id
            )
        limit = protocol.max_packet_out
        if limit and len(head) + 2 + len(tail) > limit:
            # Too large for this client: discard as if delivered [MQTT-3.1.2-25].
            self.broker.stats.dropped_too_large += 1
            size = len(head) + 2 + len(tail)
            self._tell_dropped(DropReason.TOO_LARGE, f"{size} bytes; the client takes at most {limit}", message)
            session = self.session
            if session is not None:
                session.acknowledge(delivery.packet_id, SENT)
            return
        if dup:
            head = publish_resent(head)
        # A persistent session's packet id may be held by the client (QoS 2) across our crash: the
        # record that says which message it names must be committed before the id goes out.
        protocol.send_publish(head, delivery.packet_id, tail, message.topic, message.payload, self._durable_session())
        self._pump()
        broker = self.broker
        stats = broker.stats
        stats.messages_sent_qos[delivery.qos] += 1
        stats.publish_bytes_sent += len(message.payload)
        if broker.hooks.delivered:
            broker.hooks.notify(broker.hooks.delivered, self, message)
        if self.writing_paused:
            self._check_congested()

    def send_pubrel(self, packet_id: int) -> None:
        # After the PUBREC's state change is committed: see send_publish.
        self.protocol.send_pubrel(packet_id, 0, self._durable_session())
        self._pump()

    def send_suback(self, data: bytes) -> None:
        """SUBACK or UNSUBACK: a persistent session's subscriptions are committed first."""
        self.protocol.send(data, self._durable_session())
        self._pump()

    def _durable_session(self) -> bool:
        """Whether output that announces a change to this client's session must wait for its commit."""
        if not self.broker.persist.strict:
            return False
        session = self.session
        return session is not None and session.expiry_interval > 0

    # -- output held for a storage commit (strict durability) -------------------------------------
    # What the broker tells a client (PUBACK, PUBREC, PUBCOMP, SUBACK, a PUBLISH or PUBREL to a
    # persistent session) must never run ahead of what it has committed: after a kill -9 the broker
    # restarts from its store and must agree with what every client was told. The protocol holds
    # such output, and all output after it on the same connection, until a storage barrier releases it.

    def cover_held(self) -> int:
        """How many held items the barrier being registered now will release (all of them so far)."""
        return self.protocol.cover_held()

    def release_held(self, count: int) -> None:
        """A storage commit covered the first ``count`` held items: send them."""
        self.protocol.release_held(count)
        if self.closed:
            self.protocol.data_to_send()  # the session keeps its state; the client is told again when it resumes
            return
        self._pump()

    # -- CONNECT (what the broker decided) ------------------------------------------------------

    def accept(
        self,
        packet: p.Connect,
        session_present: bool,
        keep_alive: int,
        properties: dict[int, Any] | None,
        after_commit: bool,
    ) -> None:
        """CONNACK: the client is in (see ``ServerProtocol.accept``). Written at once unless it must
        wait for a commit: saves a loop callback per connection."""
        session = self.session
        assert session is not None
        self.protocol.accept(packet, session_present, keep_alive, properties, session.inbound_qos2, after_commit)
        if after_commit:
            self._pump()
        else:
            self._flush()

    def refuse(self, code: int, reason: str) -> None:
        """A refusing CONNACK, then close: the CONNACK must arrive, whatever the client sent after CONNECT."""
        self.protocol.refuse(code)
        self.close_gracefully(reason)

    # -- what a transport in front of it needs (transports.websocket.ServedConnection) -----------

    @property
    def counters(self) -> Stats:
        """Where a transport in front of this connection counts what only it sees (the broker's)."""
        return self.broker.stats

    @property
    def lingering(self) -> set[Any]:
        """Where sockets closing with a reason wait (``transports.linger``): the broker's."""
        return self.broker.lingering

    # -- closing --------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close the network connection after flushing what is queued."""
        if self.closed:
            return
        self.closed = True
        self.disconnect_reason = reason
        self._flush()
        transport = self.transport
        if transport is not None:
            transport.close()
            if transport.get_write_buffer_size():
                # A client that stops reading would keep the connection (and its session) forever.
                self.loop.call_later(_CLOSE_LINGER, self.abort)

    def close_gracefully(self, reason: str) -> None:
        """Close after a last packet that must reach the client (a DISCONNECT with a reason, a
        refusing CONNACK): the socket goes to a ``Linger`` that sends what is queued, shuts down
        writing and discards what the client still sends for a bounded time, so unread input
        cannot make the kernel reset the connection and throw the packet away. The broker is
        done with the connection at once (``connection_lost`` comes on the next turn)."""
        if self.closed:
            return
        self.closed = True
        self.disconnect_reason = reason
        self._flush()
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # aborted while flushing (stuck): connection_lost comes the usual way
        self.transport = None  # nothing more is written: the socket is the linger's now
        linger(transport, self.broker.lingering, self.loop)
        self.loop.call_soon(self._forget, None)

    def abort(self) -> None:
        """Drop the network connection at once, discarding unsent output."""
        if self.transport is not None:
            self.transport.abort()

    def close_with(self, code: int, reason: str, properties: dict[int, Any] | None = None) -> None:
        """Close, telling an MQTT 5 client why (see ``ServerProtocol.disconnect``)."""
        if self.closed:
            return
        self.protocol.disconnect(code, reason, properties)
        self.close_gracefully(reason)

    def protocol_violation(self, exc: ProtocolError) -> None:
        log.info("protocol violation by %s (%s): %s", self.client_id or "-", self.peer, exc)
        self.broker.stats.protocol_errors += 1
        protocol = self.protocol
        if not protocol.version:
            protocol.version = protocol.protocol_level  # a bad CONNECT: answer in its protocol level
        self.close_with(exc.reason_code, str(exc.args[0]))

    def hold_for_login(self, login: asyncio.Future[Any]) -> None:
        """The broker checks this CONNECT off the event loop: read nothing more until it is
        decided; what already arrived waits in the protocol (``login_decided``)."""
        self._login = login
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def holding(self, login: asyncio.Future[Any]) -> bool:
        """Whether reading waits for ``login`` (and not for something the broker asked since)."""
        return self._login is login

    def login_decided(self) -> None:
        """The login is decided (CONNACK sent, or the client refused): handle what the client sent
        meanwhile, in order, and read again."""
        self._login = None
        if self.closed:
            return
        self.resume_reading()
        self._handle_events()

    def check_timeouts(self, now: float) -> None:
        """Called by the broker's periodic sweep rather than from a timer per connection: timers
        would cost a libuv handle each, set and cancelled on every connect and disconnect. The
        deadlines are the protocol's (``handle_timer``); the slow-consumer clock is this side's."""
        if self.closed:
            return
        protocol = self.protocol
        if protocol.connected:
            timeout = self.limits.slow_consumer_timeout
            if self._capped_since and timeout and self._check_slow_consumer(now, timeout):
                return
            if self.reading_paused:
                protocol.reading_paused(now)  # we stopped reading, not the client: not idle
        expired = protocol.handle_timer(now)
        if expired is None:
            return
        if expired.code:
            self.close_with(expired.code, expired.reason)
        else:
            self.close(expired.reason)

    def rate_limit(self, rate: float) -> None:
        """Token bucket for ``max_publish_rate`` (a burst of one second's worth): a client over its
        rate loses nothing and is not cut off; its reads pause until the bucket has refilled."""
        now = self.loop.time()
        bucket = self._rate
        if bucket is None:
            bucket = self._rate = _RateBucket()
        burst = rate if rate > 1.0 else 1.0
        tokens = bucket.tokens + (now - bucket.at) * rate
        if tokens > burst:
            tokens = burst
        tokens -= 1.0
        bucket.tokens = tokens
        bucket.at = now
        transport = self.transport
        if tokens < 0.0 and transport is not None:
            if not self.reading_paused:
                self.reading_paused = True
                transport.pause_reading()
            if bucket.pause_timer is not None:  # the rest of this read deepened the deficit
                bucket.pause_timer.cancel()
            bucket.pause_timer = self.loop.call_later(-tokens / rate, self.resume_reading)
