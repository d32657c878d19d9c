"""Realtime for applications that cannot always speak MQTT: the shared parts of the Socket.IO
bridge (``services.socketio_bridge``) and HTTP long polling (``api.routes_realtime``).

* **Who.** A realtime client signs in with an API key (its name is the username) or with a user
  name and password checked by the same authentication hooks as an MQTT CONNECT; without either it
  is anonymous, allowed where the broker allows anonymous MQTT clients. Its filters and topics are
  checked by the same ACL hooks as an MQTT client's, as ``READ`` and ``WRITE``.
* **The journal.** Every message the broker routes is kept for a while, bounded by count, bytes
  and age (``realtime_journal_*``), under the broker's number for it (``Broker.number``) and the
  time it was routed (``Message.routed_at``, which every realtime delivery of it carries). A
  client that opens a realtime connection with ``since`` (a server timestamp) first gets what it
  missed from there: a browser that falls back from MQTT to Socket.IO, or from Socket.IO to
  polling, loses nothing between the two. Each message carries ``Broker.message_id`` on every
  transport (``message_id`` here, the user property ``wrenmq-message-id`` over MQTT for clients
  that ask for it), so the browser client drops what it then sees twice, by identity
  (``wrenmq-realtime.js``).
* **Inboxes.** What a Socket.IO client or a poll session is sent goes through an :class:`Inbox`: a
  bounded buffer that drops the oldest when its reader is too slow and says how many it dropped.
* **Presence.** Application users announce themselves with a presence id; each of their live
  connections (a Socket.IO socket, a poll session, an MQTT connection that published its own
  online presence) is an attachment. The first attachment publishes a retained
  ``<realtime_presence_prefix>/<id>`` ``{"status": "online"}``, the last one to go the offline
  one. An offline message (an MQTT will) for a user still attached by another transport is
  dropped: a browser that moved from MQTT to Socket.IO stays online.

Messages reach the journal from ``Broker.route`` itself (``Broker.journal``, compiled: a Python
call per message would cost as much again as routing it), after every publish hook; they reach
readers as in-process subscriptions in the broker's router (``Broker.subscribe_local``), matched
with MQTT clients' by the one trie match per message, so readers cost nothing for messages they do
not want. ``on_publish`` runs for presence topics only; no other hook event runs per message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from time import time as _now
from typing import TYPE_CHECKING, Any

from ..api.principal import Principal
from ..broker.facade import BrokerFacade
from ..broker.router import LocalSubscriber
from ..hooks import LET_IN, READ, WRITE, AuthResult, ClientInfo, DropReason, Hook, Reject
from ..mqtt import packets as p
from ..mqtt.properties import PropertyId
from ..mqtt.topics import SHARE_PREFIX, topic_matches, valid_topic_filter
from .journal import Delivery, Inbox, Journal

RealtimeClient = Principal  # who a realtime client is: the API's one principal type

if TYPE_CHECKING:
    from ..api.keys import ApiKeyStore
    from ..broker.broker import Broker
    from ..broker.message import Message
    from ..cluster import Cluster
    from .realtime_cluster import ClusterJournal

__all__ = [
    "MAX_FILTERS",
    "Denied",
    "Inbox",
    "Journal",
    "PresenceBoard",
    "RealtimeClient",
    "RealtimeService",
    "message_json",
    "sign_in_user",
]

log = logging.getLogger("wrenmq.realtime")

MAX_FILTERS = 64  # filters per realtime client: each costs a match per routed message
_P = PropertyId


class Denied(Exception):
    """A realtime request refused: ``status`` is the HTTP status it maps to (401, 403, 422)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Subscriber:
    """A realtime reader (a Socket.IO socket or a poll session): its filters, with QoS, and inbox.
    Its filters are in-process subscriptions in the broker's router, owned as ``local_id``."""

    def __init__(self, key: str, client: RealtimeClient, service: RealtimeService) -> None:
        self.key = key
        self.local_id = "realtime:" + key
        self.client = client
        self.service = service
        self.filters: dict[str, int] = {}
        self.inbox: Inbox[Delivery] = Inbox(service.broker.config.api.stream_buffer)
        self.presence_id: str | None = None

    def deliver(self, message: Message, qos: int, sub_ids: list[int] | None) -> None:
        """The router's handler: a message one of the filters matched, at ``qos`` (the highest
        granted, capped by the message's). A full inbox loses its oldest, told to ``on_dropped``."""
        inbox = self.inbox
        oldest = inbox.buffer[0] if len(inbox.buffer) >= inbox.capacity else None
        if not inbox.add((message.seq, message.routed_at or _now(), message, qos)):
            self.service.messages_dropped += 1
            hooks = self.service.broker.hooks
            if hooks.dropped and oldest is not None:
                lost = oldest[2]
                detail = "the realtime client's inbox was full (stream_buffer)"
                hooks.notify(hooks.dropped, self.client.client_id, lost.topic, DropReason.QUEUE_FULL, detail, lost)
        self.service._notify(self)


