"""Session state (section 4.1): subscriptions, outbound QoS 1/2 in flight, the offline queue and
inbound QoS 2 packet ids. A session outlives its connections when its expiry interval allows."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ..hooks import DropReason
from ..mqtt.server import NO_IDS
from .message import Message

if TYPE_CHECKING:
    import asyncio

    from mypy_extensions import i32  # compiled: a 4-byte field (annotations only: no run-time import)

    from .broker import Broker
    from .connection import Connection
    from .router import SharedGroup, Subscriber

NEVER_EXPIRES = 0xFFFFFFFF

QUEUED, SENT, RECEIVED = 0, 1, 2  # Delivery.state: not sent / PUBLISH sent / PUBREC received


class Delivery:
    """One QoS 1/2 message on its way to one session."""

    __slots__ = ("message", "packet_id", "qos", "retain", "seq", "share", "state", "sub_ids")

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: list[int] | None,
        share: SharedGroup | None,
        seq: int,
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.share = share
        self.seq = seq
        self.packet_id = 0
        self.state = QUEUED


# The queue and resend list of a session that has none: one shared empty deque, never written to
# (maxlen 0: an append to it would be dropped, not shared), so an idle session holds no deque of its
# own (an empty deque allocates a 64-slot block, ~760 bytes). Writers go through ``_own_queue``
# (the resend list is made by ``resend_inflight``); the queue is given back once the client has
# caught up (``acknowledge``), the resend list once all of it is resent (``fill``). Final: mypyc
# keeps these in C statics, not the module dict, so the identity checks cost no lookup.
NO_DELIVERIES: Final[deque[Delivery]] = deque(maxlen=0)
# The same for ``inflight_out`` of a session that has never had a QoS 1/2 delivery in flight
# (writers: ``own_inflight``); once made it stays, as a client that gets QoS 1/2 gets them often.
NO_INFLIGHT: Final[dict[int, Delivery]] = {}
_NO_SUBS: Final[Mapping[str, Subscriber]] = MappingProxyType({})


class Session:
    """One client's session. Its containers that most sessions leave empty (the offline queue,
    the resend list, in-flight deliveries, inbound QoS 2 ids) start as shared empty stand-ins and
    are made on first use, and a single subscription is held without a dict: an idle connection's
    session holds no container of its own (see BENCHMARKS.md)."""

    __slots__ = (
        "_next_pid",
        "_subs",
        "broker",
        "client_id",
        "connection",
        "dropped",
        "expiry_handle",
        "expiry_interval",
        "inbound_qos2",
        "inflight_out",
        "next_seq",
        "owner",
        "protocol_version",
        "queue",
        "queued_bytes",
        "resend",
        "seen",
        "will",
        "will_delay",
        "will_handle",
    )

    def __init__(self, broker: Broker, client_id: str, protocol_version: int, expiry_interval: int) -> None:
        self.broker = broker
        self.client_id = client_id
        self.owner: str | None = None  # broker.session_owner() of its user; None: not known (an old store)
        # (two i32 side by side: compiled, they share the eight bytes an int field takes)
        self.protocol_version: i32 = protocol_version
        self._next_pid: i32 = 0
        self.expiry_interval = expiry_interval
        self.connection: Connection | None = None
        # Its subscriptions: none, one held directly (a device subscribes to its own topics once), or
        # a dict by filter from the second on (given up when one is left), as the trie's nodes hold
        # theirs: an empty or one-entry dict is 64 or 184 bytes per session. Through the methods below.
        self._subs: dict[str, Subscriber] | Subscriber | None = None
        self.inflight_out: dict[int, Delivery] = NO_INFLIGHT  # packet id -> delivery, in send order
        self.queue: deque[Delivery] = NO_DELIVERIES  # (read freely; append through _own_queue)
        self.queued_bytes = 0  # topic and payload bytes of the deliveries in ``queue`` (max_queued_bytes)
        self.resend: deque[Delivery] = NO_DELIVERIES  # in flight from an earlier connection, not yet resent
        # QoS 2 packet ids received and not yet released; the connection's protocol adds to it and
        # makes it on the first one (the shared NO_IDS until then): inbound.sync_inbound_qos2.
        self.inbound_qos2: set[int] = NO_IDS
        self.next_seq = 0
        self.dropped = 0
        self.will: Message | None = None  # a will waiting out its delay
        self.will_delay = 0
        self.will_handle: asyncio.TimerHandle | None = None  # fires a delayed will
        self.expiry_handle: asyncio.TimerHandle | None = None  # ends the session once it expires
        # Message ids delivered lately, while a cluster hands this session over between nodes (a
        # message may then come both ways for a moment); None (nearly always): no check.
        self.seen: set[str] | None = None

    # -- subscriptions ---------------------------------------------------------------------------

    @property
    def subscriptions(self) -> Mapping[str, Subscriber]:
        """The session's subscriptions by filter (as subscribed, with any ``$share/`` prefix): a
        read-only snapshot, for the rare readers (persistence, the API, a session taken over).
        Changes go through ``add_subscription``/``remove_subscription``/``clear_subscriptions``."""
        subs = self._subs
        if subs is None:
            return _NO_SUBS
        if isinstance(subs, dict):
            return MappingProxyType(dict(subs))
        return MappingProxyType({subs.topic_filter: subs})

    def subscription(self, topic_filter: str) -> Subscriber | None:
        subs = self._subs
        if subs is None:
            return None
        if isinstance(subs, dict):
            return subs.get(topic_filter)
        return subs if subs.topic_filter == topic_filter else None

    @property
    def subscription_count(self) -> int:
        subs = self._subs
        if subs is None:
            return 0
        return len(subs) if isinstance(subs, dict) else 1

    def add_subscription(self, sub: Subscriber) -> None:
        """Add ``sub``, replacing a subscription to the same filter [MQTT-3.8.4-3]."""
        subs = self._subs
        if subs is None or (not isinstance(subs, dict) and subs.topic_filter == sub.topic_filter):
            self._subs = sub
        elif isinstance(subs, dict):
            subs[sub.topic_filter] = sub
        else:
            self._subs = {subs.topic_filter: subs, sub.topic_filter: sub}

    def remove_subscription(self, topic_filter: str) -> Subscriber | None:
        subs = self._subs
        if subs is None:
            return None
        if not isinstance(subs, dict):
            if subs.topic_filter != topic_filter:
                return None
            self._subs = None
            return subs
        found = subs.pop(topic_filter, None)
        if len(subs) == 1:
            self._subs = next(iter(subs.values()))
        elif not subs:
            self._subs = None
        return found

    def clear_subscriptions(self) -> list[str]:
        """Forget every subscription; returns their filters (for the caller to take out of the trie)."""
        filters = list(self.subscriptions)
        self._subs = None
        return filters

    @property
    def backlog(self) -> bool:
        """Whether deliveries wait for the client's Receive Maximum to allow them."""
        return bool(self.queue or self.resend)

    @property
    def persistent(self) -> bool:
        """Whether the session outlives its connection, and so must be stored."""
        return self.expiry_interval > 0

    def cancel_timers(self) -> None:
        """Stop the session's expiry clock and any delayed will."""
        if self.expiry_handle is not None:
            self.expiry_handle.cancel()
            self.expiry_handle = None
        if self.will_handle is not None:
            self.will_handle.cancel()
            self.will_handle = None

    def allocate_packet_id(self) -> int:
        """The next free packet id [MQTT-2.2.1-3]; the caller guarantees fewer than 65535 in flight."""
        inflight = self.inflight_out
        pid = self._next_pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in inflight:
                self._next_pid = pid
                return pid

    # -- outbound -------------------------------------------------------------------------

    def deliver(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: list[int] | None,
        share: SharedGroup | None,
        now: float,
    ) -> None:
        seen = self.seen
        if seen is not None:
            message_id = self.broker.message_id(message)
            if message_id in seen:
                return
            seen.add(message_id)
        conn = self.connection
        if not qos:
            if conn is not None:
                conn.send_qos0(message, retain, sub_ids, now)
            elif self.broker.hooks.dropped:  # (QoS 0 is not queued for a client that is away)
                self.tell_dropped(DropReason.OFFLINE, "", message)
            return
        delivery = Delivery(message, qos, retain, sub_ids, share, self.next_seq)
        self.next_seq += 1
        if conn is not None and len(self.inflight_out) < conn.send_quota and not conn.congested:
            self._send(conn, delivery, now)
        else:
            self.enqueue(delivery)

    def _send(self, conn: Connection, delivery: Delivery, now: float) -> None:
        pid = self.allocate_packet_id()
        delivery.packet_id = pid
        delivery.state = SENT
        self.own_inflight()[pid] = delivery
        if self.persistent:
            self.broker.persist.message_add(self, delivery)
        conn.send_publish(delivery, now, False)

    def enqueue(self, delivery: Delivery) -> None:
        """Queue a QoS 1/2 delivery, bounded by ``max_queued_messages`` and ``max_queued_bytes``
        with the configured policy; a drop is counted, and starts a connected client's
        slow-consumer clock (it is at its cap)."""
        size = queued_size(delivery)
        if self.over_bounds(1, size):
            limits = self.broker.limits
            fits_alone = limits.max_queued_messages > 0 and (
                not limits.max_queued_bytes or size <= limits.max_queued_bytes
            )
            if not (limits.queue_drop_oldest and fits_alone):
                self._dropped_full(delivery.message)
                return
            queue = self.queue
            while self.over_bounds(1, size):  # (fits_alone: the queue empties before it is over)
                old = queue.popleft()
                self._dropped_full(old.message)
                self.queued_bytes -= queued_size(old)
                if self.persistent:
                    self.broker.persist.message_delete(self, old)
        self._own_queue().append(delivery)
        self.queued_bytes += size
        if self.persistent:
            self.broker.persist.message_add(self, delivery)

    def over_bounds(self, count: int, size: int) -> bool:
        """Whether ``count`` more deliveries of ``size`` bytes would take the queue past its bounds."""
        limits = self.broker.limits
        if len(self.queue) + count > limits.max_queued_messages:
            return True
        return bool(limits.max_queued_bytes) and self.queued_bytes + size > limits.max_queued_bytes

    def _dropped_full(self, message: Message) -> None:
        self.dropped += 1
        self.broker.stats.dropped_queue_full += 1
        conn = self.connection
        if conn is not None:
            conn.at_cap()
        if self.broker.hooks.dropped:
            self.tell_dropped(DropReason.QUEUE_FULL, "", message)

    def tell_dropped(self, reason: str, detail: str, message: Message) -> None:
        """Tell the ``on_dropped`` hooks (the caller checked there are some) that a message meant
        for this session was dropped."""
        hooks = self.broker.hooks
        hooks.notify(hooks.dropped, self.client_id, message.topic, reason, detail, message)

    def restore_queued(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Queue deliveries loaded from storage (in order) within today's bounds, which may be
        lower than when they were stored; returns those that did not fit (the caller deletes
        them from storage), counted as dropped. The policy picks which: the newest (drop_new)
        or the oldest (drop_oldest)."""
        if self.broker.limits.queue_drop_oldest:
            deliveries = deliveries[::-1]
        kept: list[Delivery] = []
        over: list[Delivery] = []
        size = 0
        limits = self.broker.limits
        for delivery in deliveries:
            delivery_size = queued_size(delivery)
            if len(self.queue) + len(kept) >= limits.max_queued_messages or (
                limits.max_queued_bytes and self.queued_bytes + size + delivery_size > limits.max_queued_bytes
            ):
                over.append(delivery)
                continue
            kept.append(delivery)
            size += delivery_size
        if limits.queue_drop_oldest:
            kept.reverse()
        if kept:
            self._own_queue().extend(kept)
        self.queued_bytes += size
        self.dropped += len(over)
        self.broker.stats.dropped_queue_full += len(over)
        return over

    def fill(self, now: float) -> None:
        """Move queued deliveries into flight while the client's Receive Maximum allows [MQTT-4.9.0-2]."""
        conn = self.connection
        queue = self.queue
        if conn is None:
            return
        inflight = self.inflight_out
        quota = conn.send_quota
        resend = self.resend
        if resend:  # sent on an earlier connection, so they go first [MQTT-4.6.0-5]
            while resend and len(inflight) - len(resend) < quota and not conn.congested:
                delivery = resend.popleft()
                if inflight.get(delivery.packet_id) is delivery:
                    conn.send_publish(delivery, now, True)
            if resend:
                return
            self.resend = NO_DELIVERIES  # (all resent: its block goes)
        persistent = self.persistent
        while queue and len(inflight) < quota and not conn.congested:
            delivery = queue.popleft()
            self.queued_bytes -= queued_size(delivery)
            if delivery.message.expired(now):  # [MQTT-3.3.2-5]
                self.broker.stats.messages_expired += 1
                if self.broker.hooks.dropped:
                    self.tell_dropped(DropReason.EXPIRED, "", delivery.message)
                if persistent:
                    self.broker.persist.message_delete(self, delivery)
                continue
            pid = self.allocate_packet_id()
            delivery.packet_id = pid
            delivery.state = SENT
            if inflight is NO_INFLIGHT:
                inflight = self.own_inflight()
            inflight[pid] = delivery
            if persistent:
                self.broker.persist.message_update(self, delivery)
            conn.send_publish(delivery, now, False)

    def own_inflight(self) -> dict[int, Delivery]:
        """``inflight_out`` to write to (made on first use)."""
        inflight = self.inflight_out
        if inflight is NO_INFLIGHT:
            inflight = self.inflight_out = {}
        return inflight

    def _own_queue(self) -> deque[Delivery]:
        queue = self.queue
        if queue is NO_DELIVERIES:
            queue = self.queue = deque()
        return queue

    def acknowledge(self, packet_id: int, state: int) -> Delivery | None:
        """Complete (PUBACK/PUBCOMP) the delivery with ``packet_id`` if it is in ``state``."""
        delivery = self.inflight_out.get(packet_id)
        if delivery is None or delivery.state != state:
            return None
        inflight = self.inflight_out
        del inflight[packet_id]
        if not inflight and not self.queue and self.queue is not NO_DELIVERIES:
            # Caught up: an idle session keeps no deque. (Not as soon as the queue empties: a busy
            # subscriber's queue empties and refills, and each new deque costs ~760 bytes.)
            self.queue = NO_DELIVERIES
        resend = self.resend
        if resend and delivery in resend:
            resend.remove(delivery)
            if not resend:
                self.resend = NO_DELIVERIES
        if self.persistent:
            self.broker.persist.message_delete(self, delivery)
        return delivery

    def resend_inflight(self, conn: Connection, now: float) -> None:
        """On reconnect, resend unacknowledged PUBLISH (DUP=1) and PUBREL in order [MQTT-4.4.0-1].

        The client may have announced a smaller Receive Maximum this time: PUBLISHes beyond it wait
        in ``resend`` for acknowledgements [MQTT-3.3.4-9]; PUBRELs are never held back [MQTT-3.3.4-10].
        """
        self.resend = NO_DELIVERIES
        resend: deque[Delivery] | None = None
        deliveries = list(self.inflight_out.values())
        outstanding = sum(1 for d in deliveries if d.state != SENT)  # a PUBREL's message counts until PUBCOMP
        quota = conn.send_quota
        for delivery in deliveries:
            if delivery.state != SENT:
                conn.send_pubrel(delivery.packet_id)
            elif outstanding < quota:
                outstanding += 1
                conn.send_publish(delivery, now, True)
            else:
                if resend is None:
                    resend = self.resend = deque()
                resend.append(delivery)

    def take_shared(self) -> list[Delivery]:
        """Remove and return the not-yet-received deliveries that came through a shared
        subscription, so another member of the group can have them.

        A QoS 2 PUBLISH already sent stays: its delivery is completed to this client when it
        reconnects, and never handed to another member [MQTT-4.8.2-4], [MQTT-4.8.2-5]."""
        taken = [d for d in self.inflight_out.values() if d.share is not None and d.state == SENT and d.qos == 1]
        for d in taken:
            del self.inflight_out[d.packet_id]
        queued = [d for d in self.queue if d.share is not None]
        if queued:
            rest = deque(d for d in self.queue if d.share is None)
            self.queue = rest if rest else NO_DELIVERIES
            self.queued_bytes -= sum(queued_size(d) for d in queued)
            taken.extend(queued)
        if self.persistent:
            for d in taken:
                self.broker.persist.message_delete(self, d)
        return taken


def queued_size(delivery: Delivery) -> int:
    """What a queued delivery counts against ``max_queued_bytes``: its topic and payload."""
    message = delivery.message
    return len(message.payload) + len(message.topic)
