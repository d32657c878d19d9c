"""What the console learns from ``GET /api/v1/session`` (issue 18), in Chromium: the signed-in
caller's role, so a ``console_users`` session (read-only) or a read-only API key is shown only what
it may use and no page answers 403; and the configured topic prefixes (``events_prefix``,
``presence_admin_root``), so the Resources and Devices pages follow a broker that does not use the
defaults."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from test_console_live import Device, Tab, curl, row
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
PAGES = [
    "dashboard",
    "topics",
    "retained",
    "mqtt",
    "devices",
    "resources",
    "brokers",
]  # every page but the management ones (Clients, Subscriptions, Trace, Users, API keys)


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland", bob="builder")
    return wrenmq_server_factory(
        api_port=0,
        ws_port=0,
        password_file=passwd,
        console_admins=["alice"],
        console_users=["bob"],
        events_prefix="go-nmos/flows/events",
        presence_admin_root="ops",
        presence_snapshot_debounce=0.05,
    )


@pytest.fixture
def api_key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


class SignedIn:
    """A browser tab signed in as a broker user through the form, recording console errors
    (a 403 from a fetch is one: "Failed to load resource")."""

    def __init__(self, browser: Any, server: WrenmqServer, user: str, password: str, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(server.api_url + "/")
        self.page.click("role=tab[name='User']")
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("section.page-dashboard", timeout=TIMEOUT_MS)

    def visit(self, name: str) -> None:
        self.page.evaluate("(name) => { location.hash = '#/' + name; }", name)
        self.page.wait_for_selector(f"section.page-{name}", timeout=TIMEOUT_MS)
        self.page.wait_for_timeout(300)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def signed_in(browser: Any, server: WrenmqServer) -> Iterator[Callable[..., SignedIn]]:
    opened: list[SignedIn] = []

    def sign_in(user: str, password: str, viewport: dict[str, int] | None = None) -> SignedIn:
        tab = SignedIn(browser, server, user, password, viewport or {"width": 1280, "height": 800})
        opened.append(tab)
        return tab

    yield sign_in
    for tab in opened:
        tab.close()


# -- roles --------------------------------------------------------------------------------------


WRITE_CONTROLS = {"topics": "#publish-form", "devices": "#command-form", "resources": "#res-edit"}  # always drawn


def test_console_user_sees_a_read_only_console_without_403s(signed_in: Callable[..., SignedIn]) -> None:
    """A console_users session: no Clients page in the menu (a management route: 403), asking for
    it by address shows the dashboard, no publish, command or edit forms, "read-only" beside the
    name, and not one failed request or console error on any page."""
    bob = signed_in("bob", "builder")
    page = bob.page
    page.wait_for_selector("#who:has-text('bob · read-only')", timeout=TIMEOUT_MS)
    for managed in ("clients", "subscriptions", "trace", "users", "keys"):
        assert page.is_hidden(f"#sidebar a[href='#/{managed}']"), managed
    for name in PAGES:
        assert page.is_visible(f"#sidebar a[href='#/{name}']"), name
        bob.visit(name)
        if name in WRITE_CONTROLS:
            assert page.locator(WRITE_CONTROLS[name]).count() == 1
            assert page.is_hidden(WRITE_CONTROLS[name]), name
        assert "could not" not in page.inner_text("main"), name
    for managed in ("clients", "subscriptions", "trace", "users", "keys"):
        page.evaluate("(name) => { location.hash = '#/' + name; }", managed)
        page.wait_for_timeout(500)
        assert page.locator(f"section.page-{managed}").count() == 0
        assert page.locator("section.page-dashboard").count() == 1
    assert not bob.errors, bob.errors


def test_console_admin_sees_every_page_and_control(signed_in: Callable[..., SignedIn]) -> None:
    alice = signed_in("alice", "wonderland")
    page = alice.page
    page.wait_for_selector("#who:has-text('alice')", timeout=TIMEOUT_MS)
    assert "read-only" not in page.inner_text("#who")
    assert page.is_visible("#sidebar a[href='#/clients']")
    alice.visit("clients")
    for name, control in WRITE_CONTROLS.items():
        alice.visit(name)
        assert page.is_visible(control), name
    assert not alice.errors, alice.errors


def test_console_read_only_api_key_lists_clients_without_actions(
    browser: Any, server: WrenmqServer, signed_in: Callable[..., SignedIn]
) -> None:
    """A read-only API key may read the management routes but change nothing: Clients is listed,
    without Disconnect or Discard session."""
    alice = signed_in("alice", "wonderland")  # a connected client to list: alice's realtime connection
    assert alice.page.is_visible("#sidebar a[href='#/clients']")
    key = ApiKeyStore(server.broker.config.api_keys_path).create("watcher", read_only=True)
    device = Device(server.port, "ro-listed")
    try:
        tab = Tab(browser, server, key, "clients")
        try:
            page = tab.page
            page.wait_for_selector("#client-table tr[data-client='ro-listed']", timeout=TIMEOUT_MS)
            assert page.is_hidden("#client-table tr[data-client='ro-listed'] .cl-discard")
            assert page.is_hidden("#client-table tr[data-client='ro-listed'] .cl-disconnect")
            assert "watcher · read-only" in page.inner_text("#who")
            assert not tab.errors, tab.errors
        finally:
            tab.close()
    finally:
        device.close()


# -- configured prefixes ------------------------------------------------------------------------


def test_resources_page_follows_a_configured_events_prefix(browser: Any, server: WrenmqServer, api_key: str) -> None:
    """With events_prefix = go-nmos/flows/events, a change made with curl shows live (the page
    subscribes to go-nmos/flows/events/flow/+, not events/flow/+)."""
    tab = Tab(browser, server, api_key, "resources", **{"wrenmq.console.resources.kind": "flow"})
    try:
        page = tab.page
        page.wait_for_selector("#res-status:has-text('last seq 0')", timeout=TIMEOUT_MS)
        curl(server, api_key, "PUT", "/api/v1/resources/flow/f1", {"label": "cam 1"})
        page.wait_for_selector(f"{row('resource-table', 'f1')}:has-text('cam 1')", timeout=TIMEOUT_MS)
        page.wait_for_selector("#res-log li:has-text('created')", timeout=TIMEOUT_MS)
        assert "flow (1)" in page.inner_text("#res-seen")  # from <prefix>/all
        assert not tab.errors, tab.errors
    finally:
        tab.close()


def test_devices_page_follows_a_configured_admin_root(browser: Any, server: WrenmqServer, api_key: str) -> None:
    """With presence_admin_root = ops, the page follows the retained ops/devices/snapshot. The
    fallback poll of GET /devices is answered "no devices" here, so only the snapshot can show one."""
    context_routes: list[str] = []
    tab = Tab.__new__(Tab)
    tab.context = browser.new_context(viewport={"width": 1280, "height": 800})
    empty = {"items": [], "total": 0, "limit": 1000, "offset": 0}

    def no_devices(route: Any) -> None:
        context_routes.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(empty))

    tab.context.route("**/api/v1/devices?*", no_devices)
    tab.context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(api_key)})")
    tab.page = tab.context.new_page()
    tab.errors = []
    tab.page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
    device = None
    try:
        page = tab.page
        page.goto(f"{server.api_url}/#/devices")
        page.wait_for_selector(".dev-empty:has-text('No devices yet')", timeout=TIMEOUT_MS)
        assert context_routes  # the poll was answered by the test
        device = Device(server.port, "ops-player")
        device.announce("player", "Ops player")
        page.wait_for_selector(f"{row('device-table', 'ops-player')} .badge.online", timeout=TIMEOUT_MS)
        assert not tab.errors, tab.errors
    finally:
        if device is not None:
            device.close()
        tab.close()
