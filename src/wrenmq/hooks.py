"""The one extension interface: authentication, authorisation and every service plug in here.

Subclass ``Hook``, override the events you handle, and register it with ``broker.hooks.add(hook)``
(before or after ``start()``). Hooks run in the order they were added; ``add(hook, first=True)``
puts one in front. An event that no hook overrides costs the broker nothing: the hot path checks
one list that is empty.

The events, in the order a client meets them:

``on_start(broker)`` / ``on_stop()``
    The broker started (listeners are bound) or is stopping.
``on_connect_authenticate(client, packet) -> AuthResult | None``
    A CONNECT passed protocol checks (console, Socket.IO and polling sign-ins ask too, with a
    CONNECT made for them). Return ``AuthResult.allow(...)`` or ``AuthResult.deny(...)`` to decide,
    ``None`` to leave it to the next hook. The first decision wins. A check too slow for the event
    loop (a password hash) returns an awaitable of that answer instead, and runs its work off the
    loop; the client's connection reads nothing more until it is decided. If no hook decides, the
    client (with a user name or without: a name nobody vouched for is only a claim) is let in only
    where anonymous access is allowed (``Broker.check_login``, the one rule for every way in).
``on_acl_check(client, topic, access) -> bool | PARTIAL | None``
    May ``client`` publish to (``WRITE``) or subscribe to (``READ``, ``topic`` is then the filter)
    this topic? First non-None answer wins; no answer allows. A deny is answered with reason code
    0x87 (PUBACK/PUBREC, SUBACK; 0x80 in a 3.1.1 SUBACK). For a subscription, ``PARTIAL`` grants a
    filter under which only some topics are readable: the broker then asks again (``READ``, with
    the topic name) for each message before delivering it on that subscription, and for each
    retained message it sends. Elsewhere (API streams, shared subscriptions) ``PARTIAL`` refuses.
``on_connect(client, packet)``
    The CONNACK was sent.
``on_subscribe(client, topic_filter, qos)`` / ``on_unsubscribe(client, topic_filter)``
    A subscription was granted (with this QoS) or removed.
``on_publish(client, message) -> Message``
    A message is about to be routed (``client`` is None when the broker itself publishes: the API,
    wills). Return it, or a new ``Message`` to change it; raise ``Reject`` to drop it (the
    publisher gets the reason code in MQTT 5). Runs after the ACL check. A hook that cares about
    some topics only sets ``publish_topics`` to their prefixes: it is called for those alone, and a
    message on no hook's prefix skips the publish hooks. The broker works that out once per topic
    and keeps it until the hooks change: after changing ``publish_topics`` call
    ``broker.hooks.refresh()``.
``on_published(client, message, matched)``
    The message was routed; ``matched`` client subscriptions took it (in-process ones are not
    counted, as in PUBACK's 0x10 No matching subscribers). Only
    observes: the message is what every ``on_publish`` hook let through, whatever order the hooks
    were added in; it must not be changed. ``publish_topics`` limits it to those topics as it does
    ``on_publish`` (device presence observes so). A hook that passes messages on for some topics only
    (to browsers, streams, other brokers) subscribes in-process instead
    (``Broker.subscribe_local``), so the broker's one topic match per message serves it too.
    ``$SYS`` messages the broker publishes on its own skip both publish events.
``on_message_delivered(client, message)``
    A PUBLISH was written to ``client``.
``on_disconnect(client, reason, expected)``
    The connection closed; ``expected`` is True for a DISCONNECT without will.
``on_realtime_connect(client, transport)`` / ``on_realtime_disconnect(client, transport, reason, expected)``
    A browser realtime client signed in and opened a connection (``transport``: ``"socketio"`` or
    ``"poll"``), or its connection ended (``expected``: it said goodbye). Not MQTT connections: the
    MQTT events above never fire for them.
``on_dropped(client_id, topic, reason, detail, message)``
    The broker dropped something: a message it will not route or deliver, a subscription it
    refused, or a client it disconnected as a slow consumer. ``reason`` is a ``DropReason``;
    ``detail`` says more in words (may be empty); ``client_id`` is the publisher of a refused
    publish or the subscriber a delivery was meant for (None for the broker's own publications);
    ``topic`` the message's topic, the refused filter, or None; ``message`` the ``Message`` when
    there is one. Called only where a drop happens (nothing per routed message); counters count
    drops whether or not a hook listens.
``on_session_expired(client_id)``
    A session ended: expired, or discarded by a clean start.

``client`` is a ``ClientInfo``: the broker's connection object for MQTT clients, a
``RestoredClient`` for a session restored from storage, the realtime service's client for
Socket.IO and long polling, the API's principal. Hooks read ``client_id``, ``username``, ``peer``
(its address), ``version`` (the MQTT protocol level), ``listener`` (a ``ListenerInfo``: the
``transports.Listener``, whose ``config`` is its ``ListenerConfig``; None in-process),
``cert_identity`` (a TLS client certificate's CN) and ``auth`` (what the deciding hook returned;
None if none decided), and nothing else. Hooks run on the event loop: they must not block.
Exceptions from a hook are logged and treated as no answer (or, for ``on_connect_authenticate``,
as a deny).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from .mqtt.reason_codes import ReasonCode

if TYPE_CHECKING:
    from .broker.message import Message
    from .config import Config, ListenerConfig
    from .mqtt import packets as p

__all__ = [
    "LET_IN",
    "PARTIAL",
    "READ",
    "WRITE",
    "AuthResult",
    "BrokerInfo",
    "ClientInfo",
    "DropReason",
    "Hook",
    "ListenerInfo",
    "Reject",
    "RestoredClient",
]


class ListenerInfo(Protocol):
    """What hooks read of the listener a client came in by."""

    @property
    def config(self) -> ListenerConfig: ...

    @property
    def use_identity_as_username(self) -> bool: ...


class ClientInfo(Protocol):
    """What hooks are told of a client, whichever way it came in (see the module docstring)."""

    @property
    def client_id(self) -> str: ...

    @property
    def username(self) -> str | None: ...

    @property
    def cert_identity(self) -> str | None: ...

    @property
    def auth(self) -> Any: ...

    @property
    def listener(self) -> ListenerInfo | None: ...

    @property
    def peer(self) -> str: ...

    @property
    def version(self) -> int: ...


class BrokerInfo(Protocol):
    """What ``on_start`` is given: the loop the broker runs on, and its settings."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def config(self) -> Config: ...


