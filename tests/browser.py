"""Debian's Chromium for the browser tests, driven by Playwright (``executable_path``: nothing
downloads a browser). ``chromium()`` launches it headless, or skips the test where it is missing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A page put in by Playwright (page.route) has no address space, and Chromium would block its
    # connections to 127.0.0.1 as local network access.
    "--disable-features=LocalNetworkAccessChecks",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed on exit."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def console_page(browser: Any, url: str, key: str, route: str, ready: str, errors: list[str]) -> Any:
    """A 1280x800 page of the console at ``url`` signed in with the API key ``key``, opened on
    ``#/<route>`` once ``ready`` (a selector) shows; console errors and page errors go to ``errors``,
    and confirmation dialogs are accepted."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)})")
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{url}/#/{route}")
    page.wait_for_selector(ready, timeout=15_000)
    return page
