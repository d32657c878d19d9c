"""The console's live pages in Chromium (wrenmq feature, issue 9): Devices (the presence registry,
kept current from the retained ``admin/devices/snapshot``, with commands to a device or a session)
and Resources (the change-event service, kept current from ``events/<kind>/+``, with gaps in
``seq`` filled from ``/resources/{kind}/events?since=``).

Everything is real: a wrenmq server with its API, Debian's Chromium driven by Playwright, devices
that are paho-mqtt clients speaking the README's device topic scheme, and changes made with curl.
Each page must load and work without a single console error."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from wrenmq.api.keys import ApiKeyStore
from wrenmq.hooks import Hook, Reject
from wrenmq.pytest_plugin import WrenmqServer
from wrenmq.services.presence import utc_timestamp

TIMEOUT = 5.0
TIMEOUT_MS = 15_000
ARTIFACTS = Path(__file__).parent / "artifacts"
KIND_KEY = "wrenmq.console.resources.kind"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0, ws_port=0, presence_snapshot_debounce=0.05)


@pytest.fixture
def api_key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


class Tab:
    """A browser context signed in (the key in sessionStorage) on one console page, recording
    console errors and uncaught exceptions."""

    def __init__(
        self,
        browser: Any,
        server: WrenmqServer,
        key: str,
        route: str,
        width: int = 1280,
        height: int = 800,
        **store: str,
    ) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        items = {"wrenmq.console.key": key, **store}
        self.context.add_init_script(
            "".join(f"sessionStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in items.items())
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{server.api_url}/#/{route}")
        self.page.wait_for_selector(f"section.page-{route}", timeout=TIMEOUT_MS)
        self.page.wait_for_function(
            "() => document.getElementById('live').dataset.state === 'connected'", timeout=TIMEOUT_MS
        )

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.wait_for_timeout(3500)  # let the highlights of the last change fade
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Any, server: WrenmqServer, api_key: str) -> Iterator[Callable[..., Tab]]:
    opened: list[Tab] = []

    def open_tab(route: str, **kw: Any) -> Tab:
        tab = Tab(browser, server, api_key, route, **kw)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()


class Device:
    """A device of the README's topic scheme, as a paho-mqtt 2.x client: the offline will on
    ``devices/{id}/lwt`` (retained, QoS 1), then an announce and a retained status."""

    def __init__(self, port: int, device_id: str, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5) -> None:
        self.id = device_id
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._acks: queue.Queue[str] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=protocol)
        will = {"deviceId": device_id, "status": "offline", "timestamp": utc_timestamp()}
        self.client.will_set(f"devices/{device_id}/lwt", json.dumps(will), qos=1, retain=True)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._acks.put("connack" if not rc.is_failure else str(rc))
        self.client.on_subscribe = lambda _c, _u, _m, _rcs, _p: self._acks.put("suback")
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._acks.get(timeout=TIMEOUT) == "connack"

    def publish(self, topic: str, body: dict[str, Any], retain: bool = False) -> None:
        info = self.client.publish(topic, json.dumps({"timestamp": utc_timestamp(), **body}), 1, retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def announce(self, kind: str, name: str) -> None:
        self.publish("devices/discovery/announce", {"deviceId": self.id, "type": kind, "name": name})

    def status(self, status: str, session: str | None = None, position: int = 0) -> None:
        body = {"deviceId": self.id, "status": status, "positionMs": position, "sessionId": session}
        self.publish(f"devices/{self.id}/status", body, retain=True)

    def subscribe(self, topic_filter: str) -> None:
        self.client.subscribe(topic_filter, 1)
        assert self._acks.get(timeout=TIMEOUT) == "suback"

    def receive(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT)

    def drop(self) -> None:
        """End the TCP connection without DISCONNECT, as a device losing power would."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()
        sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices(server: WrenmqServer) -> Iterator[Callable[[str], Device]]:
    made: list[Device] = []

    def make(device_id: str) -> Device:
        device = Device(server.port, device_id)
        made.append(device)
        return device

    yield make
    for device in made:
        if device.client.socket() is not None:
            device.close()