READ = 1  # subscribe (topic is the filter) and receive
WRITE = 2  # publish
PARTIAL = 3  # an on_acl_check answer to READ of a filter: some topics under it are readable, not all


class RestoredClient:
    """What ACL hooks see of a client whose session was restored from storage, until it reconnects:
    its client id and user name (from the session's owner), no listener, certificate or login."""

    __slots__ = ("auth", "cert_identity", "client_id", "listener", "peer", "username", "version")

    def __init__(self, client_id: str, username: str | None, version: int) -> None:
        self.client_id = client_id
        self.username = username
        self.version = version
        self.listener: Any = None
        self.cert_identity: str | None = None
        self.auth: Any = None
        self.peer = ""


class DropReason:
    """Why the broker dropped something (``on_dropped``'s ``reason``). Each has a counter in
    ``Broker.stats`` (and so in ``wrenmq_messages_dropped_total`` or a metric beside it)."""

    QUEUE_FULL = "queue_full"  # a session's queue at max_queued_*, or a realtime client's inbox at stream_buffer
    EXPIRED = "expired"  # its Message Expiry Interval passed while it was queued [MQTT-3.3.2-5]
    OFFLINE = "offline"  # QoS 0 for a session whose client is not connected (not queued)
    CONGESTED = "congested"  # QoS 0 for a client whose output waits at max_write_buffer
    TOO_LARGE = "too_large"  # over the client's Maximum Packet Size [MQTT-3.1.2-25]
    PUBLISH_DENIED = "publish_denied"  # the ACL, or a $ topic clients may not publish to
    TOPIC_LIMITS = "topic_limits"  # a topic beyond max_topic_length / max_topic_levels
    REJECTED = "rejected"  # an on_publish hook raised Reject (``detail``: its reason)
    SUBSCRIBE_DENIED = "subscribe_denied"  # a SUBSCRIBE's filter the ACL refused (``topic``: the filter)
    SUBSCRIBE_QUOTA = "subscribe_quota"  # a SUBSCRIBE beyond max_subscriptions (``topic``: the filter)
    SLOW_CONSUMER = "slow_consumer"  # the client was disconnected as a slow consumer (``detail``: why)


