"""Every console page at desktop (1280x800) and phone (390x844) size, light and dark (issue 18):
each fits the screen's width (no sideways scroll of the page), loads without a console error, and
is saved to tests/artifacts/console-screen-<page>-<size>-<theme>.png for a person to look at."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paho_sync import MQTTv5, PahoFactory
from test_console import PAGES
from test_console_live import ARTIFACTS, Device, curl
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite #\n")
    return wrenmq_server_factory(
        api_port=0,
        ws_port=0,
        password_file=passwd,
        acl_file=acl,
        console_admins=["alice"],
        presence_snapshot_debounce=0.05,
    )


@pytest.fixture
def api_key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def seeded(server: WrenmqServer, api_key: str) -> Iterator[None]:
    """Something on every page: devices, a resource, retained messages, connected clients, a
    subscription (and, on the Trace page, a publish and its delivery)."""
    factory = PahoFactory(server.port)
    devices = []
    try:
        for i, (kind, name) in enumerate((("player", "Lobby player"), ("speaker", "Kitchen speaker"))):
            device = Device(server.port, f"screen-{i}")
            device.announce(kind, name)
            device.status("playing" if i == 0 else "idle", session="demo", position=61_000)
            devices.append(device)
        subscriber = factory(MQTTv5, client_id="screen-subscriber")
        subscriber.subscribe("plant/#", 1)
        publisher = factory(MQTTv5, client_id="screen-publisher")
        publisher.publish("plant/line1/temperature", json.dumps({"celsius": 21.5}).encode(), qos=1, retain=True)
        publisher.publish("plant/line2/state", b"running", qos=1, retain=True)
        curl(server, api_key, "PUT", "/api/v1/resources/flow/f1", {"label": "cam 1", "src": {"port": 5004}})
        yield
    finally:
        for device in devices:
            device.close()
        factory.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
def test_console_every_page_fits_the_screen(
    browser: Any, server: WrenmqServer, api_key: str, seeded: None, size: str, theme: str
) -> None:
    context = browser.new_context(viewport=SIZES[size], color_scheme=theme)
    context.add_init_script(
        f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(api_key)});"
        "sessionStorage.setItem('wrenmq.console.resources.kind', 'flow');"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.goto(server.api_url + "/#/dashboard")
        page.wait_for_function(
            "() => document.getElementById('live').dataset.state === 'connected'", timeout=TIMEOUT_MS
        )
        for name in PAGES:
            page.evaluate("(name) => { location.hash = '#/' + name; }", name)
            page.wait_for_selector(f"section.page-{name}", timeout=TIMEOUT_MS)
            if name == "mqtt":
                page.wait_for_selector("#mqtt-broker option[value='0']", state="attached", timeout=TIMEOUT_MS)
                if page.locator(".mqtt-tab").count() == 0:
                    page.click("#mqtt-new button[type=submit]")
                    page.wait_for_selector(".mqtt-state:text-is('connected')", timeout=TIMEOUT_MS)
                    page.fill(".mqtt-subscribe input", "plant/#")
                    page.click(".mqtt-subscribe button[type=submit]")
                    page.wait_for_selector("li.mqtt-message", timeout=TIMEOUT_MS)
            if name == "trace":  # follow a topic filter while something is published under it
                page.select_option("#trace-kind", "filter")
                page.fill("#trace-target", "plant/#")
                page.click("#trace-start")
                page.wait_for_selector("#trace-state:text-is('tracing')", timeout=TIMEOUT_MS)
                server.publish("plant/line3/state", b"starting", qos=1)
                page.wait_for_selector("#trace-events li[data-event='deliver']", timeout=TIMEOUT_MS)
            page.wait_for_timeout(1200)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            ringed = page.evaluate(  # the page region is focused on each navigation: no ring around all of it
                "() => document.activeElement.id === 'view'"
                " && getComputedStyle(document.activeElement).outlineStyle !== 'none'"
            )
            page.evaluate("() => window.scrollTo(0, 0)")  # (a full-page shot draws the sticky bar where it is)
            page.screenshot(path=str(ARTIFACTS / f"console-screen-{name}-{size}-{theme}.png"), full_page=True)
            assert overflow <= 0, (name, overflow)
            assert not ringed, name
            assert "could not load" not in page.inner_text("main"), name
        if size == "phone":  # the menu opens over the page
            page.click("#menu-toggle")
            page.wait_for_selector("#sidebar.open", timeout=TIMEOUT_MS)
            page.screenshot(path=str(ARTIFACTS / f"console-screen-menu-{size}-{theme}.png"))
        assert not errors, errors
    finally:
        context.close()
