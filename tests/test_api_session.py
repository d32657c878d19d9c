"""``/api/v1/session`` (wrenmq feature, issue 9): signing in to the console with a broker user's
name and password, checked like an MQTT CONNECT [MQTT-3.1.4-2], for users the config lets in."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from wrenmq.auth.passwords import PasswordFile
from wrenmq.pytest_plugin import WrenmqServer

S = "/api/v1/session"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> Callable[..., WrenmqServer]:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    passwords = PasswordFile.load(passwd)
    for user, password in (("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")):
        passwords.set_password(user, password)
    passwords.save()

    def start(**overrides: Any) -> WrenmqServer:
        settings = {
            "api_port": 0,
            "password_file": passwd,
            "allow_anonymous": False,
            "console_admins": ["alice"],
            "console_users": ["bob"],
            **overrides,
        }
        return wrenmq_server_factory(**settings)

    return start


def sign_in(server: WrenmqServer, username: str, password: str) -> httpx.Response:
    return httpx.post(server.api_url + S, json={"username": username, "password": password}, timeout=10)


def test_session_admin_reads_and_writes(server: Callable[..., WrenmqServer]) -> None:
    running = server()
    response = sign_in(running, "alice", "wonderland")
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["name"] == "alice" and session["read_only"] is False
    assert session["expires"] > time.time() + 11 * 3600
    auth = {"Authorization": "Bearer " + session["token"]}
    assert httpx.get(running.api_url + "/api/v1/broker/status", headers=auth).status_code == 200
    published = httpx.post(running.api_url + "/api/v1/publish", headers=auth, json={"topic": "a/b", "payload": "x"})
    assert published.status_code == 200, published.text


def test_session_user_is_read_only(server: Callable[..., WrenmqServer]) -> None:
    running = server()
    session = sign_in(running, "bob", "builder").json()
    assert session["read_only"] is True
    auth = {"Authorization": "Bearer " + session["token"]}
    assert httpx.get(running.api_url + "/api/v1/broker/status", headers=auth).status_code == 200
    # Other users' clients are management business (tests/test_api_acl.py has the full matrix).
    assert httpx.get(running.api_url + "/api/v1/clients", headers=auth).status_code == 403
    refused = httpx.post(running.api_url + "/api/v1/publish", headers=auth, json={"topic": "a/b", "payload": "x"})
    assert refused.status_code == 403


def test_session_refused_for_users_not_listed_and_bad_passwords(server: Callable[..., WrenmqServer]) -> None:
    running = server()
    carol = sign_in(running, "carol", "singer")
    assert carol.status_code == 403 and "console_users" in carol.json()["detail"]
    wrong = sign_in(running, "alice", "wrong")
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    unknown = sign_in(running, "mallory", "x")
    assert unknown.status_code == 401
    missing = httpx.post(running.api_url + S, json={"username": "alice"})
    assert missing.status_code == 422


def test_session_failed_logins_are_throttled(server: Callable[..., WrenmqServer]) -> None:
    """Failed console sign-ins count toward auth_failure_limit, as failed MQTT logins do."""
    running = server(auth_failure_limit=3)
    for _ in range(3):
        assert sign_in(running, "alice", "wrong").status_code == 401
    throttled = sign_in(running, "alice", "wonderland")
    assert throttled.status_code == 429


def test_session_sign_out_and_expiry(server: Callable[..., WrenmqServer]) -> None:
    running = server(console_session_hours=0.5 / 3600)  # half a second
    token = sign_in(running, "alice", "wonderland").json()["token"]
    auth = {"Authorization": "Bearer " + token}
    assert httpx.get(running.api_url + "/api/v1/broker/status", headers=auth).status_code == 200
    time.sleep(0.7)
    assert httpx.get(running.api_url + "/api/v1/broker/status", headers=auth).status_code == 401
    token = sign_in(running, "alice", "wonderland").json()["token"]
    auth = {"Authorization": "Bearer " + token}
    assert httpx.delete(running.api_url + S, headers=auth).status_code == 204
    assert httpx.get(running.api_url + "/api/v1/broker/status", headers=auth).status_code == 401


def test_session_signs_in_to_polling_as_the_user(server: Callable[..., WrenmqServer]) -> None:
    """The session token also signs in to realtime polling, where the ACL sees the user's name."""
    running = server()
    token = sign_in(running, "alice", "wonderland").json()["token"]
    opened = httpx.post(
        running.api_url + "/api/v1/realtime/poll",
        headers={"Authorization": "Bearer " + token},
        json={"filters": ["x/#"]},
    )
    assert opened.status_code == 201, opened.text
    assert opened.json()["username"] == "alice"


def test_session_get_tells_the_console_who_and_where(server: Callable[..., WrenmqServer]) -> None:
    """``GET /session``: the role of the token and the configured topic prefixes (issue 18)."""
    running = server(events_prefix="go-nmos/flows/events", presence_admin_root="ops")
    answers = {}
    for user, password in (("alice", "wonderland"), ("bob", "builder")):
        token = sign_in(running, user, password).json()["token"]
        got = httpx.get(running.api_url + S, headers={"Authorization": "Bearer " + token})
        assert got.status_code == 200, got.text
        answers[user] = got.json()
    assert answers["alice"]["kind"] == "console" and answers["alice"]["name"] == "alice"
    assert answers["alice"]["read_only"] is False and answers["alice"]["manages"] is True
    assert answers["bob"]["read_only"] is True and answers["bob"]["manages"] is False
    topics = answers["bob"]["topics"]
    assert topics["events_prefix"] == "go-nmos/flows/events" and topics["presence_admin_root"] == "ops"
    assert topics["presence_devices_root"] == "devices" and topics["presence"] is True
    assert answers["bob"]["password_file"] is True and answers["bob"]["acl_file"] is False
    assert httpx.get(running.api_url + S).status_code == 401
    assert httpx.get(running.api_url + S, headers={"Authorization": "Bearer wmq_nope"}).status_code == 401
