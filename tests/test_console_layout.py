"""The console's layout in Chromium at desktop (1280x800) and phone (390x844) size (issue 18): the
sign-in form shows one way of signing in at a time, a detail opened below a long list is scrolled
into view, a phone sees the clients' actions without scrolling sideways, and the dark theme
(the system's choice, or the toggle's, remembered)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paho_sync import MQTTv5, PahoClient, PahoFactory
from test_console_live import ARTIFACTS, Device, Tab, row
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT_MS = 15_000
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    return wrenmq_server_factory(
        api_port=0, ws_port=0, password_file=passwd, console_admins=["alice"], presence_snapshot_debounce=0.05
    )


@pytest.fixture
def api_key(server: WrenmqServer) -> str:
    return ApiKeyStore(server.broker.config.api_keys_path).create(f"console-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def tabs(browser: Any, server: WrenmqServer, api_key: str) -> Iterator[Callable[..., Tab]]:
    opened: list[Tab] = []

    def open_tab(route: str, **kw: Any) -> Tab:
        tab = Tab(browser, server, api_key, route, **kw)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()


@pytest.fixture
def paho(server: WrenmqServer) -> Iterator[PahoFactory]:
    factory = PahoFactory(server.port)
    yield factory
    factory.close()


def in_viewport(page: Any, selector: str) -> bool:
    """Whether the top of ``selector`` is on screen (below the sticky top bar)."""
    return bool(
        page.evaluate(
            """(sel) => {
                const top = document.querySelector(sel).getBoundingClientRect().top;
                const bar = document.querySelector('.topbar').getBoundingClientRect().bottom;
                return top >= bar - 1 && top < window.innerHeight - 40;
            }""",
            selector,
        )
    )


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# -- sign-in ------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, PHONE], ids=["desktop", "phone"])
def test_console_sign_in_shows_one_way_at_a_time(browser: Any, server: WrenmqServer, viewport: dict[str, int]) -> None:
    """Under the "API key" tab only the key field shows; under "User" only user name and password."""
    context = browser.new_context(viewport=viewport)
    try:
        page = context.new_page()
        page.goto(server.api_url + "/")
        page.wait_for_selector("#api-key", timeout=TIMEOUT_MS)
        assert page.is_visible("#api-key")
        assert page.is_hidden("#username") and page.is_hidden("#password")
        shot(page, f"console-sign-in-{'phone' if viewport is PHONE else 'desktop'}.png")
        page.click("role=tab[name='User']")
        assert page.is_visible("#username") and page.is_visible("#password")
        assert page.is_hidden("#api-key")
        page.fill("#username", "alice")
        page.fill("#password", "wonderland")
        page.click("button[type=submit]")
        page.wait_for_selector("#sign-out:not([hidden])", timeout=TIMEOUT_MS)
    finally:
        context.close()


# -- details opened below a long list -----------------------------------------------------------


def test_devices_detail_opened_below_the_list_is_scrolled_into_view(
    tabs: Callable[..., Tab], server: WrenmqServer
) -> None:
    """With 40 devices the detail card sits far below the list: clicking the first device brings
    it on screen, at desktop and at phone size."""
    made = []
    try:
        for i in range(40):
            device = Device(server.port, f"fleet-{i:02d}")
            device.announce("player", f"Player {i:02d}")
            made.append(device)
        for viewport, name in (({}, "desktop"), (PHONE, "phone")):
            tab = tabs("devices", **viewport)
            page = tab.page
            page.wait_for_selector(row("device-table", "fleet-39"), timeout=TIMEOUT_MS)
            page.click(row("device-table", "fleet-00"))
            page.wait_for_selector("#device-detail:has-text('Player 00')", timeout=TIMEOUT_MS)
            page.wait_for_timeout(200)
            assert in_viewport(page, "#device-detail"), (name, page.evaluate("() => window.scrollY"))
            page.screenshot(path=str(ARTIFACTS / f"console-devices-detail-{name}.png"))
            assert not tab.errors, tab.errors
    finally:
        for device in made:
            device.close()


def test_clients_on_a_phone_show_actions_and_the_detail(
    tabs: Callable[..., Tab], paho: PahoFactory, server: WrenmqServer
) -> None:
    """At 390 px each client's Disconnect and Discard session are on screen (the table does not
    scroll sideways), and the session opened from the first row (the detail is below the list) is
    scrolled into view."""
    clients: list[PahoClient] = [paho(MQTTv5, client_id=f"phone-client-{i:02d}") for i in range(12)]
    assert len(clients) == 12
    tab = tabs("clients", **PHONE)
    page = tab.page
    last = "#client-table tr[data-client='phone-client-11']"
    page.wait_for_selector(last, timeout=TIMEOUT_MS)
    wrap = page.evaluate(
        "() => { const w = document.querySelector('.table-wrap'); return w.scrollWidth - w.clientWidth; }"
    )
    assert wrap <= 0, wrap
    for button in (f"{last} .cl-disconnect", f"{last} .cl-discard"):
        box = page.locator(button).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (button, box)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    shot(page, "console-clients-phone.png")
    page.click("#client-table tr[data-client='phone-client-00'] .cl-id")
    page.wait_for_selector("#client-detail:has-text('Connected since')", timeout=TIMEOUT_MS)
    page.wait_for_timeout(200)
    assert in_viewport(page, "#client-detail")
    page.screenshot(path=str(ARTIFACTS / "console-clients-detail-phone.png"))
    assert not tab.errors, tab.errors


# -- dark mode ----------------------------------------------------------------------------------


def background(page: Any) -> str:
    return str(page.evaluate("() => getComputedStyle(document.body).backgroundColor"))


LIGHT_BG = "rgb(246, 247, 249)"
DARK_BG = "rgb(18, 22, 29)"


def test_console_dark_mode_follows_the_system_and_the_toggle_is_remembered(
    browser: Any, server: WrenmqServer, api_key: str
) -> None:
    """prefers-color-scheme: dark gives the dark theme; the toggle switches to light and back, and
    the choice outlives a reload (localStorage)."""
    tab = Tab(browser, server, api_key, "dashboard")
    try:
        page = tab.page
        assert background(page) == LIGHT_BG
        page.emulate_media(color_scheme="dark")
        page.wait_for_function(f"() => getComputedStyle(document.body).backgroundColor === '{DARK_BG}'")
        page.wait_for_selector("#theme-toggle[aria-pressed='true']", timeout=TIMEOUT_MS)  # on matchMedia's change
        page.click("#theme-toggle")  # the system says dark; the user chooses light
        assert background(page) == LIGHT_BG
        page.reload()
        page.wait_for_selector("section.page-dashboard", timeout=TIMEOUT_MS)
        assert background(page) == LIGHT_BG
        page.click("#theme-toggle")
        assert background(page) == DARK_BG
        page.emulate_media(color_scheme="light")
        page.reload()
        page.wait_for_selector("section.page-dashboard", timeout=TIMEOUT_MS)
        assert background(page) == DARK_BG  # remembered over the system's choice
        assert not tab.errors, tab.errors
    finally:
        tab.close()
