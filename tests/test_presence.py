"""Device presence (wrenmq feature, issue 8): the registry kept from the device topic scheme
(announce, retained status, heartbeats, events, the offline Last Will), the service's own offline
message for clean disconnects and missed heartbeats, the retained ``admin/devices/snapshot`` and
``admin/request/snapshot``, persistence in SQLite, and the presence_* settings.

Devices and admins are real paho-mqtt 2.x clients at 3.1.1 and 5.0. Where a test relies on MQTT
itself carrying the signal (a will, a retained message), the statement is cited beside it.
"""

from __future__ import annotations

import json
import queue
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_sync import MQTTv5, MQTTv311, PahoClient
from wrenmq.config import ConfigError, load_config
from wrenmq.pytest_plugin import WrenmqServer
from wrenmq.services.presence import Presence, utc_timestamp

TIMEOUT = 5.0
PROTOCOLS = [pytest.param(MQTTv311, id="3.1.1"), pytest.param(MQTTv5, id="5.0")]
FAST = {"presence_snapshot_debounce": 0.02}


class Device:
    """A device as the topic scheme has it: client id = device id, the offline will on
    ``devices/{id}/lwt`` (retained, QoS 1), then announce and status after the CONNACK."""

    def __init__(self, port: int, protocol: Any, device_id: str, announce: bool = True, **info: Any) -> None:
        self.id = device_id
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=protocol)
        will = {"deviceId": device_id, "status": "offline", "timestamp": utc_timestamp()}
        self.client.will_set(f"devices/{device_id}/lwt", json.dumps(will), qos=1, retain=True)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._acks.put(("connack", rc))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._acks.put(("suback", rcs))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        kind, rc = self._acks.get(timeout=TIMEOUT)
        assert kind == "connack" and not rc.is_failure, rc
        if announce:
            info = {"type": "player", "name": f"Player {device_id}", **info}
            self.publish("devices/discovery/announce", {"deviceId": device_id, **info}, qos=1)

    def publish(self, topic: str, body: dict[str, Any] | bytes, qos: int = 1, retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else json.dumps({"timestamp": utc_timestamp(), **body})
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def status(self, status: str, session: str | None = None, position: int = 0) -> None:
        body = {"deviceId": self.id, "status": status, "positionMs": position, "sessionId": session}
        self.publish(f"devices/{self.id}/status", body, qos=1, retain=True)

    def heartbeat(self) -> None:
        self.publish(f"devices/{self.id}/heartbeat", {"deviceId": self.id, "uptimeMs": 1}, qos=0)

    def event(self, name: str, **fields: Any) -> None:
        self.publish(f"devices/{self.id}/events", {"deviceId": self.id, "event": name, **fields}, qos=1)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.client.subscribe(topic_filter, qos)
        kind, _ = self._acks.get(timeout=TIMEOUT)
        assert kind == "suback"

    def disconnect(self) -> None:
        """A clean DISCONNECT: the server discards the will [MQTT-3.1.2-10] (5.0: [MQTT-3.14.4-3])."""
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """End the TCP connection without DISCONNECT, as a device losing power would."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()
        sock.close()


class Fleet:
    """Devices and admin clients for one broker, all closed at the end."""

    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        self.devices: list[Device] = []
        self.admins: list[PahoClient] = []

    def device(self, device_id: str, protocol: Any = MQTTv5, **kw: Any) -> Device:
        device = Device(self.server.port, protocol, device_id, **kw)
        self.devices.append(device)
        return device

    def admin(self, *filters: str, protocol: Any = MQTTv5, client_id: str = "") -> PahoClient:
        client = PahoClient(self.server.port, protocol, client_id)
        self.admins.append(client)
        for topic_filter in filters:
            client.subscribe(topic_filter, 1)
        return client

    def close(self) -> None:
        for device in self.devices:
            device.client.loop_stop()
            device.client.disconnect()
        for admin in self.admins:
            admin.close()


@pytest.fixture
def fleet_factory(wrenmq_server_factory: Callable[..., WrenmqServer]) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(**overrides: Any) -> Fleet:
        fleet = Fleet(wrenmq_server_factory(**{**FAST, **overrides}))
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


@pytest.fixture
def fleet(fleet_factory: Callable[..., Fleet]) -> Fleet:
    return fleet_factory()


def snapshot_until(
    admin: PahoClient, check: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
) -> dict[str, Any]:
    """The first snapshot ``admin`` (subscribed to admin/devices/snapshot) receives that passes ``check``."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            msg = admin.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if msg.topic != "admin/devices/snapshot":
            continue
        snapshot = json.loads(msg.payload)
        seen.append(snapshot)
        if check(snapshot):
            return snapshot
    raise AssertionError(f"no snapshot passed the check; last seen: {seen[-1:]}")


def by_id(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["deviceId"]: entry for entry in snapshot["devices"]}


def is_online(device_id: str, online: bool = True) -> Callable[[dict[str, Any]], bool]:
    return lambda snapshot: by_id(snapshot).get(device_id, {}).get("online") is online


def next_on(client: PahoClient, topic: str, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
    """The next message ``client`` receives on ``topic`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = client.messages.get(timeout=max(0.01, deadline - time.monotonic()))
        if msg.topic == topic:
            return msg


def next_on_lwt(client: PahoClient) -> mqtt.MQTTMessage:
    while not (msg := client.messages.get(timeout=TIMEOUT)).topic.endswith("/lwt"):
        pass
    return msg


def retained_lwts(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """What a new subscriber to devices/+/lwt is sent at once: the retained offline messages."""
    client = fleet.admin("devices/+/lwt")
    found: dict[str, dict[str, Any]] = {}
    while True:
        try:
            msg = client.messages.get(timeout=0.4)
        except queue.Empty:
            return found
        assert msg.retain, msg.topic
        found[msg.topic.split("/")[1]] = json.loads(msg.payload)


# -- the registry -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_announce_and_status_register_the_device(fleet: Fleet, protocol: Any) -> None:
    """After announce and status the device is in the registry, online, with its type, name,
    reported status, position and session; heartbeats record last_heartbeat."""
    admin = fleet.admin("admin/devices/snapshot")
    device = fleet.device("tv-1", protocol, type="tv", name="Lobby TV", version="1.2")
    device.status("playing", session="s-1", position=1500)
    device.heartbeat()
    snapshot = snapshot_until(admin, lambda s: by_id(s).get("tv-1", {}).get("last_heartbeat") is not None)
    entry = by_id(snapshot)["tv-1"]
    assert entry["online"] is True
    assert (entry["type"], entry["name"], entry["status"]) == ("tv", "Lobby TV", "playing")
    assert (entry["sessionId"], entry["positionMs"], entry["client_id"]) == ("s-1", 1500, "tv-1")
    assert entry["last_status"]["status"] == "playing"
    assert entry["first_seen"].endswith("Z") and entry["last_seen"].endswith("Z")
    assert (snapshot["online"], snapshot["total"]) == (1, 1)


def test_presence_passes_device_messages_on_unchanged(fleet: Fleet) -> None:
    """Presence observes: a device's status reaches subscribers byte for byte, retained as sent
    [MQTT-3.3.1-5], [MQTT-3.3.1-9] (3.1.1: [MQTT-3.3.1-6])."""
    device = fleet.device("p-1")
    payload = b'{"deviceId": "p-1", "status": "idle", "extra": [1, 2]}'
    device.publish("devices/p-1/status", payload, qos=1, retain=True)
    late = fleet.admin("devices/p-1/status")
    msg = late.receive(1)[0]
    assert (msg.payload, msg.retain) == (payload, True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_on_abrupt_close_marks_offline_and_stays_retained(fleet: Fleet, protocol: Any) -> None:
    """The will is published when the connection closes without DISCONNECT [MQTT-3.1.2-8],
    retained [MQTT-3.1.2-17] (5.0: [MQTT-3.1.2-15]); presence marks the device offline and does not
    add a second offline message of its own."""
    admin = fleet.admin("admin/devices/snapshot", "devices/+/lwt")
    device = fleet.device("cam-1", protocol)
    device.status("idle")
    snapshot_until(admin, is_online("cam-1"))
    device.drop()
    will = json.loads(next_on(admin, "devices/cam-1/lwt").payload)
    assert (will["deviceId"], will["status"]) == ("cam-1", "offline")
    snapshot = snapshot_until(admin, is_online("cam-1", False))
    assert (snapshot["online"], snapshot["total"]) == (0, 1)
    with pytest.raises(queue.Empty):
        next_on(admin, "devices/cam-1/lwt", timeout=0.4)
    assert retained_lwts(fleet)["cam-1"]["status"] == "offline"  # [MQTT-3.3.1-5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_clean_disconnect_publishes_the_offline_lwt(fleet: Fleet, protocol: Any) -> None:
    """A clean DISCONNECT discards the will [MQTT-3.1.2-10] (5.0: [MQTT-3.14.4-3]), so the service
    publishes the same offline message itself, once, retained (wrenmq feature)."""
    admin = fleet.admin("admin/devices/snapshot", "devices/+/lwt")
    device = fleet.device("spk-1", protocol)
    snapshot_until(admin, is_online("spk-1"))
    device.disconnect()
    msg = next_on(admin, "devices/spk-1/lwt")
    body = json.loads(msg.payload)
    assert set(body) == {"deviceId", "status", "timestamp"}
    assert (body["deviceId"], body["status"]) == ("spk-1", "offline")
    assert msg.qos == 1
    snapshot_until(admin, is_online("spk-1", False))
    with pytest.raises(queue.Empty):
        next_on(admin, "devices/spk-1/lwt", timeout=0.4)
    assert retained_lwts(fleet)["spk-1"]["status"] == "offline"


def test_heartbeat_timeout_then_back(fleet_factory: Callable[..., Fleet]) -> None:
    """A device that stays connected but sends nothing for interval * missed seconds is offline,
    announced by the service on its lwt; its next heartbeat brings it back and clears that lwt
    from the retained store without routing an empty message to the lwt's subscribers (wrenmq
    feature; issue 18: panels parse every message there as JSON)."""
    fleet = fleet_factory(presence_heartbeat_interval=0.2, presence_missed_heartbeats=2)
    admin = fleet.admin("admin/devices/snapshot", "devices/+/lwt")
    device = fleet.device("hb-1")
    for _ in range(3):
        time.sleep(0.1)
        device.heartbeat()
    silent_since = time.monotonic()
    snapshot_until(admin, is_online("hb-1"))
    body = json.loads(next_on(admin, "devices/hb-1/lwt").payload)
    assert time.monotonic() - silent_since >= 0.35  # not before the timeout: 0.4 s after the last heartbeat
    assert (body["deviceId"], body["status"]) == ("hb-1", "offline")
    snapshot_until(admin, is_online("hb-1", False))
    assert retained_lwts(fleet)["hb-1"]["status"] == "offline"

    device.heartbeat()
    snapshot_until(admin, is_online("hb-1"))
    assert "hb-1" not in retained_lwts(fleet)
    fleet.admin().publish("devices/hb-sentinel/lwt", b'{"deviceId": "hb-sentinel"}', 1)
    while (msg := next_on_lwt(admin)).topic != "devices/hb-sentinel/lwt":
        assert json.loads(msg.payload)["status"] == "offline"  # (timed out again: offline again)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_device_back_after_its_will_is_online_and_lwt_cleared(fleet: Fleet, protocol: Any) -> None:
    """After its will fired, the device reconnecting and announcing is online again, and the
    service clears the retained offline will for it: a new subscriber gets none
    (5.0 [MQTT-3.3.1-6], 3.1.1 [MQTT-3.3.1-10])."""
    admin = fleet.admin("admin/devices/snapshot")
    fleet.device("r-1", protocol).drop()
    snapshot_until(admin, lambda s: "r-1" in by_id(s) and not by_id(s)["r-1"]["online"])
    assert "r-1" in retained_lwts(fleet)
    fleet.device("r-1", protocol)  # announces; does not clear its lwt itself
    snapshot_until(admin, is_online("r-1"))
    assert "r-1" not in retained_lwts(fleet)


def test_device_online_message_on_its_lwt_is_not_a_will(fleet: Fleet) -> None:
    """A device that replaces its retained will with its own ``{"status": "online"}`` on the lwt
    topic (the birth-message convention; the simulator does) is online, and the service leaves
    that message retained [MQTT-3.3.1-5] (wrenmq feature)."""
    admin = fleet.admin("admin/devices/snapshot")
    fleet.device("on-1").drop()
    snapshot_until(admin, lambda s: "on-1" in by_id(s) and not by_id(s)["on-1"]["online"])
    back = fleet.device("on-1", announce=False)
    back.publish("devices/on-1/lwt", {"deviceId": "on-1", "status": "online"}, qos=1, retain=True)
    snapshot_until(admin, is_online("on-1"))
    back.status("idle")  # more from the device: the service clears no will, there is none
    snapshot_until(admin, lambda s: by_id(s)["on-1"]["status"] == "idle")
    assert retained_lwts(fleet)["on-1"]["status"] == "online"


def test_clean_disconnect_after_a_session_takeover(fleet: Fleet) -> None:
    """A device that reconnects with its client id takes the session over (the old connection is
    closed [MQTT-3.1.4-3]); when the old connection's end is reported, the device stays bound to
    the new one, whose clean DISCONNECT then marks it offline (wrenmq feature)."""
    admin = fleet.admin("admin/devices/snapshot", "devices/+/lwt")
    old = fleet.device("to-1")
    snapshot_until(admin, is_online("to-1"))
    old.client.loop_stop()  # no automatic reconnection: the new client takes over
    new = fleet.device("to-1")
    new.status("idle")
    snapshot_until(admin, lambda s: by_id(s).get("to-1", {}).get("status") == "idle" and is_online("to-1")(s))
    time.sleep(0.2)  # the old connection's end has been reported
    while not admin.messages.empty():
        admin.messages.get()
    new.disconnect()
    body = json.loads(next_on(admin, "devices/to-1/lwt").payload)
    assert body["status"] == "offline"
    snapshot_until(admin, is_online("to-1", False))


# -- the snapshot -----------------------------------------------------------------------------


def test_snapshot_is_retained_and_current(fleet: Fleet) -> None:
    """A newly connecting admin is sent the whole fleet at once, as the retained snapshot
    [MQTT-3.3.1-5], [MQTT-3.3.1-9] (3.1.1: [MQTT-3.3.1-6])."""
    watcher = fleet.admin("admin/devices/snapshot")
    for name in ("a-1", "a-2", "a-3"):
        fleet.device(name).status("idle")
    fleet.devices[2].drop()
    snapshot_until(watcher, lambda s: s["total"] == 3 and s["online"] == 2)
    late = fleet.admin("admin/devices/snapshot", protocol=MQTTv311)
    msg = late.receive(1)[0]
    assert msg.retain
    snapshot = json.loads(msg.payload)
    assert sorted(by_id(snapshot)) == ["a-1", "a-2", "a-3"]
    assert (snapshot["online"], snapshot["total"]) == (2, 3)
    assert by_id(snapshot)["a-3"]["online"] is False
    assert snapshot["timestamp"].endswith("Z")


def test_snapshot_is_debounced(fleet_factory: Callable[..., Fleet]) -> None:
    """Ten quick status changes make far fewer snapshots than ten, and the last one is current
    (wrenmq feature)."""
    fleet = fleet_factory(presence_snapshot_debounce=0.3)
    device = fleet.device("d-1")
    admin = fleet.admin("admin/devices/snapshot")
    snapshot_until(admin, lambda s: "d-1" in by_id(s))
    time.sleep(0.5)  # past any snapshot still on its way
    while not admin.messages.empty():
        admin.messages.get()
    for position in range(10):
        device.status("playing", position=position * 1000)
    device.status("paused", position=9999)
    time.sleep(1.0)
    snapshots = [json.loads(m.payload) for m in list(admin.messages.queue) if m.topic == "admin/devices/snapshot"]
    assert 1 <= len(snapshots) <= 3, len(snapshots)
    last = by_id(snapshots[-1])["d-1"]
    assert (last["status"], last["positionMs"]) == ("paused", 9999)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_is_answered_at_once(fleet_factory: Callable[..., Fleet], protocol: Any) -> None:
    """A publish to admin/request/snapshot gets the snapshot republished now, not after the
    debounce (here 30 s) (wrenmq feature)."""
    fleet = fleet_factory(presence_snapshot_debounce=30)
    admin = fleet.admin("admin/devices/snapshot", protocol=protocol)
    fleet.device("q-1").status("playing")
    started = time.monotonic()
    admin.publish("admin/request/snapshot", b"", qos=1)
    snapshot = snapshot_until(admin, lambda s: "q-1" in by_id(s), timeout=3.0)
    assert time.monotonic() - started < 3.0
    assert by_id(snapshot)["q-1"]["status"] == "playing"


def test_request_with_response_topic_and_correlation_data(fleet_factory: Callable[..., Fleet]) -> None:
    """An MQTT 5 request with a Response Topic gets the snapshot on that topic, not retained,
    carrying its Correlation Data, which the broker passes on unaltered [MQTT-3.3.2-16] (the
    request/response pattern of MQTT 5.0 section 4.10; answering it is a wrenmq feature)."""
    fleet = fleet_factory(presence_snapshot_debounce=30)
    fleet.device("rr-1")
    admin = fleet.admin("replies/admin-7", client_id="admin-7")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/admin-7"
    props.CorrelationData = b"req-42"
    admin.publish("admin/request/snapshot", b"{}", qos=1, properties=props)
    msg = next_on(admin, "replies/admin-7")
    assert msg.retain is False
    assert msg.properties.CorrelationData == b"req-42"
    assert "rr-1" in by_id(json.loads(msg.payload))


def test_snapshot_as_an_array_of_devices(fleet_factory: Callable[..., Fleet]) -> None:
    """With presence_snapshot_format = "array" the retained snapshot, and the answer to a request
    with a Response Topic, are the bare array of device entries (wrenmq feature; issue 18)."""
    fleet = fleet_factory(presence_snapshot_format="array")
    for name in ("ar-1", "ar-2"):
        fleet.device(name).status("idle")
    fleet.devices[1].drop()
    watcher = fleet.admin("admin/devices/snapshot")
    while True:
        devices = json.loads(next_on(watcher, "admin/devices/snapshot").payload)
        assert isinstance(devices, list)
        if [(d["deviceId"], d["online"]) for d in devices] == [("ar-1", True), ("ar-2", False)]:
            break
    assert devices[0]["status"] == "idle" and set(devices[0]) >= {"type", "name", "last_seen", "client_id"}
    late = fleet.admin("admin/devices/snapshot", "replies/ar", client_id="ar-admin")
    assert json.loads(next_on(late, "admin/devices/snapshot").payload) == devices  # retained [MQTT-3.3.1-9]
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/ar"
    late.publish("admin/request/snapshot", b"{}", qos=1, properties=props)
    reply = json.loads(next_on(late, "replies/ar").payload)
    assert [d["deviceId"] for d in reply] == ["ar-1", "ar-2"]


# -- persistence and settings -----------------------------------------------------------------


def test_registry_survives_a_restart_with_devices_offline(
    wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path
) -> None:
    """With sqlite storage the registry and events survive a restart; every device comes back
    offline (its connection did not survive), and its lwt says so, retained (wrenmq feature)."""
    settings: dict[str, Any] = {"storage": "sqlite", "data_dir": tmp_path, **FAST}
    first = Fleet(wrenmq_server_factory(**settings))
    device = first.device("k-1", type="kiosk", name="Kiosk")
    device.status("playing", session="s-9", position=42)
    device.event("started", track="t1")
    snapshot_until(first.admin("admin/devices/snapshot"), is_online("k-1"))
    first.admins[0].close()
    first.server.stop()  # the device is still connected: the broker's shutdown sends no will
    device.client.loop_stop()
    assert (tmp_path / "presence.db").exists()

    second = Fleet(wrenmq_server_factory(**settings, api_port=0))
    try:
        admin = second.admin("admin/devices/snapshot")
        snapshot = snapshot_until(admin, lambda s: "k-1" in by_id(s))
        entry = by_id(snapshot)["k-1"]
        assert entry["online"] is False
        assert (entry["type"], entry["name"], entry["status"], entry["sessionId"]) == (
            "kiosk",
            "Kiosk",
            "playing",
            "s-9",
        )
        assert retained_lwts(second)["k-1"]["status"] == "offline"
        presence = second.server.services.presence if second.server.services else None
        assert presence is not None
        events = second.server.call(presence.events("k-1"))
        assert [(e["event"], e["track"]) for e in events] == [("started", "t1")]
    finally:
        second.close()


def test_events_are_bounded_per_device(fleet_factory: Callable[..., Fleet]) -> None:
    """Only the newest presence_events_kept events are kept, newest first (wrenmq feature)."""
    fleet = fleet_factory(presence_events_kept=3)
    device = fleet.device("e-1")
    other = fleet.device("e-2")
    for n in range(5):
        device.event("tick", n=n)
    other.event("tock")
    presence = fleet.server.services.presence if fleet.server.services else None
    assert presence is not None
    deadline = time.monotonic() + TIMEOUT
    while [e["n"] for e in fleet.server.call(presence.events("e-1"))] != [4, 3, 2]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [e["event"] for e in fleet.server.call(presence.events("e-2"))] == ["tock"]


def test_presence_off_registers_no_hook(fleet_factory: Callable[..., Fleet]) -> None:
    """presence = false: no hook, so device traffic costs nothing and no snapshot appears (wrenmq feature)."""
    fleet = fleet_factory(presence=False)
    broker = fleet.server.broker
    assert fleet.server.services is not None and fleet.server.services.presence is None
    assert broker.hooks.find(Presence) == []
    assert broker.hooks.publish == []
    fleet.device("off-1").status("idle")
    admin = fleet.admin("admin/devices/snapshot")
    admin.nothing(0.4)


def test_presence_is_on_by_default_and_stops_with_the_services(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """The hook is registered by Services.start (with the API off) and removed by stop (wrenmq feature)."""
    server = wrenmq_server_factory()
    assert server.config.api.port is None
    presence = server.services.presence if server.services else None
    assert presence is not None and broker_hooks_has(server.broker, presence)
    broker = server.broker
    server.call(server.services.stop())
    assert broker.hooks.find(Presence) == []


def broker_hooks_has(broker: Any, hook: Any) -> bool:
    return hook in broker.hooks.find(type(hook))


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("presence_heartbeat_interval = 0", "presence_heartbeat_interval"),
        ("presence_missed_heartbeats = 0", "presence_missed_heartbeats"),
        ("presence_snapshot_debounce = -1", "presence_snapshot_debounce"),
        ("presence_events_kept = -5", "presence_events_kept"),
        ('presence_devices_root = "a/b"', "presence_devices_root"),
        ('presence_admin_root = "#"', "presence_admin_root"),
        ('presence_sessions_root = ""', "presence_sessions_root"),
        ('presence = "maybe"', "presence"),
        ('presence_snapshot_format = "list"', "presence_snapshot_format"),
    ],
)
def test_bad_presence_settings_stop_start_up(tmp_path: Path, line: str, key: str) -> None:
    """A bad presence_* value is a ConfigError naming the key (wrenmq feature)."""
    config = tmp_path / "wrenmq.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError, match=rf"key '{key}'"):
        load_config(config, env={})


def test_presence_settings_from_file_and_environment(tmp_path: Path) -> None:
    """The settings load from the file and WRENMQ_* variables (wrenmq feature)."""
    config = tmp_path / "wrenmq.toml"
    config.write_text('presence_devices_root = "fleet"\npresence_heartbeat_interval = 5\n')
    loaded = load_config(config, env={"WRENMQ_PRESENCE_MISSED_HEARTBEATS": "4", "WRENMQ_PRESENCE": "false"})
    assert (loaded.presence.devices_root, loaded.presence.heartbeat_interval) == ("fleet", 5.0)
    assert (loaded.presence.missed_heartbeats, loaded.presence.enabled) == (4, False)
    with pytest.raises(ConfigError, match="WRENMQ_PRESENCE_EVENTS_KEPT"):
        load_config(env={"WRENMQ_PRESENCE_EVENTS_KEPT": "many"})


def test_roots_are_configurable(fleet_factory: Callable[..., Fleet]) -> None:
    """presence_devices_root and presence_admin_root move the scheme (wrenmq feature)."""
    fleet = fleet_factory(presence_devices_root="fleet", presence_admin_root="ops")
    admin = fleet.admin("ops/devices/snapshot")
    client = fleet.admin()
    client.publish("fleet/discovery/announce", json.dumps({"deviceId": "x-1", "type": "probe"}).encode(), qos=1)
    msg = next_on(admin, "ops/devices/snapshot")
    snapshot = json.loads(msg.payload)
    while "x-1" not in by_id(snapshot):
        snapshot = json.loads(next_on(admin, "ops/devices/snapshot").payload)
    assert by_id(snapshot)["x-1"]["type"] == "probe"


def test_publish_hooks_with_topic_prefixes_see_only_those_topics(fleet: Fleet) -> None:
    """A hook's publish_topics keeps it (presence among them) off every other topic: what keeps
    presence off the hot path of non-device traffic (wrenmq feature)."""
    from wrenmq.hooks import Hook

    seen: list[tuple[str, str]] = []

    class Only(Hook):
        publish_topics = ("x/",)

        def on_publish(self, client: Any, message: Any) -> Any:
            seen.append(("only", message.topic))
            return message

    class Every(Hook):
        def on_publish(self, client: Any, message: Any) -> Any:
            seen.append(("every", message.topic))
            return message

    server = fleet.server
    broker = server.broker
    presence = server.services.presence if server.services else None
    assert presence is not None and broker.hooks.published_prefixes == presence.publish_topics
    assert broker.hooks.publish_prefixes == ()  # presence observes after routing, on its topics only
    only, every = Only(), Every()

    async def add(hook: Hook) -> None:
        broker.hooks.add(hook)

    server.call(add(only))
    assert set(broker.hooks.publish_prefixes or ()) == {"x/"}
    client = fleet.admin()
    client.publish("y/1", b"a", qos=1)
    client.publish("x/1", b"b", qos=1)
    assert seen == [("only", "x/1")]
    server.call(add(every))
    assert broker.hooks.publish_prefixes is None  # a hook that wants every topic: all are screened
    client.publish("y/2", b"c", qos=1)
    client.publish("x/2", b"d", qos=1)
    server.publish("y/3", b"e")
    assert seen[1:] == [("every", "y/2"), ("only", "x/2"), ("every", "x/2"), ("every", "y/3")]


def test_presence_does_not_take_a_refused_message_for_the_device(fleet: Fleet) -> None:
    """Presence observes routed messages only (``on_published``): an announce that a publish hook
    added after it refuses never reaches the registry. The announce after it is the sentinel."""
    from hookrec import add_hook
    from wrenmq.hooks import Hook, Reject

    class RefuseDevice(Hook):
        def on_publish(self, client: Any, message: Any) -> Any:
            if b"refused-1" in message.payload:
                raise Reject(reason="not this device")
            return message

    add_hook(fleet.server, RefuseDevice())
    admin = fleet.admin("admin/devices/snapshot")
    client = fleet.admin()
    for device_id in ("refused-1", "kept-1"):
        client.publish("devices/discovery/announce", json.dumps({"deviceId": device_id}).encode(), qos=1)
    snapshot = snapshot_until(admin, lambda s: "kept-1" in by_id(s))
    assert "refused-1" not in by_id(snapshot)
    presence = fleet.server.services.presence if fleet.server.services else None
    assert presence is not None and "refused-1" not in presence.devices
