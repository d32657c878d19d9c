"""The console's overview pages in Chromium (wrenmq feature, issue 9): Dashboard (counters, live
rate charts, listeners, external brokers), Clients (search, disconnect, the session of one) and
Topics (the live tree, retained messages viewed and cleared, publishing).

Everything is real: a wrenmq server with its API, Debian's Chromium driven by Playwright, and
paho-mqtt clients on the broker's TCP listener. Each page must load and work without a single
console error."""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_sync import MQTTv5, MQTTv311, PahoClient
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 5.0
TIMEOUT_MS = 15_000
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0, ws_port=0)


@pytest.fixture
def api_key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


def api(server: WrenmqServer, key: str, method: str, path: str) -> httpx.Response:
    return httpx.request(method, server.api_url + "/api/v1/" + path, headers={"Authorization": f"Bearer {key}"})


class Tab:
    """A browser context signed in (the key in sessionStorage) on one console page, recording
    console errors and uncaught exceptions, and accepting confirmation dialogs."""

    def __init__(self, browser: Any, server: WrenmqServer, key: str, route: str, width: int, height: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)});")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._accept)
        self.page.goto(f"{server.api_url}/#/{route}")
        self.page.wait_for_selector(f"section.page-{route}", timeout=TIMEOUT_MS)

    def _accept(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def wait(self, expression: str, arg: Any = None) -> None:
        self.page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.wait_for_timeout(500)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Any, server: WrenmqServer, api_key: str) -> Iterator[Callable[..., Tab]]:
    opened: list[Tab] = []

    def open_tab(route: str, width: int = 1280, height: int = 800) -> Tab:
        tab = Tab(browser, server, api_key, route, width, height)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()


