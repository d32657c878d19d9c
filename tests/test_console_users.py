"""The console's Users and ACL page in Chromium (issue 18): a user added in the page connects over
MQTT with paho at once [MQTT-3.1.4-2], an ACL rule added in the page decides what it may
subscribe to [MQTT-3.9.3-1], and a user deleted in the page is refused its next CONNECT
[MQTT-3.2.2-5] (the broker answers Bad user name or password)."""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from test_console_live import ARTIFACTS
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 5.0
TIMEOUT_MS = 15_000


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    acl = tmp_path / "acl"
    acl.write_text("# managed from the console\nuser alice\ntopic readwrite #\n")
    return wrenmq_server_factory(
        api_port=0, ws_port=0, password_file=passwd, acl_file=acl, allow_anonymous=False, console_admins=["alice"]
    )


class Mqtt:
    """paho-mqtt 2.x with a user name and password: the CONNACK's reason, and SUBACKs waited for."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"users-{uuid.uuid4().hex[:6]}", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.acks.put(("connack", rc))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.acks.put(("suback", rcs))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        kind, self.connack = self.acks.get(timeout=TIMEOUT)
        assert kind == "connack"

    def subscribe(self, topic_filter: str) -> int:
        self.client.subscribe(topic_filter, 1)
        kind, codes = self.acks.get(timeout=TIMEOUT)
        assert kind == "suback"
        return int(codes[0].value)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def admin_page(browser: Any, server: WrenmqServer) -> Iterator[tuple[Any, list[str]]]:
    """The Users page, signed in as alice (console_admins) through the form; its console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.api_url + "/")
    page.click("role=tab[name='User']")
    page.fill("#username", "alice")
    page.fill("#password", "wonderland")
    page.click("button[type=submit]")
    page.wait_for_selector("section.page-dashboard", timeout=TIMEOUT_MS)
    page.click("#sidebar a[href='#/users']")
    page.wait_for_selector("#user-table tr[data-user='alice']", timeout=TIMEOUT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page, errors
    context.close()


def test_users_page_adds_a_user_who_connects_over_mqtt_and_an_acl_rule_that_applies(
    admin_page: tuple[Any, list[str]], server: WrenmqServer
) -> None:
    page, errors = admin_page
    refused = Mqtt(server.port, "sensor-7", "s3cret")
    assert refused.connack.is_failure  # not a user yet
    refused.close()

    page.fill("#user-name", "sensor-7")
    page.fill("#user-password", "s3cret")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#user-table tr[data-user='sensor-7']", timeout=TIMEOUT_MS)

    page.fill("#acl-user", "sensor-7")
    page.select_option("#acl-access", "readwrite")
    page.fill("#acl-topic", "sensors/7/#")
    page.click("#acl-form button[type=submit]")
    page.wait_for_selector("#acl-table tr:has-text('sensors/7/#'):has-text('sensor-7')", timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-users-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # on a phone every Delete is on screen
    for button in page.locator("#acl-table .res-delete, #user-table .res-delete").all():
        box = button.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390, box
    page.screenshot(path=str(ARTIFACTS / "console-users-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    device = Mqtt(server.port, "sensor-7", "s3cret")
    try:
        assert not device.connack.is_failure, device.connack
        assert device.subscribe("sensors/7/#") == 1  # granted QoS 1: the rule added in the page
        assert device.subscribe("sensors/8/#") == 0x87  # Not authorized: no rule for it
    finally:
        device.close()
    text = (server.broker.config.acl_file or Path()).read_text()
    assert "# managed from the console" in text and "topic readwrite sensors/7/#" in text

    # A wrong password is still refused; deleting the user in the page refuses the next CONNECT.
    wrong = Mqtt(server.port, "sensor-7", "nope")
    assert wrong.connack.is_failure
    wrong.close()
    page.click("#user-table tr[data-user='sensor-7'] .res-delete")
    page.wait_for_selector("#user-table tr[data-user='sensor-7']", state="detached", timeout=TIMEOUT_MS)
    gone = Mqtt(server.port, "sensor-7", "s3cret")
    assert gone.connack.is_failure
    gone.close()

    rule = "#acl-table tr:has-text('sensors/7/#')"
    page.click(f"{rule} .res-delete")
    page.wait_for_selector(rule, state="detached", timeout=TIMEOUT_MS)
    assert "sensors/7/#" not in (server.broker.config.acl_file or Path()).read_text()
    assert not errors, errors


def test_users_page_says_when_no_file_is_configured(
    browser: Any, wrenmq_server_factory: Callable[..., WrenmqServer]
) -> None:
    """Without password_file and acl_file the page says which setting to add, asks for neither
    (no 409 in the browser's console), and offers no form."""
    server = wrenmq_server_factory(api_port=0, ws_port=0)
    key = ApiKeyStore(server.broker.config.api_keys_path).create("admin")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.add_init_script(f"sessionStorage.setItem('wrenmq.console.key', {json.dumps(key)})")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(server.api_url + "/#/users")
        page.wait_for_selector("#users-card:has-text('No password_file is configured')", timeout=TIMEOUT_MS)
        assert "No acl_file is configured" in page.inner_text("#acl-card")
        assert page.is_hidden("#user-form") and page.is_hidden("#acl-form")
        page.wait_for_timeout(300)
        assert not errors, errors
    finally:
        context.close()
