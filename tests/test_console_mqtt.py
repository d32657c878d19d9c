"""The console's MQTT client page in Chromium (wrenmq feature, issue 9): MQTT.js in the page talks to
wrenmq's WebSocket listener while paho-mqtt talks to its TCP listener. Connect, subscribe, publish
with MQTT 5 properties, several tabs at once, the will, a flood that must not freeze the page,
filter and pause, input validation, and connections kept while navigating (ended on sign-out)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, MQTTv311, PahoFactory
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
ARTIFACTS = Path(__file__).parent / "artifacts"
PANEL = "section.mqtt-connection:not([hidden])"
RECONNECT_WAIT_MS = 2500  # longer than the page's reconnect period (2 s)


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0, ws_port=0)


@pytest.fixture
def api_key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def paho(server: WrenmqServer) -> Iterator[PahoFactory]:
    factory = PahoFactory(server.port)
    yield factory
    factory.close()


class MqttPage:
    """The MQTT page in a fresh browser context, signed in, recording console errors."""

    def __init__(self, browser: Any, server: WrenmqServer, key: str, viewport: dict[str, int] | None = None) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
        self.context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)})")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(server.api_url + "/#/mqtt")
        self.page.wait_for_selector("#mqtt-new", timeout=TIMEOUT_MS)
        # The "this wrenmq" preset is filled in from GET /api/v1/broker/status.
        self.page.wait_for_selector("#mqtt-broker option[value='0']", state="attached", timeout=TIMEOUT_MS)

    def connect(self, name: str, version: str = "5", client_id: str | None = None, **will: str) -> int:
        """Fill the form, connect, wait for "connected"; returns the connection's number."""
        page = self.page
        if page.is_hidden("#mqtt-new"):
            page.click("#mqtt-tab-new")
        page.fill("#mqtt-name", name)
        page.select_option("#mqtt-version", version)
        if client_id is not None:
            page.fill("#mqtt-client-id", client_id)
        if will:
            page.click(".mqtt-will summary")
            page.fill("#mqtt-will-topic", will["topic"])
            page.fill("#mqtt-will-payload", will.get("payload", ""))
            page.select_option("#mqtt-will-qos", will.get("qos", "0"))
        page.click("#mqtt-new button[type=submit]")
        page.wait_for_selector(f"{PANEL} .mqtt-state:text-is('connected')", timeout=TIMEOUT_MS)
        return int(page.get_attribute(PANEL, "data-connection") or "0")

    def subscribe(self, n: int, topic_filter: str, qos: int = 0) -> None:
        page = self.page
        page.fill(f"#mqtt-sub-filter-{n}", topic_filter)
        page.select_option(f"#mqtt-sub-qos-{n}", str(qos))
        page.click(f"#mqtt-conn-{n} .mqtt-subscribe button[type=submit]")
        page.wait_for_selector(f"#mqtt-conn-{n} .mqtt-subs li:has-text('{topic_filter}') .badge.ok", timeout=TIMEOUT_MS)

    def rows(self, n: int) -> Any:
        return self.page.locator(f"#mqtt-conn-{n} li.mqtt-message")

    def received(self, n: int) -> int:
        return int(self.page.get_attribute(f"#mqtt-conn-{n} .mqtt-counter", "data-received") or "0")

    def wait_received(self, n: int, count: int, timeout_ms: int = TIMEOUT_MS) -> None:
        self.page.wait_for_function(
            "([n, count]) => Number(document.querySelector(`#mqtt-conn-${n} .mqtt-counter`).dataset.received) >= count",
            arg=[n, count],
            timeout=timeout_ms,
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser: Any, server: WrenmqServer, api_key: str) -> Iterator[MqttPage]:
    opened = MqttPage(browser, server, api_key)
    yield opened
    opened.close()


def clients(server: WrenmqServer, key: str) -> list[dict[str, Any]]:
    """The page's connected clients (generated ids start wrenmq-console-), as the API lists them."""
    response = httpx.get(server.api_url + "/api/v1/clients", headers={"Authorization": "Bearer " + key})
    response.raise_for_status()
    return [c for c in response.json()["items"] if c["connected"] and c["client_id"].startswith("wrenmq-console-")]


