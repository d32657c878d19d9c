"""Who may do what over the HTTP API (wrenmq feature, issue 14 item 8): every route a console
session or an API key reaches acts under that user's ACL, as an MQTT client of the same user would
(a read is a SUBSCRIBE's READ check [MQTT-3.8.4-1 context: the server may refuse a subscription],
a publish a PUBLISH's WRITE check), and only API keys and ``console_admins`` reach the management
routes (clients, subscriptions, users, ACL rules, broker connections).

Real broker, real HTTP (httpx), real password and ACL files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from problems import problem
from wrenmq.api.keys import ApiKeyStore
from wrenmq.auth.passwords import PasswordFile
from wrenmq.pytest_plugin import WrenmqServer

API = "/api/v1"
TIMEOUT = 10.0

ACL = """\
user bob
topic read public/#
topic read events/note/#

user alice
topic readwrite home/alice/#
topic read public/#
topic write devices/d2/commands/#

user ops
topic readwrite #

user reader
topic read public/#
"""


class Setup:
    """A broker with users alice (console_admins) and bob (console_users), API keys ``ops``
    (read-write, may read and write everything by the ACL) and ``reader`` (read-only, may read
    ``public/#``), and a clients for each."""

    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        url = server.api_url
        store = ApiKeyStore(server.broker.config.api_keys_path)
        self.ops = httpx.Client(base_url=url + API, headers=_bearer(store.create("ops")), timeout=TIMEOUT)
        self.reader = httpx.Client(
            base_url=url + API, headers=_bearer(store.create("reader", read_only=True)), timeout=TIMEOUT
        )
        self.alice = self.session("alice", "wonderland")
        self.bob = self.session("bob", "builder")

    def session(self, username: str, password: str) -> httpx.Client:
        url = self.server.api_url
        signed_in = httpx.post(url + API + "/session", json={"username": username, "password": password})
        assert signed_in.status_code == 201, signed_in.text
        return httpx.Client(base_url=url + API, headers=_bearer(signed_in.json()["token"]), timeout=TIMEOUT)

    def close(self) -> None:
        for client in (self.ops, self.reader, self.alice, self.bob):
            client.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


@pytest.fixture
def setup(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> Iterator[Setup]:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    passwords = PasswordFile.load(passwd)
    for user, password in (("alice", "wonderland"), ("bob", "builder")):
        passwords.set_password(user, password)
    passwords.save()
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    server = wrenmq_server_factory(
        api_port=0,
        password_file=passwd,
        acl_file=acl,
        allow_anonymous=False,
        console_admins=["alice"],
        console_users=["bob"],
    )
    server.publish("home/alice/secret-note", b"the key is under the mat", retain=True)
    server.publish("public/news", b"hello", retain=True)
    made = Setup(server)
    yield made
    made.close()


def _topics(page: dict[str, Any]) -> list[str]:
    return [item["topic"] for item in page["items"]]


# -- reads ------------------------------------------------------------------------------------------


def test_console_user_cannot_read_a_retained_message_the_acl_hides(setup: Setup) -> None:
    """The issue's case: bob may read only public/#, so alice's retained note is 403 (with the
    reason), not 200 with its payload; the same user's stream of home/alice/# is refused alike."""
    body = problem(setup.bob.get("/retained/home/alice/secret-note"), 403)
    assert "home/alice/secret-note" in body["detail"] and "ACL" in body["detail"]
    assert "mat" not in body["detail"]
    assert setup.bob.get("/retained/public/news").json()["payload"] == "hello"
    problem(setup.bob.get("/stream", params={"filter": "home/alice/#"}), 403)
    # Existence is not revealed either: a topic with no retained message is refused the same way.
    problem(setup.bob.get("/retained/home/alice/nothing-here"), 403)


def test_retained_and_topic_lists_leave_out_what_the_acl_hides(setup: Setup) -> None:
    listing = setup.bob.get("/retained", params={"filter": "#"})
    assert listing.status_code == 200, listing.text
    assert _topics(listing.json()) == ["public/news"] and listing.json()["total"] == 1
    topics = setup.bob.get("/topics").json()
    assert _topics(topics) == ["public/news"]
    # alice reads her own note and the public one; the ops key everything.
    assert _topics(setup.alice.get("/retained").json()) == ["home/alice/secret-note", "public/news"]
    assert _topics(setup.ops.get("/retained").json()) == ["home/alice/secret-note", "public/news"]


def test_api_key_acts_under_the_acl_as_its_name(setup: Setup) -> None:
    """An API key is the user of its name to the ACL: the read-only ``reader`` key reads public/#
    only, over the REST routes as over streams."""
    problem(setup.reader.get("/retained/home/alice/secret-note"), 403)
    assert _topics(setup.reader.get("/retained").json()) == ["public/news"]
    problem(setup.reader.get("/stream", params={"filter": "home/#"}), 403)


def test_counted_as_acl_denials(setup: Setup) -> None:
    before = setup.server.broker.stats.acl_denied
    problem(setup.bob.get("/retained/home/alice/secret-note"), 403)
    assert setup.server.broker.stats.acl_denied == before + 1


# -- writes -----------------------------------------------------------------------------------------


def test_console_admin_publishes_only_where_the_acl_allows(setup: Setup) -> None:
    """A publish over the API is checked as the user's PUBLISH would be (WRITE) [MQTT-3.3.5-2]."""
    body = problem(setup.alice.post("/publish", json={"topic": "public/news", "payload": "spoofed"}), 403)
    assert "public/news" in body["detail"]
    assert setup.server.broker.retained.get("public/news").payload == b"hello"
    allowed = setup.alice.post("/publish", json={"topic": "home/alice/todo", "payload": "milk", "retain": True})
    assert allowed.status_code == 200, allowed.text
    # A batch with one refused topic publishes nothing.
    batch = {"messages": [{"topic": "home/alice/a", "payload": "1", "retain": True}, {"topic": "public/x"}]}
    problem(setup.alice.post("/publish/batch", json=batch), 403)
    assert setup.server.broker.retained.get("home/alice/a") is None
    # The compatibility route too.
    compat = httpx.post(
        setup.server.api_url + "/publish",
        headers=setup.alice.headers,
        json={"broker": "internal", "topic": "public/news", "payload": "x"},
    )
    problem(compat, 403)


def test_clearing_a_retained_message_needs_write(setup: Setup) -> None:
    problem(setup.alice.delete("/retained/public/news"), 403)
    assert setup.server.broker.retained.get("public/news") is not None
    assert setup.alice.delete("/retained/home/alice/secret-note").status_code == 204


def test_console_user_is_read_only_everywhere(setup: Setup) -> None:
    body = problem(setup.bob.post("/publish", json={"topic": "public/x", "payload": "x"}), 403)
    assert "read-only" in body["detail"]
    problem(setup.bob.delete("/retained/public/news"), 403)


# -- management routes ------------------------------------------------------------------------------


MANAGEMENT = ["/clients", "/clients/some-client", "/subscriptions", "/users", "/acl"]


@pytest.mark.parametrize("path", MANAGEMENT)
def test_console_user_may_not_use_management_routes(setup: Setup, path: str) -> None:
    """Other users' client ids, sessions, passwords and rules are not a console user's business."""
    body = problem(setup.bob.get(path), 403)
    assert "console_admins" in body["detail"]


def test_console_user_reads_broker_connections_but_may_not_change_them(setup: Setup) -> None:
    """The dashboard shows external broker connections to every console user; adding or removing
    one is management (a console_users user is read-only anyway, so alice is refused nothing)."""
    assert setup.bob.get("/brokers").status_code == 200
    problem(setup.bob.delete("/brokers/cloud"), 403)


@pytest.mark.parametrize("path", ["/clients", "/subscriptions", "/users", "/acl", "/brokers"])
def test_admins_and_keys_use_management_routes(setup: Setup, path: str) -> None:
    for client in (setup.alice, setup.ops, setup.reader):
        answer = client.get(path)
        assert answer.status_code in (200, 409), (path, answer.text)  # 409: not running (brokers)


def test_read_only_key_manages_read_only(setup: Setup) -> None:
    body = problem(setup.reader.delete("/clients/some-client"), 403)
    assert "read-only" in body["detail"]
    assert setup.bob.get("/broker/status").status_code == 200  # counts only: everyone


# -- services: resources, devices, realtime ------------------------------------------------------


def test_resources_under_the_acl(setup: Setup) -> None:
    """A resource is read and changed under the ACL of its events' topic (events/<kind>/<id>)."""
    assert setup.ops.put("/resources/flow/f1", json={"label": "cam"}).status_code == 201
    assert setup.ops.put("/resources/note/n1", json={"text": "hi"}).status_code == 201
    problem(setup.bob.get("/resources/flow/f1"), 403)
    assert setup.bob.get("/resources/note/n1").json() == {"text": "hi"}
    flows = setup.bob.get("/resources/flow").json()
    assert flows["items"] == [] and flows["total"] == 0
    assert setup.bob.get("/resources/flow/events").json()["items"] == []
    assert len(setup.bob.get("/resources/note/events").json()["items"]) == 1
    problem(setup.alice.put("/resources/flow/f2", json={"label": "x"}), 403)
    problem(setup.alice.delete("/resources/flow/f1"), 403)


def test_device_commands_under_the_acl(setup: Setup) -> None:
    problem(setup.alice.post("/devices/d1/commands/play"), 403)
    assert setup.alice.post("/devices/d2/commands/play").status_code == 202
    problem(setup.alice.post("/sessions/s1/commands/play"), 403)
    problem(setup.bob.get("/devices/d1"), 403)
    problem(setup.alice.delete("/devices/d1"), 403)


def test_realtime_polling_with_a_console_session_acts_as_the_user(setup: Setup) -> None:
    url = setup.server.api_url + API + "/realtime/poll"
    denied = httpx.post(url, headers=setup.bob.headers, json={"filters": ["home/alice/#"]})
    problem(denied, 403)
    opened = httpx.post(url, headers=setup.bob.headers, json={"filters": ["public/#"]})
    assert opened.status_code == 201, opened.text
    session = opened.json()["id"]
    refused = httpx.post(f"{url}/{session}/publish", json={"topic": "public/x", "payload": "x"})
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]


def test_console_session_keeps_a_jwt_s_acl_claims(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """Signed in with a JWT as the password, the console session is judged by the token's
    publish/subscribe claims, as the MQTT client with that token would be (jwt_acl_claims)."""
    import jwt

    secret = "console-test-secret-of-32-bytes!"
    server = wrenmq_server_factory(api_port=0, jwt_secret=secret, console_admins=["carol"])
    server.publish("home/alice/secret-note", b"mat", retain=True)
    server.publish("public/news", b"hello", retain=True)
    token = jwt.encode(
        {"sub": "carol", "exp": 4102444800, "subscribe": ["public/#"], "publish": ["public/#"]}, secret, "HS256"
    )
    signed_in = httpx.post(server.api_url + API + "/session", json={"username": "carol", "password": token})
    assert signed_in.status_code == 201, signed_in.text
    with httpx.Client(base_url=server.api_url + API, headers=_bearer(signed_in.json()["token"])) as carol:
        problem(carol.get("/retained/home/alice/secret-note"), 403)
        assert _topics(carol.get("/retained").json()) == ["public/news"]
        problem(carol.post("/publish", json={"topic": "home/alice/x", "payload": "x"}), 403)
        assert carol.post("/publish", json={"topic": "public/x", "payload": "x"}).status_code == 200
