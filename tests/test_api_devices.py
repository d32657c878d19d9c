"""``/api/v1/devices`` and ``/api/v1/sessions`` (wrenmq feature, issue 8): the presence registry
over httpx against a real broker, with paho-mqtt devices (3.1.1 and 5.0) announcing themselves
and receiving the commands sent through the API: filters and paging, a device's detail with its
events, device and session commands (QoS 1, their payload shape), DELETE, validation (422), API
keys (401, 403), and 404 when presence is off.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_sync import MQTTv5, MQTTv311, PahoClient
from problems import problem
from test_presence import Device, by_id, snapshot_until
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0
D = "/api/v1/devices"
PROTOCOLS = [pytest.param(MQTTv311, id="3.1.1"), pytest.param(MQTTv5, id="5.0")]


class Api:
    """A broker with its API and presence, httpx clients (read-write ``http``, read-only
    ``viewer``, ``anonymous``), and the paho devices and admins of a test."""

    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        store = ApiKeyStore(server.broker.config.api_keys_path)
        tag = uuid.uuid4().hex[:8]
        url = server.api_url
        key, viewer = store.create(f"rw-{tag}"), store.create(f"ro-{tag}", read_only=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
        self.viewer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {viewer}"}, timeout=TIMEOUT)
        self.anonymous = httpx.Client(base_url=url, timeout=TIMEOUT)
        self.devices: list[Device] = []
        self.admins: list[PahoClient] = []

    def device(self, device_id: str, protocol: Any = MQTTv5, **info: Any) -> Device:
        device = Device(self.server.port, protocol, device_id, **info)
        self.devices.append(device)
        return device

    def admin(self, *filters: str, protocol: Any = MQTTv5) -> PahoClient:
        client = PahoClient(self.server.port, protocol)
        self.admins.append(client)
        for topic_filter in filters:
            client.subscribe(topic_filter, 1)
        return client

    def wait(self, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not check():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def entry(self, device_id: str) -> dict[str, Any] | None:
        response = self.http.get(f"{D}/{device_id}")
        return response.json() if response.status_code == 200 else None

    def wait_online(self, device_id: str, online: bool = True) -> None:
        self.wait(lambda: (self.entry(device_id) or {}).get("online") is online)

    def close(self) -> None:
        for device in self.devices:
            device.client.loop_stop()
            device.client.disconnect()
        for admin in self.admins:
            admin.close()
        for client in (self.http, self.viewer, self.anonymous):
            client.close()


@pytest.fixture
def api_factory(wrenmq_server_factory: Callable[..., WrenmqServer]) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(**overrides: Any) -> Api:
        api = Api(wrenmq_server_factory(api_port=0, presence_snapshot_debounce=0.02, **overrides))
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


def fields(body: dict[str, Any]) -> dict[str, str]:
    assert body["type"] == "urn:wrenmq:problem:invalid-request"
    return {error["field"]: error["message"] for error in body["errors"]}


def fleet(api: Api) -> None:
    """tv-1 (tv, session s1), tv-2 (tv, session s2), spk-1 (speaker, s1), cam-9 offline."""
    api.device("tv-1", type="tv", name="Lobby TV").status("playing", session="s1")
    api.device("tv-2", type="tv", name="Bar TV").status("idle", session="s2")
    api.device("spk-1", type="speaker", name="Lobby speaker").status("playing", session="s1")
    cam = api.device("cam-9", type="camera", name="Door")
    cam.status("idle")
    cam.drop()  # its will: offline [MQTT-3.1.2-8]
    api.wait(lambda: api.http.get(D, params={"status": "online"}).json()["total"] == 3)
    api.wait_online("cam-9", False)


def test_list_filters_and_pages(api: Api) -> None:
    fleet(api)

    def ids(**params: Any) -> list[str]:
        response = api.http.get(D, params=params)
        assert response.status_code == 200, response.text
        return [item["deviceId"] for item in response.json()["items"]]

    assert ids() == ["cam-9", "spk-1", "tv-1", "tv-2"]
    assert ids(status="online") == ["spk-1", "tv-1", "tv-2"]
    assert ids(status="offline") == ["cam-9"]
    assert ids(type="tv") == ["tv-1", "tv-2"]
    assert ids(session="s1") == ["spk-1", "tv-1"]
    assert ids(session="s1", type="speaker") == ["spk-1"]
    assert ids(q="lobby") == ["spk-1", "tv-1"]  # the name
    assert ids(q="TV-") == ["tv-1", "tv-2"]  # the id, case-insensitive
    assert ids(type="fridge") == []
    page = api.http.get(D, params={"limit": 2, "offset": 1}).json()
    assert [item["deviceId"] for item in page["items"]] == ["spk-1", "tv-1"]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    item = api.http.get(D, params={"q": "tv-1"}).json()["items"][0]
    assert (item["type"], item["name"], item["status"], item["sessionId"], item["online"]) == (
        "tv",
        "Lobby TV",
        "playing",
        "s1",
        True,
    )
    assert fields(problem(api.http.get(D, params={"status": "asleep"}), 422))["query.status"]
    assert fields(problem(api.http.get(D, params={"limit": 0}), 422))["query.limit"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_device_detail_with_events(api: Api, protocol: Any) -> None:
    """The entry plus its recent events, newest first."""
    device = api.device("pl-1", protocol, type="player")
    device.status("playing", session="s7", position=3000)
    device.event("started", track="a")
    device.event("buffering", ms=120)
    api.wait(lambda: len((api.entry("pl-1") or {}).get("events", [])) == 2)
    detail = api.http.get(f"{D}/pl-1").json()
    assert [e["event"] for e in detail["events"]] == ["buffering", "started"]
    assert detail["events"][0]["ms"] == 120
    assert (detail["deviceId"], detail["online"], detail["positionMs"], detail["client_id"]) == (
        "pl-1",
        True,
        3000,
        "pl-1",
    )
    assert detail["last_status"]["sessionId"] == "s7"
    assert problem(api.http.get(f"{D}/nobody"), 404)["type"] == "urn:wrenmq:problem:unknown-device"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_device_command_reaches_the_device(api: Api, protocol: Any) -> None:
    """The command is published at QoS 1 to devices/{id}/commands/{cmd}; a device subscribed at
    QoS 1 gets it at QoS 1 [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6]), with the payload shape of the
    topic scheme and the commandId the API answered."""
    device = api.device("tv-5", protocol)
    device.subscribe("devices/tv-5/commands/+", 1)
    api.wait_online("tv-5")
    response = api.http.post(f"{D}/tv-5/commands/seek", json={"positionMs": 90000})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["topic"] == "devices/tv-5/commands/seek"
    assert (answer["matched"], answer["online"]) == (1, True)
    msg = device.messages.get(timeout=TIMEOUT)
    assert (msg.topic, msg.qos) == ("devices/tv-5/commands/seek", 1)
    body = json.loads(msg.payload)
    assert set(body) == {"command", "params", "timestamp", "commandId"}
    assert (body["command"], body["params"], body["commandId"]) == ("seek", {"positionMs": 90000}, answer["commandId"])
    assert str(uuid.UUID(body["commandId"])) == body["commandId"]
    assert body["timestamp"].endswith("Z")
    # No body: params {}.
    assert api.http.post(f"{D}/tv-5/commands/pause").status_code == 202
    assert json.loads(device.messages.get(timeout=TIMEOUT).payload)["params"] == {}


def test_command_to_an_offline_or_unknown_device_is_still_published(api: Api) -> None:
    """A command to a device that is away is published all the same: its persistent session keeps
    the subscription and stores the QoS 1 message until it is back [MQTT-3.1.2-23] (session state
    with a Session Expiry Interval); the API says it was not online. Unknown devices too."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    away = PahoClient(api.server.port, MQTTv5, "away-1", clean_start=False, properties=props)
    away.subscribe("devices/away-1/commands/+", 1)
    away.close()  # a clean DISCONNECT: the session stays for 300 s
    response = api.http.post(f"{D}/away-1/commands/stop", json={"reason": "night"})
    assert response.status_code == 202
    assert (response.json()["online"], response.json()["matched"]) == (False, 1)
    back = PahoClient(api.server.port, MQTTv5, "away-1", clean_start=False, properties=props)
    api.admins.append(back)
    body = json.loads(back.receive(1)[0].payload)
    assert (body["command"], body["params"], body["commandId"]) == (
        "stop",
        {"reason": "night"},
        response.json()["commandId"],
    )
    unknown = api.http.post(f"{D}/ghost/commands/play")
    assert unknown.status_code == 202
    assert (unknown.json()["online"], unknown.json()["matched"]) == (False, 0)


