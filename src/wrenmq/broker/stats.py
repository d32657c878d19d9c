"""The broker's counters, for $SYS, the API and metrics.

Plain attributes, so the hot path pays one add per event. Each total that has a breakdown is kept
only as its breakdown (messages by QoS, drops by cause, connects by protocol level) and summed when
read: one increment per message, not two.
"""

from __future__ import annotations


class Stats:
    __slots__ = (
        "acl_denied",
        "auth_failures",
        "bytes_received",
        "bytes_sent",
        "clients_by_version",
        "dropped_congested",
        "dropped_denied",
        "dropped_queue_full",
        "dropped_too_large",
        "internal_errors",
        "messages_expired",
        "messages_received_qos",
        "messages_sent_qos",
        "packets_in_closed",
        "packets_out_closed",
        "protocol_errors",
        "publish_bytes_received",
        "publish_bytes_sent",
        "session_owner_conflicts",
        "sessions_expired",
        "slow_consumers_dropped",
        "sockets_total",
        "websocket_upgrades_refused",
    )

    def __init__(self) -> None:
        self.acl_denied = 0
        self.auth_failures = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.clients_by_version = [0] * 6  # accepted CONNECTs by protocol level (3: 3.1, 4: 3.1.1, 5: 5.0)
        # Dropped messages by cause: QoS 0 to a congested client, publish denied (ACL, hook, topic
        # limits), session queue full (max_queued_messages), over the client's Maximum Packet Size.
        self.dropped_congested = 0
        self.dropped_denied = 0
        self.dropped_queue_full = 0
        self.dropped_too_large = 0
        self.internal_errors = 0
        self.messages_expired = 0
        self.messages_received_qos = [0, 0, 0]  # PUBLISHes (and wills, in-process publications) in, by QoS
        self.messages_sent_qos = [0, 0, 0]  # PUBLISHes written to clients, by QoS
        # Control packets in and out (out: all but PUBLISH) of connections now closed; a live
        # connection keeps its own (ServerProtocol.packets_in/out: one add on an attribute it
        # already has, no shared counter per packet) until it closes and adds them here.
        self.packets_in_closed = 0
        self.packets_out_closed = 0
        self.protocol_errors = 0
        self.publish_bytes_received = 0  # payload bytes of the PUBLISHes counted in messages_received_qos
        self.publish_bytes_sent = 0  # payload bytes of the PUBLISHes counted in messages_sent_qos
        # CONNECTs naming a client id whose session belongs to another user: the stored session was
        # discarded, or (its owner connected) the CONNECT refused.
        self.session_owner_conflicts = 0
        self.sessions_expired = 0  # persistent sessions ended by their expiry interval
        self.slow_consumers_dropped = 0
        self.sockets_total = 0  # connections accepted on a listener, CONNECT or not (Mosquitto's sockets)
        self.websocket_upgrades_refused = 0  # HTTP requests on a ws/wss listener answered with an error

    @property
    def clients_total(self) -> int:
        return sum(self.clients_by_version)

    @property
    def messages_received(self) -> int:
        return sum(self.messages_received_qos)

    @property
    def messages_sent(self) -> int:
        return sum(self.messages_sent_qos)

    @property
    def messages_dropped(self) -> int:
        return self.dropped_congested + self.dropped_denied + self.dropped_queue_full + self.dropped_too_large
