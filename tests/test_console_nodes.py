"""The console's Nodes page in Chromium (issue 16, a wrenmq feature): GET /api/v1/cluster shown
live. On a single node it says so; in a cluster on a real ``redis-server`` (this broker in-process,
a second node as a ``wrenmq serve`` subprocess) it lists both with their state and connections,
follows a client connecting to the other node without a reload, and drops the other node once it
is killed. Every request the page makes goes to the broker (the console works offline)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import console_page
from paho_sync import MQTTv5, PahoClient
from redisproc import RedisServer, have_redis
from serveproc import BrokerProcess
from test_console_live import ARTIFACTS
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000


def _open(browser: Any, server: WrenmqServer, ready: str, errors: list[str], requests: list[str]) -> Any:
    key = ApiKeyStore(server.broker.config.api_keys_path).create(f"nodes-{uuid.uuid4().hex[:6]}")
    page = console_page(browser, server.api_url, key, "dashboard", "section.page-dashboard", errors)
    page.on("request", lambda request: requests.append(request.url))
    page.evaluate("() => { location.hash = '#/nodes'; }")
    page.wait_for_selector(ready, timeout=TIMEOUT_MS)
    return page


def _foreign(server: WrenmqServer, requests: list[str]) -> list[str]:
    return [url for url in requests if not url.startswith((server.api_url, "data:", "ws://127.0.0.1"))]


def test_nodes_page_says_single_node_without_a_cluster(
    browser: Any, wrenmq_server_factory: Callable[..., WrenmqServer]
) -> None:
    server = wrenmq_server_factory(api_port=0)
    errors: list[str] = []
    requests: list[str] = []
    page = _open(browser, server, "#nodes-single", errors, requests)
    try:
        assert page.inner_text("#nodes-single") == "Single node: this broker is not in a cluster (no cluster_url)."
        assert page.is_hidden("#nodes-table")
        assert page.is_visible("#sidebar a[href='#/nodes']")
        assert not errors, errors
        assert not _foreign(server, requests), requests
    finally:
        page.context.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not have_redis():
        pytest.skip("needs Debian's redis-server")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_nodes_page_shows_the_cluster_live(
    browser: Any, wrenmq_server_factory: Callable[..., WrenmqServer], redis_server: RedisServer, tmp_path: Path
) -> None:
    server = wrenmq_server_factory(api_port=0, cluster_url=redis_server.url, node_name="console-a")
    (tmp_path / "b").mkdir()
    other = BrokerProcess(tmp_path / "b", "--cluster-url", redis_server.url, "--node-name", "console-b").start()
    errors: list[str] = []
    requests: list[str] = []
    page = _open(browser, server, "#nodes-table tr[data-node='console-b'][data-state='alive']", errors, requests)
    client = None
    try:
        assert page.inner_text("#nodes-self") == "console-a"
        assert page.inner_text("#nodes-link") == "connected to Redis"
        assert "this node" in page.inner_text("#nodes-table tr[data-node='console-a']")
        assert page.inner_text("#nodes-alive") == "2 of 2"
        b_row = "#nodes-table tr[data-node='console-b']"
        assert page.inner_text(f"{b_row} .nd-connections") == "0"

        client = PahoClient(other.port, MQTTv5, client_id="on-b")  # B's next heartbeat counts it
        page.wait_for_function(
            f"() => document.querySelector(\"{b_row} .nd-connections\")?.textContent === '1'", timeout=TIMEOUT_MS
        )
        assert page.inner_text("#nodes-total-connections") == "1"  # the totals over the alive nodes
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-nodes-desktop.png"), full_page=True)

        other.kill()  # kill -9: B stops heartbeating; A finds it dead and forgets it once reaped
        page.wait_for_selector(b_row, state="detached", timeout=TIMEOUT_MS)
        assert page.inner_text("#nodes-alive") == "1 of 1"
        assert not errors, errors
        assert not _foreign(server, requests), requests
    finally:
        if client is not None:
            client.client.loop_stop()
        page.context.close()
        if other.proc is not None and other.proc.poll() is None:
            other.kill()