def test_mqtt_page_receives_a_paho_message_with_pretty_json(
    console: MqttPage, server: WrenmqServer, paho: PahoFactory, browser: Any, api_key: str
) -> None:
    """Connect to this wrenmq over WebSocket, subscribe, and see a message published by paho."""
    page = console.page
    assert "only over WebSocket" in page.inner_text("#mqtt-new")
    n = console.connect("sensors")
    console.subscribe(n, "sensors/#", qos=1)
    publisher = paho(MQTTv5)
    publisher.publish("sensors/kitchen", json.dumps({"celsius": 21.5, "ok": True}).encode(), qos=1)
    publisher.publish("sensors/raw", bytes([0, 159, 255, 1]), qos=0)
    publisher.publish("sensors/text", b"plain words", qos=0)
    console.wait_received(n, 3)
    rows = console.rows(n)
    assert rows.count() == 3
    # Newest first: the JSON message is the last row.
    json_row = rows.nth(2)
    assert json_row.locator(".mqtt-topic").inner_text() == "sensors/kitchen"
    assert json_row.locator(".mqtt-qos").inner_text() == "QoS 1"
    assert json_row.locator(".mqtt-payload").inner_text() == '{\n  "celsius": 21.5,\n  "ok": true\n}'
    assert rows.nth(1).locator(".mqtt-payload").inner_text() == "00 9f ff 01"
    assert rows.nth(1).locator(".mqtt-payload").get_attribute("data-kind") == "binary"
    assert rows.nth(0).locator(".mqtt-payload").inner_text() == "plain words"
    # The connection shows up in the API as a WebSocket client.
    found = clients(server, api_key)
    assert len(found) == 1 and found[0]["protocol"] == "5.0"
    assert not console.errors, console.errors

    ARTIFACTS.mkdir(exist_ok=True)
    publisher.publish(
        "sensors/hall/state",
        json.dumps({"door": "closed", "battery": 87, "seen": [1, 2, 3]}).encode(),
        qos=1,
        properties=_props(content_type="application/json", user=[("site", "lab")]),
    )
    console.wait_received(n, 4)
    page.fill(f"#mqtt-pub-topic-{n}", "sensors/hall/cmd")
    page.fill(f"#mqtt-pub-payload-{n}", '{"open": false}')
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "console-mqtt.png"), full_page=True)

    phone = MqttPage(browser, server, api_key, viewport={"width": 390, "height": 844})
    try:
        m = phone.connect("phone")
        phone.subscribe(m, "sensors/#")
        publisher.publish("sensors/kitchen", json.dumps({"celsius": 22.0}).encode(), qos=0)
        phone.wait_received(m, 1)
        width = phone.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
        phone.page.evaluate("() => window.scrollTo(0, 0)")
        phone.page.screenshot(path=str(ARTIFACTS / "console-mqtt-phone.png"), full_page=True)
        assert not phone.errors, phone.errors
    finally:
        phone.close()


def _props(content_type: str | None = None, user: list[tuple[str, str]] | None = None) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    if content_type:
        props.ContentType = content_type
    if user:
        props.UserProperty = user
    return props


