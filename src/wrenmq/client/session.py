"""The client's session state and its QoS state machine: what must outlive one network connection.

The spec's Client session state is the QoS 1/2 messages sent but not completely acknowledged
(:attr:`Session.inflight`) and the QoS 2 messages received but not completely acknowledged
(:attr:`Session.inbound_qos2`) [MQTT-4.1.0-1]. The client also keeps here what it needs to make a
reconnect invisible to the application: the subscriptions it holds (to resubscribe when the broker
has lost the session), the SUBSCRIBE/UNSUBSCRIBE requests still waiting for their ack, and the
messages waiting to be sent (:attr:`Session.pending`: the offline queue, also used while the
broker's Receive Maximum is reached).

No I/O here: the methods take the ``send`` function of the connection a packet came on (or should
go out on), in the manner of a sans-I/O protocol; :class:`~wrenmq.client.Client` owns the
connections and calls in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..mqtt import packets as p
from ..mqtt.codec import publish_size
from ..mqtt.packets import Properties, Publish, Subscribe, Subscription, Unsubscribe
from ..mqtt.properties import PropertyId, encode_properties
from ..mqtt.reason_codes import ReasonCode
from .errors import ClientError, MessageDropped, ProtocolError, PublishError, QueueFull, describe_reason

__all__ = [
    "AWAIT_ACK",
    "AWAIT_PUBCOMP",
    "MAX_PACKET_SIZE",
    "QUEUED",
    "ClientStats",
    "Outbound",
    "PacketIds",
    "Request",
    "Send",
    "Session",
]

log = logging.getLogger("wrenmq.client")

Send = Callable[[p.AnyPacket], None]
MAX_PACKET_SIZE = 268_435_460

# Where an outbound message is in its flow (section 4.3).
QUEUED = 0  # not sent yet
AWAIT_ACK = 1  # PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2)
AWAIT_PUBCOMP = 2  # PUBREL sent, waiting for PUBCOMP (QoS 2)

QueueFullPolicy = Literal["raise", "drop_oldest"]


class ClientStats:
    """Counters for status pages; all only ever grow."""

    __slots__ = ("connect_attempts", "connects", "messages_in", "messages_out", "received_dropped")

    def __init__(self) -> None:
        self.connect_attempts = 0
        self.connects = 0
        self.messages_in = 0
        self.messages_out = 0  # PUBLISH packets sent, resends included
        self.received_dropped = 0  # received messages no stream took, pushed out of the full backlog

    def __repr__(self) -> str:
        return "ClientStats(" + ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__) + ")"


@dataclass(eq=False, slots=True)
class Outbound:
    """A message the application published, with the future its ``publish()`` call awaits."""

    packet: Publish
    future: asyncio.Future[int]
    state: int = QUEUED
    accepted_with: int = 0  # the PUBREC's reason code: the QoS 2 message is the broker's from then on

    def resolve(self, reason_code: int) -> None:
        if not self.future.done():
            self.future.set_result(reason_code)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)
            self.future.exception()  # retrieved here: a caller that gave up must not cause a warning


@dataclass(eq=False, slots=True)
class Request:
    """A SUBSCRIBE or UNSUBSCRIBE waiting for its ack; ``future`` is None for a resubscription."""

    packet: Subscribe | Unsubscribe
    future: asyncio.Future[list[int]] | None


class PacketIds:
    """Packet Identifiers in use by this client's own flows [MQTT-2.2.1-3]; 1 to 65535."""

    __slots__ = ("_next", "in_use")

    def __init__(self) -> None:
        self._next = 1
        self.in_use: set[int] = set()

    def allocate(self) -> int:
        if len(self.in_use) >= 65535:
            raise ClientError("all 65535 packet identifiers are in use")
        pid = self._next
        while pid in self.in_use:
            pid = pid % 65535 + 1
        self.in_use.add(pid)
        self._next = pid % 65535 + 1
        return pid

    def release(self, pid: int) -> None:
        self.in_use.discard(pid)


