"""The console's API keys page in Chromium (issue 18): an admin creates a key, sees it once (gone
after a reload), the key works over HTTP at once with the access chosen, and revoking it in the page
refuses its next request (401). A read-only key sees the list without the form or Revoke; a
``console_users`` session is not shown the page (tests/test_console_session.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from browser import console_page
from test_console_live import ARTIFACTS
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    return wrenmq_server_factory(api_port=0)


def open_page(browser: Any, server: WrenmqServer, key: str, errors: list[str]) -> Any:
    return console_page(browser, server.api_url, key, "keys", "#key-table tr[data-key]", errors)


@pytest.fixture
def admin(browser: Any, server: WrenmqServer) -> Iterator[tuple[Any, list[str]]]:
    errors: list[str] = []
    page = open_page(browser, server, ApiKeyStore(server.broker.config.api_keys_path).create("admin"), errors)
    yield page, errors
    page.context.close()


def status(server: WrenmqServer, key: str, method: str = "GET", path: str = "/api/v1/broker/status") -> int:
    body = {"topic": "a/b", "payload": "x"} if method == "POST" else None
    answer = httpx.request(method, server.api_url + path, json=body, headers={"Authorization": "Bearer " + key})
    return answer.status_code


def test_keys_page_creates_a_key_shown_once_that_works_and_revokes_it(
    admin: tuple[Any, list[str]], server: WrenmqServer
) -> None:
    page, errors = admin
    assert page.is_visible("#sidebar a[href='#/keys']")
    page.wait_for_selector("#key-table tr[data-key='admin'] .key-mine", timeout=TIMEOUT_MS)  # the key signed in with

    name = f"dash-{uuid.uuid4().hex[:4]}"
    page.fill("#key-name", name)
    page.check("#key-read-only")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-secret-box:not([hidden])", timeout=TIMEOUT_MS)
    page.wait_for_selector(f"#key-table tr[data-key='{name}']:has-text('read-only')", timeout=TIMEOUT_MS)
    key = page.input_value("#key-secret")
    assert key.startswith("wmq_")
    assert status(server, key) == 200  # works at once
    assert status(server, key, "POST", "/api/v1/publish") == 403  # and is read-only, as chosen
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-keys-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # on a phone every Revoke is on screen
    for button in page.locator("#key-table .res-delete").all():
        box = button.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390, box
    page.screenshot(path=str(ARTIFACTS / "console-keys-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # Shown once: a reload has the list, not the key.
    page.reload()
    page.wait_for_selector(f"#key-table tr[data-key='{name}']", timeout=TIMEOUT_MS)
    assert page.is_hidden("#key-secret-box")
    assert key not in page.content()

    page.click(f"#key-table tr[data-key='{name}'] .res-delete")
    page.wait_for_selector(f"#key-table tr[data-key='{name}']", state="detached", timeout=TIMEOUT_MS)
    assert status(server, key) == 401
    assert [k.name for k in ApiKeyStore(server.broker.config.api_keys_path).all()] == ["admin"]
    assert not errors, errors


def test_keys_page_read_only_key_sees_the_list_and_no_controls(browser: Any, server: WrenmqServer) -> None:
    store = ApiKeyStore(server.broker.config.api_keys_path)
    store.create("ops")
    errors: list[str] = []
    page = open_page(browser, server, store.create("viewer", read_only=True), errors)
    try:
        page.wait_for_selector("#key-table tr[data-key='ops']", timeout=TIMEOUT_MS)
        assert page.is_hidden("#key-form")
        assert page.locator("#key-table .res-delete").count() == 2
        assert all(not b.is_visible() for b in page.locator("#key-table .res-delete").all())
        assert not errors, errors
    finally:
        page.context.close()