def test_mqtt_page_payload_formats_text_json_base64_hex(console: MqttPage, paho: PahoFactory) -> None:
    """The publish box is read as text, JSON, Base64 or hex, and paho receives exactly those bytes;
    a payload that is not what its format says is refused in the page (nothing published: the
    next message paho gets is the valid one). Received payloads can be shown in each format."""
    page = console.page
    live = paho(MQTTv5)
    live.subscribe("fmt/#", qos=1)
    n = console.connect("formats")
    console.subscribe(n, "fmt/#", qos=1)

    def publish(topic: str, payload: str, fmt: str) -> None:
        page.fill(f"#mqtt-pub-topic-{n}", topic)
        page.fill(f"#mqtt-pub-payload-{n}", payload)
        page.select_option(f"#mqtt-pub-format-{n}", fmt)
        page.click(f"#mqtt-conn-{n} .mqtt-publish button[type=submit]")

    publish("fmt/bad-hex", "0g ff", "hex")
    assert "not hex" in page.inner_text(f"#mqtt-conn-{n} .mqtt-publish .error")
    publish("fmt/bad-json", "{nope", "json")
    assert "not JSON" in page.inner_text(f"#mqtt-conn-{n} .mqtt-publish .error")
    publish("fmt/bad-base64", "a!b", "base64")
    assert "not Base64" in page.inner_text(f"#mqtt-conn-{n} .mqtt-publish .error")
    publish("fmt/hex", "00 ff 10 68 69", "hex")
    publish("fmt/base64", "aGVsbG8gd29ybGQ=", "base64")
    publish("fmt/json", '{"a": [1, 2]}', "json")
    publish("fmt/text", "grüße", "text")
    got = [(m.topic, m.payload) for m in live.receive(4)]
    assert got == [
        ("fmt/hex", bytes([0x00, 0xFF, 0x10, 0x68, 0x69])),  # the refused ones never went out
        ("fmt/base64", b"hello world"),
        ("fmt/json", b'{"a": [1, 2]}'),
        ("fmt/text", "grüße".encode()),
    ]

    console.wait_received(n, 4)
    payloads = f"#mqtt-conn-{n} li.mqtt-message .mqtt-payload"
    page.select_option(f"#mqtt-view-{n}", "hex")
    assert page.locator(payloads).all_inner_texts() == [
        "67 72 c3 bc c3 9f 65",
        "7b 22 61 22 3a 20 5b 31 2c 20 32 5d 7d",
        "68 65 6c 6c 6f 20 77 6f 72 6c 64",
        "00 ff 10 68 69",
    ]
    page.select_option(f"#mqtt-view-{n}", "base64")
    assert page.locator(payloads).all_inner_texts()[2:] == ["aGVsbG8gd29ybGQ=", "AP8QaGk="]
    page.select_option(f"#mqtt-view-{n}", "text")
    assert page.locator(payloads).all_inner_texts()[0] == "grüße"
    page.select_option(f"#mqtt-view-{n}", "json")
    assert page.locator(payloads).all_inner_texts()[1] == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    # New messages arrive in the chosen format too.
    live.publish("fmt/later", b"\x01\x02", qos=1)
    page.select_option(f"#mqtt-view-{n}", "hex")
    console.wait_received(n, 5)
    page.wait_for_function(
        "(sel) => document.querySelector(sel)?.textContent === '01 02'", arg=payloads, timeout=TIMEOUT_MS
    )
    assert not console.errors, console.errors


def test_mqtt_page_saves_connections_without_their_password(console: MqttPage, server: WrenmqServer) -> None:
    """A connection opened is saved under its name (localStorage, not the password); after a
    reload it fills the form again, connects, and can be forgotten."""
    page = console.page
    page.fill("#mqtt-username", "saver")
    page.fill("#mqtt-password", "hunter2")
    page.fill("#mqtt-keepalive", "45")
    page.fill("#mqtt-client-id", "saved-client-1")
    console.connect("kitchen bench", version="4")
    stored = page.evaluate("() => localStorage.getItem('wrenmq.console.mqtt.saved')")
    assert "kitchen bench" in stored and "saved-client-1" in stored and "hunter2" not in stored

    page.reload()
    page.wait_for_selector("#mqtt-broker option[value='0']", state="attached", timeout=TIMEOUT_MS)
    assert page.locator(".mqtt-tab").count() == 0  # a reload ends the page's connections
    page.select_option("#mqtt-saved", "kitchen bench")
    assert page.input_value("#mqtt-name") == "kitchen bench"
    assert page.input_value("#mqtt-version") == "4"
    assert page.input_value("#mqtt-keepalive") == "45"
    assert page.input_value("#mqtt-username") == "saver"
    assert page.input_value("#mqtt-client-id") == "saved-client-1"
    assert page.input_value("#mqtt-password") == ""
    assert page.input_value("#mqtt-broker") == "0"  # "this wrenmq", as it was
    page.click("#mqtt-new button[type=submit]")
    page.wait_for_selector(f"{PANEL} .mqtt-state:text-is('connected')", timeout=TIMEOUT_MS)
    assert "saved-client-1" in page.inner_text(f"{PANEL} .mqtt-url")

    page.click("#mqtt-tab-new")
    page.select_option("#mqtt-saved", "kitchen bench")
    page.click("#mqtt-forget")
    page.wait_for_selector(".mqtt-saved", state="hidden", timeout=TIMEOUT_MS)
    assert "kitchen bench" not in page.evaluate("() => localStorage.getItem('wrenmq.console.mqtt.saved')")
    assert not console.errors, console.errors


