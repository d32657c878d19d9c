"""The console's Trace page in Chromium (issue 18: "a trace view: follow one client id or topic
filter live"): following a client id shows what a paho client does, as it does it: connect,
subscribe, publish, delivery, disconnect, newest first; the Clients page's "Trace" link follows the
client it shows. Leaving the page ends the trace (the broker's hook goes away)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, PahoClient
from test_console_live import ARTIFACTS
from wrenmq.api.keys import ApiKeyStore
from wrenmq.api.trace import TraceHub
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0)


def test_trace_page_follows_a_client_live(browser: Any, server: WrenmqServer) -> None:
    key = ApiKeyStore(server.broker.config.api_keys_path).create("admin")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)})")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.api_url + "/#/trace")
        page.fill("#trace-target", "sensor-9")
        page.click("#trace-start")
        page.wait_for_selector("#trace-state:text-is('tracing')", timeout=TIMEOUT_MS)
        other = PahoClient(server.port, MQTTv5, "other")
        traced = PahoClient(server.port, MQTTv5, "sensor-9")
        traced.subscribe("plant/#", 1)
        other.publish("plant/1", b"21.5", qos=1)
        traced.messages.get(timeout=10)
        traced.publish("plant/9", b"ok", qos=1)
        traced.messages.get(timeout=10)
        traced.close()
        other.close()
        page.wait_for_selector("#trace-events li[data-event='disconnect']", timeout=TIMEOUT_MS)
        events = page.eval_on_selector_all("#trace-events li", "(rows) => rows.map((r) => r.dataset.event)")
        assert events[::-1] == ["connect", "subscribe", "deliver", "publish", "deliver", "disconnect"]
        text = page.inner_text("#trace-events")
        assert "plant/#" in text and "plant/9" in text and "other" not in text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-trace-desktop.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        page.screenshot(path=str(ARTIFACTS / "console-trace-phone.png"), full_page=True)

        # From a client's details on the Clients page, "Trace" follows that client.
        page.set_viewport_size({"width": 1280, "height": 800})
        watched = PahoClient(server.port, MQTTv5, "sensor/10")
        page.evaluate("() => { location.hash = '#/clients'; }")
        page.click("#client-table >> text=sensor/10", timeout=TIMEOUT_MS)
        page.click("#client-detail .cl-trace", timeout=TIMEOUT_MS)
        page.wait_for_selector("#trace-state:text-is('tracing')", timeout=TIMEOUT_MS)
        assert page.input_value("#trace-target") == "sensor/10"
        watched.subscribe("lab/#", 0)
        page.wait_for_selector("#trace-events li[data-event='subscribe']:has-text('lab/#')", timeout=TIMEOUT_MS)
        watched.close()

        page.evaluate("() => { location.hash = '#/dashboard'; }")  # leaving the page ends the trace
        deadline = time.monotonic() + 10
        while server.broker.hooks.find(TraceHub):
            assert time.monotonic() < deadline, "the trace stayed open after leaving the page"
            time.sleep(0.05)
        assert not errors, errors
    finally:
        context.close()


def test_trace_page_shows_drops_with_their_reason_and_browser_clients(browser: Any, server: WrenmqServer) -> None:
    key = ApiKeyStore(server.broker.config.api_keys_path).create("admin")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.api_url + "/#/trace/app-3")
        page.wait_for_selector("#trace-state:text-is('tracing')", timeout=TIMEOUT_MS)
        app = PahoClient(server.port, MQTTv5, "app-3")
        app.publish("$SYS/forged", b"x", qos=1)  # clients may not publish the broker's topics
        app.close()
        headers = {"Authorization": "Bearer " + key}
        opened = httpx.post(
            server.api_url + "/api/v1/realtime/poll", json={"client_id": "app-3", "filters": ["a/#"]}, headers=headers
        )
        assert opened.status_code == 201, opened.text
        closed = httpx.delete(server.api_url + f"/api/v1/realtime/poll/{opened.json()['id']}", headers=headers)
        assert closed.status_code == 204
        page.wait_for_selector("#trace-events li[data-event='disconnect']:has-text('long polling')", timeout=TIMEOUT_MS)
        drop = page.inner_text("#trace-events li[data-event='drop']")
        assert "publish denied" in drop and "$SYS/forged" in drop and "the broker's own topic" in drop, drop
        polled = page.inner_text("#trace-events li[data-event='connect']:has-text('long polling')")
        assert "app-3" in polled, polled
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-trace-drops-desktop.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()
