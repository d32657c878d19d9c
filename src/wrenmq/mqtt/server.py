"""The MQTT rules of one server-side connection, sans-I/O (as aioquic's ``QuicConnection`` and h11).

Bytes in: ``receive_data(data, now)``; events out: ``next_event()`` returns the next packet that
passed every rule of this connection (CONNECT first [MQTT-3.1.0-1] and once [MQTT-3.1.0-2],
QoS and retain within what the server grants, topic aliases resolved [MQTT-3.3.2-*], Receive
Maximum [MQTT-3.3.4-7..9], QoS 2 resends answered without a second delivery [MQTT-4.3.3-*]), or
a :class:`ProtocolError` naming the rule broken, after which nothing more comes. Bytes out:
``data_to_send()``; every ack and PUBLISH is encoded by the codec. Time is an argument:
``next_timer()`` / ``handle_timer(now)`` (connect timeout, keep alive x 1.5 [MQTT-3.1.2-24],
packet read timeout, login expiry). What the broker decides comes back as method calls:
``accept``/``refuse`` a CONNECT, ``ack_publish``/``deny_publish``, ``send_publish`` (with the
outbound Topic Alias), ``send`` (SUBACK, UNSUBACK), ``disconnect``.

**Output held for a commit (strict durability).** An ack must not run ahead of the storage
commit of what it acknowledges, and every later output of the connection waits behind it, so acks
keep the order of the packets they answer [MQTT-4.6.0-2]; a QoS 1 PUBLISH counts against Receive
Maximum until its PUBACK actually goes out. Both are rules of this connection's byte stream, so
the barrier lives here: methods take ``after_commit``; such output, and all output after it, waits
in ``_held``. The I/O side knows the storage only: when ``wants_barrier`` is set it registers the
connection with a storage barrier (``cover_held`` says how many items that barrier covers) and
feeds the commit back as ``release_held(count)``, as it feeds time to ``handle_timer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from . import packets as p
from .codec import MAX_PACKET_SIZE, Parser, alias_publish, encode, encode_ack, packet_id_bytes
from .errors import ProtocolError
from .properties import PropertyId
from .reason_codes import ConnackReturnCode, ReasonCode, connack_v3_code

if TYPE_CHECKING:
    from mypy_extensions import i32  # compiled: a 4-byte field (annotations only: no run-time import)

_TOPIC_ALIAS = PropertyId.TOPIC_ALIAS
_SUB_ID = PropertyId.SUBSCRIPTION_IDENTIFIER
# The same bytes every time, encoded once: PINGRESP, and CONNACK for 3.1/3.1.1 (return code 0),
# without and with Session Present.
_PINGRESP = encode(p.Pingresp(), p.MQTT_3_1_1)
_CONNACK_ACCEPTED = encode(p.Connack(False, 0), p.MQTT_3_1_1)
_CONNACK_SESSION_PRESENT = encode(p.Connack(True, 0), p.MQTT_3_1_1)

Event = p.Packet | ProtocolError
# No inbound QoS 2 ids (before CONNACK, and for a session that was never sent a QoS 2 PUBLISH): one
# shared empty set, never added to, so neither a connection nor its session allocates one of its
# own; ``accept`` gives the protocol its session's, and the first id makes a set (``_qos2_ids``),
# which the broker hands back to the session (``inbound_qos2`` after ``ack_publish``/``deny_publish``).
NO_IDS: Final[set[int]] = set()
# No packets waiting: shared, never appended to (receive_data replaces it), so an idle connection
# holds no list, nor the last packets it was sent, of its own.
_NO_PACKETS: Final[list[p.AnyPacket]] = []
# No output ready (``data_to_send`` between flushes): shared, and never appended to by anyone.
_NO_OUTPUT: Final[list[bytes]] = []


class ServerSettings:
    """What the server grants every client (the broker's ``Limits`` extends it): one object shared
    by all connections, so a connection holds one reference, not a copy of each value."""

    def __init__(self) -> None:
        self.max_packet_size: int = MAX_PACKET_SIZE
        self.maximum_qos: int = 2
        self.retain_available: bool = True
        self.receive_maximum: int = 65535
        self.max_inflight_messages: int = 65535
        self.topic_alias_maximum: int = 0
        self.topic_alias_out_maximum: int = 0
        self.connect_timeout: float = 10.0
        self.packet_read_timeout: float = 0.0


class Timeout:
    """A deadline passed (``handle_timer``): close, telling an MQTT 5 client ``code`` (0: just close)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class ServerProtocol(Parser):
    """One client connection's MQTT state, from the server's side. See the module docstring.

    It is its own ``Parser`` (the codec's incremental decoder, extended): the protocol owns the
    parsing of its byte stream, and one object per connection instead of two saves an object
    header and the pointer between them (about 60 bytes per idle connection, see BENCHMARKS.md).
    The parser's ``error`` is the parse error handed out after the good packets before it."""

    __slots__ = (
        "_aliases_in",
        "_aliases_out",
        "_held",
        "_held_covered",
        "_inbound_unacked",
        "_next",
        "_out",
        "_packets",
        "_partial_since",
        "connected",
        "expiry_at_connect",
        "failed",
        "inbound_qos2",
        "keep_alive",
        "last_rx",
        "login_expires_at",
        "max_packet_out",
        "opened_at",
        "out_size",
        "packets_in",
        "packets_out",
        "request_problem_info",
        "send_quota",
        "settings",
        "topic_alias_out_max",
        "version",
        "wants_barrier",
    )

    def __init__(self, settings: ServerSettings, now: float) -> None:
        super().__init__(settings.max_packet_size)
        self.settings = settings
        self._packets = _NO_PACKETS  # parsed, not yet handed out by next_event
        # Clocks (the caller's time, e.g. the event loop's).
        self.opened_at = now
        self.last_rx = now  # when the last complete control packet arrived
        self._partial_since = 0.0  # when the unfinished packet in the parser began (0: none)
        self.login_expires_at = 0.0  # when the client's credentials run out (0: never)
        self.max_packet_out = 0  # the client's Maximum Packet Size (0: none; up to 2**32 - 1)
        self._aliases_in: dict[int, str] | None = None
        self._aliases_out: dict[str, int] | None = None  # topic -> alias, least recently used first
        # Inbound QoS: the session's set of QoS 2 packet ids received and not yet released.
        self.inbound_qos2 = NO_IDS
        # Output: ready, and held for a storage commit.
        self._out: list[bytes] | None = None  # (made by the first output after each flush: see _output)
        self.out_size = 0
        self._held: list[bytes] | None = None  # (made when first needed: most connections never hold)
        # Control packets in (every one parsed) and out (every one but PUBLISH, which the broker
        # counts itself): Mosquitto's $SYS messages/received and messages/sent count all packets.
        self.packets_in = 0
        self.packets_out = 0
        # Small bounded numbers, then the flags, last and together: compiled, an i32 takes four
        # bytes and a bool one, so these share the eight bytes each would take between pointers
        # (mypyc lays fields out in the order they are first assigned here).
        self.version: i32 = 0  # the CONNECT's protocol level (0: none yet)
        self._next: i32 = 0  # the next of _packets to hand out
        self.keep_alive: i32 = 0  # in force (0: no limit; 1.5 x it without a packet ends the connection)
        self.send_quota: i32 = 65535  # the client's Receive Maximum, capped by max_inflight_messages
        self.topic_alias_out_max: i32 = 0  # aliases we may send: the client's maximum, capped (0: none)
        self._inbound_unacked: i32 = 0  # QoS 1/2 PUBLISHes not yet answered (Receive Maximum)
        self._held_covered: i32 = 0  # how many held items a registered barrier will release
        self.connected = False  # CONNACK accepted
        self.failed = False  # a violation was reported: no more events
        self.request_problem_info = True
        self.wants_barrier = False  # held output appeared that no barrier covers: register one
        self.expiry_at_connect = False  # the CONNECT asked for a Session Expiry Interval above 0

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the client; the packets they complete come out of ``next_event``."""
        try:
            packets = self.feed(data)  # (a parse error is kept in ``error``, after the good packets)
        except ProtocolError:
            return
        if packets:
            self.packets_in += len(packets)
            # Keep alive counts complete control packets only [MQTT-3.1.2-24]: bytes trickled into
            # a packet that never finishes do not keep a client connected (packet_read_timeout).
            self.last_rx = now
            if self._next >= len(self._packets):
                self._packets = packets
                self._next = 0
            else:
                self._packets.extend(packets)
            self._partial_since = now if self.buffered else 0.0
        elif self.buffered:
            if not self._partial_since:
                self._partial_since = now
        else:
            self._partial_since = 0.0

    def next_event(self) -> Event | None:
        """The next packet for the broker, or the violation that ends the connection, or None.

        Pulled one at a time, so a broker that must decide a CONNECT off the loop (a password
        hash) stops pulling until it has: the packets behind it wait, in order."""
        while not self.failed:
            packets = self._packets
            if self._next >= len(packets):
                if packets:
                    self._packets = _NO_PACKETS
                    self._next = 0
                error = self.error
                if error is None:
                    return None
                return self._fail(error)
            packet = packets[self._next]
            self._next += 1
            try:
                if packet.type == p.PUBLISH:
                    if self._on_publish(packet):  # type: ignore[arg-type]
                        return packet
                elif self._on_packet(packet):
                    return packet
            except ProtocolError as exc:
                return self._fail(exc)
        return None

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self.failed = True
        self._packets = _NO_PACKETS
        self._next = 0
        if not self.version:
            self.version = self.protocol_level  # a bad CONNECT: answered in its protocol level
        return error

    def _on_publish(self, packet: p.Publish) -> bool:
        """Check an inbound PUBLISH and resolve its topic alias: True to hand it to the broker."""
        if not self.connected:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-1] PUBLISH before CONNECT")
        qos = packet.qos
        settings = self.settings
        if qos > settings.maximum_qos:
            raise ProtocolError(ReasonCode.QOS_NOT_SUPPORTED, "[MQTT-3.2.2-11] QoS above Maximum QoS")
        if packet.retain and not settings.retain_available:
            raise ProtocolError(ReasonCode.RETAIN_NOT_SUPPORTED, "[MQTT-3.2.2-14] retain is not available")
        props = packet.properties
        if props:
            if _SUB_ID in props:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.3.4-6] subscription identifier from a client")
            alias = props.get(_TOPIC_ALIAS)
            if alias is not None:
                self._resolve_alias(packet, alias)
        if qos:
            pid: int = packet.packet_id  # type: ignore[assignment]
            if qos == 2 and pid in self.inbound_qos2:
                # A resent QoS 2 PUBLISH we already own: acknowledge, do not deliver twice [MQTT-4.3.3-9].
                self._answer(encode_ack(p.PUBREC, pid))
                return False
            self._inbound_unacked += 1
            if self._inbound_unacked + len(self.inbound_qos2) > settings.receive_maximum:
                raise ProtocolError(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "[MQTT-3.3.4-7] receive maximum exceeded")
        return True

    def _resolve_alias(self, packet: p.Publish, alias: int) -> None:
        """[MQTT-3.3.2-9], [MQTT-3.3.2-10]: a topic alias from 1 to the maximum we granted; a topic
        with it sets the mapping, an empty topic uses it. The alias is per-hop: it is dropped."""
        if not alias or alias > (self.settings.topic_alias_maximum if self.version == 5 else 0):
            raise ProtocolError(ReasonCode.TOPIC_ALIAS_INVALID, f"[MQTT-3.3.2-9] topic alias {alias} out of range")
        aliases = self._aliases_in
        if aliases is None:
            aliases = self._aliases_in = {}
        if packet.topic:
            aliases[alias] = packet.topic
        else:
            topic = aliases.get(alias, "")
            if not topic:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"[MQTT-3.3.4-?] unknown topic alias {alias}")
            packet.topic = topic
        packet.properties = {k: v for k, v in packet.properties.items() if k != _TOPIC_ALIAS}

    def _on_packet(self, packet: p.AnyPacket) -> bool:
        """Every packet but PUBLISH: True to hand it to the broker."""
        ptype = packet.type
        if not self.connected:
            if ptype != p.CONNECT:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-1] first packet is not CONNECT")
            if self.version:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-2] second CONNECT")
            self.version = packet.protocol_level  # type: ignore[union-attr]
            return True
        if ptype == p.PUBACK or ptype == p.PUBREC or ptype == p.PUBCOMP or ptype == p.SUBSCRIBE:
            return True
        if ptype == p.PUBREL:
            pid: int = packet.packet_id  # type: ignore[union-attr,assignment]
            if pid in self.inbound_qos2:
                self.inbound_qos2.discard(pid)
                return True  # the broker releases it and answers (complete_pubrel)
            self._answer(encode_ack(p.PUBCOMP, pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, self.version))
            return False
        if ptype == p.PINGREQ:
            self.send(_PINGRESP)
            return False
        if ptype == p.UNSUBSCRIBE:
            return True
        if ptype == p.DISCONNECT:
            props = packet.properties  # type: ignore[union-attr]
            expiry = props.get(PropertyId.SESSION_EXPIRY_INTERVAL) if props else None
            if expiry is not None and not self.expiry_at_connect and expiry != 0:
                # [MQTT-3.14.2-2]: cannot turn a non-persistent session into a persistent one.
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.14.2-2] session expiry set on DISCONNECT")
            self.failed = True  # the last packet of the connection
            return True
        if ptype == p.CONNECT:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-3.1.0-2] second CONNECT")
        if ptype == p.AUTH:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "[MQTT-4.12.0-1] AUTH without an authentication method")
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"{p.PACKET_NAMES[ptype]} is not sent by a client")

    # -- timers ------------------------------------------------------------------------------

    def next_timer(self) -> float:
        """When ``handle_timer`` next has something to do (0: never)."""
        if self.failed:
            return 0.0
        if not self.connected:
            return self.opened_at + self.settings.connect_timeout
        deadlines = [self.login_expires_at]
        if self.keep_alive:
            deadlines.append(self.last_rx + 1.5 * int(self.keep_alive))
        if self._partial_since and self.settings.packet_read_timeout:
            deadlines.append(self._partial_since + self.settings.packet_read_timeout)
        found = [d for d in deadlines if d]
        return min(found) if found else 0.0

    def handle_timer(self, now: float) -> Timeout | None:
        """The deadline that passed by ``now``, if one did: the caller closes the connection.

        A socket must send CONNECT within the connect timeout; a client that sends no complete
        control packet for 1.5 x its Keep Alive is disconnected [MQTT-3.1.2-24] (5.0:
        [MQTT-3.1.2-22]), and so is one whose unfinished packet takes ``packet_read_timeout``."""
        if self.failed:
            return None
        if not self.connected:
            if now - self.opened_at >= self.settings.connect_timeout:
                return Timeout(0, "no CONNECT within the connect timeout")
            return None
        if self.login_expires_at and now >= self.login_expires_at:
            # The token or credentials the client logged in with ran out: 0xA0 Maximum connect time.
            return Timeout(ReasonCode.MAXIMUM_CONNECT_TIME, "credentials expired")
        limit = 1.5 * int(self.keep_alive)
        if limit and now - self.last_rx >= limit:
            return Timeout(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
        deadline = self.settings.packet_read_timeout
        if self._partial_since and deadline and now - self._partial_since >= deadline:
            # A started packet that does not finish holds up to max_packet_size: bound its time.
            return Timeout(ReasonCode.KEEP_ALIVE_TIMEOUT, f"packet not completed within {deadline:g} s")
        return None

    def reading_paused(self, now: float) -> None:
        """The server stopped reading, not the client: it is not idle, and its packet cannot progress."""
        self.last_rx = now
        if self._partial_since:
            self._partial_since = now

    # -- CONNECT -----------------------------------------------------------------------------

    def accept(
        self,
        connect: p.Connect,
        session_present: bool,
        keep_alive: int,
        properties: dict[int, Any] | None,
        inbound_qos2: set[int],
        after_commit: bool,
    ) -> None:
        """Accept ``connect`` with CONNACK: what the client asked for is taken from it, the server's
        grants (``properties``, MQTT 5) go on the CONNACK. ``keep_alive`` is the one in force (the
        Server Keep Alive if the broker imposed one [MQTT-3.2.2-21]); ``inbound_qos2`` is the
        session's set of QoS 2 packet ids received and not yet released (it outlives connections)."""
        settings = self.settings
        version = connect.protocol_level
        if version == 5:
            props = connect.properties
            self.send_quota = min(props.get(PropertyId.RECEIVE_MAXIMUM, 65535), settings.max_inflight_messages)
            self.max_packet_out = props.get(PropertyId.MAXIMUM_PACKET_SIZE, 0)
            self.request_problem_info = props.get(PropertyId.REQUEST_PROBLEM_INFORMATION, 1) == 1
            self.expiry_at_connect = props.get(PropertyId.SESSION_EXPIRY_INTERVAL, 0) != 0
            if settings.topic_alias_out_maximum:  # [MQTT-3.1.2-26], [MQTT-3.1.2-27]
                self.topic_alias_out_max = min(
                    props.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0), settings.topic_alias_out_maximum
                )
            connack = encode(p.Connack(session_present, 0, properties), 5)
        else:
            self.send_quota = min(65535, settings.max_inflight_messages)
            connack = _CONNACK_SESSION_PRESENT if session_present else _CONNACK_ACCEPTED
        self.keep_alive = keep_alive
        self.inbound_qos2 = inbound_qos2
        self.connected = True
        self.send(connack, after_commit)

    def refuse(self, code: int) -> None:
        """Refuse the CONNECT: a CONNACK with ``code`` (an MQTT 5 reason code, mapped for 3.1.x)."""
        version = self.version
        rc = code if version == 5 else connack_v3_code(code)
        self.send(encode(p.Connack(False, rc), version))
        self.failed = True

    def refuse_version(self, level: int) -> None:
        """[MQTT-3.1.2-2]: an unsupported protocol level gets CONNACK 0x01 (3.1.1 form) / 0x84."""
        if level == 5:
            self.send(encode(p.Connack(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), 5))
        else:
            self.send(encode(p.Connack(False, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION), 4))

    def disconnect(self, code: int, reason: str, properties: dict[int, Any] | None = None) -> None:
        """The last words of a closing connection, sent ahead of held output: DISCONNECT with a
        reason to an MQTT 5 client [MQTT-4.13.2-1]; before CONNACK, a violation is answered with a
        CONNACK carrying the reason [MQTT-4.13.1-1]; a 3.1.x client is just closed on."""
        self.failed = True
        if self.version != 5:
            return
        if self.connected:
            props = dict(properties or {})
            if self.request_problem_info:
                props[PropertyId.REASON_STRING] = reason[:256]
            data = encode(p.Disconnect(code, props), 5)
        elif code >= 0x80:
            data = encode(p.Connack(False, code), 5)
        else:
            return
        self.packets_out += 1
        self._output().append(data)
        self.out_size += len(data)

    # -- inbound QoS 1/2 flows ---------------------------------------------------------------

    def ack_publish(self, packet: p.Publish, matched: bool, after_commit: bool) -> None:
        """Acknowledge a routed QoS 1/2 PUBLISH: PUBACK, or PUBREC (its packet id is now held until
        PUBREL [MQTT-4.3.3-9]). MQTT 5 says when no subscriber matched (0x10)."""
        pid: int = packet.packet_id  # type: ignore[assignment]
        code = ReasonCode.NO_MATCHING_SUBSCRIBERS if self.version == 5 and not matched else 0
        if packet.qos == 1:
            self._answer(encode_ack(p.PUBACK, pid, code, self.version), after_commit)
        else:
            self._qos2_ids().add(pid)
            self._inbound_unacked -= 1
            self._answer(encode_ack(p.PUBREC, pid, code, self.version), after_commit)

    def deny_publish(self, packet: p.Publish, code: int) -> None:
        """A refused PUBLISH is dropped; QoS 1/2 get their ack, carrying the reason in MQTT 5. In
        3.1.1 there is no way to say no, so the ack is the usual one (as Mosquitto does)."""
        qos = packet.qos
        if not qos:
            return
        pid: int = packet.packet_id  # type: ignore[assignment]
        if qos == 1:
            self._answer(encode_ack(p.PUBACK, pid, code, self.version))
            return
        self._inbound_unacked -= 1  # (a QoS 1 PUBLISH counts until its PUBACK is written: _answer)
        if self.version != 5:
            self._qos2_ids().add(pid)
        # A PUBREC with a failure code ends the QoS 2 exchange [MQTT-4.3.3-4 context].
        self._answer(encode_ack(p.PUBREC, pid, code, self.version))

    def _qos2_ids(self) -> set[int]:
        ids = self.inbound_qos2
        if ids is NO_IDS:
            ids = self.inbound_qos2 = set()
        return ids

    def complete_pubrel(self, packet_id: int, after_commit: bool) -> None:
        """PUBCOMP for a PUBREL the broker has released (next_event handed it out)."""
        self._answer(encode_ack(p.PUBCOMP, packet_id), after_commit)

    def _answer(self, data: bytes, after_commit: bool = False) -> None:
        self.packets_out += 1
        if after_commit or self._held:
            self._hold(data)
            return
        if data[0] == 0x40:
            self._inbound_unacked -= 1
        self._output().append(data)
        self.out_size += len(data)

    # -- outbound ------------------------------------------------------------------------------

    def send(self, data: bytes, after_commit: bool = False) -> None:
        """Send an encoded packet after everything before it (SUBACK, UNSUBACK, ...)."""
        self.packets_out += 1
        if after_commit or self._held:
            self._hold(data)
        else:
            self._output().append(data)
            self.out_size += len(data)

    def fits(self, size: int) -> bool:
        """Whether a packet of ``size`` bytes is within the client's Maximum Packet Size [MQTT-3.1.2-25]."""
        return not self.max_packet_out or size <= self.max_packet_out

    def send_publish(self, head: bytes, packet_id: int, tail: bytes, topic: str, payload: bytes, hold: bool) -> None:
        """Send a PUBLISH encoded once for every subscriber as ``head [+ packet id] + tail`` (QoS 0:
        ``packet_id`` 0 and ``head`` is all of it), with an outbound Topic Alias if the client
        allows them; ``hold``: after the pending commit (see the module docstring)."""
        pid = packet_id_bytes(packet_id) if packet_id else b""
        if self.topic_alias_out_max:
            self._send_aliased(head, pid, tail, topic, payload, hold)
        elif hold or self._held:
            self._hold(head + pid + tail)
        else:
            out = self._out
            if out is None:
                out = self._out = []
            out.append(head)
            if packet_id:
                out.append(pid)
                out.append(tail)
            self.out_size += len(head) + len(pid) + len(tail)

    def _send_aliased(self, head: bytes, pid: bytes, tail: bytes, topic: str, payload: bytes, hold: bool) -> None:
        """A topic the connection has an alias for goes as an empty Topic Name and the alias; a new
        one as the Topic Name and a new alias, 1 up to the client's maximum [MQTT-3.3.2-8],
        [MQTT-3.3.2-11]; when all are taken, the least recently used alias is given to the new
        topic (a PUBLISH with both re-maps it), so the aliases follow the topics the client gets
        now, not the first ones it got (often a burst of retained messages). Only the small parts
        are built per delivery; the payload is the message's own bytes. Aliases live and die with
        the connection [MQTT-3.3.2-7]."""
        aliases = self._aliases_out
        if aliases is None:
            aliases = self._aliases_out = {}
        alias = aliases.get(topic, 0)
        known = bool(alias)
        evict = ""
        if not known:
            if len(aliases) < self.topic_alias_out_max:
                alias = len(aliases) + 1
            else:
                evict = next(iter(aliases))
                alias = aliases[evict]
        start, block = alias_publish(head, pid, tail, payload, alias, not known)
        size = len(start) + len(block) + len(payload)
        if not known and not self.fits(size):
            # Only the alias made it too large (3 bytes): send it without [MQTT-3.1.2-25].
            self._put((head, pid, tail), len(head) + len(pid) + len(tail), hold)
            return
        if evict:
            del aliases[evict]
        elif known:
            del aliases[topic]  # re-inserted last: most recently used
        aliases[topic] = alias
        self._put((start, block, payload), size, hold)

    def _put(self, pieces: tuple[bytes, ...], size: int, hold: bool) -> None:
        if hold or self._held:
            self._hold(b"".join(pieces))
        else:
            self._output().extend(pieces)
            self.out_size += size

    def send_pubrel(self, packet_id: int, reason_code: int, after_commit: bool) -> None:
        self.send(encode_ack(p.PUBREL, packet_id, reason_code, self.version), after_commit)

    def data_to_send(self) -> list[bytes]:
        """The output ready to go, in order (held output stays until its commit)."""
        out = self._out
        if out is None:
            return _NO_OUTPUT
        self._out = None
        self.out_size = 0
        return out

    def _output(self) -> list[bytes]:
        """The list output is appended to: none is held between flushes, so an idle connection
        keeps no list of its own (56 bytes each)."""
        out = self._out
        if out is None:
            out = self._out = []
        return out

    # -- output held for a storage commit -------------------------------------------------------

    def _hold(self, data: bytes) -> None:
        held = self._held
        if held is None:
            held = self._held = []
        held.append(data)
        if len(held) - self._held_covered == 1:
            self.wants_barrier = True  # the first item no barrier covers yet

    def cover_held(self) -> int:
        """How many held items the barrier being registered now will release (all of them so far)."""
        held = self._held
        count = (len(held) if held is not None else 0) - self._held_covered
        self._held_covered += count
        return count

    def release_held(self, count: int) -> None:
        """A storage commit covered the first ``count`` held items: they are ready to send."""
        held = self._held
        assert held is not None
        items = held[:count]
        del held[:count]
        self._held_covered -= count
        out = self._output()
        size = 0
        for data in items:
            if data[0] == 0x40:
                self._inbound_unacked -= 1
            out.append(data)
            size += len(data)
        self.out_size += size

    @property
    def holding(self) -> bool:
        """Whether output waits for a commit (later output queues behind it)."""
        return bool(self._held)
