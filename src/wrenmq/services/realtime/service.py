"""The realtime service: the journal it switches on, the readers, presence, and the checks every
realtime request goes through (sign-in, ACL, filters). The Socket.IO bridge and the poll routes
are its two faces (see the package docstring)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from ...broker.facade import BrokerFacade
from ...broker.journal import Journal
from ...broker.router import LocalSubscriber
from ...hooks import READ, WRITE, ClientInfo, DropReason, Hook, Reject
from ...mqtt.topics import SHARE_PREFIX, valid_topic_filter
from .errors import Denied
from .presence import PresenceBoard, mqtt_key
from .readers import Subscriber
from .resume import queue_first
from .signin import RealtimeClient, sign_in_user

if TYPE_CHECKING:
    from ...api.keys import ApiKeyStore
    from ...broker.broker import Broker
    from ...broker.message import Message
    from ...cluster import Cluster
    from ..realtime_cluster import ClusterJournal

__all__ = ["MAX_FILTERS", "RealtimeService"]

log = logging.getLogger("wrenmq.realtime")

MAX_FILTERS = 64  # filters per realtime client: each costs a match per routed message


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
            from ..realtime_cluster import ClusterJournal

            self.shared = ClusterJournal(broker, cluster, config.realtime.journal_seconds)
        self.presence = PresenceBoard(
            self.publish_soon, config.realtime.presence_prefix, config.realtime.presence_grace
        )
        if cluster is not None:  # who is attached is the cluster's (board_cluster)
            from .board_cluster import SharedAttachments

            self.presence.shared = SharedAttachments(cluster, self.presence.announce, config.realtime.presence_grace)
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
            if self.presence.shared is not None:
                self.presence.shared.start()

    def stop(self) -> None:
        if self._started:
            self._started = False
            if self in self.broker.hooks.hooks:
                self.broker.hooks.remove(self)
            if self.broker.journal is self.journal:
                self.broker.journal = None
            if self.shared is not None:
                self.shared.stop()
            if self.presence.shared is not None:
                self.presence.shared.stop()
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
            from ...api.deps import principal_for_token

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
        subscriber = Subscriber(key, client, self, self.broker.config.api.stream_buffer)
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
        queued = queue_first(subscriber.inbox, self.journal, self.broker.retained, filters, new, since, retained)
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

    def reader_dropped(self, subscriber: Subscriber, lost: Message | None) -> None:
        """A reader's full inbox lost its oldest message: counted, and told to ``on_dropped``."""
        self.messages_dropped += 1
        hooks = self.broker.hooks
        if hooks.dropped and lost is not None:
            detail = "the realtime client's inbox was full (stream_buffer)"
            hooks.notify(hooks.dropped, subscriber.client.client_id, lost.topic, DropReason.QUEUE_FULL, detail, lost)

    def reader_woke(self, subscriber: Subscriber) -> None:
        self._notify(subscriber)

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
        if status == "offline" and client is not None:
            # A goodbye the client publishes itself (not its will) also ends the Socket.IO or
            # polling side of the same realtime client (``<client id>-sio`` / ``-poll``) that is
            # still registered: that is no other presence of the user's, only a switch not yet done.
            own = (client.client_id + "-sio", client.client_id + "-poll")
            for key in list(self.presence.attachments.get(presence_id, ())):
                subscriber = self.subscribers.get(key)
                if subscriber is not None and subscriber.client.client_id in own:
                    self.presence.detach(key, goodbye=True)
        if status == "offline" and self.presence.present_elsewhere(presence_id):
            raise Reject(reason=f"{presence_id} is still present over another transport")
        if status == "online" and client is not None:
            self.presence.attach(presence_id, mqtt_key(client), "mqtt")

    def on_disconnect(self, client: ClientInfo, reason: str, expected: bool) -> None:
        if self.presence.by_key:
            self.presence.detach(mqtt_key(client))

    def on_stop(self) -> None:
        self.stop()


def _transport(key: str) -> str:
    """``socketio`` or ``poll``, from a reader's key (``sio:<sid>``, ``poll:<session id>``)."""
    return "socketio" if key.startswith("sio:") else "poll"