def test_mqtt_page_publishes_with_qos_retain_and_mqtt5_properties(console: MqttPage, paho: PahoFactory) -> None:
    """A message published from the page reaches paho (MQTT 5) with its QoS, retain flag and properties."""
    page = console.page
    live = paho(MQTTv5)
    live.subscribe("out/#", qos=2)
    n = console.connect("publisher")
    page.fill(f"#mqtt-pub-topic-{n}", "out/lamp")
    page.fill(f"#mqtt-pub-payload-{n}", '{"on": true}')
    page.select_option(f"#mqtt-pub-qos-{n}", "1")
    page.check(f"#mqtt-pub-retain-{n}")
    page.click(f"#mqtt-conn-{n} .mqtt-props summary")
    page.fill(f"#mqtt-pub-content-type-{n}", "application/json")
    page.fill(f"#mqtt-pub-response-topic-{n}", "replies/lamp")
    page.fill(f"#mqtt-pub-correlation-{n}", "req-7")
    page.fill(f"#mqtt-pub-expiry-{n}", "300")
    page.fill(f"#mqtt-pub-user-props-{n}", "source=console\nsource=test\nroom = hall")
    page.click(f"#mqtt-conn-{n} .mqtt-publish button[type=submit]")

    (message,) = live.receive(1)
    assert message.topic == "out/lamp" and message.payload == b'{"on": true}'
    assert message.qos == 1  # [MQTT-3.8.4-8] granted QoS 2, sent at 1: delivered at min(1, 2)
    props = message.properties
    assert props is not None
    assert props.ContentType == "application/json"  # [MQTT-3.3.2-20]
    assert props.ResponseTopic == "replies/lamp"
    assert props.CorrelationData == b"req-7"
    assert 0 < props.MessageExpiryInterval <= 300  # [MQTT-3.3.2-6]
    assert props.UserProperty == [("source", "console"), ("source", "test"), ("room", "hall")]  # [MQTT-3.3.2-18]
    # Retained: a later subscriber gets it with the RETAIN flag set.  # [MQTT-3.3.1-9]
    late = paho(MQTTv5)
    late.subscribe("out/lamp", qos=1)
    (kept,) = late.receive(1)
    assert kept.retain and kept.payload == b'{"on": true}'
    assert kept.properties is not None and ("room", "hall") in kept.properties.UserProperty
    assert not console.errors, console.errors


def test_mqtt_page_two_tabs_311_and_5_each_get_their_own_messages(
    console: MqttPage, paho: PahoFactory, server: WrenmqServer, api_key: str
) -> None:
    page = console.page
    old = console.connect("old", version="4")
    console.subscribe(old, "a/#")
    new = console.connect("new", version="5")
    console.subscribe(new, "b/#")
    assert page.locator(".mqtt-tab").count() == 2
    protocols = sorted(c["protocol"] for c in clients(server, api_key))
    assert protocols == ["3.1.1", "5.0"]
    publisher = paho(MQTTv311)
    publisher.publish("a/1", b"for old", qos=1)
    publisher.publish("b/1", b"for new", qos=1)
    console.wait_received(old, 1)
    console.wait_received(new, 1)
    page.wait_for_timeout(300)
    assert console.rows(new).count() == 1
    assert console.rows(new).locator(".mqtt-topic").inner_text() == "b/1"
    # Tabs switch the shown connection; a tab in the background counts and draws its rows when shown.
    page.click(f"#mqtt-tab-{old}")
    assert page.is_visible(f"#mqtt-conn-{old}") and page.is_hidden(f"#mqtt-conn-{new}")
    page.wait_for_selector(f"#mqtt-conn-{old} li.mqtt-message", timeout=TIMEOUT_MS)
    assert console.rows(old).count() == 1
    assert console.rows(old).locator(".mqtt-topic").inner_text() == "a/1"
    assert console.rows(old).locator(".mqtt-properties").count() == 0  # 3.1.1: no properties
    publisher.publish("b/2", b"again", qos=1)
    console.wait_received(new, 2)
    page.click(f"#mqtt-tab-{new}")
    page.wait_for_function(
        f"() => document.querySelectorAll('#mqtt-conn-{new} li.mqtt-message').length === 2", timeout=TIMEOUT_MS
    )
    # Closing a tab ends its connection (a normal DISCONNECT).
    page.click(f"#mqtt-tab-{old}")
    page.click(f"#mqtt-conn-{old} button:text-is('Close tab')")
    assert page.is_visible(f"#mqtt-conn-{new}")  # the neighbouring tab is shown
    page.wait_for_selector(f"#mqtt-tab-{old}", state="detached")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(clients(server, api_key)) != 1:
        time.sleep(0.1)
    assert [c["protocol"] for c in clients(server, api_key)] == ["5.0"]
    assert not console.errors, console.errors