class PresenceBoard:
    """Which application users are present, over which connections (see the module docstring)."""

    def __init__(self, service: RealtimeService, prefix: str, grace: float = 0.0) -> None:
        self.service = service
        self.prefix = prefix
        self.grace = grace
        # Users whose last attachment was lost, not closed: offline when the grace ends, unless back.
        self.leaving: dict[str, asyncio.TimerHandle] = {}
        self.topic_prefix = prefix + "/"
        self.attachments: dict[str, dict[str, str]] = {}  # presence id -> {attachment key: transport}
        self.by_key: dict[str, str] = {}  # attachment key -> presence id
        self.meta: dict[str, dict[str, Any]] = {}

    def topic(self, presence_id: str) -> str:
        return self.topic_prefix + presence_id

    def attach(self, presence_id: str, key: str, transport: str, meta: dict[str, Any] | None = None) -> None:
        if self.by_key.get(key) == presence_id:
            return
        self.detach(key)
        present = self.attachments.setdefault(presence_id, {})
        leaving = self.leaving.pop(presence_id, None)
        if leaving is not None:
            leaving.cancel()  # back within the grace: others never saw them go
        first = not present and leaving is None
        present[key] = transport
        self.by_key[key] = presence_id
        if meta:
            self.meta[presence_id] = {k: v for k, v in meta.items() if k not in ("id", "status", "timestamp")}
        if first and not key.startswith("mqtt:"):  # an MQTT client published its own online message
            self._announce(presence_id, "online", transport)

    def detach(self, key: str, goodbye: bool = True) -> None:
        """``key`` ended; ``goodbye``: closed on purpose, else lost (the user may be back over
        another transport within ``grace``, and is not announced offline before)."""
        presence_id = self.by_key.pop(key, None)
        if presence_id is None:
            return
        present = self.attachments.get(presence_id, {})
        transport = present.pop(key, "")
        if present:
            if key.startswith("mqtt:"):  # its will may have said offline: say online again
                self._announce(presence_id, "online", next(iter(present.values())))
            return
        self.attachments.pop(presence_id, None)
        if key.startswith("mqtt:"):  # an MQTT client's will says offline for it
            self.meta.pop(presence_id, None)
        elif goodbye or not self.grace:
            self._left(presence_id, transport)
        else:
            loop = asyncio.get_running_loop()
            self.leaving[presence_id] = loop.call_later(self.grace, self._left, presence_id, transport)

    def flush_leaving(self) -> None:
        """Say offline now for everyone still in their grace (the service is stopping)."""
        for presence_id, handle in list(self.leaving.items()):
            handle.cancel()
            self._left(presence_id, "")

    def _left(self, presence_id: str, transport: str) -> None:
        self.leaving.pop(presence_id, None)
        if not self.attachments.get(presence_id):
            self._announce(presence_id, "offline", transport)
            self.meta.pop(presence_id, None)

    def present_elsewhere(self, presence_id: str) -> bool:
        """Whether the user is attached by something other than MQTT (which its will speaks for)."""
        if presence_id in self.leaving:
            return True
        return any(not key.startswith("mqtt:") for key in self.attachments.get(presence_id, ()))

    def _announce(self, presence_id: str, status: str, transport: str) -> None:
        body = {**self.meta.get(presence_id, {}), "id": presence_id, "status": status, "transport": transport}
        body["timestamp"] = _iso(time.time())
        self.service.publish_soon(self.topic(presence_id), json.dumps(body).encode(), qos=1, retain=True)


