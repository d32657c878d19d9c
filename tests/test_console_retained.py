"""The console's retained message explorer in Chromium (issue 18): retained messages published by
paho [MQTT-3.3.1-5] are listed, narrowed by a topic filter and a search of topics and payloads,
read in any format, and cleared; a subscriber then no longer receives the cleared one
[MQTT-3.3.1-10] while it still receives the others."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from paho_sync import MQTTv5, PahoFactory
from test_console_live import ARTIFACTS, Tab
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
ROWS = "#retained-table tbody tr"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0, ws_port=0)


@pytest.fixture
def paho(server: WrenmqServer) -> Iterator[PahoFactory]:
    factory = PahoFactory(server.port)
    yield factory
    factory.close()


def json_content_type() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    return props


def topics(page: Any) -> list[str]:
    return [str(t) for t in page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.topic)")]


def test_retained_page_searches_reads_and_clears(browser: Any, server: WrenmqServer, paho: PahoFactory) -> None:
    publisher = paho(MQTTv5)
    publisher.publish("home/kitchen/temperature", json.dumps({"celsius": 21.5}).encode(), qos=1, retain=True)
    publisher.publish("home/kitchen/light", b"on", qos=1, retain=True)
    publisher.publish("home/hall/light", b"off", qos=1, retain=True)
    publisher.publish("lab/blob", bytes([0, 1, 2, 254]), qos=1, retain=True)
    publisher.publish("lab/note", b"the KITCHEN timer rang", qos=1, retain=True)
    publisher.publish("lab/typed", b"{}", qos=1, retain=True, properties=json_content_type())
    key = ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")
    tab = Tab(browser, server, key, "retained")
    try:
        page = tab.page
        page.wait_for_selector("#ret-summary:has-text(' of 6 retained')", timeout=TIMEOUT_MS)
        page.fill("#ret-search", "kitchen")  # topics, and a payload (any case)
        page.wait_for_selector("#ret-summary:has-text('of 3')", timeout=TIMEOUT_MS)
        assert topics(page) == ["home/kitchen/light", "home/kitchen/temperature", "lab/note"]
        page.fill("#ret-filter", "home/#")
        page.wait_for_selector("#ret-summary:has-text('of 2')", timeout=TIMEOUT_MS)
        assert topics(page) == ["home/kitchen/light", "home/kitchen/temperature"]
        page.fill("#ret-search", "")
        page.fill("#ret-filter", "lab/+")
        page.wait_for_selector("#ret-summary:has-text('of 3')", timeout=TIMEOUT_MS)
        page.click(f"{ROWS}[data-topic='lab/typed'] .cl-id")
        page.wait_for_selector("#retained-detail:has-text('application/json')", timeout=TIMEOUT_MS)

        page.click(f"{ROWS}[data-topic='lab/blob'] .cl-id")
        page.wait_for_selector("#retained-payload[data-kind='binary']", timeout=TIMEOUT_MS)
        assert page.inner_text("#retained-payload") == "00 01 02 fe"
        assert "null" not in page.inner_text("#retained-detail")
        page.select_option("#ret-view", "base64")
        assert page.inner_text("#retained-payload") == "AAEC/g=="
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-retained-desktop.png"), full_page=True)

        page.on("dialog", lambda dialog: dialog.accept())
        page.click("#ret-clear")
        page.wait_for_selector(f"{ROWS}[data-topic='lab/blob']", state="detached", timeout=TIMEOUT_MS)
        assert topics(page) == ["lab/note", "lab/typed"]
        assert not tab.errors, tab.errors
    finally:
        tab.close()
    # A new subscriber gets the other retained message of lab/+ and not the cleared one.
    subscriber = paho(MQTTv5)
    subscriber.subscribe("lab/+", qos=1)
    assert sorted(m.topic for m in subscriber.receive(2)) == ["lab/note", "lab/typed"]
    subscriber.subscribe("home/hall/light", qos=1)  # a sentinel: anything of lab/blob would have come first
    [sentinel] = subscriber.receive(1)
    assert sentinel.topic == "home/hall/light"
