"""One client connection: an ``asyncio.Protocol`` that feeds the codec and speaks for the session.

Reads are parsed in one pass per ``data_received``; writes are appended to a list and flushed
with one ``writelines`` per event-loop turn, or at once when they pass the high-water mark (one
turn can carry megabytes). Flow control is explicit, and a slow client pays for itself only: once
its write buffer reaches ``max_write_buffer`` (a burst to a fast client fits below it), and until it
drains below ``write_buffer_low``, QoS 0 messages to it are dropped (counted) and QoS 1/2 wait in its
session queue, which is bounded (``max_queued_messages``, ``max_queued_bytes``). No publisher is ever
held back for a subscriber's sake. A client that stays at its cap (buffer past ``write_buffer_high``
and not draining, or queue full and not acknowledging) for ``slow_consumer_timeout`` seconds is
disconnected; past twice ``max_write_buffer`` (only replies it owes grow it then) it is dropped at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from ..hooks import WRITE, Reject
from ..mqtt import packets as p
from ..mqtt.codec import Parser, UnsupportedProtocolVersion, encode
from ..mqtt.errors import ProtocolError
from ..mqtt.properties import PropertyId, encode_varint
from ..mqtt.reason_codes import ConnackReturnCode, ReasonCode
from ..mqtt.topics import client_may_publish, is_bridge_state
from ..transports.linger import linger
from ..transports.tls import certificate_identity
from .message import PACKET_ID_BYTES, Message
from .session import RECEIVED, SENT, Delivery

if TYPE_CHECKING:
    from .broker import Broker
    from .session import Session

log = logging.getLogger("wrenmq.connection")

_TOPIC_ALIAS = PropertyId.TOPIC_ALIAS
_EXPIRY = PropertyId.MESSAGE_EXPIRY_INTERVAL
_SUB_ID = PropertyId.SUBSCRIPTION_IDENTIFIER
_PINGRESP = b"\xd0\x00"
_STUCK_FACTOR = 2  # a connection whose unsent output passes this many max_write_buffer is dropped
_CLOSE_LINGER = 2.0  # seconds a closing connection has to flush its output before it is aborted


class Connection(asyncio.Protocol):
    def __init__(self, broker: Broker, listener: Any = None) -> None:
        self.broker = broker
        self.listener = listener  # the transports.Listener that accepted it (None: embedded/tests)
        self.auth: Any = None  # the AuthResult of the hook that let the client in
        self.cert_identity: str | None = None  # CN of a verified TLS client certificate
        self.over_limit = False  # accepted past max_connections: CONNECT is refused with Server busy
        self.auth_expires_at = 0.0  # loop time at which the login expires (0: never)
        self._rate_tokens = 1e9  # max_publish_rate bucket (capped to its burst on first use)
        self._rate_at = 0.0
        self.loop = broker.loop
        self.limits = limits = broker.limits
        self.transport: asyncio.Transport | None = None
        self.parser = Parser(limits.max_packet_size)
        self.version = 0
        self.bridge = False  # a Mosquitto bridge (protocol level 0x83/0x84): see Broker.subscribe
        self.client_id = ""
        self.username: str | None = None
        self._peer: str | None = None  # "host:port", resolved on first use (a syscall or two)
        self.session: Session | None = None
        self.connected = False  # CONNACK accepted
        self.closed = False
        self.keep_alive = 0
        self.last_rx = 0.0  # when the last complete control packet arrived
        self._partial_since = 0.0  # when the unfinished packet in the parser began (0: none)
        self.send_quota = 65535  # the client's Receive Maximum, capped by max_inflight_messages
        self.max_packet_out = 0  # the client's Maximum Packet Size (0: none)
        self.topic_alias_max_in = 0
        self.topic_aliases: dict[int, str] = {}
        self.topic_alias_out_max = 0  # aliases we may send: the client's maximum, capped (0: none)
        self._aliases_out: dict[str, int] | None = None  # topic -> alias, least recently used first
        # The client asked for the broker's message id on each PUBLISH (a CONNECT user property;
        # the realtime browser client does, to drop what it got over another transport).
        self.message_ids = False
        self.will: Message | None = None
        self.will_delay = 0
        self.disconnect_reason = "connection lost"
        self.congested = False  # buffer reached max_write_buffer, not yet below low: QoS 0 dropped, 1/2 queued
        self.writing_paused = False
        self.reading_paused = False
        self.request_problem_info = True
        self.connect_expiry = 0  # the Session Expiry Interval the client asked for in CONNECT
        self._out: list[bytes] = []
        self._out_size = 0  # bytes in _out; past write_buffer_high they are flushed at once
        self._flush_scheduled = False
        self._capped_since = 0.0  # since when its output has been at its cap without draining (0: not)
        self._buffer_seen = 0  # write buffer size at the last sweep, to tell a slow reader from a stopped one
        self._held: list[bytes] = []  # output waiting for a storage commit (strict durability)
        self._held_covered = 0  # how many of them a registered storage barrier will release
        self._inbound_unacked = 0
        self.opened_at = 0.0
        self.idle_limit = 0.0  # 1.5 x keep alive; 0: no limit
        self._pause_timer: asyncio.TimerHandle | None = None
        # While a login is checked off the loop: the check, the packets that followed CONNECT in its
        # read, and the reads since (handled in order once it is decided; see hold_for_login).
        self._login: asyncio.Future[Any] | None = None
        self._login_packets: list[p.AnyPacket] = []
        self._login_input: list[bytes] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are duck-typed as one.
        self.transport = transport = cast(asyncio.Transport, transport)
        if log.isEnabledFor(logging.INFO):
            self._peer = self._resolve_peer()  # the disconnect line names it after the socket is gone
        limits = self.limits
        transport.set_write_buffer_limits(limits.write_buffer_high, limits.write_buffer_low)
        self.last_rx = self.opened_at = self.loop.time()
        # The connect timeout and keep alive are enforced by the broker's sweep (check_timeouts).
        self.broker.stats.sockets_total += 1
        connections = self.broker.connections
        if limits.max_connections and len(connections) >= limits.max_connections:
            self.over_limit = True
        connections.add(self)
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
        waiting = self._login_input
        if waiting is not None:  # a login is being checked: keep the bytes, in order, until it is decided
            waiting.append(data)
            return
        self.broker.stats.bytes_received += len(data)
        self._receive(data, None)

    def _receive(self, data: bytes, packets: list[p.AnyPacket] | None) -> None:
        """Handle the packets ``data`` completes (or ``packets``, parsed before), in order."""
        try:
            if packets is None:
                packets = self.parser.feed(data)
                if packets or self.parser.buffered:
                    self._progress(bool(packets))
            for packet in packets:
                if self.closed:
                    return
                ptype = packet.type
                if ptype == 3:
                    self._on_publish(packet)  # type: ignore[arg-type]
                elif not self.connected:
                    if ptype != p.CONNECT:
                        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-1] first packet is not CONNECT")
                    self._on_connect(packet)  # type: ignore[arg-type]
                    if self._login_input is not None:  # (CONNECT is always the first packet here)
                        self._login_packets = packets[1:]
                        break
                else:
                    handler = _HANDLERS.get(ptype)
                    if handler is None:
                        raise ProtocolError(
                            ReasonCode.PROTOCOL_ERROR, f"{p.PACKET_NAMES[ptype]} is not sent by a client"
                        )
                    handler(self, packet)
            if self.parser.error is not None and not self.closed and self._login_input is None:
                raise self.parser.error  # a bad packet after the good ones handled above
        except UnsupportedProtocolVersion as unsupported:  # (a name of its own: mypyc types it)
            # [MQTT-3.1.2-2]: answer with CONNACK 0x01 (3.1.1 form) / 0x84 and close.
            if unsupported.level == 5:
                self._write(encode(p.Connack(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), 5))
            else:
                self._write(encode(p.Connack(False, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION), 4))
            self.close_gracefully(f"unsupported protocol version {unsupported.level}")
        except ProtocolError as exc:
            self.protocol_violation(exc)
        except Exception:
            self.broker.stats.internal_errors += 1
            log.exception("internal error handling a packet from %s", self.client_id or self.peer)
            self.close_with(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
        persist = self.broker.persist
        if persist.held:
            persist.seal()  # one barrier covers all output this read held back, on every connection

    def _progress(self, completed: bool) -> None:
        """Keep alive counts complete control packets only [MQTT-3.1.2-24], so bytes trickled into
        a packet that never finishes do not keep a client connected; the unfinished packet gets
        its own deadline (``packet_read_timeout``, checked in ``check_timeouts``)."""
        now = self.loop.time()
        if completed:
            self.last_rx = now
        if not self.parser.buffered:
            self._partial_since = 0.0
        elif completed or not self._partial_since:
            self._partial_since = now

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
        if self._pause_timer is not None:
            self._pause_timer.cancel()
        self.broker.connections.discard(self)
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

    def _write(self, data: bytes) -> None:
        """Send ``data`` after everything before it: behind held output while there is some."""
        if self._held:
            self._hold(data)
        else:
            self._out.append(data)
            self._queued(len(data))

    def _emit(self, data: bytes) -> None:
        """Send ``data`` now, ahead of any held output (the last words of a closing connection)."""
        self._out.append(data)
        self._queued(len(data))

    def _queued(self, size: int) -> None:
        """``size`` more bytes were appended to ``_out``: flush on this loop turn, or at once past
        high-water (one read can carry megabytes) so pause_writing can stop what follows."""
        self._out_size += size
        if self._out_size >= self.limits.write_buffer_high:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        size, self._out_size = self._out_size, 0
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
        self.abort()

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
            self.close_with(ReasonCode.QUOTA_EXCEEDED, f"slow consumer: {why}")
        return True

    def _check_congested(self) -> None:
        """Called while writing is paused: once the output waiting for this client reaches
        max_write_buffer it is congested (QoS 0 dropped, QoS 1/2 queued) until resume_writing."""
        transport = self.transport
        if transport is not None and self._out_size + transport.get_write_buffer_size() >= self.limits.max_write_buffer:
            self.congested = True

    def resume_reading(self) -> None:
        """Read from the client again: its ``max_publish_rate`` bucket has refilled, or its login
        is decided. (Nothing else pauses reading: no client waits on another's buffer.)"""
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
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
            return
        if sub_ids is None and message.expires_at is None and not self.message_ids:
            data = message.wire(self.version, 0, retain)[0]
        else:
            message_id = self.broker.message_id(message) if self.message_ids else None
            data = message.wire_at(self.version, 0, retain, now, sub_ids, message_id)[0]
        if self.max_packet_out and len(data) > self.max_packet_out:  # [MQTT-3.1.2-25]
            self.broker.stats.dropped_too_large += 1
            return
        if self.topic_alias_out_max:
            self._write_aliased(data, b"", b"", message, False)
        else:
            self._write(data)
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
        if delivery.sub_ids is None and message.expires_at is None and not self.message_ids:
            head, tail = message.wire(self.version, delivery.qos, delivery.retain)
        else:
            message_id = self.broker.message_id(message) if self.message_ids else None
            head, tail = message.wire_at(self.version, delivery.qos, delivery.retain, now, delivery.sub_ids, message_id)
        if self.max_packet_out and len(head) + 2 + len(tail) > self.max_packet_out:
            # Too large for this client: discard as if delivered [MQTT-3.1.2-25].
            self.broker.stats.dropped_too_large += 1
            session = self.session
            if session is not None:
                session.acknowledge(delivery.packet_id, SENT)
            return
        if dup:
            head = bytes((head[0] | 0x08,)) + head[1:]
        # A persistent session's packet id may be held by the client (QoS 2) across our crash: the
        # record that says which message it names must be committed before the id goes out.
        hold = bool(self._held) or self._durable_session()
        if self.topic_alias_out_max:
            self._write_aliased(head, PACKET_ID_BYTES[delivery.packet_id], tail, message, hold)
        elif hold:
            self._hold(head + PACKET_ID_BYTES[delivery.packet_id] + tail)
        else:
            out = self._out
            out.append(head)
            out.append(PACKET_ID_BYTES[delivery.packet_id])
            out.append(tail)
            self._queued(len(head) + 2 + len(tail))
        broker = self.broker
        stats = broker.stats
        stats.messages_sent_qos[delivery.qos] += 1
        stats.publish_bytes_sent += len(message.payload)
        if broker.hooks.delivered:
            broker.hooks.notify(broker.hooks.delivered, self, message)
        if self.writing_paused:
            self._check_congested()

    def _write_aliased(self, head: bytes, pid: bytes, tail: bytes, message: Message, hold: bool) -> None:
        """Write ``head + pid + tail`` (the PUBLISH as encoded once for every subscriber; for QoS 0
        ``head`` is all of it) with an outbound Topic Alias, for a client that allows them.

        A topic the connection has an alias for goes as an empty Topic Name and the alias; a new
        one as the Topic Name and a new alias, 1 up to the client's maximum [MQTT-3.3.2-8],
        [MQTT-3.3.2-11]; when all are taken, the least recently used alias is given to the new
        topic (a PUBLISH with both re-maps it), so the aliases follow the topics the client gets
        now, not the first ones it got (often a burst of retained messages). Only the small parts
        are built per delivery; the payload is the message's own bytes. Aliases live and die with
        the connection [MQTT-3.3.2-7].
        """
        # head: first byte, Remaining Length, Topic Name; then the properties (in the tail for QoS 1/2).
        pos = 1
        while head[pos] & 0x80:
            pos += 1
        pos += 1
        topic_end = pos + 2 + ((head[pos] << 8) | head[pos + 1])
        props, start = (tail, 0) if pid else (head, topic_end)
        length = 0
        shift = 0
        while True:
            byte = props[start]
            start += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        aliases = self._aliases_out
        if aliases is None:
            aliases = self._aliases_out = {}
        topic = message.topic
        alias = aliases.get(topic, 0)
        evict = ""
        if alias:
            topic_bytes = b""
        else:
            topic_bytes = head[pos + 2 : topic_end]
            if len(aliases) < self.topic_alias_out_max:
                alias = len(aliases) + 1
            else:
                evict = next(iter(aliases))
                alias = aliases[evict]
        block = encode_varint(length + 3) + b"\x23" + PACKET_ID_BYTES[alias] + props[start : start + length]
        payload = message.payload
        remaining = 2 + len(topic_bytes) + len(pid) + len(block) + len(payload)
        first = bytes((head[0],)) + encode_varint(remaining)
        size = len(first) + remaining
        if topic_bytes and self.max_packet_out and size > self.max_packet_out:
            # Only the alias made it too large (3 bytes): send it without [MQTT-3.1.2-25].
            self._put((head, pid, tail), len(head) + len(pid) + len(tail), hold)
            return
        if evict:
            del aliases[evict]
        elif not topic_bytes:
            del aliases[topic]  # re-inserted last: most recently used
        aliases[topic] = alias
        start_bytes = first + PACKET_ID_BYTES[len(topic_bytes)] + topic_bytes + pid  # (2-byte lengths, too)
        self._put((start_bytes, block, payload), size, hold)

    def _put(self, pieces: tuple[bytes, ...], size: int, hold: bool) -> None:
        """Write one packet given in pieces: now, or behind held output (see ``_hold``)."""
        if hold or self._held:
            self._hold(b"".join(pieces))
        else:
            self._out.extend(pieces)
            self._queued(size)

    def send_pubrel(self, packet_id: int) -> None:
        data = b"\x62\x02" + PACKET_ID_BYTES[packet_id]
        if self._durable_session():
            self._hold(data)  # after the PUBREC's state change is committed: see send_publish
        else:
            self._write(data)

    def send_suback(self, data: bytes) -> None:
        """SUBACK or UNSUBACK: a persistent session's subscriptions are committed first."""
        if self._durable_session():
            self._hold(data)
        else:
            self._write(data)

    def _durable_session(self) -> bool:
        """Whether output that announces a change to this client's session must wait for its commit."""
        if not self.broker.persist.strict:
            return False
        session = self.session
        return session is not None and session.expiry_interval > 0

    def _ack(self, data: bytes, durable: bool = False) -> None:
        """Send an acknowledgement of an inbound packet. ``durable`` acks (strict durability: what
        they acknowledge was stored) wait for the commit; every later output queues behind held
        output, so acks keep the order of the packets they answer [MQTT-4.6.0-2]."""
        if durable or self._held:
            self._hold(data)
        else:
            if data[0] == 0x40:
                self._inbound_unacked -= 1
            self._out.append(data)
            self._queued(len(data))

    # -- output held for a storage commit (strict durability) -------------------------------------
    # What the broker tells a client (PUBACK, PUBREC, PUBCOMP, SUBACK, a PUBLISH or PUBREL to a
    # persistent session) must never run ahead of what it has committed: after a kill -9 the broker
    # restarts from its store and must agree with what every client was told. Such output, and all
    # output after it on the same connection, waits in ``_held`` until a storage barrier releases it.

    def _hold(self, data: bytes) -> None:
        held = self._held
        held.append(data)
        if len(held) - self._held_covered == 1:
            self.broker.persist.hold(self)  # the first item no barrier covers yet

    def send_committed(self, data: bytes) -> None:
        """Send ``data`` once everything enqueued for storage so far is committed."""
        self._hold(data)

    def cover_held(self) -> int:
        """How many held items the barrier being registered now will release (all of them so far)."""
        count = len(self._held) - self._held_covered
        self._held_covered += count
        return count

    def release_held(self, count: int) -> None:
        """A storage commit covered the first ``count`` held items: send them."""
        items = self._held[:count]
        del self._held[:count]
        self._held_covered -= count
        if self.closed:
            return  # the session keeps its state; the client is told again when it resumes
        out = self._out
        size = 0
        for data in items:
            if data[0] == 0x40:
                self._inbound_unacked -= 1
            out.append(data)
            size += len(data)
        self._queued(size)

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
        """Close, telling an MQTT 5 client why with a DISCONNECT [MQTT-4.13.2-1]."""
        if self.closed:
            return
        if self.version == 5 and self.connected:
            props = dict(properties or {})
            if self.request_problem_info:
                props[PropertyId.REASON_STRING] = reason[:256]
            self._emit(encode(p.Disconnect(code, props), 5))
        elif self.version == 5 and not self.connected and code >= 0x80:
            # A violation before CONNACK is answered with a CONNACK carrying the reason [MQTT-4.13.1-1].
            self._emit(encode(p.Connack(False, code), 5))
        self.close_gracefully(reason)

    def protocol_violation(self, exc: ProtocolError) -> None:
        log.info("protocol violation by %s (%s): %s", self.client_id or "-", self.peer, exc)
        self.broker.stats.protocol_errors += 1
        if not self.version:
            self.version = self.parser.protocol_level  # a bad CONNECT: answer in its protocol level
        self.close_with(exc.reason_code, str(exc.args[0]))

    def hold_for_login(self, login: asyncio.Future[Any]) -> None:
        """The broker checks this CONNECT off the event loop: read nothing more until it is
        decided, and keep what already arrived for then (``login_decided``)."""
        self._login = login
        self._login_input = []
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def login_decided(self) -> None:
        """The login is decided (CONNACK sent, or the client refused): handle what the client sent
        meanwhile, in order, and read again."""
        self._login = None
        packets, self._login_packets = self._login_packets, []
        waiting, self._login_input = self._login_input, None
        if self.closed:
            return
        self.resume_reading()
        self._receive(b"", packets)
        for data in waiting or ():
            if self.closed:
                return
            self.data_received(data)

    def start_keepalive(self) -> None:
        self.idle_limit = self.keep_alive * 1.5

    def check_timeouts(self, now: float) -> None:
        """Called by the broker's periodic sweep rather than from a timer per connection: timers
        would cost a libuv handle each, set and cancelled on every connect and disconnect.

        A socket must send CONNECT within the connect timeout; a client that sends no complete
        control packet for 1.5 x its Keep Alive is disconnected [MQTT-3.1.2-24] (5.0:
        [MQTT-3.1.2-22]), and so is one whose unfinished packet takes ``packet_read_timeout``.
        """
        if self.closed:
            return
        if not self.connected:
            if now - self.opened_at >= self.limits.connect_timeout:
                self.close("no CONNECT within the connect timeout")
            return
        if self.auth_expires_at and now >= self.auth_expires_at:
            # The token or credentials the client logged in with ran out: 0xA0 Maximum connect time.
            self.close_with(ReasonCode.MAXIMUM_CONNECT_TIME, "credentials expired")
            return
        timeout = self.limits.slow_consumer_timeout
        if self._capped_since and timeout and self._check_slow_consumer(now, timeout):
            return
        if self.reading_paused:
            # We stopped reading, not the client: not idle, and its packet cannot progress.
            self.last_rx = now
            if self._partial_since:
                self._partial_since = now
            return
        limit = self.idle_limit
        if limit and now - self.last_rx >= limit:
            self.close_with(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
            return
        deadline = self.limits.packet_read_timeout
        if self._partial_since and deadline and now - self._partial_since >= deadline:
            # A started packet that does not finish holds up to max_packet_size: bound its time.
            self.close_with(ReasonCode.KEEP_ALIVE_TIMEOUT, f"packet not completed within {deadline:g} s")

    def write_now(self, data: bytes) -> None:
        """Write at once when nothing is queued (CONNACK): saves a loop callback per connection."""
        if self._out or self._held or self.transport is None:
            self._write(data)
        else:
            self.broker.stats.bytes_sent += len(data)
            self.transport.write(data)

    # -- inbound packets ------------------------------------------------------------------------

    def _on_connect(self, packet: p.Connect) -> None:
        self.version = packet.protocol_level
        self.broker.accept_connect(self, packet)

    def _on_publish(self, packet: p.Publish) -> None:
        if not self.connected:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-1] PUBLISH before CONNECT")
        qos = packet.qos
        limits = self.limits
        if qos > limits.maximum_qos:
            raise ProtocolError(ReasonCode.QOS_NOT_SUPPORTED, "[MQTT-3.2.2-11] QoS above Maximum QoS")
        if packet.retain and not limits.retain_available:
            raise ProtocolError(ReasonCode.RETAIN_NOT_SUPPORTED, "[MQTT-3.2.2-14] retain is not available")
        props = packet.properties
        topic = packet.topic
        expires_at = None
        if props:
            if _SUB_ID in props:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.3.4-6] subscription identifier from a client")
            alias = props.get(_TOPIC_ALIAS)
            if alias is not None:
                if not alias or alias > self.topic_alias_max_in:
                    raise ProtocolError(
                        ReasonCode.TOPIC_ALIAS_INVALID, f"[MQTT-3.3.2-9] topic alias {alias} out of range"
                    )
                if topic:
                    self.topic_aliases[alias] = topic
                else:
                    topic = self.topic_aliases.get(alias, "")
                    if not topic:
                        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"[MQTT-3.3.4-?] unknown topic alias {alias}")
                props = {k: v for k, v in props.items() if k != _TOPIC_ALIAS}
            expiry = props.get(_EXPIRY)
            if expiry is not None:
                expires_at = self.loop.time() + expiry
        session = self.session
        assert session is not None
        if qos == 2 and packet.packet_id in session.inbound_qos2:
            # A resent QoS 2 PUBLISH we already own: acknowledge, do not deliver twice [MQTT-4.3.3-9].
            self._ack(bytes((0x50, 2)) + PACKET_ID_BYTES[packet.packet_id])  # type: ignore[index]
            return
        if qos:
            self._inbound_unacked += 1
            if self._inbound_unacked + len(session.inbound_qos2) > limits.receive_maximum:
                raise ProtocolError(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "[MQTT-3.3.4-7] receive maximum exceeded")
        if limits.max_publish_rate:
            self._rate_limit(limits.max_publish_rate)
        # Levels are at most len + 1: count them only for a topic long enough to have too many.
        if len(topic) > limits.max_topic_length or (
            len(topic) >= limits.max_topic_levels and topic.count("/") >= limits.max_topic_levels
        ):
            log.info("client %s published to a topic beyond max_topic_length/levels", self.client_id)
            self._deny_publish(packet, ReasonCode.TOPIC_NAME_INVALID)
            return
        if (
            topic[0] == "$"  # (a topic is never empty here)
            and not client_may_publish(topic)
            and not (self.bridge and is_bridge_state(topic, self.client_id))
        ):
            self.broker.stats.acl_denied += 1
            log.info("client %s may not publish to %s (the broker's topics)", self.client_id, topic)
            self._deny_publish(packet, ReasonCode.NOT_AUTHORIZED)
            return
        message = Message(topic, packet.payload, qos, packet.retain, props, expires_at, self.client_id)
        broker = self.broker
        stats = broker.stats
        stats.messages_received_qos[qos] += 1
        stats.publish_bytes_received += len(packet.payload)
        persist = broker.persist
        writes = persist.writes
        hooks = broker.hooks
        prefixes = hooks.publish_prefixes  # publish hooks that want some topics only (presence)
        if hooks.acl_check or (hooks.publish and (prefixes is None or topic.startswith(prefixes))):
            screened = self._screen_publish(packet, message)
            if screened is None:
                return
            message = screened
        matched = broker.route(message)
        if hooks.published:
            hooks.notify(hooks.published, self, message, matched)
        if not qos:
            return
        # Strict durability: a message that had to be stored is acknowledged after its commit.
        durable = persist.strict and persist.writes != writes
        pid = PACKET_ID_BYTES[packet.packet_id]  # type: ignore[index]
        if qos == 1:
            if self.version == 5 and not matched:
                self._ack(b"\x40\x03" + pid + b"\x10", durable)  # No matching subscribers
            else:
                self._ack(b"\x40\x02" + pid, durable)
        else:
            session.inbound_qos2.add(packet.packet_id)  # type: ignore[arg-type]
            if session.persistent:
                persist.inbound_add(session, packet.packet_id)  # type: ignore[arg-type]
                # The packet id is what makes a resent PUBLISH a duplicate [MQTT-4.3.3-10]: PUBREC
                # waits for it to be committed even when nothing stored the message itself.
                durable = persist.strict
            self._inbound_unacked -= 1
            if self.version == 5 and not matched:
                self._ack(b"\x50\x03" + pid + b"\x10", durable)
            else:
                self._ack(b"\x50\x02" + pid, durable)

    def _screen_publish(self, packet: p.Publish, message: Message) -> Message | None:
        """ACL and publish hooks: the message to route (a hook may have replaced it), or None once
        the PUBLISH has been denied and answered."""
        hooks = self.broker.hooks
        if hooks.acl_check and not hooks.run_acl_check(self, message.topic, WRITE):
            self.broker.stats.acl_denied += 1
            log.info("client %s may not publish to %s", self.client_id, message.topic)
            self._deny_publish(packet, ReasonCode.NOT_AUTHORIZED)
            return None
        if not hooks.publish:
            return message
        try:
            return hooks.run_publish(self, message)
        except Reject as reject:  # (a name of its own: mypyc types the except variable)
            log.info("publish by %s to %s rejected: %s", self.client_id, message.topic, reject)
            code = reject.reason_code if reject.reason_code >= 0x80 else ReasonCode.UNSPECIFIED_ERROR
            self._deny_publish(packet, code)
            return None

    def _rate_limit(self, rate: float) -> None:
        """Token bucket for ``max_publish_rate`` (a burst of one second's worth): a client over its
        rate loses nothing and is not cut off; its reads pause until the bucket has refilled."""
        now = self.loop.time()
        burst = rate if rate > 1.0 else 1.0
        tokens = self._rate_tokens + (now - self._rate_at) * rate
        if tokens > burst:
            tokens = burst
        tokens -= 1.0
        self._rate_tokens = tokens
        self._rate_at = now
        transport = self.transport
        if tokens < 0.0 and transport is not None:
            if not self.reading_paused:
                self.reading_paused = True
                transport.pause_reading()
            if self._pause_timer is not None:  # the rest of this read deepened the deficit
                self._pause_timer.cancel()
            self._pause_timer = self.loop.call_later(-tokens / rate, self.resume_reading)

    def _deny_publish(self, packet: p.Publish, code: int) -> None:
        """A denied PUBLISH is dropped; QoS 1/2 get their ack, carrying the reason in MQTT 5. In
        3.1.1 there is no way to say no, so the ack is the usual one (as Mosquitto does)."""
        self.broker.stats.dropped_denied += 1
        qos = packet.qos
        if not qos:
            return
        pid = PACKET_ID_BYTES[packet.packet_id]  # type: ignore[index]
        if qos == 2:
            self._inbound_unacked -= 1  # a QoS 1 PUBLISH counts until its PUBACK is written (_ack)
        if self.version == 5:
            # A PUBREC with a failure code ends the QoS 2 exchange [MQTT-4.3.3-4 context].
            self._ack(bytes((0x40 if qos == 1 else 0x50, 3)) + pid + bytes((code,)))
        elif qos == 1:
            self._ack(b"\x40\x02" + pid)
        else:
            session = self.session
            if session is not None:
                session.inbound_qos2.add(packet.packet_id)  # type: ignore[arg-type]
            self._ack(b"\x50\x02" + pid)

    def _on_puback(self, packet: p.Puback) -> None:
        session = self.session
        assert session is not None
        if session.acknowledge(packet.packet_id, SENT) is not None and session.backlog:
            self.draining()
            session.fill(self.loop.time())

    def _on_pubrec(self, packet: p.Pubrec) -> None:
        session = self.session
        assert session is not None
        delivery = session.inflight_out.get(packet.packet_id)
        if delivery is None or delivery.state != SENT:
            if delivery is None and self.version == 5:
                self._write(encode(p.Pubrel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5))
            return
        if packet.reason_code >= 0x80:
            # The receiver refused the message: the flow ends here [MQTT-4.3.3-4 (5.0)].
            session.acknowledge(packet.packet_id, SENT)
            if session.backlog:
                self.draining()
                session.fill(self.loop.time())
            return
        delivery.state = RECEIVED
        if session.persistent:
            self.broker.persist.message_update(session, delivery)
        self.send_pubrel(packet.packet_id)

    def _on_pubrel(self, packet: p.Pubrel) -> None:
        session = self.session
        assert session is not None
        pid = PACKET_ID_BYTES[packet.packet_id]
        if packet.packet_id in session.inbound_qos2:
            session.inbound_qos2.discard(packet.packet_id)
            durable = False
            if session.persistent:
                self.broker.persist.inbound_delete(session, packet.packet_id)
                # The client may reuse the packet id once it has PUBCOMP: the id must be free in the
                # store by then, or a new message on it is taken for a resend and lost after a crash.
                durable = self.broker.persist.strict
            self._ack(b"\x70\x02" + pid, durable)
        elif self.version == 5:
            self._ack(b"\x70\x03" + pid + bytes((ReasonCode.PACKET_IDENTIFIER_NOT_FOUND,)))
        else:
            self._ack(b"\x70\x02" + pid)

    def _on_pubcomp(self, packet: p.Pubcomp) -> None:
        session = self.session
        assert session is not None
        if session.acknowledge(packet.packet_id, RECEIVED) is not None and session.backlog:
            self.draining()
            session.fill(self.loop.time())

    def _on_subscribe(self, packet: p.Subscribe) -> None:
        self.broker.subscribe(self, packet)

    def _on_unsubscribe(self, packet: p.Unsubscribe) -> None:
        self.broker.unsubscribe(self, packet)

    def _on_pingreq(self, packet: p.Pingreq) -> None:
        self._write(_PINGRESP)

    def _on_disconnect(self, packet: p.Disconnect) -> None:
        session = self.session
        props = packet.properties
        expiry = props.get(PropertyId.SESSION_EXPIRY_INTERVAL) if props else None
        if expiry is not None and session is not None:
            if self.connect_expiry == 0 and expiry != 0:
                # [MQTT-3.14.2-2]: cannot turn a non-persistent session into a persistent one.
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.14.2-2] session expiry set on DISCONNECT")
            session.expiry_interval = min(expiry, self.limits.max_session_expiry_interval)
        if packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL:
            self.will = None  # a normal DISCONNECT discards the will [MQTT-3.1.2-10]
            self.disconnect_reason = "client disconnected"
        else:
            self.disconnect_reason = "client disconnected with will"
        self.close(self.disconnect_reason)

    def _on_auth(self, packet: p.Auth) -> None:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-4.12.0-1] AUTH without an authentication method")

    def _on_connect_again(self, packet: p.Connect) -> None:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-2] second CONNECT")


_HANDLERS: dict[int, Any] = {
    p.CONNECT: Connection._on_connect_again,
    p.PUBACK: Connection._on_puback,
    p.PUBREC: Connection._on_pubrec,
    p.PUBREL: Connection._on_pubrel,
    p.PUBCOMP: Connection._on_pubcomp,
    p.SUBSCRIBE: Connection._on_subscribe,
    p.UNSUBSCRIBE: Connection._on_unsubscribe,
    p.PINGREQ: Connection._on_pingreq,
    p.DISCONNECT: Connection._on_disconnect,
    p.AUTH: Connection._on_auth,
}