class RealtimeService(Hook):
    """The journal, the realtime readers and presence; the Socket.IO bridge and the poll routes
    are its two faces. One per API server."""

    name = "realtime"

    def __init__(self, broker: Broker, api_keys: ApiKeyStore, cluster: Cluster | None = None) -> None:
        config = broker.config
        self.broker = broker
        self.api_keys = api_keys
        self.journal = Journal(
            config.realtime.journal_size, config.realtime.journal_bytes, config.realtime.journal_seconds
        )
        # With a cluster: every node's journal holds what readers anywhere read (realtime_cluster).
        self.shared: ClusterJournal | None = None
        if cluster is not None and self.journal.size:
            from .realtime_cluster import ClusterJournal

            self.shared = ClusterJournal(broker, cluster, config.realtime.journal_seconds)
        self.presence = PresenceBoard(self, config.realtime.presence_prefix, config.realtime.presence_grace)
        self._presence_prefix = self.presence.topic_prefix
        self.publish_topics: tuple[str, ...] = (self._presence_prefix,)  # on_publish: presence only
        self.subscribers: dict[str, Subscriber] = {}
        self.listeners: list[Any] = []  # called with (subscriber) when its inbox gets something
        self.messages_sent = 0
        self.messages_dropped = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.broker.hooks.add(self)
            if self.journal.size:
                self.journal.offset = time.time() - self.broker.loop.time()
                self.broker.journal = self.journal
            if self.shared is not None:
                self.shared.start()

    def stop(self) -> None:
        if self._started:
            self._started = False
            if self in self.broker.hooks.hooks:
                self.broker.hooks.remove(self)
            if self.broker.journal is self.journal:
                self.broker.journal = None
            if self.shared is not None:
                self.shared.stop()
        for subscriber in list(self.subscribers.values()):
            self._unsubscribe_all(subscriber)
            subscriber.inbox.close()
        self.presence.flush_leaving()

    # -- signing in -----------------------------------------------------------------------------------

    async def authenticate(
        self,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        peer: str = "realtime",
        host: str | None = None,
    ) -> RealtimeClient:
        """The client these credentials sign in, or :class:`Denied` (401; 429 while ``host`` is
        throttled for failed logins, which count with MQTT's: ``auth_failure_limit``)."""
        broker = self.broker
        host = host or peer
        if broker.login_throttled(host):
            raise Denied(429, "too many failed logins from this address; try again in a minute")
        client_id = client_id or "realtime-" + secrets.token_hex(6)
        if "\x00" in client_id or len(client_id) > 128:
            # As an MQTT client id [MQTT-1.5.4-2]; and U+0000 starts the broker's own origins (bridges).
            raise Denied(422, "a client id has at most 128 characters and no U+0000")
        if token:
            from ..api.deps import principal_for_token

            principal = await principal_for_token(BrokerFacade(broker), self.api_keys, token, client_id, peer)
            if principal is None:
                broker.login_failed(host)
                raise Denied(401, "invalid API key")
            return principal
        return await sign_in_user(broker, username, password, client_id, peer, host)

    def join_presence(self, subscriber: Subscriber, presence: dict[str, Any], transport: str) -> None:
        """Make ``subscriber``'s user present as ``presence["id"]``: allowed where its client may
        publish that user's presence topic (ACL ``WRITE``), so no one speaks for someone else."""
        presence_id = presence.get("id")
        if not isinstance(presence_id, str) or not presence_id or len(presence_id) > 128:
            raise Denied(422, "presence.id is a string of 1 to 128 characters")
        if any(c in presence_id for c in "/+#\x00"):
            raise Denied(422, "presence.id must be one topic level (no / + # or NUL)")
        self._acl(subscriber.client, self.presence.topic(presence_id), WRITE)
        subscriber.presence_id = presence_id
        self.presence.attach(presence_id, subscriber.key, transport, presence)

    def check_filters(
        self, client: RealtimeClient, filters: list[str], subscriber: Subscriber | None = None
    ) -> list[str]:
        """The filters, if well-formed (else Denied 422) and readable by ``client`` (else 403);
        with ``subscriber``, if it would then hold at most MAX_FILTERS."""
        if len(filters) > MAX_FILTERS:
            raise Denied(422, f"at most {MAX_FILTERS} topic filters")
        limits = self.broker.limits
        for topic_filter in filters:
            if not isinstance(topic_filter, str) or not topic_filter:
                raise Denied(422, "a topic filter is a non-empty string")
            if topic_filter.startswith(SHARE_PREFIX):
                raise Denied(422, f"{topic_filter!r}: realtime clients cannot join shared subscriptions")
            if not valid_topic_filter(topic_filter):
                raise Denied(422, f"{topic_filter!r} is not a valid topic filter [MQTT-4.7.1-1]")
            if len(topic_filter) > limits.max_topic_length or topic_filter.count("/") >= limits.max_topic_levels:
                raise Denied(422, f"{topic_filter!r} is beyond max_topic_length or max_topic_levels")
            self._acl(client, topic_filter, READ)
        if subscriber is not None and len(subscriber.filters.keys() | set(filters)) > MAX_FILTERS:
            raise Denied(422, f"at most {MAX_FILTERS} topic filters per client")
        return list(dict.fromkeys(filters))

    def _acl(self, client: RealtimeClient, topic: str, access: int) -> None:
        refusal = client.refusal(topic, access)
        if refusal is not None:
            raise Denied(403, refusal)

    # -- readers ------------------------------------------------------------------------------------

    def open(self, key: str, client: RealtimeClient) -> Subscriber:
        """A signed-in client's connection (``key``: ``sio:<sid>`` or ``poll:<session id>``);
        told to the ``on_realtime_connect`` hooks (the console's trace)."""
        subscriber = Subscriber(key, client, self)
        self.subscribers[key] = subscriber
        hooks = self.broker.hooks
        if hooks.realtime_connect:
            hooks.notify(hooks.realtime_connect, client, _transport(key))
        return subscriber

    def close(self, key: str, goodbye: bool = True, reason: str = "") -> None:
        """End a connection: ``goodbye`` if the client said so (else its user may come back within
        the presence grace); ``reason`` in words, for the ``on_realtime_disconnect`` hooks."""
        subscriber = self.subscribers.pop(key, None)
        if subscriber is not None:
            self._unsubscribe_all(subscriber)
            subscriber.inbox.close()
            hooks = self.broker.hooks
            if hooks.realtime_disconnect:
                said = reason or ("the client left" if goodbye else "connection lost")
                hooks.notify(hooks.realtime_disconnect, subscriber.client, _transport(key), said, goodbye)
        self.presence.detach(key, goodbye)

    def subscribe(
        self, subscriber: Subscriber, filters: dict[str, int], since: float | None = None, retained: bool = True
    ) -> int:
        """Add filters (already checked) and queue what they should see first: messages after
        ``since`` from the journal, then (``retained``) the retained messages of the new filters.
        Returns how many were queued."""
        new = [f for f in filters if f not in subscriber.filters]
        subscriber.filters.update(filters)
        if self.subscribers.get(subscriber.key) is subscriber:  # (not one closed meanwhile)
            for topic_filter, qos in filters.items():
                self.broker.subscribe_local(LocalSubscriber(subscriber.local_id, topic_filter, subscriber.deliver, qos))
            if self.shared is not None:
                for topic_filter in new:
                    self.shared.use(topic_filter)
        queued = 0
        inbox = subscriber.inbox
        if since is not None:
            for seq, stamp, message in self.journal.since(since):
                qos = _qos_in(filters, message.topic)
                if qos >= 0:
                    inbox.add((seq, stamp, message, min(qos, message.qos)))
                    queued += 1
        if retained:
            now = time.time()
            seen: set[str] = set()
            for topic_filter in new:
                for message in self.broker.retained.match(topic_filter):
                    if message.topic not in seen:
                        seen.add(message.topic)
                        inbox.add((0, now, message, min(filters[topic_filter], message.qos)))
                        queued += 1
        if queued:
            self._notify(subscriber)
        return queued

    def unsubscribe(self, subscriber: Subscriber, filters: list[str]) -> None:
        for topic_filter in filters:
            if subscriber.filters.pop(topic_filter, None) is not None:
                self.broker.unsubscribe_local(subscriber.local_id, topic_filter)
                if self.shared is not None:
                    self.shared.release(topic_filter)

    def _unsubscribe_all(self, subscriber: Subscriber) -> None:
        self.unsubscribe(subscriber, list(subscriber.filters))

    def _notify(self, subscriber: Subscriber) -> None:
        for listener in self.listeners:
            listener(subscriber)

    # -- publishing ---------------------------------------------------------------------------------

    async def publish(
        self,
        client: RealtimeClient,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
    ) -> int:
        """Publish for ``client`` under its ACL; returns the subscriptions it reached."""
        refusal = client.change_refusal()
        if refusal is not None:
            raise Denied(403, refusal)
        if not topic or topic.startswith("$") or any(c in topic for c in "+#\x00"):
            raise Denied(422, f"{topic!r} is not a topic a client may publish to")
        if qos not in (0, 1, 2):
            raise Denied(422, f"QoS must be 0, 1 or 2, not {qos!r}")
        self._acl(client, topic, WRITE)
        try:
            return await self.broker.publish(topic, payload, qos, retain, properties)
        except Reject as exc:
            raise Denied(403, exc.reason or f"rejected (0x{exc.reason_code:02x})") from None

    def publish_soon(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish from a hook (which cannot await); failures are logged."""
        task = asyncio.get_running_loop().create_task(self.broker.publish(topic, payload, qos, retain))
        self._tasks.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("realtime publish failed: %s", task.exception())

    # -- hook events --------------------------------------------------------------------------------

    def on_publish(self, client: ClientInfo | None, message: Message) -> Message:
        if message.topic.startswith(self._presence_prefix):  # (the hook set filters too: direct calls)
            self._presence_message(client, message)
        return message

    def _presence_message(self, client: ClientInfo | None, message: Message) -> None:
        presence_id = message.topic[len(self.presence.topic_prefix) :]
        if not presence_id or "/" in presence_id or not message.payload:
            return
        try:
            status = json.loads(message.payload).get("status")
        except (ValueError, AttributeError):
            return
        if status == "offline" and self.presence.present_elsewhere(presence_id):
            raise Reject(reason=f"{presence_id} is still present over another transport")
        if status == "online" and client is not None:
            self.presence.attach(presence_id, _mqtt_key(client), "mqtt")

    def on_disconnect(self, client: ClientInfo, reason: str, expected: bool) -> None:
        if self.presence.by_key:
            self.presence.detach(_mqtt_key(client))

    def on_stop(self) -> None:
        self.stop()


async def sign_in_user(
    broker: Broker, username: str | None, password: str | None, client_id: str, peer: str, host: str
) -> RealtimeClient:
    """Check a user name and password by the broker's one login rule (``Broker.check_login``), as
    for an MQTT CONNECT: an authentication source must vouch for the user, or anonymous access be
    allowed for the API. Password checks run off the event loop. Failures count toward the
    broker's failed-login throttle. Raises :class:`Denied` (401)."""
    client = Principal.user(BrokerFacade(broker), client_id, username, peer)
    packet = p.Connect(
        client_id=client_id,
        protocol_level=5,
        username=username,
        password=password.encode() if password is not None else None,
    )
    decided = broker.check_login(client, packet, broker.anonymous_allowed(None))
    result = decided if isinstance(decided, AuthResult) else await decided
    if not result.allowed:
        broker.login_failed(host)
        if username is None:
            raise Denied(401, "sign in with an API key or a user name and password (anonymous access is off)")
        raise Denied(401, result.reason or "bad user name or password")
    if result is not LET_IN:
        client.auth = result
    if result.username is not None:
        client.username = result.username
        client.kind = "user"
    return client


def _transport(key: str) -> str:
    """``socketio`` or ``poll``, from a reader's key (``sio:<sid>``, ``poll:<session id>``)."""
    return "socketio" if key.startswith("sio:") else "poll"


def _mqtt_key(client: ClientInfo) -> str:
    """An MQTT connection's attachment: by connection, not only client id, so that the end of a
    connection taken over (reported after the new one attached) does not detach the new one."""
    return f"mqtt:{client.client_id}:{id(client):x}"


def _qos_in(filters: dict[str, int], topic: str) -> int:
    best = -1
    for topic_filter, qos in filters.items():
        if qos > best and topic_matches(topic_filter, topic):
            best = qos
    return best


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"


# -- formats --------------------------------------------------------------------------------------


def message_json(
    seq: int, timestamp: float, message: Message, qos: int | None = None, message_id: str | None = None
) -> dict[str, Any]:
    """A message as the API's streams, Socket.IO and polling send it. ``id`` is the sender's
    sequence number (0 for a retained message sent on subscribe); ``message_id`` (Socket.IO and
    polling) is ``Broker.message_id``, the same whichever way the message reaches a client."""
    payload = message.payload
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    data: dict[str, Any] = {
        "id": seq,
        "topic": message.topic,
        "qos": message.qos if qos is None else qos,
        "retain": message.retain,
        "payload": text,
        "encoding": encoding,
        "timestamp": round(timestamp, 6),
    }
    if message_id is not None:
        data["message_id"] = message_id
    props = message.properties
    if props:
        found: dict[str, Any] = {}
        for pid, name in _PROPERTIES:
            value = props.get(pid)
            if value is None:
                continue
            if pid == _P.CORRELATION_DATA:
                value = base64.b64encode(value).decode("ascii")
            elif pid == _P.USER_PROPERTY:
                value = [[k, v] for k, v in value]
            found[name] = value
        if found:
            data["properties"] = found
    return data


_PROPERTIES = (
    (_P.PAYLOAD_FORMAT_INDICATOR, "payload_format_indicator"),
    (_P.MESSAGE_EXPIRY_INTERVAL, "message_expiry_interval"),
    (_P.CONTENT_TYPE, "content_type"),
    (_P.RESPONSE_TOPIC, "response_topic"),
    (_P.CORRELATION_DATA, "correlation_data"),
    (_P.USER_PROPERTY, "user_properties"),
)