def test_mqtt_page_will_is_published_when_the_api_kills_the_client(
    console: MqttPage, paho: PahoFactory, server: WrenmqServer, api_key: str
) -> None:
    watcher = paho(MQTTv5)
    watcher.subscribe("wills/#", qos=1)
    client_id = "wrenmq-console-will-" + uuid.uuid4().hex[:6]
    n = console.connect("with will", client_id=client_id, topic="wills/console", payload="gone", qos="1")
    watcher.nothing(0.3)
    response = httpx.delete(
        f"{server.api_url}/api/v1/clients/{client_id}", headers={"Authorization": "Bearer " + api_key}
    )
    assert response.status_code == 204
    (will,) = watcher.receive(1)  # [MQTT-3.1.2-8] the will is published when the connection ends abnormally
    assert will.topic == "wills/console" and will.payload == b"gone" and will.qos == 1
    # The page says what happened and (the session being wanted) reconnects.
    console.page.wait_for_selector(f"#mqtt-conn-{n} .mqtt-state:text-is('connected')", timeout=TIMEOUT_MS)
    assert not console.errors, console.errors


def test_mqtt_page_survives_a_flood_and_keeps_500_rows(console: MqttPage, paho: PahoFactory) -> None:
    """5000 QoS 0 messages as fast as paho sends them: the page answers, keeps the newest 500 rows and
    counts every message (wrenmq feature: bounded, batched rendering)."""
    page = console.page
    n = console.connect("flood")
    console.subscribe(n, "flood/#")
    publisher = paho(MQTTv311)
    total = 5000
    # The longest gap between animation frames while the flood arrives: reported, not judged.
    page.evaluate(
        """() => { window.mqttGap = 0; let last = performance.now();
                   const tick = (now) => { window.mqttGap = Math.max(window.mqttGap, now - last); last = now;
                                           if (!window.mqttStop) requestAnimationFrame(tick); };
                   requestAnimationFrame(tick); }"""
    )
    flood = threading.Thread(
        target=lambda: [
            publisher.client.publish(f"flood/{i % 10}", json.dumps({"i": i}).encode(), qos=0) for i in range(total)
        ]
    )
    flood.start()
    console.wait_received(n, 1)
    answered = []
    while flood.is_alive() or len(answered) < 3:  # ask while the messages pour in
        started = time.monotonic()
        rows_now = page.evaluate(f"() => document.querySelectorAll('#mqtt-conn-{n} li.mqtt-message').length")
        answered.append(time.monotonic() - started)
        assert rows_now <= 500
    flood.join()
    assert max(answered) < 10, f"the page did not answer during the flood: {answered}"
    console.wait_received(n, total, timeout_ms=60_000)
    page.wait_for_function(
        f"() => document.querySelectorAll('#mqtt-conn-{n} li.mqtt-message').length === 500", timeout=TIMEOUT_MS
    )
    page.wait_for_timeout(300)
    assert console.received(n) == total
    assert console.rows(n).count() == 500
    counter = page.inner_text(f"#mqtt-conn-{n} .mqtt-counter")
    assert "5,000 received" in counter and "4,500 older dropped" in counter, counter
    gap = page.evaluate("() => { window.mqttStop = true; return window.mqttGap; }")
    print(f"longest frame gap during the flood: {gap:.0f} ms; evaluate answered in {max(answered) * 1000:.0f} ms")
    # The newest message is on top.
    assert console.rows(n).first.locator(".mqtt-payload").inner_text() == '{\n  "i": 4999\n}'
    started = time.monotonic()
    page.click(f"#mqtt-conn-{n} .mqtt-clear")
    page.wait_for_function(f"() => !document.querySelector('#mqtt-conn-{n} li.mqtt-message')", timeout=TIMEOUT_MS)
    assert time.monotonic() - started < 10
    assert not console.errors, console.errors


