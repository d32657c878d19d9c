"""The web console's shell in Chromium (wrenmq feature, issue 9): served at ``/`` by the API
listener with every asset from wrenmq itself (no CDN), sign-in with an API key or a broker user,
sign-out, and each page reachable from the menu without console errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

# Every page of the console's menu (an API key that manages sees them all).
PAGES = [
    "dashboard",
    "clients",
    "subscriptions",
    "topics",
    "retained",
    "mqtt",
    "devices",
    "resources",
    "brokers",
    "nodes",
    "trace",
    "users",
    "keys",
]
TIMEOUT_MS = 15_000


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    return wrenmq_server_factory(api_port=0, ws_port=0, password_file=passwd, console_admins=["alice"])


class Console:
    """A browser tab on the console, recording console errors and every URL it requested."""

    def __init__(self, browser: Any, server: WrenmqServer) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requested: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.goto(server.api_url + "/")

    def sign_in_with_key(self, key: str) -> None:
        self.page.fill("#api-key", key)
        self.page.click("button[type=submit]")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser: Any, server: WrenmqServer) -> Iterator[Console]:
    opened = Console(browser, server)
    yield opened
    opened.close()


def key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


def test_console_served_at_root_without_a_key(server: WrenmqServer) -> None:
    response = httpx.get(server.api_url + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "/console/app.js" in response.text
    for path in ("/console/app.js", "/console/console.css", "/static/vendor/uPlot.iife.min.js"):
        assert httpx.get(server.api_url + path).status_code == 200, path


def test_console_sign_in_with_api_key_then_every_page_loads(console: Console, server: WrenmqServer) -> None:
    page = console.page
    console.sign_in_with_key(key(server))
    page.wait_for_selector("#sign-out:not([hidden])", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'connected'", timeout=TIMEOUT_MS)
    menu = page.eval_on_selector_all("#sidebar a[href^='#/']", "(links) => links.map((a) => a.hash.slice(2))")
    assert menu == PAGES  # (the screenshots of every page, test_console_screens.py, take this list too)
    for name in PAGES:
        page.click(f"#sidebar a[href='#/{name}']")
        page.wait_for_selector(f"section.page-{name}", timeout=TIMEOUT_MS)
        page.wait_for_function(
            "(name) => document.querySelector('#sidebar a[aria-current]')?.getAttribute('href') === '#/' + name",
            arg=name,
            timeout=TIMEOUT_MS,
        )
        page.wait_for_timeout(300)
        assert "could not load" not in page.inner_text("main"), name
    assert not console.errors, console.errors
    origin = urlsplit(server.api_url).netloc
    outside = [url for url in console.requested if urlsplit(url).netloc not in (origin, "")]
    assert not [url for url in outside if not url.startswith(("ws://127.0.0.1", "data:"))], outside


def test_console_refuses_a_wrong_key(console: Console) -> None:
    console.sign_in_with_key("wmq_not-a-key")
    console.page.wait_for_selector("p.error:has-text('not accepted')", timeout=TIMEOUT_MS)
    assert console.page.is_hidden("#sign-out")


def test_console_sign_in_as_a_user_and_sign_out(console: Console, server: WrenmqServer) -> None:
    page = console.page
    page.click("role=tab[name='User']")
    page.fill("#username", "alice")
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("p.error:has-text('bad user name or password')", timeout=TIMEOUT_MS)
    page.fill("#password", "wonderland")
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-out:not([hidden])", timeout=TIMEOUT_MS)
    token = page.evaluate("() => sessionStorage.getItem('wrenmq.console.key')")
    assert token.startswith("wms_")
    page.click("#sign-out")
    page.wait_for_selector("#api-key", timeout=TIMEOUT_MS)
    # The session ended on the server too.
    page.wait_for_timeout(300)
    status = httpx.get(server.api_url + "/api/v1/broker/status", headers={"Authorization": "Bearer " + token})
    assert status.status_code == 401