class Reject(Exception):
    """Raised by ``on_publish`` to drop a message; ``reason_code`` goes to an MQTT 5 publisher."""

    def __init__(self, reason_code: int = ReasonCode.NOT_AUTHORIZED, reason: str = "") -> None:
        super().__init__(reason or f"rejected (0x{reason_code:02x})")
        self.reason_code = reason_code
        self.reason = reason


class AuthResult:
    """What an authenticating hook decided about a CONNECT.

    ``username`` replaces the one the client sent (a certificate CN, a JWT claim); ``acl`` is an
    object the hook's own ``on_acl_check`` may consult (per-token rules); ``expires_at`` (wall-clock
    seconds) ends the connection then, with DISCONNECT 0xA0 Maximum connect time in MQTT 5.
    """

    __slots__ = ("acl", "allowed", "expires_at", "reason", "reason_code", "username")

    def __init__(
        self,
        allowed: bool,
        reason_code: int = ReasonCode.SUCCESS,
        reason: str = "",
        username: str | None = None,
        acl: Any = None,
        expires_at: float | None = None,
    ) -> None:
        self.allowed = allowed
        self.reason_code = reason_code
        self.reason = reason
        self.username = username
        self.acl = acl
        self.expires_at = expires_at

    @classmethod
    def allow(cls, username: str | None = None, acl: Any = None, expires_at: float | None = None) -> AuthResult:
        return cls(True, ReasonCode.SUCCESS, "", username, acl, expires_at)

    @classmethod
    def deny(cls, reason_code: int = ReasonCode.BAD_USER_NAME_OR_PASSWORD, reason: str = "") -> AuthResult:
        """0x86 Bad user name or password (3.1.1: 4) or 0x87 Not authorized (3.1.1: 5)."""
        return cls(False, reason_code, reason)

    def __repr__(self) -> str:
        if self.allowed:
            return f"AuthResult.allow(username={self.username!r})"
        return f"AuthResult.deny(0x{self.reason_code:02x}, {self.reason!r})"


# What ``Broker.check_login`` answers when no hook decided and anonymous access lets the client in
# (a client let in this way has ``auth`` None).
LET_IN = AuthResult(True, reason="no authentication hook decided; anonymous access is allowed")


class Hook:
    """Base class of every extension; each method is an event, and the defaults do nothing."""

    name = "hook"
    publish_topics: tuple[str, ...] | None = None  # on_publish and on_published only for these prefixes

    def handles(self, event: str) -> bool:
        """Whether this hook takes part in ``event`` (an ``on_*`` name), asked once when it is added.

        By default: if it overrides the method. A hook whose configuration leaves an event without
        work (an auth hook with no ACL rules) says False, and the broker never calls it for it.
        """
        return getattr(type(self), event) is not getattr(Hook, event)

    def on_start(self, broker: BrokerInfo) -> None:
        pass

    def on_stop(self) -> None:
        pass

    def on_connect_authenticate(
        self, client: ClientInfo, packet: p.Connect
    ) -> AuthResult | Awaitable[AuthResult | None] | None:
        return None

    def on_acl_check(self, client: ClientInfo, topic: str, access: int) -> bool | int | None:
        return None

    def on_connect(self, client: ClientInfo, packet: p.Connect) -> None:
        pass

    def on_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> None:
        pass

    def on_unsubscribe(self, client: ClientInfo, topic_filter: str) -> None:
        pass

    def on_publish(self, client: ClientInfo | None, message: Message) -> Message:
        return message

    def on_published(self, client: ClientInfo | None, message: Message, matched: int) -> None:
        pass

    def on_message_delivered(self, client: ClientInfo, message: Message) -> None:
        pass

    def on_disconnect(self, client: ClientInfo, reason: str, expected: bool) -> None:
        pass

    def on_realtime_connect(self, client: ClientInfo, transport: str) -> None:
        pass

    def on_realtime_disconnect(self, client: ClientInfo, transport: str, reason: str, expected: bool) -> None:
        pass

    def on_dropped(
        self, client_id: str | None, topic: str | None, reason: str, detail: str, message: Message | None
    ) -> None:
        pass

    def on_session_expired(self, client_id: str) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