def test_mqtt_page_filter_and_pause(console: MqttPage, paho: PahoFactory) -> None:
    page = console.page
    n = console.connect("filtering")
    console.subscribe(n, "home/#")
    publisher = paho(MQTTv5)
    publisher.publish("home/kitchen", b'{"t": 20}', qos=1)
    publisher.publish("home/garage", b"door open", qos=1)
    console.wait_received(n, 2)
    # Filter over topic and payload text.
    page.fill(f"#mqtt-filter-{n}", "GARAGE")
    assert console.rows(n).locator("visible=true").count() == 1
    page.fill(f"#mqtt-filter-{n}", "door")
    assert console.rows(n).locator("visible=true").count() == 1
    page.fill(f"#mqtt-filter-{n}", "nothing like this")
    assert console.rows(n).locator("visible=true").count() == 0
    page.fill(f"#mqtt-filter-{n}", "")
    assert console.rows(n).locator("visible=true").count() == 2
    # Pause: new messages are counted but not drawn until resume.
    page.click(f"#mqtt-conn-{n} .mqtt-pause")
    for i in range(3):
        publisher.publish(f"home/held/{i}", str(i).encode(), qos=1)
    page.wait_for_function(
        f"() => document.querySelector('#mqtt-conn-{n} .mqtt-counter').dataset.held === '3'", timeout=TIMEOUT_MS
    )
    page.wait_for_timeout(200)
    assert console.rows(n).count() == 2
    assert "paused: 3 waiting" in page.inner_text(f"#mqtt-conn-{n} .mqtt-counter")
    page.click(f"#mqtt-conn-{n} .mqtt-pause")
    page.wait_for_function(
        f"() => document.querySelectorAll('#mqtt-conn-{n} li.mqtt-message').length === 5", timeout=TIMEOUT_MS
    )
    assert console.rows(n).first.locator(".mqtt-topic").inner_text() == "home/held/2"
    # A bad filter is refused in the page, not sent.  [MQTT-4.7.1-1] # must be last and alone
    page.fill(f"#mqtt-sub-filter-{n}", "home/#/x")
    page.click(f"#mqtt-conn-{n} .mqtt-subscribe button[type=submit]")
    assert "# must be a whole level" in page.inner_text(f"#mqtt-conn-{n} .mqtt-subscribe p.error")
    assert page.locator(f"#mqtt-conn-{n} .mqtt-subs li").count() == 1
    # A bad user property line is named.
    page.fill(f"#mqtt-pub-topic-{n}", "home/x")
    page.click(f"#mqtt-conn-{n} .mqtt-props summary")
    page.fill(f"#mqtt-pub-user-props-{n}", "ok=1\nnot a pair")
    page.click(f"#mqtt-conn-{n} .mqtt-publish button[type=submit]")
    assert "Line 2" in page.inner_text(f"#mqtt-conn-{n} .mqtt-publish p.error")
    assert not console.errors, console.errors


def test_mqtt_page_bad_port_is_refused_and_nothing_connects(
    console: MqttPage, server: WrenmqServer, api_key: str
) -> None:
    page = console.page
    page.select_option("#mqtt-broker", "custom")
    for bad in ("70000", "0", "abc"):
        page.fill("#mqtt-port", bad)
        page.click("#mqtt-new button[type=submit]")
        assert "1 to 65535" in page.inner_text("#mqtt-port-error") or "from 1 to 65535" in page.inner_text(
            "#mqtt-port-error"
        )
        assert page.get_attribute("#mqtt-port", "aria-invalid") == "true"
    page.click(".mqtt-will summary")
    page.fill("#mqtt-will-topic", "wills/+")
    page.click("#mqtt-new button[type=submit]")
    assert "wildcards" in page.inner_text("#mqtt-will-topic-error")
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "console-mqtt-form.png"), full_page=True)
    page.wait_for_timeout(500)
    assert page.locator(".mqtt-tab").count() == 0
    assert server.broker.stats.clients_total == 0
    assert clients(server, api_key) == []
    assert not console.errors, console.errors


