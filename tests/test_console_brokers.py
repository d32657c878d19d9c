"""The console's External brokers page in Chromium (issue 18: "add a bridge to a real Mosquitto and
see its state change"): a connection added in the page connects to a real Mosquitto and its bridge
carries a message (paho at both ends); the row follows the state live (reconnecting with its error
while the Mosquitto is stopped, connected again when it is back); an edit in the page changes what
is bridged; Remove ends it. A read-only key sees the list and no controls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from browser import console_page
from mosquitto_fixture import MOSQUITTO, MosquittoBroker
from paho_sync import MQTTv5, PahoClient
from test_console_live import ARTIFACTS
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
ROW = "#brokers-table tr[data-broker='plant']"

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0)


def open_page(browser: Any, server: WrenmqServer, key: str, errors: list[str]) -> Any:
    return console_page(browser, server.api_url, key, "brokers", "section.page-brokers", errors)


@pytest.fixture
def admin(browser: Any, server: WrenmqServer) -> Iterator[tuple[Any, list[str]]]:
    errors: list[str] = []
    page = open_page(browser, server, ApiKeyStore(server.broker.config.api_keys_path).create("admin"), errors)
    yield page, errors
    page.context.close()


def test_brokers_page_adds_a_bridge_to_mosquitto_follows_its_state_edits_and_removes_it(
    admin: tuple[Any, list[str]], server: WrenmqServer, mosquitto_factory: Callable[..., MosquittoBroker]
) -> None:
    page, errors = admin
    mosquitto = mosquitto_factory()
    remote = PahoClient(mosquitto.port, MQTTv5, "remote")
    remote.subscribe("site/#", 1)
    local = PahoClient(server.port, MQTTv5, "local")
    try:
        page.wait_for_selector("text=No external broker connections", timeout=TIMEOUT_MS)
        page.click("#broker-add")
        page.fill("#broker-name", "plant")
        page.fill("#broker-url", f"mqtt://127.0.0.1:{mosquitto.port}")
        page.fill("#broker-bridges", 'topic plant/# out 1 "" site/')
        page.click(".br-more summary")
        page.fill("#broker-reconnect-max", "0.5")
        page.click("#broker-form button[type=submit]")
        page.wait_for_selector(f"{ROW}[data-state='connected']", timeout=TIMEOUT_MS)
        assert page.is_hidden("#broker-form")
        local.publish("plant/line1", b"21.5", qos=1)
        message = remote.receive(1)[0]
        assert (message.topic, message.payload) == ("site/plant/line1", b"21.5")

        # Live: the Mosquitto goes away and comes back.
        mosquitto.stop()
        page.wait_for_selector(f"{ROW}[data-state='reconnecting'] .br-error", timeout=TIMEOUT_MS)
        mosquitto.start()
        page.wait_for_selector(f"{ROW}[data-state='connected']", timeout=TIMEOUT_MS)
        remote.close()
        remote = PahoClient(mosquitto.port, MQTTv5, "remote")
        remote.subscribe("site/#", 1)

        # Edit: another bridge; the form comes filled with the connection's settings.
        page.click(f"{ROW} .br-edit")
        assert page.input_value("#broker-url") == f"mqtt://127.0.0.1:{mosquitto.port}"
        assert page.is_disabled("#broker-name")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-brokers-edit-desktop.png"), full_page=True)
        page.fill("#broker-bridges", 'topic other/# out 1 "" site/')
        page.click("#broker-form button[type=submit]")
        page.wait_for_selector(f"{ROW} .br-bridges:has-text('topic other/#')", timeout=TIMEOUT_MS)
        page.wait_for_selector(f"{ROW}[data-state='connected']", timeout=TIMEOUT_MS)
        local.publish("plant/line1", b"not any more", qos=1)
        local.publish("other/x", b"edited", qos=1)  # the sentinel: plant/line1 would come first
        message = remote.receive(1)[0]
        assert (message.topic, message.payload) == ("site/other/x", b"edited")

        assert "null" not in page.inner_text(ROW) and "undefined" not in page.inner_text(ROW)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-brokers-desktop.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # on a phone the actions are on screen
        for button in page.locator(f"{ROW} button").all():
            box = button.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 390, box
        page.screenshot(path=str(ARTIFACTS / "console-brokers-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})

        page.click(f"{ROW} .res-delete")
        page.wait_for_selector(ROW, state="detached", timeout=TIMEOUT_MS)
        key = ApiKeyStore(server.broker.config.api_keys_path).create("check")
        gone = httpx.get(server.api_url + "/api/v1/brokers/plant", headers={"Authorization": "Bearer " + key})
        assert gone.status_code == 404
        assert not errors, errors
    finally:
        local.close()
        remote.close()


def test_brokers_page_read_only_key_sees_the_state_and_no_controls(
    browser: Any, wrenmq_server_factory: Callable[..., WrenmqServer], mosquitto_factory: Callable[..., MosquittoBroker]
) -> None:
    mosquitto = mosquitto_factory()
    plant = {"name": "plant", "url": f"mqtt://127.0.0.1:{mosquitto.port}", "bridges": ["topic a/# out 1"]}
    server = wrenmq_server_factory(api_port=0, brokers=[plant])
    errors: list[str] = []
    key = ApiKeyStore(server.broker.config.api_keys_path).create("viewer", read_only=True)
    page = open_page(browser, server, key, errors)
    try:
        page.wait_for_selector(f"{ROW}[data-state='connected']", timeout=TIMEOUT_MS)
        assert page.is_hidden("#broker-add") and page.is_hidden("#broker-form")
        assert page.locator(f"{ROW} button").count() == 2
        assert all(not b.is_visible() for b in page.locator(f"{ROW} button").all())
        assert not errors, errors
    finally:
        page.context.close()