def curl(
    server: WrenmqServer, key: str, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> Any:
    """The API through curl, as a script would call it; the parsed JSON answer."""
    command = ["curl", "-sS", "--fail-with-body", "-X", method, "-H", f"Authorization: Bearer {key}"]
    if body is not None:
        command += ["-H", f"Content-Type: {ctype}", "-d", json.dumps(body)]
    done = subprocess.run([*command, server.api_url + path], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout) if done.stdout else None


def row(table: str, item_id: str) -> str:
    return f"#{table} tr[data-id='{item_id}']"


# -- Devices ------------------------------------------------------------------------------------


def test_devices_page_shows_a_device_online_and_offline_when_its_will_fires(
    tabs: Callable[..., Tab], devices: Callable[[str], Device]
) -> None:
    """A device appears online with its announce and status, its last-seen time ticks, and it turns
    offline when its connection breaks and its will on devices/{id}/lwt fires [MQTT-3.1.2-8]."""
    tab = tabs("devices")
    page = tab.page
    page.wait_for_selector(".dev-empty:has-text('No devices yet')", timeout=TIMEOUT_MS)
    player = devices("player-1")
    player.announce("player", "Lobby player")
    player.status("playing", session="demo", position=61_000)
    headset = devices("headset-7")
    headset.announce("headset", "Headset 7")
    headset.status("idle")

    selector = row("device-table", "player-1")
    page.wait_for_selector(f"{selector} .badge.online", timeout=TIMEOUT_MS)
    cells = page.inner_text(selector)
    assert "Lobby player" in cells and "player" in cells and "playing" in cells and "demo" in cells
    assert "1:01" in cells  # positionMs 61000
    seen = page.inner_text(f"{selector} td.dev-seen")
    assert seen.endswith("s ago"), seen
    page.wait_for_function(
        "([sel, before]) => document.querySelector(sel + ' td.dev-seen').textContent !== before",
        arg=[selector, seen],
        timeout=TIMEOUT_MS,
    )  # it ticks without any new message

    # The filters work on what is shown.
    page.select_option("#dev-type", "headset")
    page.wait_for_selector(selector, state="detached", timeout=TIMEOUT_MS)
    assert page.is_visible(row("device-table", "headset-7"))
    page.select_option("#dev-type", "")
    page.fill("#dev-search", "lobby")
    page.wait_for_selector(row("device-table", "headset-7"), state="detached", timeout=TIMEOUT_MS)
    assert page.is_visible(selector)
    page.fill("#dev-search", "")
    tab.screenshot("console-devices.png")

    player.drop()
    page.wait_for_selector(f"{selector} .badge.offline", timeout=TIMEOUT_MS)
    page.select_option("#dev-status", "online")
    page.wait_for_selector(selector, state="detached", timeout=TIMEOUT_MS)
    assert page.is_visible(row("device-table", "headset-7"))
    assert "1 online" in page.inner_text("#dev-counts")
    assert not tab.errors, tab.errors


def test_devices_page_sends_commands_to_a_device_and_a_session(
    tabs: Callable[..., Tab], devices: Callable[[str], Device]
) -> None:
    """A command sent from the page reaches the device on devices/{id}/commands/{cmd} (and a session
    command on sessions/{id}/commands/{cmd}); the API's answer is shown, and the device's new
    status appears live."""
    tab = tabs("devices")
    page = tab.page
    device = devices("player-2")
    device.subscribe("devices/player-2/commands/#")
    device.subscribe("sessions/demo/commands/#")
    device.announce("player", "Stage player")
    device.status("paused", session="demo", position=5_000)
    device.publish("devices/player-2/events", {"deviceId": "player-2", "event": "buffering", "ms": 120})

    selector = row("device-table", "player-2")
    page.click(selector, timeout=TIMEOUT_MS)
    page.wait_for_selector("#device-detail:has-text('Stage player')", timeout=TIMEOUT_MS)
    page.wait_for_selector("#device-detail .dev-events:has-text('buffering')", timeout=TIMEOUT_MS)
    assert json.loads(page.inner_text("#device-last-status"))["status"] == "paused"
    assert page.input_value("#cmd-target-id") == "player-2"

    page.select_option("#cmd-name", "seek")
    page.fill("#cmd-position", "90000")
    page.fill("#cmd-params", '{"smooth": true}')
    page.click("#command-form button[type=submit]")
    message = device.receive()
    assert message.topic == "devices/player-2/commands/seek"
    command = json.loads(message.payload)
    assert command["command"] == "seek" and command["params"] == {"smooth": True, "positionMs": 90000}
    page.wait_for_selector(f"#cmd-result:has-text('{command['commandId']}')", timeout=TIMEOUT_MS)
    result = page.inner_text("#cmd-result")
    assert "devices/player-2/commands/seek" in result and "online" in result
    assert page.inner_text("#cmd-matched").startswith("1 ")
    page.wait_for_selector(".toast:has-text('seek sent to player-2')", timeout=TIMEOUT_MS)

    # The device obeys: its new status shows in the list and in the open detail, live.
    device.status("playing", session="demo", position=90_000)
    page.wait_for_selector(f"{selector} td.dev-status:has-text('playing')", timeout=TIMEOUT_MS)
    assert "1:30" in page.inner_text(selector)
    page.wait_for_function(
        "() => document.getElementById('device-last-status').textContent.includes('playing')", timeout=TIMEOUT_MS
    )

    # A custom command to the whole session.
    page.select_option("#cmd-target", "session")
    page.fill("#cmd-target-id", "demo")
    page.select_option("#cmd-name", "")
    page.fill("#cmd-custom", "volume")
    page.fill("#cmd-params", '{"level": 3}')
    page.click("#command-form button[type=submit]")
    message = device.receive()
    assert message.topic == "sessions/demo/commands/volume"
    assert json.loads(message.payload)["params"] == {"level": 3}
    page.wait_for_selector("#cmd-result:has-text('sessions/demo/commands/volume')", timeout=TIMEOUT_MS)
    assert "1 online in the session" in page.inner_text("#cmd-result")

    # Params that are not JSON are refused in the page, with a notice; nothing is sent.
    page.fill("#cmd-params", "{level: 3")
    page.click("#command-form button[type=submit]")
    page.wait_for_selector(".toast.error:has-text('not JSON')", timeout=TIMEOUT_MS)
    with pytest.raises(queue.Empty):
        device.messages.get(timeout=0.5)
    assert not tab.errors, tab.errors


def test_devices_page_on_a_phone(tabs: Callable[..., Tab], devices: Callable[[str], Device]) -> None:
    """At 390 px wide the list, the detail and the command form fit the screen (no sideways scroll
    of the page itself)."""
    tab = tabs("devices", width=390, height=844)
    page = tab.page
    device = devices("phone-view-1")
    device.announce("speaker", "Kitchen speaker")
    device.status("idle", session="home")
    page.click(row("device-table", "phone-view-1"), timeout=TIMEOUT_MS)
    page.wait_for_selector("#device-detail:has-text('Kitchen speaker')", timeout=TIMEOUT_MS)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    tab.screenshot("console-devices-phone.png")
    assert not tab.errors, tab.errors


# -- Resources ----------------------------------------------------------------------------------


def test_resources_page_follows_curl_changes_in_two_browser_contexts(
    tabs: Callable[..., Tab], server: WrenmqServer, api_key: str
) -> None:
    """A PUT then a PATCH made with curl show in two browser contexts at once without a reload:
    the row appears, then updates in place with the changed fields (dotted paths) highlighted; a
    DELETE removes it; the event log lists each change, newest first."""
    first = tabs("resources")
    first.page.fill("#res-kind", "flow")
    first.page.click(".res-kind-form button[type=submit]")
    second = tabs("resources", **{KIND_KEY: "flow"})  # the kind remembered in sessionStorage
    for tab in (first, second):
        tab.page.wait_for_selector("#res-status:has-text('last seq 0')", timeout=TIMEOUT_MS)
        tab.page.evaluate("() => { window.__notReloaded = true; }")

    curl(server, api_key, "PUT", "/api/v1/resources/flow/f1", {"label": "cam 1", "src": {"port": 5004, "host": "a"}})
    for tab in (first, second):
        tab.page.wait_for_selector(f"{row('resource-table', 'f1')}:has-text('cam 1')", timeout=TIMEOUT_MS)

    curl(
        server,
        api_key,
        "PATCH",
        "/api/v1/resources/flow/f1",
        {"label": "cam 2", "src": {"port": 5006}},
        ctype="application/merge-patch+json",
    )
    for tab in (first, second):
        page = tab.page
        selector = row("resource-table", "f1")
        page.wait_for_selector(
            f"{selector} .res-field.changed[data-path='label']:has-text('cam 2')", timeout=TIMEOUT_MS
        )
        assert page.is_visible(f"{selector} .res-field.changed[data-path='src.port']")
        assert not page.is_visible(f"{selector} .res-field.changed[data-path='src.host']")  # unchanged
        assert page.locator("#resource-table tbody tr").count() == 1  # updated in place
        assert page.evaluate("() => window.__notReloaded === true")
        log = page.locator("#res-log li")
        assert log.count() == 2
        assert "#2" in log.nth(0).inner_text() and "updated" in log.nth(0).inner_text()
        assert "label, src.port" in log.nth(0).inner_text()
        assert "#1" in log.nth(1).inner_text() and "created" in log.nth(1).inner_text()
        assert "flow (2)" in page.inner_text("#res-seen")
    curl(server, api_key, "PUT", "/api/v1/resources/flow/f2", {"label": "mic 1", "gain": -3})
    first.page.wait_for_selector(row("resource-table", "f2"), timeout=TIMEOUT_MS)
    first.screenshot("console-resources.png")

    curl(server, api_key, "DELETE", "/api/v1/resources/flow/f1")
    for tab in (first, second):
        tab.page.wait_for_selector(row("resource-table", "f1"), state="detached", timeout=TIMEOUT_MS)
        assert tab.page.locator("#res-log li").first.inner_text().count("deleted") == 1
        assert not tab.errors, tab.errors


def test_resources_page_lists_the_resources_that_exist_when_it_opens(
    tabs: Callable[..., Tab], server: WrenmqServer, api_key: str
) -> None:
    """Resources made before the page opened are listed (the first draw, before the API answered,
    must not leave the table empty)."""
    for n in range(3):
        curl(server, api_key, "PUT", f"/api/v1/resources/flow/old-{n}", {"label": f"old {n}"})
    tab = tabs("resources", **{KIND_KEY: "flow"})
    page = tab.page
    page.wait_for_selector("#res-status:has-text('last seq 3')", timeout=TIMEOUT_MS)
    for n in range(3):
        assert page.is_visible(f"{row('resource-table', f'old-{n}')}:has-text('old {n}')"), n
    assert not tab.errors, tab.errors


class DropEvents(Hook):
    """Refuses the publishes of change events for one resource, so a browser misses them (the
    events stay in the log)."""

    def __init__(self, resource_id: str) -> None:
        self.resource_id = resource_id

    def on_publish(self, client: Any, message: Any) -> Any:
        if message.topic.endswith("/" + self.resource_id) or (
            message.topic == "events/all" and f'"flow_id":"{self.resource_id}"'.encode() in bytes(message.payload)
        ):
            raise Reject(reason="dropped by the test")
        return message


def test_resources_page_fetches_missed_events_when_seq_jumps(
    tabs: Callable[..., Tab], server: WrenmqServer, api_key: str
) -> None:
    """Events the browser never received (their publishes refused) are fetched from
    /resources/{kind}/events?since= as soon as a later event shows a gap in seq."""
    tab = tabs("resources", **{KIND_KEY: "flow"})
    page = tab.page
    curl(server, api_key, "PUT", "/api/v1/resources/flow/a", {"label": "first"})
    page.wait_for_selector(row("resource-table", "a"), timeout=TIMEOUT_MS)

    hook = DropEvents("hidden")
    server.broker.hooks.add(hook, first=True)  # before the realtime service's hook, which forwards what it sees
    try:
        curl(server, api_key, "PUT", "/api/v1/resources/flow/hidden", {"label": "missed"})  # seq 2, not published
    finally:
        server.broker.hooks.remove(hook)
    page.wait_for_timeout(500)
    assert not page.is_visible(row("resource-table", "hidden")), page.inner_text("#res-log")

    curl(
        server, api_key, "PATCH", "/api/v1/resources/flow/a", {"label": "second"}, ctype="application/merge-patch+json"
    )
    page.wait_for_selector(f"{row('resource-table', 'hidden')}:has-text('missed')", timeout=TIMEOUT_MS)
    page.wait_for_selector(f"{row('resource-table', 'a')} .changed:has-text('second')", timeout=TIMEOUT_MS)
    assert page.inner_text("#res-status").endswith("last seq 3")
    assert [page.locator("#res-log li").nth(i).inner_text().split()[0] for i in range(3)] == ["#3", "#2", "#1"]
    assert not tab.errors, tab.errors


def test_resources_page_creates_edits_and_deletes(tabs: Callable[..., Tab], server: WrenmqServer, api_key: str) -> None:
    """The page's own form PUTs a resource and its Delete button (after a confirmation) removes
    it; what the API refuses is shown with the API's detail."""
    tab = tabs("resources", **{KIND_KEY: "camera"})
    page = tab.page
    page.wait_for_selector("text=No camera resources yet", timeout=TIMEOUT_MS)
    page.fill("#res-id", "c1")
    page.fill("#res-body", '{"label": "door", "fps": 25}')
    page.click("#res-edit button[type=submit]")
    page.wait_for_selector(f"{row('resource-table', 'c1')}:has-text('door')", timeout=TIMEOUT_MS)
    assert curl(server, api_key, "GET", "/api/v1/resources/camera/c1") == {"label": "door", "fps": 25}

    page.click(f"{row('resource-table', 'c1')} button:has-text('Edit')")
    assert json.loads(page.input_value("#res-body")) == {"label": "door", "fps": 25}
    page.fill("#res-body", '{"label": "gate", "fps": 25}')
    page.click("#res-edit button[type=submit]")
    page.wait_for_selector(
        f"{row('resource-table', 'c1')} .res-field.changed[data-path='label']:has-text('gate')",
        timeout=TIMEOUT_MS,
    )

    page.fill("#res-body", "[1, 2]")
    page.click("#res-edit button[type=submit]")
    page.wait_for_selector(".toast.error:has-text('JSON object')", timeout=TIMEOUT_MS)

    dialogs: list[str] = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.click(f"{row('resource-table', 'c1')} button:has-text('Delete')")
    page.wait_for_timeout(300)
    assert dialogs and "c1" in dialogs[0]
    assert page.is_visible(row("resource-table", "c1"))  # dismissed: still there
    page.once("dialog", lambda d: d.accept())
    page.click(f"{row('resource-table', 'c1')} button:has-text('Delete')")
    page.wait_for_selector(row("resource-table", "c1"), state="detached", timeout=TIMEOUT_MS)
    page.wait_for_selector("text=No camera resources yet", timeout=TIMEOUT_MS)

    page.fill("#res-kind", "camera/door")  # not one topic level: refused in the page, nothing loads
    page.click(".res-kind-form button[type=submit]")
    page.wait_for_selector(".toast.error:has-text('one topic level')", timeout=TIMEOUT_MS)
    assert page.inner_text("#res-title") == "Resources of kind camera"
    assert not tab.errors, tab.errors
