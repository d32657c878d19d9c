"""The console's Subscriptions page in Chromium (issue 18): the subscriptions paho clients made
[MQTT-3.8.4-1], shared ones with their group [MQTT-4.8.2-1], narrowed by client id and topic filter
prefix, and a subscription that ends [MQTT-3.10.4-1] leaves the list on the next refresh."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from paho_sync import MQTTv5, PahoFactory
from test_console_live import ARTIFACTS, Tab
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
ROWS = "#subscription-table tbody tr"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0, ws_port=0)


@pytest.fixture
def paho(server: WrenmqServer) -> Iterator[PahoFactory]:
    factory = PahoFactory(server.port)
    yield factory
    factory.close()


def listed(page: Any) -> list[tuple[str, str]]:
    rows = page.eval_on_selector_all(ROWS, "rows => rows.map(r => [r.dataset.filter, r.dataset.client])")
    return [(str(f), str(c)) for f, c in rows]


def test_subscriptions_page_lists_filters_and_follows_changes(
    browser: Any, server: WrenmqServer, paho: PahoFactory
) -> None:
    kitchen = paho(MQTTv5, client_id="sub-kitchen")
    kitchen.subscribe("home/kitchen/#", qos=1)
    kitchen.subscribe("alerts/+", qos=0)
    worker = paho(MQTTv5, client_id="sub-worker")
    worker.subscribe("$share/workers/jobs/#", qos=2)
    key = ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")
    tab = Tab(browser, server, key, "subscriptions")
    try:
        page = tab.page
        page.wait_for_selector("#sub-summary:has-text('of 3 subscriptions')", timeout=TIMEOUT_MS)
        assert listed(page) == [
            ("$share/workers/jobs/#", "sub-worker"),
            ("alerts/+", "sub-kitchen"),
            ("home/kitchen/#", "sub-kitchen"),
        ]
        assert "shared: workers" in page.inner_text(f"{ROWS}[data-client='sub-worker']")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-subscriptions-desktop.png"), full_page=True)

        page.fill("#sub-client", "sub-kitchen")
        page.wait_for_selector("#sub-summary:has-text('of 2 subscriptions')", timeout=TIMEOUT_MS)
        page.fill("#sub-prefix", "home/")
        page.wait_for_selector("#sub-summary:has-text('of 1 subscription')", timeout=TIMEOUT_MS)
        assert listed(page) == [("home/kitchen/#", "sub-kitchen")]

        kitchen.unsubscribe("home/kitchen/#")
        page.wait_for_selector("#sub-summary:has-text('No subscription matches')", timeout=TIMEOUT_MS)
        assert not tab.errors, tab.errors
    finally:
        tab.close()