def test_mqtt_page_keeps_connections_and_messages_while_navigating(
    console: MqttPage, server: WrenmqServer, api_key: str, paho: PahoFactory
) -> None:
    """Leaving the MQTT page for another console page keeps its connections up (no reconnect: the
    same client ids stay connected), its subscriptions, and its messages, including those that
    arrive meanwhile; signing out ends every connection (issue 18)."""
    page = console.page
    one = console.connect("one")
    two = console.connect("two", version="4")
    console.subscribe(two, "keep/#", qos=1)
    publisher = paho(MQTTv5)
    publisher.publish("keep/before", b"seen before leaving", qos=1)
    console.wait_received(two, 1)
    before = {c["client_id"]: c["address"] for c in clients(server, api_key)}
    assert len(before) == 2
    page.click("#sidebar a[href='#/dashboard']")
    page.wait_for_selector("section.page-dashboard", timeout=TIMEOUT_MS)
    publisher.publish("keep/while-away", b"arrived while away", qos=1)
    page.click("#sidebar a[href='#/topics']")
    page.wait_for_selector("section.page-topics", timeout=TIMEOUT_MS)
    page.click("#sidebar a[href='#/mqtt']")
    page.wait_for_selector(f"#mqtt-tab-{one}", timeout=TIMEOUT_MS)
    assert page.locator(".mqtt-tab").count() == 2
    assert page.get_attribute(f"#mqtt-tab-{two}", "aria-selected") == "true"  # the tab shown when leaving
    console.wait_received(two, 2)
    page.wait_for_function(
        "(n) => document.querySelectorAll(`#mqtt-conn-${n} li.mqtt-message`).length === 2", arg=two, timeout=TIMEOUT_MS
    )
    assert [console.rows(two).nth(i).locator(".mqtt-payload").inner_text() for i in range(2)] == [
        "arrived while away",
        "seen before leaving",
    ]
    assert "keep/#" in page.inner_text(f"#mqtt-conn-{two} .mqtt-subs")
    assert {c["client_id"]: c["address"] for c in clients(server, api_key)} == before  # same sockets: never reconnected
    assert not console.errors, console.errors

    page.click("#sign-out")
    page.wait_for_selector("#api-key", timeout=TIMEOUT_MS)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and clients(server, api_key):
        time.sleep(0.1)
    assert not clients(server, api_key)


def test_mqtt_page_refused_login_shows_closed_with_the_error(
    browser: Any, wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path
) -> None:
    """A refused CONNECT ends the connection (no retry loop) and the tab says why; Disconnect and
    Connect again work (wrenmq feature)."""
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    server = wrenmq_server_factory(api_port=0, ws_port=0, password_file=passwd, allow_anonymous=False)
    key = ApiKeyStore(server.broker.config.api_keys_path).create("console")
    console = MqttPage(browser, server, key)
    try:
        page = console.page
        page.fill("#mqtt-username", "alice")
        page.fill("#mqtt-password", "wrong")
        page.click("#mqtt-new button[type=submit]")
        page.wait_for_selector(f"{PANEL} .mqtt-state:text-is('closed')", timeout=TIMEOUT_MS)
        # [MQTT-3.2.2-6] a CONNACK with a non-zero code, then the connection is closed
        status = page.inner_text(f"{PANEL} .mqtt-status-error")
        assert "refused" in status and "bad user name or password (0x86)" in status.lower(), status
        assert page.get_attribute(".mqtt-tab", "data-state") == "closed"
        page.wait_for_timeout(RECONNECT_WAIT_MS)
        assert page.inner_text(f"{PANEL} .mqtt-state") == "closed"  # no retry loop
        page.click("#mqtt-tab-new")
        page.fill("#mqtt-username", "alice")
        page.fill("#mqtt-password", "wonderland")
        n = console.connect("alice")
        page.click(f"#mqtt-conn-{n} button:text-is('Disconnect')")
        page.wait_for_selector(f"#mqtt-conn-{n} .mqtt-state:text-is('closed')", timeout=TIMEOUT_MS)
        assert page.inner_text(f"#mqtt-conn-{n} .mqtt-status-error") == ""
        page.click(f"#mqtt-conn-{n} button:text-is('Connect again')")
        page.wait_for_selector(f"#mqtt-conn-{n} .mqtt-state:text-is('connected')", timeout=TIMEOUT_MS)
        assert not console.errors, console.errors
    finally:
        console.close()