def test_session_command_reaches_the_session(api: Api) -> None:
    """sessions/{id}/commands/{cmd} at QoS 1, to the devices that joined the session; ``online``
    counts the online devices reporting it."""
    one = api.device("m-1")
    two = api.device("m-2")
    for device in (one, two):
        device.subscribe("sessions/party/commands/+", 1)
        device.status("idle", session="party")
    api.wait(lambda: api.http.get(D, params={"session": "party", "status": "online"}).json()["total"] == 2)
    response = api.http.post("/api/v1/sessions/party/commands/play", json={"from": 0})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["topic"], answer["matched"], answer["online"]) == ("sessions/party/commands/play", 2, 2)
    for device in (one, two):
        msg = device.messages.get(timeout=TIMEOUT)
        body = json.loads(msg.payload)
        assert (msg.qos, body["command"], body["params"], body["commandId"]) == (
            1,
            "play",
            {"from": 0},
            answer["commandId"],
        )


def test_delete_forgets_the_device_and_clears_its_retained_messages(api: Api) -> None:
    """DELETE removes the entry and clears the retained status and lwt: a new subscriber gets
    neither (5.0 [MQTT-3.3.1-6], 3.1.1 [MQTT-3.3.1-10])."""
    watcher = api.admin("admin/devices/snapshot")
    api.device("old-1").status("idle")
    api.devices[0].drop()
    api.wait_online("old-1", False)
    probe = api.admin("devices/old-1/#")
    assert {m.topic for m in probe.receive(2)} == {"devices/old-1/status", "devices/old-1/lwt"}
    assert api.http.delete(f"{D}/old-1").status_code == 204
    problem(api.http.get(f"{D}/old-1"), 404)
    problem(api.http.delete(f"{D}/old-1"), 404)
    assert api.http.get(D).json()["total"] == 0
    api.admin("devices/old-1/#").nothing(0.4)
    snapshot_until(watcher, lambda s: "old-1" not in by_id(s))