@pytest.fixture
def paho(server: WrenmqServer) -> Iterator[Callable[..., PahoClient]]:
    made: list[PahoClient] = []

    def make(client_id: str, protocol: Any = MQTTv5, **kw: Any) -> PahoClient:
        client = PahoClient(server.port, protocol, client_id=client_id, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.client.disconnect()
        client.client.loop_stop()


# -- Dashboard ------------------------------------------------------------------------------------


def test_dashboard_shows_connections_rates_and_listeners(
    tabs: Callable[..., Tab], paho: Callable[..., PahoClient], server: WrenmqServer
) -> None:
    """The dashboard counts two paho clients, draws its rate charts (uPlot canvases) from the
    status counters, lists the listeners, and says there are no external brokers."""
    sender = paho("dash-sender", MQTTv311)
    receiver = paho("dash-receiver")
    receiver.subscribe("dash/#", 1)
    tab = tabs("dashboard")
    page = tab.page
    tab.wait("() => document.getElementById('stat-connections')?.textContent === '2'")
    assert page.inner_text("#stat-sessions") == "2"
    assert page.inner_text("#stat-subscriptions") == "1"
    assert page.locator("#chart-messages canvas").count() == 1
    assert page.locator("#chart-bytes canvas").count() == 1
    # Traffic for a few polls, so that the chart has points and the rate card moves.
    for i in range(5):
        for n in range(20):
            sender.publish("dash/load", f"{i}-{n}".encode(), qos=1)
        page.wait_for_timeout(700)
    receiver.receive(100)
    tab.wait("() => Number(document.getElementById('stat-in').textContent) > 0")
    assert page.locator("#listener-table tbody tr").count() == len(server.broker.listeners)
    assert "tcp" in page.inner_text("#listener-table") and "listening" in page.inner_text("#listener-table")
    assert "No external broker connections" in page.inner_text(".page-dashboard")
    tab.screenshot("console-dashboard.png")
    assert not tab.errors, tab.errors


def test_dashboard_on_a_phone(tabs: Callable[..., Tab], paho: Callable[..., PahoClient]) -> None:
    """At 390 px the cards and the charts fit the screen: nothing scrolls sideways."""
    paho("phone-a")
    paho("phone-b")
    tab = tabs("dashboard", 390, 844)
    tab.wait("() => document.getElementById('stat-connections')?.textContent === '2'")
    tab.wait("() => document.querySelector('#chart-messages canvas') !== null")
    tab.page.wait_for_timeout(2500)  # a second poll: the chart has a first point
    overflow = tab.page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    width = tab.page.evaluate("() => document.querySelector('#chart-messages canvas').getBoundingClientRect().width")
    assert 200 <= width <= 390, width
    tab.screenshot("console-dashboard-phone.png")
    assert not tab.errors, tab.errors


def test_dashboard_chart_follows_the_window_width(tabs: Callable[..., Tab]) -> None:
    """The charts take their card's width, and take the new one when the window is resized (at
    800 px the two charts stack, one a row)."""
    tab = tabs("dashboard")
    tab.wait("() => document.querySelector('#chart-messages canvas') !== null")
    width = "() => document.querySelector('#chart-messages .uplot').getBoundingClientRect().width"
    before = tab.page.evaluate(width)
    tab.page.set_viewport_size({"width": 800, "height": 800})
    tab.wait(f"() => Math.abs(({width})() - {before}) > 50")
    after = tab.page.evaluate(width)  # narrower window, but one chart a row: wider or narrower
    box = tab.page.evaluate("() => document.getElementById('chart-messages').getBoundingClientRect().width")
    assert abs(after - box) <= 2, (after, box)
    assert not tab.errors, tab.errors


# -- Clients --------------------------------------------------------------------------------------


def row(client_id: str) -> str:
    return f"#client-table tr[data-client='{client_id}']"


def test_clients_page_lists_searches_shows_a_session_and_disconnects(
    tabs: Callable[..., Tab], paho: Callable[..., PahoClient], server: WrenmqServer, api_key: str
) -> None:
    """A paho client is listed with its protocol and subscriptions; the search narrows the list;
    its session opens beside the list; Disconnect (confirmed) ends its connection: an MQTT 5
    client is sent DISCONNECT 0x98 [MQTT-3.14.2-1] and the API shows its session offline."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300  # the session outlives the connection, so it shows offline
    target = paho("console-target", MQTTv5, clean_start=True, properties=props)
    target.subscribe("plant/+/temp", 1)
    disconnects: queue.Queue[int] = queue.Queue()

    def on_disconnect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        disconnects.put(rc.value)
        client.disconnect()  # no automatic reconnect (paho's loop thread would reconnect)

    target.client.on_disconnect = on_disconnect
    paho("other-client", MQTTv311)

    tab = tabs("clients")
    page = tab.page
    page.wait_for_selector(row("console-target"), timeout=TIMEOUT_MS)
    page.wait_for_selector(row("other-client"), timeout=TIMEOUT_MS)
    text = page.inner_text(row("console-target"))
    assert "5.0" in text and "connected" in text and "127.0.0.1" in text
    assert page.inner_text(row("other-client")).count("3.1.1") == 1

    page.fill("#client-prefix", "console-")
    tab.wait(f'() => document.querySelector("{row("other-client")}") === null')
    assert page.locator("#client-table tbody tr").count() == 1
    assert page.input_value("#client-prefix") == "console-"

    page.click(f"{row('console-target')} .cl-id")
    page.wait_for_selector("#client-subscriptions", timeout=TIMEOUT_MS)
    subs = page.inner_text("#client-subscriptions")
    assert "plant/+/temp" in subs and "1" in subs
    page.wait_for_timeout(3500)  # a refresh passes: the search and the panel stay
    assert page.input_value("#client-prefix") == "console-"
    assert page.locator("#client-subscriptions").count() == 1
    tab.screenshot("console-clients.png")

    page.click(f"{row('console-target')} .cl-disconnect")
    assert disconnects.get(timeout=TIMEOUT) == 0x98  # Administrative action
    assert tab.dialogs and "Disconnect console-target" in tab.dialogs[0]
    page.wait_for_selector(".toast:has-text('console-target disconnected')", timeout=TIMEOUT_MS)
    detail = api(server, api_key, "GET", "clients/console-target").json()
    assert detail["connected"] is False
    tab.wait(f"() => document.querySelector(\"{row('console-target')}\")?.innerText.includes('offline')")
    assert page.locator(f"{row('console-target')} .cl-disconnect").is_hidden()
    assert not tab.errors, tab.errors


def test_clients_page_discards_a_session_and_shows_an_empty_search(
    tabs: Callable[..., Tab], paho: Callable[..., PahoClient], server: WrenmqServer, api_key: str
) -> None:
    """The "discard session" button ends the session too: the API no longer knows the client (404)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    paho("to-discard", MQTTv5, properties=props)
    tab = tabs("clients")
    page = tab.page
    page.wait_for_selector(row("to-discard"), timeout=TIMEOUT_MS)
    page.click(f"{row('to-discard')} .cl-discard")
    page.wait_for_selector(".toast:has-text('Session of to-discard discarded')", timeout=TIMEOUT_MS)
    assert api(server, api_key, "GET", "clients/to-discard").status_code == 404
    page.wait_for_selector(row("to-discard"), state="detached", timeout=TIMEOUT_MS)
    page.fill("#client-prefix", "nobody-")
    page.wait_for_selector("text=No client matches this search.", timeout=TIMEOUT_MS)
    assert not tab.errors, tab.errors


# -- Topics ---------------------------------------------------------------------------------------


def node(topic: str) -> str:
    return f"#topic-tree li[data-topic='{topic}']"


def test_topics_page_tree_retained_publish_and_clear(
    tabs: Callable[..., Tab], paho: Callable[..., PahoClient], server: WrenmqServer, api_key: str
) -> None:
    """A topic a paho client published to appears in the tree with its rate and retained mark;
    its retained payload is shown; publishing from the page reaches a paho subscriber; clearing
    the retained message (confirmed) removes it from the broker (GET 404)."""
    publisher = paho("topic-publisher", MQTTv311)
    publisher.publish("plant/line1/temp", b'{"celsius": 21.5}', qos=1, retain=True)
    subscriber = paho("topic-subscriber")
    subscriber.subscribe("plant/line1/cmd", 1)

    tab = tabs("topics")
    page = tab.page
    tab.wait("() => document.getElementById('live').dataset.state === 'connected'")
    page.wait_for_selector(node("plant"), timeout=TIMEOUT_MS)
    # Live messages on a new topic: it appears with a rate.
    for n in range(10):
        publisher.publish("plant/line1/rpm", str(1000 + n).encode())
    page.click(f"{node('plant')} .tp-toggle")
    page.click(f"{node('plant/line1')} .tp-toggle")
    page.wait_for_selector(node("plant/line1/rpm"), timeout=TIMEOUT_MS)
    tab.wait(f"() => document.querySelector(\"{node('plant/line1/rpm')} .tp-rate\").textContent.includes('msg/s')")
    assert page.locator(f"{node('plant/line1/temp')} .tp-retained").is_visible()
    assert page.locator(f"{node('plant/line1/rpm')} .tp-retained").is_hidden()

    page.click(f"{node('plant/line1/temp')} .tp-name")
    page.wait_for_selector("#retained-payload", timeout=TIMEOUT_MS)
    assert json.loads(page.inner_text("#retained-payload")) == {"celsius": 21.5}
    assert page.input_value("#publish-topic") == "plant/line1/temp"

    page.fill("#publish-topic", "plant/line1/cmd")
    page.fill("#publish-payload", "start")
    page.select_option("#publish-qos", "1")
    page.click("#publish-form button[type=submit]")
    received = subscriber.receive(1)[0]
    assert (received.topic, received.payload, received.qos) == ("plant/line1/cmd", b"start", 1)
    page.wait_for_selector(".toast:has-text('Published to plant/line1/cmd')", timeout=TIMEOUT_MS)
    page.wait_for_selector(node("plant/line1/cmd"), timeout=TIMEOUT_MS)
    page.wait_for_timeout(1200)
    tab.screenshot("console-topics.png")

    page.click("#clear-retained")
    page.wait_for_selector("#retained-none", timeout=TIMEOUT_MS)
    assert tab.dialogs and "plant/line1/temp" in tab.dialogs[0]
    assert api(server, api_key, "GET", "retained/plant/line1/temp").status_code == 404
    tab.wait(f'() => document.querySelector("{node("plant/line1/temp")} .tp-retained").hidden')
    assert not tab.errors, tab.errors


def test_topics_page_filter_and_the_cap(tabs: Callable[..., Tab], server: WrenmqServer) -> None:
    """The filter shows matching topics with their parents opened; past MAX_TOPICS topics the page
    tracks no more and says so (2,050 retained topics, the cap being 2,000)."""
    for n in range(2050):
        server.publish(f"fleet/{n // 100}/unit{n}", b"x", retain=True)
    tab = tabs("topics")
    page = tab.page
    page.wait_for_selector("#topic-notice:not([hidden])", timeout=TIMEOUT_MS)
    assert "first 2,000 topics" in page.inner_text("#topic-notice")
    assert page.inner_text("#topic-counts").startswith("2,000 topics")
    page.fill("#topic-filter", "unit1999")
    page.wait_for_selector(node("fleet/19/unit1999"), timeout=TIMEOUT_MS)
    assert page.locator("#topic-tree li").count() == 3  # fleet, fleet/19, fleet/19/unit1999
    page.fill("#topic-filter", "")
    tab.wait("() => document.querySelectorAll('#topic-tree li').length === 1")
    assert not tab.errors, tab.errors
