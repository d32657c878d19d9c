"""The dashboard's charts from the broker's own history (issue 18: "reload the dashboard and still
see the last hour"), in Chromium: traffic sent before the page is opened, and before a reload, is
in the charts at once, from ``GET /api/v1/metrics/history``. The broker samples every 0.5 s here
(10 s for 24 h by default), and the charts show 5 minutes: every sample is a point."""

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
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
POINTS = "() => Number(document.getElementById('chart-messages')?.dataset.points || 0) > 0"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0, metrics_history_interval=0.5, metrics_history_retention=3600)


def test_dashboard_charts_open_on_the_history_the_broker_kept(browser: Any, server: WrenmqServer) -> None:
    key = ApiKeyStore(server.broker.config.api_keys_path).create("dashboard", read_only=True)
    publisher = PahoClient(server.port, MQTTv5, "history-publisher")
    for n in range(200):
        publisher.publish("history/load", str(n).encode(), qos=1)
    publisher.close()
    deadline = time.monotonic() + 10
    while True:  # the broker has sampled the burst (whoever asks)
        found = httpx.get(server.api_url + "/api/v1/metrics/history", headers={"Authorization": "Bearer " + key}).json()
        if any(v > 0 for v in found["messages_in"]):
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.2)

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(
        f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)});"
        "localStorage.setItem('wrenmq.console.dashboard.range', '5 min');"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        opened = time.time()  # the burst's sample was taken before: the API had it
        page.goto(server.api_url + "/#/dashboard")
        for _ in range(2):  # when opened, and again after a reload
            page.wait_for_function(POINTS, timeout=TIMEOUT_MS)
            box = page.locator("#chart-messages")
            assert float(box.get_attribute("data-first") or "inf") <= opened  # from before the page was opened
            assert float(box.get_attribute("data-peak") or 0) > 0  # the burst is in it
            assert "kept by the broker: a sample every 0.5 s for 1 h" in page.inner_text(".dash-history-note")
            page.reload()
        page.wait_for_function(POINTS, timeout=TIMEOUT_MS)
        page.select_option("#dash-range", "24 h")
        page.wait_for_function(POINTS, timeout=TIMEOUT_MS)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-dashboard-history.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()