@pytest.mark.parametrize(
    ("path", "field", "reason"),
    [
        (f"{D}/a+b", "path.id", "single topic level"),
        (f"{D}/a%23b", "path.id", "single topic level"),
        (f"{D}/a%00b", "path.id", "single topic level"),
        (f"{D}/a/b", "path.id", "single topic level"),
        (f"{D}/", "path.id", "must not be empty"),
    ],
)
def test_invalid_device_ids_are_422(api: Api, path: str, field: str, reason: str) -> None:
    for method in ("GET", "DELETE"):
        assert reason in fields(problem(api.http.request(method, path), 422))[field], method


@pytest.mark.parametrize(
    ("path", "field", "reason"),
    [
        (f"{D}/a+b/commands/play", "path.id", "single topic level"),
        (f"{D}/tv/commands/pl%23ay", "path.cmd", "single topic level"),
        (f"{D}/tv/commands/a/b", "path.cmd", "single topic level"),
        (f"{D}/tv/commands/", "path.cmd", "must not be empty"),
        ("/api/v1/sessions/s+1/commands/play", "path.id", "single topic level"),
        ("/api/v1/sessions/s1/commands/x/y", "path.cmd", "single topic level"),
        ("/api/v1/sessions/s1/commands/%00", "path.cmd", "single topic level"),
    ],
)
def test_invalid_command_paths_are_422(api: Api, path: str, field: str, reason: str) -> None:
    listener = api.admin("devices/#", "sessions/#")
    assert reason in fields(problem(api.http.post(path, json={}), 422))[field]
    listener.nothing(0.2)  # nothing was published


def test_command_params_must_be_an_object(api: Api) -> None:
    response = api.http.post(f"{D}/tv/commands/play", json=[1, 2])
    assert "body" in fields(problem(response, 422))


def test_keys_are_required(api: Api) -> None:
    """401 without a key on every route; a read-only key reads but may not command or delete."""
    api.device("k-1")
    api.wait_online("k-1")
    reads = [f"{D}", f"{D}/k-1"]
    writes = [
        ("POST", f"{D}/k-1/commands/play"),
        ("POST", "/api/v1/sessions/s/commands/play"),
        ("DELETE", f"{D}/k-1"),
    ]
    for path in reads:
        problem(api.anonymous.get(path), 401)
        assert api.viewer.get(path).status_code == 200
    for method, path in writes:
        problem(api.anonymous.request(method, path), 401)
        assert "read-only" in problem(api.viewer.request(method, path), 403)["detail"]
    assert api.entry("k-1") is not None  # the DELETE did not happen


def test_presence_off_is_404(api_factory: Callable[..., Api]) -> None:
    api = api_factory(presence=False)
    for method, path in [
        ("GET", D),
        ("GET", f"{D}/x"),
        ("DELETE", f"{D}/x"),
        ("POST", f"{D}/x/commands/play"),
        ("POST", "/api/v1/sessions/s/commands/play"),
    ]:
        assert "presence is off" in problem(api.http.request(method, path), 404)["detail"], (method, path)


def test_commands_refused_by_a_hook_are_403(api: Api) -> None:
    """A publish hook's Reject reaches the caller as a problem, as for POST /publish."""
    from wrenmq.hooks import Hook, Reject

    class NoCommands(Hook):
        def on_publish(self, client: Any, message: Any) -> Any:
            if "/commands/" in message.topic:
                raise Reject()
            return message

    hook = NoCommands()

    async def add() -> None:
        api.server.broker.hooks.add(hook)

    api.server.call(add())
    body = problem(api.http.post(f"{D}/tv/commands/play"), 403)
    assert body["reason_code"] == 0x87


def test_offline_device_listed_offline_after_a_clean_disconnect(api: Api) -> None:
    """status=offline matches the online flag: a device that disconnected cleanly (its will
    discarded [MQTT-3.14.4-3]) is offline, whatever status it last reported."""
    device = api.device("c-1")
    device.status("playing")
    api.wait_online("c-1")
    device.disconnect()
    api.wait_online("c-1", False)
    items = api.http.get(D, params={"status": "offline"}).json()["items"]
    assert [(i["deviceId"], i["status"]) for i in items] == [("c-1", "playing")]
    with pytest.raises(queue.Empty):
        api.devices[0].messages.get(timeout=0.05)
