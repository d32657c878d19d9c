"""Device presence (issue 8): which devices exist, which are online, and what they last reported.

Devices follow a topic scheme (roots configurable; see README "Device presence"): a Last Will on
``devices/{id}/lwt``, ``devices/discovery/announce`` after connecting, a retained
``devices/{id}/status``, heartbeats on ``devices/{id}/heartbeat`` and events on
``devices/{id}/events``. ``Presence`` is a hook that watches those publishes (it observes; it never
changes or refuses a message) and keeps a registry of devices, with ``admin/devices/snapshot``
(retained) kept current and republished at once on ``admin/request/snapshot``.

A device is offline when its will fires (a non-empty ``lwt``), when its connection ends with a
clean DISCONNECT, or when nothing came from it for ``presence_heartbeat_interval *
presence_missed_heartbeats`` seconds. In the last two cases no will is sent, so the service
publishes the will-shaped offline message itself: subscribers to ``devices/+/lwt`` see one signal
for every cause. Anything a device publishes brings it back online, and its stale offline ``lwt``
is removed from the retain store (``Broker.delete_retained``), not cleared with an empty retained
PUBLISH: that would reach live subscribers as a payload that is not JSON, where panels parse every
message as JSON. The service publishes nothing but JSON on the device topics.

The registry is kept by the broker's storage (``Storage.device_put`` and friends: with SQLite in
``<data_dir>/presence.db``; in memory with ``storage = "memory"``). The registry itself lives in
memory on the event loop: the hook only updates dicts and enqueues writes, which the storage's
writer thread commits. After a restart every device is offline until it shows up again (no
connection survives a restart).

The hot path: the hook observes routed messages (``on_published``: what a publish hook refused is
not seen) and declares ``publish_topics`` (the device root and the request topic), so the broker
calls it for those topics only; every other message costs one ``str.startswith``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..hooks import ClientInfo, Hook
from ..mqtt.properties import PropertyId

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.message import Message
    from ..cluster import Cluster
    from .presence_cluster import PresenceCluster

__all__ = ["Presence", "utc_timestamp"]

log = logging.getLogger("wrenmq.services.presence")

ANNOUNCE = "discovery"  # devices/discovery/announce: "discovery" is not a device id
_JSON: dict[int, Any] = {PropertyId.CONTENT_TYPE: "application/json"}


def utc_timestamp(when: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as the topic scheme's timestamps."""
    moment = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Presence(Hook):
    """The presence service: ``await Presence(broker).start()`` registers it, ``stop()`` removes it."""

    name = "presence"

    def __init__(self, broker: Broker, cluster: Cluster | None = None) -> None:
        config = broker.config
        self.broker = broker
        # With a cluster: the registry in Redis, a replica here (see presence_cluster).
        self.shared: PresenceCluster | None = None
        if cluster is not None:
            from .presence_cluster import PresenceCluster

            self.shared = PresenceCluster(self, cluster)
        self.devices_root = config.presence.devices_root
        self.sessions_root = config.presence.sessions_root
        self.interval = config.presence.heartbeat_interval
        self.timeout = config.presence.heartbeat_interval * config.presence.missed_heartbeats
        self.debounce = config.presence.snapshot_debounce
        self.events_kept = config.presence.events_kept
        self.snapshot_array = config.presence.snapshot_format == "array"
        self.snapshot_topic = f"{config.presence.admin_root}/devices/snapshot"
        self.request_topic = f"{config.presence.admin_root}/request/snapshot"
        self._device_prefix = self.devices_root + "/"
        self._announce_topic = f"{self.devices_root}/{ANNOUNCE}/announce"
        # The hot path calls on_published for these topics only (one str.startswith for the rest).
        self.publish_topics: tuple[str, ...] = (self._device_prefix, self.request_topic)
        self.devices: dict[str, dict[str, Any]] = {}
        self._seen_at: dict[str, float] = {}  # loop time of the last message from each online device
        self._lwt_set: set[str] = set()  # devices whose retained lwt may hold an offline will
        # A connection that published for a device -> that device (until the connection ends);
        # by connection, not client id: a session takeover ends the old one after the new one began.
        self._bound: dict[ClientInfo, str] = {}
        self._dirty: set[str] = set()  # entries to write at the next flush
        self._snapshot_due = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the registry (every device offline), register the hook, start the heartbeat sweep."""
        self._loop = asyncio.get_running_loop()
        stale: list[str] = []
        shared = self.shared
        loaded = await shared.load() if shared is not None else None
        if shared is not None and loaded is not None:  # the cluster's registry
            for entry in loaded:
                device_id = entry["deviceId"]
                self.devices[device_id] = entry
                if not entry["online"]:
                    self._lwt_set.add(device_id)
                elif shared.heard_through.get(device_id) == shared.node:
                    stale.append(device_id)  # heard through this node's previous run: not connected now
                    entry["online"] = False
                    self._lwt_set.add(device_id)
        for entry in await self.broker.storage.devices_load() if loaded is None else ():
            device_id = entry["deviceId"]
            if entry.get("online"):
                stale.append(device_id)  # its connection did not survive the restart
            entry["online"] = False
            entry["client_id"] = None
            self.devices[device_id] = entry
            self._lwt_set.add(device_id)  # a will may be retained: cleared when the device is back
        if shared is not None:
            if loaded is None:  # the first node seeds the cluster's registry from its storage
                shared.put([dict(entry) for entry in self.devices.values()], set())
            shared.start()
        self.broker.hooks.add(self)
        for device_id in stale:
            self._dirty.add(device_id)
            self._spawn(self._publish_offline(device_id))
        self._snapshot_due = bool(self.devices)  # a retained snapshot from before the restart is stale
        self._changed()
        self._sweep_handle = self._loop.call_later(self._sweep_period(), self._sweep)
        log.info("presence: %d devices known, heartbeat timeout %gs", len(self.devices), self.timeout)

    async def stop(self) -> None:
        if self in self.broker.hooks.hooks:
            self.broker.hooks.remove(self)
        for handle in (self._sweep_handle, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._sweep_handle = self._flush_handle = None
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._write_dirty()  # committed by the storage when the broker stops, if not before
        if self.shared is not None:
            await self.shared.stop()

    # -- hook events (on the event loop; never block) -----------------------------------------

    def on_published(self, client: ClientInfo | None, message: Message, matched: int) -> None:
        # After routing: a message a publish hook refused is not taken for the device's word.
        if not message.topic.startswith(self.publish_topics):  # the hook set filters too: for direct calls
            return
        topic = message.topic
        try:
            if topic == self.request_topic:
                self._answer_request(message)
            elif topic.startswith(self._device_prefix):
                self._device_message(client, topic, message)
        except Exception:  # presence observes: never let it get in the way of the message
            log.exception("presence could not handle a message on %s", topic)

    def on_disconnect(self, client: ClientInfo, reason: str, expected: bool) -> None:
        device_id = self._bound.pop(client, None)
        if device_id is None:
            return
        entry = self.devices.get(device_id)
        if not expected or entry is None or entry.get("client_id") != client.client_id:
            return  # an abrupt end is the will's to report (or the heartbeat sweep's)
        if entry["online"]:
            self._set_offline(device_id)
            self._spawn(self._publish_offline(device_id))

    # -- the registry ---------------------------------------------------------------------------

    def _device_message(self, client: ClientInfo | None, topic: str, message: Message) -> None:
        if topic == self._announce_topic:
            body = _json_object(message.payload)
            device_id = body.get("deviceId") if body is not None else None
            if not isinstance(device_id, str) or not _single_level(device_id) or device_id == ANNOUNCE:
                return
            assert body is not None
            entry = self._entry(device_id)
            changed = self._set_fields(entry, type=body.get("type"), name=body.get("name"))
            if client is not None:
                self._seen(client, device_id, entry, changed)
            elif changed:
                self._changed(device_id)
            return
        rest = topic[len(self._device_prefix) :]
        device_id, _, kind = rest.partition("/")
        if not device_id or device_id == ANNOUNCE:
            return
        if kind == "lwt":
            self._lwt(client, device_id, message)
        elif kind in ("status", "heartbeat", "events"):
            body = _json_object(message.payload)
            entry = self._entry(device_id)
            changed = False
            if kind == "status" and body is not None:
                changed = self._status(entry, body)
            elif kind == "heartbeat":
                entry["last_heartbeat"] = utc_timestamp()
            elif kind == "events" and body is not None and self.events_kept:
                if self.shared is not None:
                    self.shared.event_add(device_id, body, self.events_kept)
                else:
                    self.broker.storage.device_event_add(device_id, body, self.events_kept)
            if client is not None:
                self._seen(client, device_id, entry, changed)
            else:
                self._dirty.add(device_id)
                self._changed(device_id if changed else None)

    def _lwt(self, client: ClientInfo | None, device_id: str, message: Message) -> None:
        if message.payload and not _says_online(message.payload):
            # A will fired (or the service's own offline message came back).
            if message.retain:
                self._lwt_set.add(device_id)
            entry = self.devices.get(device_id)
            if entry is None:
                entry = self._entry(device_id)
                self._changed(device_id)
            if entry["online"]:
                self._set_offline(device_id)
            return
        if message.retain:
            self._lwt_set.discard(device_id)  # the stale will is cleared or replaced by the device
        if client is not None and device_id in self.devices:
            self._seen(client, device_id, self.devices[device_id], False)

    def _entry(self, device_id: str) -> dict[str, Any]:
        entry = self.devices.get(device_id)
        if entry is None:
            now = utc_timestamp()
            entry = self.devices[device_id] = {
                "deviceId": device_id,
                "type": None,
                "name": None,
                "status": None,
                "online": False,
                "sessionId": None,
                "positionMs": None,
                "first_seen": now,
                "last_seen": now,
                "last_heartbeat": None,
                "client_id": None,
                "last_status": None,
            }
            self._dirty.add(device_id)
            self._snapshot_due = True
        return entry

    @staticmethod
    def _set_fields(entry: dict[str, Any], **fields: Any) -> bool:
        changed = False
        for key, value in fields.items():
            if value is not None and entry.get(key) != value:
                entry[key] = value
                changed = True
        return changed

    def _status(self, entry: dict[str, Any], body: dict[str, Any]) -> bool:
        changed = entry.get("last_status") != body
        entry["last_status"] = body
        status = body.get("status")
        if isinstance(status, str) and entry["status"] != status:
            entry["status"] = status
            changed = True
        position = body.get("positionMs")
        if isinstance(position, int) and not isinstance(position, bool):
            entry["positionMs"] = position
        if "sessionId" in body:
            session = body["sessionId"]
            if (session is None or isinstance(session, str)) and entry["sessionId"] != session:
                entry["sessionId"] = session
                changed = True
        return changed

    def _seen(self, client: ClientInfo, device_id: str, entry: dict[str, Any], changed: bool) -> None:
        """Something came from ``device_id`` over ``client``: it is online, and bound to it."""
        assert self._loop is not None
        self._seen_at[device_id] = self._loop.time()
        entry["last_seen"] = utc_timestamp()
        client_id = client.client_id
        self._bound[client] = device_id
        if entry["client_id"] != client_id:
            entry["client_id"] = client_id
            changed = True
        if not entry["online"]:
            entry["online"] = True
            changed = True
            if device_id in self._lwt_set:
                self._lwt_set.discard(device_id)
                self._clear_lwt(device_id)
        self._dirty.add(device_id)
        self._changed(device_id if changed else None)

    def _clear_lwt(self, device_id: str) -> None:
        """Remove the device's stale retained offline message from the retain store (and storage)
        without routing anything: an empty retained PUBLISH would reach every live subscriber of
        ``devices/+/lwt`` as a payload that is not JSON, and panels that ``JSON.parse`` each
        message would fail. Only the offline message seen now is removed, never a newer one."""
        topic = f"{self._device_prefix}{device_id}/lwt"
        stale = self.broker.retained.get(topic)
        if stale is not None and not _says_online(stale.payload):  # (a device's own online message stays)
            self._spawn(self._delete_retained(topic, stale))

    async def _delete_retained(self, topic: str, stale: Message) -> None:
        try:
            await self.broker.delete_retained(topic, only=stale)
        except Exception as exc:  # the broker is stopping
            log.warning("presence could not clear the retained %s: %s", topic, exc)

    def _set_offline(self, device_id: str) -> None:
        entry = self.devices[device_id]
        entry["online"] = False
        self._seen_at.pop(device_id, None)
        self._dirty.add(device_id)
        self._changed(device_id)

    def _changed(self, device_id: str | None = None) -> None:
        """Schedule a flush of dirty entries; with ``device_id``, the snapshot is due too. Changes
        within ``presence_snapshot_debounce`` seconds make one snapshot, built when it is sent."""
        if device_id is not None:
            self._snapshot_due = True
        if self._flush_handle is None and self._loop is not None and (self._dirty or self._snapshot_due):
            self._flush_handle = self._loop.call_later(self.debounce, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._write_dirty()
        if self._snapshot_due:
            self._snapshot_due = False
            self._spawn(self._publish_snapshot())

    def _write_dirty(self) -> None:
        if self._dirty:
            entries = [dict(self.devices[d]) for d in sorted(self._dirty) if d in self.devices]
            self._dirty.clear()
            if entries:
                self.broker.storage.device_put(entries)
                if self.shared is not None:
                    self.shared.put([dict(entry) for entry in entries], set(self._seen_at))

    def _sweep_period(self) -> float:
        return max(min(self.interval / 2, 60.0), 0.05)

    def _sweep(self) -> None:
        """Devices silent for longer than the heartbeat timeout are offline, announced on their lwt."""
        assert self._loop is not None
        deadline = self._loop.time() - self.timeout
        for device_id in [d for d, seen in self._seen_at.items() if seen < deadline]:
            entry = self.devices.get(device_id)
            if entry is not None and entry["online"]:
                log.info("device %s missed its heartbeats: offline", device_id)
                self._set_offline(device_id)
                self._spawn(self._publish_offline(device_id))
            else:
                self._seen_at.pop(device_id, None)
        if self.shared is not None:  # devices of a node that died, without a will
            for device_id in self.shared.orphans(self._loop.time(), self.timeout):
                self._spawn(self._orphan_offline(device_id))
        self._sweep_handle = self._loop.call_later(self._sweep_period(), self._sweep)

    async def _orphan_offline(self, device_id: str) -> None:
        """Say offline for a silent device of a dead node: one node does, cluster-wide."""
        assert self.shared is not None
        try:
            claimed = await self.shared.claim_offline(device_id)
        except Exception as exc:  # Redis away: the next sweep tries again
            log.warning("presence could not claim %s's offline message: %s", device_id, exc)
            return
        entry = self.devices.get(device_id)
        if claimed and entry is not None and entry["online"]:
            log.info("device %s was on a node that died and is silent: offline", device_id)
            self._set_offline(device_id)
            await self._publish_offline(device_id)

    def replace(self, device_id: str, entry: dict[str, Any] | None, elsewhere: bool) -> None:
        """Another node changed ``device_id``'s entry (None: forgot it); ``elsewhere``: the device
        is heard through that node, which watches its heartbeats. (Not written to this node's
        storage: the registry is Redis's; a node's storage keeps what it changed itself.)"""
        if entry is None:
            if self.devices.pop(device_id, None) is not None:
                self._forget(device_id)
                self.broker.storage.device_delete(device_id)
            return
        self.devices[device_id] = entry
        if elsewhere or not entry["online"]:
            self._seen_at.pop(device_id, None)
        if not entry["online"]:
            self._lwt_set.add(device_id)

    # -- what the service publishes -------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[int, Any] | None = None
    ) -> int:
        try:
            return await self.broker.publish(topic, payload, qos, retain, properties)
        except Exception as exc:  # a hook refused it, or the broker is stopping
            log.warning("presence could not publish to %s: %s", topic, exc)
            return 0

    async def _publish_offline(self, device_id: str) -> None:
        """The offline message a will carries, retained at QoS 1, for an end the will did not report."""
        payload = {"deviceId": device_id, "status": "offline", "timestamp": utc_timestamp()}
        self._lwt_set.add(device_id)
        await self._publish(f"{self._device_prefix}{device_id}/lwt", json.dumps(payload).encode(), 1, True, _JSON)

    def snapshot(self) -> dict[str, Any]:
        devices = [dict(self.devices[d]) for d in sorted(self.devices)]
        online = sum(1 for entry in devices if entry["online"])
        return {"devices": devices, "online": online, "total": len(devices), "timestamp": utc_timestamp()}

    def snapshot_payload(self) -> bytes:
        """The snapshot as published, in the shape ``presence_snapshot_format`` asks for."""
        snapshot = self.snapshot()
        return json.dumps(snapshot["devices"] if self.snapshot_array else snapshot).encode()

    async def _publish_snapshot(self, response: tuple[str, bytes | None] | None = None) -> None:
        payload = self.snapshot_payload()
        await self._publish(self.snapshot_topic, payload, 1, True, _JSON)
        if response is not None:
            topic, correlation = response
            properties: dict[int, Any] = dict(_JSON)
            if correlation is not None:
                properties[PropertyId.CORRELATION_DATA] = correlation
            await self._publish(topic, payload, 1, False, properties)

    def _answer_request(self, message: Message) -> None:
        response = None
        topic = message.properties.get(PropertyId.RESPONSE_TOPIC)
        if isinstance(topic, str) and _valid_topic_name(topic) and topic != self.request_topic:
            response = (topic, message.properties.get(PropertyId.CORRELATION_DATA))
        self._spawn(self._publish_snapshot(response))

    # -- for the API ----------------------------------------------------------------------------

    def get(self, device_id: str) -> dict[str, Any] | None:
        entry = self.devices.get(device_id)
        return dict(entry) if entry is not None else None

    async def events(self, device_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        if self.shared is not None:
            return await self.shared.events(device_id, limit or self.events_kept)
        return await self.broker.storage.device_events(device_id, limit or self.events_kept)

    def _forget(self, device_id: str) -> None:
        self._seen_at.pop(device_id, None)
        self._dirty.discard(device_id)
        self._lwt_set.discard(device_id)
        for conn in [c for c, d in self._bound.items() if d == device_id]:
            del self._bound[conn]

    async def delete(self, device_id: str) -> bool:
        """Forget ``device_id`` and its events; clear its retained status and lwt. False if unknown."""
        entry = self.devices.pop(device_id, None)
        if entry is None:
            return False
        self._forget(device_id)
        self.broker.storage.device_delete(device_id)
        if self.shared is not None:
            self.shared.delete(device_id)
        for kind in ("status", "lwt"):
            await self.broker.delete_retained(f"{self._device_prefix}{device_id}/{kind}")
        self._changed(device_id)
        return True


def _says_online(payload: bytes) -> bool:
    """A device's own ``{"status": "online"}`` on its lwt (the birth message of the convention):
    not a will."""
    body = _json_object(payload) if payload[:1] == b"{" else None
    return body is not None and body.get("status") == "online"


def _single_level(value: str) -> bool:
    return bool(value) and not any(bad in value for bad in ("/", "+", "#", "\x00"))


def _valid_topic_name(topic: str) -> bool:
    return bool(topic) and not any(bad in topic for bad in ("+", "#", "\x00"))