class Session:
    """State of one client session, kept across reconnects, and the flows that change it."""

    def __init__(self, version: int, max_queued: int, queue_full: QueueFullPolicy, stats: ClientStats) -> None:
        if max_queued < 0:
            raise ValueError("max_queued must be 0 or more")
        if queue_full not in ("raise", "drop_oldest"):
            raise ValueError(f"queue_full must be 'raise' or 'drop_oldest', not {queue_full!r}")
        self.version = version
        self.stats = stats
        self.ids = PacketIds()
        self.inflight: dict[int, Outbound] = {}  # by packet id, in the order they were sent
        self.pending: deque[Outbound] = deque()
        self.requests: dict[int, Request] = {}
        self.inbound_qos2: set[int] = set()
        self.subscriptions: dict[str, tuple[Subscription, Properties]] = {}
        self.max_queued = max_queued
        self.queue_full = queue_full
        self.dropped = 0  # messages pushed out of a full queue (drop_oldest)
        # Limits the broker announced in its CONNACK (MQTT 5; 3.1.1 brokers get these defaults).
        self.receive_maximum = 65535
        self.maximum_qos = 2
        self.retain_available = True
        self.max_packet_size = MAX_PACKET_SIZE

    def limits(self, connack: dict[int, Any]) -> None:
        """Take the broker's limits from its CONNACK properties."""
        self.receive_maximum = connack.get(PropertyId.RECEIVE_MAXIMUM, 65535)
        self.maximum_qos = connack.get(PropertyId.MAXIMUM_QOS, 2)
        self.retain_available = bool(connack.get(PropertyId.RETAIN_AVAILABLE, 1))
        self.max_packet_size = connack.get(PropertyId.MAXIMUM_PACKET_SIZE, MAX_PACKET_SIZE)

    # --- outbound messages -------------------------------------------------------------------------

    def submit(self, entry: Outbound, send: Send | None) -> None:
        """Send ``entry`` now (``send``: the connection is up) if nothing waits before it and the
        Receive Maximum allows; otherwise queue it, within the bound."""
        if send is not None and not self.pending and (not entry.packet.qos or self._window_open()):
            self._send_publish(entry, send)
            return
        if len(self.pending) >= self.max_queued:
            if self.queue_full == "raise" or not self.pending:
                raise QueueFull(f"the offline queue holds {self.max_queued} messages already")
            oldest = self.pending.popleft()
            self.dropped += 1
            oldest.fail(MessageDropped(f"dropped from the full offline queue ({self.max_queued} messages)"))
        self.pending.append(entry)

    def withdraw(self, entry: Outbound) -> None:
        """Forget ``entry`` if it has not been sent yet (its publish() was cancelled)."""
        if entry.state == QUEUED:
            try:
                self.pending.remove(entry)
            except ValueError:
                pass

    def drain(self, send: Send) -> None:
        """Send waiting messages, in order, while the Receive Maximum allows [MQTT-3.3.4-7]."""
        pending = self.pending
        while pending:
            entry = pending[0]
            if entry.future.done():  # failed or cancelled while it waited
                pending.popleft()
                continue
            if entry.packet.qos and not self._window_open():
                return
            pending.popleft()
            self._send_publish(entry, send)

    def _window_open(self) -> bool:
        return len(self.inflight) < self.receive_maximum

    def _send_publish(self, entry: Outbound, send: Send) -> None:
        packet = entry.packet
        error = self._refused_by_limits(packet)
        if error is not None:
            entry.fail(error)
            return
        self.stats.messages_out += 1
        if packet.qos == 0:
            send(packet)
            entry.resolve(ReasonCode.SUCCESS)
            return
        pid = self.ids.allocate()  # [MQTT-4.3.2-1], [MQTT-4.3.3-1]
        packet.packet_id = pid
        entry.state = AWAIT_ACK
        self.inflight[pid] = entry
        send(packet)

    def _refused_by_limits(self, packet: Publish) -> PublishError | None:
        """A PUBLISH the broker said in CONNACK it would not take is failed here, not sent."""
        if packet.qos > self.maximum_qos:  # [MQTT-3.2.2-11]
            return PublishError(ReasonCode.QOS_NOT_SUPPORTED, f"the broker's Maximum QoS is {self.maximum_qos}")
        if packet.retain and not self.retain_available:  # [MQTT-3.2.2-14]
            return PublishError(ReasonCode.RETAIN_NOT_SUPPORTED, "the broker does not support retain", packet.topic)
        limit = self.max_packet_size
        if limit < MAX_PACKET_SIZE and _publish_size(packet, self.version) > limit:  # [MQTT-3.2.2-15]
            return PublishError(
                ReasonCode.PACKET_TOO_LARGE, f"larger than the broker's Maximum Packet Size {limit}", packet.topic
            )
        return None

    def on_ack(self, packet: p.Puback | p.Pubrec | p.Pubcomp, send: Send) -> None:
        """PUBACK, PUBREC or PUBCOMP for one of our messages."""
        pid = packet.packet_id
        entry = self.inflight.get(pid)
        kind = packet.type
        if kind == p.PUBREC:
            if entry is None or entry.packet.qos != 2:
                unknown = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.version == 5 else ReasonCode.SUCCESS
                send(p.Pubrel(pid, unknown))
                return
            if packet.reason_code < 0x80:
                entry.state = AWAIT_PUBCOMP
                entry.accepted_with = packet.reason_code
                send(p.Pubrel(pid))  # [MQTT-4.3.3-4]
                return
            # A failure ends the flow here, without PUBREL (section 4.3.3).
        elif entry is None or (entry.packet.qos != 1 if kind == p.PUBACK else entry.state != AWAIT_PUBCOMP):
            log.debug("%s for unknown packet identifier %d ignored", p.PACKET_NAMES[kind], pid)
            return
        del self.inflight[pid]
        self.ids.release(pid)
        code = packet.reason_code
        if kind == p.PUBCOMP and code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND:
            # Our PUBREL was a resend and the broker had finished the flow (its PUBCOMP was lost):
            # the message was delivered when the broker accepted it with PUBREC.
            entry.resolve(entry.accepted_with)
        elif code >= 0x80:
            entry.fail(PublishError(code, packet.properties.get(PropertyId.REASON_STRING), entry.packet.topic))
        else:
            entry.resolve(code)

    # --- inbound messages --------------------------------------------------------------------------

    def on_publish(self, packet: Publish, send: Send) -> bool:
        """Acknowledge a PUBLISH from the broker; False if it must not be delivered (a QoS 2 resend)."""
        if PropertyId.TOPIC_ALIAS in packet.properties:  # we announce Topic Alias Maximum 0 [MQTT-3.3.2-9]
            raise ProtocolError(ReasonCode.TOPIC_ALIAS_INVALID, "[MQTT-3.3.2-9] topic alias from the broker")
        pid = packet.packet_id
        if pid is None:
            return True
        if packet.qos == 1:
            send(p.Puback(pid))  # [MQTT-4.3.2-4]
            return True
        new = pid not in self.inbound_qos2  # a resend is not delivered twice [MQTT-4.3.3-9]
        self.inbound_qos2.add(pid)
        send(p.Pubrec(pid))  # [MQTT-4.3.3-8]
        return new

    def on_pubrel(self, packet: p.Pubrel, send: Send) -> None:
        known = packet.packet_id in self.inbound_qos2
        self.inbound_qos2.discard(packet.packet_id)
        code = ReasonCode.SUCCESS if known or self.version < 5 else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        send(p.Pubcomp(packet.packet_id, code))  # [MQTT-4.3.3-10]

    # --- subscriptions -----------------------------------------------------------------------------

    def request(self, packet: Subscribe | Unsubscribe, future: asyncio.Future[list[int]] | None) -> None:
        """Give ``packet`` an identifier and wait for its ack (the caller sends it, or resume() will)."""
        packet.packet_id = self.ids.allocate()
        self.requests[packet.packet_id] = Request(packet, future)

    def on_request_ack(self, packet: p.Suback | p.Unsuback) -> None:
        request = self.requests.get(packet.packet_id)
        expected = p.SUBACK if request is not None and request.packet.type == p.SUBSCRIBE else p.UNSUBACK
        if request is None or packet.type != expected:
            log.debug("%s for unknown packet identifier %d ignored", p.PACKET_NAMES[packet.type], packet.packet_id)
            return
        del self.requests[packet.packet_id]
        self.ids.release(packet.packet_id)
        if request.future is None:  # a resubscription
            assert isinstance(request.packet, Subscribe)
            for sub, code in zip(request.packet.subscriptions, packet.reason_codes, strict=False):
                if code >= 0x80:
                    log.warning("resubscribing to %r failed: %s", sub.topic_filter, describe_reason(code))
                    self.subscriptions.pop(sub.topic_filter, None)
        elif not request.future.done():
            request.future.set_result(list(packet.reason_codes))

    # --- a new connection --------------------------------------------------------------------------

    def resume(self, send: Send, session_present: bool) -> None:
        """Bring the session up to date on a new connection [MQTT-4.4.0-1]."""
        if not session_present:
            # The broker has no session: our QoS 2 receive state is void, a QoS 2 message it had
            # PUBREC'd is its to deliver already, and the subscriptions must be made again.
            self.inbound_qos2.clear()
            for pid, entry in list(self.inflight.items()):
                if entry.state == AWAIT_PUBCOMP:
                    del self.inflight[pid]
                    self.ids.release(pid)
                    entry.resolve(entry.accepted_with)
            self._resubscribe()
        for pid, request in list(self.requests.items()):
            if request.future is not None and request.future.done():  # its caller gave up
                del self.requests[pid]
                self.ids.release(pid)
            else:
                send(request.packet)
        for pid, entry in self.inflight.items():  # in the order they were first sent
            if entry.state == AWAIT_PUBCOMP:
                send(p.Pubrel(pid))
            else:
                entry.packet.dup = session_present  # [MQTT-3.3.1-1]: DUP on a re-delivery
                send(entry.packet)
                self.stats.messages_out += 1
        self.drain(send)

    def _resubscribe(self) -> None:
        """Queue SUBSCRIBEs for what the client held, grouped by their SUBSCRIBE properties."""
        groups: list[tuple[Properties, list[Subscription]]] = []
        for sub, props in self.subscriptions.values():
            for group_props, subs in groups:
                if group_props == props:
                    subs.append(sub)
                    break
            else:
                groups.append((props, [sub]))
        for props, subs in groups:
            self.request(Subscribe(0, subs, props), None)  # sent by resume() with the other requests

    def fail_all(self, error: BaseException) -> None:
        """The session ends: every waiting operation fails with ``error``."""
        for entry in self.pending:
            entry.fail(error)
        for entry in self.inflight.values():
            entry.fail(error)
        for request in self.requests.values():
            if request.future is not None and not request.future.done():
                request.future.set_exception(error)
                request.future.exception()
        self.pending.clear()
        self.inflight.clear()
        self.requests.clear()
        self.inbound_qos2.clear()
        self.ids = PacketIds()


def _publish_size(packet: Publish, version: int) -> int:
    """The encoded size of ``packet``, without encoding it (section 3.3)."""
    rest = len(packet.payload)
    if version == 5:
        rest += len(encode_properties(packet.properties))
    return publish_size(len(packet.topic.encode()), packet.qos, rest)
