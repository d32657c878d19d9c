"""HTTP long polling (wrenmq feature, issue 8): ``/api/v1/realtime/poll``, the browser client's last
fallback, and the static files the API serves for the browser client (``/static/``).

Requests are made with httpx; the MQTT side is paho-mqtt 2.x; the broker is a real one on free
ports. Where polling mirrors MQTT (filter matching, retained messages on subscribe), the statement
is cited; everything else is a wrenmq feature, said so in each test's docstring.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, MQTTv311, PahoClient
from problems import problem
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 5.0
POLL = "/api/v1/realtime/poll"
ROOT = Path(__file__).resolve().parents[1]


class Poller:
    """A broker with its API on a free port, an httpx client, and the paho clients a test opened."""

    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.api_url, timeout=TIMEOUT + 10)
        self.keys = ApiKeyStore(server.broker.config.api_keys_path)
        self.paho_clients: list[PahoClient] = []

    def open(self, body: dict[str, Any], status: int = 201, **kw: Any) -> dict[str, Any]:
        response = self.http.post(POLL, json=body, **kw)
        assert response.status_code == status, response.text
        data: dict[str, Any] = response.json()
        return data

    def poll(self, session_id: str, timeout: float = 0) -> dict[str, Any]:
        response = self.http.get(f"{POLL}/{session_id}", params={"timeout": timeout})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def messages(self, session_id: str, count: int) -> list[dict[str, Any]]:
        """Poll until ``count`` messages came (bounded), and check no more are waiting."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} messages: {got}"
            got += self.poll(session_id, 0.5)["messages"]
        assert len(got) == count, got
        return got

    def paho(self, protocol: Any = MQTTv5, client_id: str = "") -> PahoClient:
        client = PahoClient(self.server.port, protocol, client_id)
        self.paho_clients.append(client)
        return client

    @property
    def sessions(self) -> dict[str, Any]:
        assert self.server.api is not None
        sessions: dict[str, Any] = self.server.api.app.state.poll_sessions
        return sessions

    def close(self) -> None:
        for paho in self.paho_clients:
            paho.close()
        self.http.close()


@pytest.fixture
def poller_factory(wrenmq_server_factory: Callable[..., WrenmqServer]) -> Iterator[Callable[..., Poller]]:
    made: list[Poller] = []

    def make(**overrides: Any) -> Poller:
        made.append(Poller(wrenmq_server_factory(api_port=0, **overrides)))
        return made[-1]

    yield make
    for poller in made:
        poller.close()


@pytest.fixture
def poller(poller_factory: Callable[..., Poller]) -> Poller:
    return poller_factory()


ACL = """\
# anonymous clients
topic read public/#

user alice
topic readwrite home/alice/#

# API keys sign in as users named like the key
user board
topic read public/#

user viewer
topic readwrite public/#
"""


@pytest.fixture
def users(tmp_path: Path) -> dict[str, Any]:
    """Settings for a broker with a user (alice), an ACL, and anonymous access off."""
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    return {"password_file": passwd, "acl_file": acl, "allow_anonymous": False}


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


# -- sessions ---------------------------------------------------------------------------------------


def test_open_then_poll_gets_messages_published_after(poller: Poller) -> None:
    """wrenmq feature: POST opens a session (201: id, client id, filters, server time); GET returns
    what was published after, matched as MQTT filters match [MQTT-4.7.1-2], [MQTT-4.7.1-3], in
    the streams' format (user properties as [name, value] pairs)."""
    before = time.time()
    session = poller.open({"filters": ["sensors/+/temp", "alerts/#"], "client_id": "kiosk"})
    assert session["id"] and session["client_id"] == "kiosk" and session["username"] is None
    assert session["filters"] == ["sensors/+/temp", "alerts/#"] and session["expires_after"] == 30.0
    assert before - 1 <= session["now"] <= time.time() + 1
    assert poller.poll(session["id"])["messages"] == []
    poller.server.publish("sensors/kitchen/temp", b"21", qos=1, properties={0x26: [("unit", "C")]})
    poller.server.publish("sensors/kitchen/humidity", b"40")  # not matched
    poller.server.publish("alerts", b"fire")  # '#' matches the parent level [MQTT-4.7.1-2]
    temp, alert = poller.messages(session["id"], 2)
    assert (temp["topic"], temp["payload"], temp["qos"], temp["retain"]) == ("sensors/kitchen/temp", "21", 1, False)
    assert temp["properties"] == {"user_properties": [["unit", "C"]]}
    assert (alert["topic"], alert["payload"]) == ("alerts", "fire") and temp["id"] < alert["id"]


def test_long_poll_returns_early_when_a_message_arrives(poller: Poller) -> None:
    """wrenmq feature: a GET waits up to ``timeout`` for a message and returns as soon as one
    arrives (here published from another thread during the wait), well before the timeout."""
    session = poller.open({"filters": ["wake"]})
    publisher = threading.Timer(0.5, lambda: poller.server.publish("wake", b"now"))
    started = time.monotonic()
    publisher.start()
    try:
        batch = poller.poll(session["id"], timeout=30)
    finally:
        publisher.cancel()
    assert [m["payload"] for m in batch["messages"]] == ["now"] and batch["dropped"] == 0
    assert time.monotonic() - started < 25  # returned early (the bound is the 30 s timeout, not a speed)


def test_poll_timeout_returns_empty_batch(poller: Poller) -> None:
    """wrenmq feature: with nothing to send, a GET answers an empty batch once ``timeout`` passed."""
    session = poller.open({"filters": ["quiet"]})
    batch = poller.poll(session["id"], timeout=0.3)
    assert batch["messages"] == [] and batch["dropped"] == 0 and batch["now"] > 0


def test_subscribe_and_unsubscribe(poller: Poller) -> None:
    """wrenmq feature: POST .../subscribe adds filters (with their retained messages
    [MQTT-3.3.1-6]), .../unsubscribe removes them [MQTT-3.10.4-6]; both answer the session."""
    poller.server.publish("b/kept", b"old", retain=True)
    session = poller.open({"filters": ["a"]})
    sid = session["id"]
    response = poller.http.post(f"{POLL}/{sid}/subscribe", json={"filters": ["b/#"]})
    assert response.status_code == 200 and response.json()["filters"] == ["a", "b/#"]
    retained = poller.messages(sid, 1)[0]
    assert (retained["topic"], retained["retain"], retained["id"]) == ("b/kept", True, 0)  # [MQTT-3.3.1-9]
    response = poller.http.post(f"{POLL}/{sid}/unsubscribe", json={"filters": ["a"]})
    assert response.status_code == 200 and response.json()["filters"] == ["b/#"]
    poller.server.publish("a", b"gone")
    poller.server.publish("b/1", b"here")
    assert [m["topic"] for m in poller.messages(sid, 1)] == ["b/1"]
    assert poller.poll(sid, 0.3)["messages"] == []


def test_retained_false_skips_retained(poller: Poller) -> None:
    """wrenmq feature: ``retained: false`` on open does not send the retained messages."""
    poller.server.publish("r", b"kept", retain=True)
    session = poller.open({"filters": ["r"], "retained": False})
    assert poller.poll(session["id"], 0.3)["messages"] == []


def test_publish_reaches_paho(poller: Poller) -> None:
    """wrenmq feature: POST .../publish publishes as the session's client (the body of POST
    /api/v1/publish) and reaches an MQTT subscriber with its MQTT 5 properties [MQTT-3.3.2-18]."""
    paho = poller.paho(MQTTv5)
    paho.subscribe("out/#", 1)
    sid = poller.open({"filters": ["unused"]})["id"]
    body = {
        "topic": "out/poll",
        "payload_json": {"n": 1},
        "qos": 1,
        "properties": {"user_properties": [{"name": "via", "value": "poll"}]},
    }
    response = poller.http.post(f"{POLL}/{sid}/publish", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["matched"] == 1 and response.json()["payload_size"] == len(b'{"n":1}')
    message = paho.receive(1)[0]
    assert (message.topic, json.loads(message.payload), message.qos) == ("out/poll", {"n": 1}, 1)
    assert message.properties.UserProperty == [("via", "poll")]
    response = poller.http.post(f"{POLL}/{sid}/publish", json={"topic": "out/+", "payload": "x"})
    problem(response, 422)
    paho.nothing()


def test_delete_ends_the_session(poller: Poller) -> None:
    """wrenmq feature: DELETE ends a session (204); after it every request for it is 404, as is
    any unknown id."""
    sid = poller.open({"filters": ["a"]})["id"]
    assert poller.http.delete(f"{POLL}/{sid}").status_code == 204
    problem(poller.http.get(f"{POLL}/{sid}", params={"timeout": 0}), 404)
    problem(poller.http.delete(f"{POLL}/{sid}"), 404)
    problem(poller.http.post(f"{POLL}/{sid}/subscribe", json={"filters": ["b"]}), 404)
    problem(poller.http.post(f"{POLL}/{sid}/publish", json={"topic": "b"}), 404)
    problem(poller.http.get(f"{POLL}/no-such-session", params={"timeout": 0}), 404)
    assert sid not in poller.sessions


def test_delete_during_a_poll_ends_it(poller: Poller) -> None:
    """wrenmq feature: a GET waiting on a session that is closed meanwhile answers 404 at once."""
    sid = poller.open({"filters": ["a"]})["id"]
    closer = threading.Timer(0.3, lambda: poller.http.delete(f"{POLL}/{sid}"))
    closer.start()
    try:
        response = poller.http.get(f"{POLL}/{sid}", params={"timeout": 20})
    finally:
        closer.cancel()
    problem(response, 404)


def test_invalid_requests(poller: Poller) -> None:
    """wrenmq feature: a malformed filter [MQTT-4.7.1-1], a shared subscription, a QoS other than 0
    or 1, a negative replay or a timeout beyond 60 s is 422. (No filters is fine: a session may
    subscribe later.)"""
    for body in (
        {"filters": ["a/#/b"]},
        {"filters": ["a+"]},
        {"filters": ["$share/g/a"]},
        {"filters": ["a"], "qos": 2},
        {"filters": ["a"], "replay": -1},
        {"filters": ["a"], "presence": {"id": "a/b"}},
    ):
        problem(poller.http.post(POLL, json=body), 422)
    sid = poller.open({"filters": ["a"]})["id"]
    problem(poller.http.post(f"{POLL}/{sid}/subscribe", json={"filters": ["#/a"]}), 422)
    problem(poller.http.get(f"{POLL}/{sid}", params={"timeout": 61}), 422)
    problem(poller.http.get(f"{POLL}/{sid}", params={"timeout": -1}), 422)


def test_filters_per_session_are_bounded(poller: Poller) -> None:
    """wrenmq feature: a session holds at most 64 filters over all its subscribe requests (each costs
    a match per routed message): a subscribe that would go beyond is 422 and adds none."""
    sid = poller.open({"filters": [f"a/{i}" for i in range(60)]})["id"]
    response = poller.http.post(f"{POLL}/{sid}/subscribe", json={"filters": [f"a/{i}" for i in range(58, 64)]})
    assert response.status_code == 200 and len(response.json()["filters"]) == 64
    problem(poller.http.post(f"{POLL}/{sid}/subscribe", json={"filters": ["b", "a/1"]}), 422)
    poller.server.publish("b", b"not held")
    assert poller.poll(sid, 0.3)["messages"] == []


def test_server_stop_ends_a_waiting_poll(poller: Poller) -> None:
    """wrenmq feature: stopping the server ends the sessions: a GET waiting on one answers (404)
    rather than holding the shutdown for its whole timeout."""
    sid = poller.open({"filters": ["a"]})["id"]
    answers: list[int] = []
    waiting = threading.Thread(
        target=lambda: answers.append(poller.http.get(f"{POLL}/{sid}", params={"timeout": 30}).status_code)
    )
    waiting.start()
    deadline = time.monotonic() + TIMEOUT
    while not poller.sessions[sid].polling:
        assert time.monotonic() < deadline, "the poll did not start"
        time.sleep(0.02)
    poller.server.stop()  # bounded: WrenmqServer.stop waits at most 10 s
    waiting.join(TIMEOUT)
    assert answers == [404]


# -- signing in -------------------------------------------------------------------------------------


def test_sign_in(poller_factory: Callable[..., Poller], users: dict[str, Any]) -> None:
    """wrenmq feature: with anonymous access off, a session opens with a Bearer API key (its name
    is the user name) or Basic user:password (checked as an MQTT CONNECT [MQTT-3.1.4-2]); without
    credentials, with a bad key or a wrong password it is 401 with WWW-Authenticate."""
    poller = poller_factory(**users)
    key = poller.keys.create("board")
    session = poller.open({"filters": ["public/#"]}, headers={"Authorization": f"Bearer {key}"})
    assert session["username"] == "board"
    session = poller.open({"filters": ["home/alice/#"]}, headers=basic("alice", "wonderland"))
    assert session["username"] == "alice"
    for headers in (
        {},
        {"Authorization": f"Bearer {key}x"},
        basic("alice", "wrong"),
        basic("mallory", "x"),
        {"Authorization": "Basic not-base64!"},
    ):
        response = poller.http.post(POLL, json={"filters": ["public/#"]}, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert "Bearer" in response.headers["www-authenticate"], headers


def test_anonymous_on_loopback(poller: Poller) -> None:
    """wrenmq feature: with allow_anonymous unset and everything on loopback, no credentials are
    needed (as for MQTT clients there)."""
    assert poller.open({"filters": ["a"]})["username"] is None


def test_acl(poller_factory: Callable[..., Poller], users: dict[str, Any]) -> None:
    """wrenmq feature: filters are ACL-checked as READ (403 on open and on subscribe, as SUBACK
    0x87 for MQTT), topics as WRITE (403 on publish, as PUBACK 0x87)."""
    poller = poller_factory(**users)
    alice = basic("alice", "wonderland")
    body = problem(poller.http.post(POLL, json={"filters": ["home/bob/#"]}, headers=alice), 403)
    assert "home/bob/#" in body["detail"]
    sid = poller.open({"filters": ["home/alice/#"]}, headers=alice)["id"]
    problem(poller.http.post(f"{POLL}/{sid}/subscribe", json={"filters": ["secret"]}), 403)
    problem(poller.http.post(f"{POLL}/{sid}/publish", json={"topic": "home/bob/x", "payload": "x"}), 403)
    response = poller.http.post(f"{POLL}/{sid}/publish", json={"topic": "home/alice/x", "payload": "ok"})
    assert response.status_code == 200 and response.json()["matched"] == 0  # MQTT subscriptions; none here
    assert [m["payload"] for m in poller.messages(sid, 1)] == ["ok"]


def test_read_only_key_cannot_publish(poller_factory: Callable[..., Poller], users: dict[str, Any]) -> None:
    """wrenmq feature: a session opened with a read-only API key may read but not publish (403),
    even where the ACL lets a user of its name write."""
    poller = poller_factory(**users)
    key = poller.keys.create("viewer", read_only=True)
    sid = poller.open({"filters": ["public/#"]}, headers={"Authorization": f"Bearer {key}"})["id"]
    body = problem(poller.http.post(f"{POLL}/{sid}/publish", json={"topic": "public/x", "payload": "x"}), 403)
    assert "read-only" in body["detail"]


# -- replay, bounds, expiry, presence -------------------------------------------------------------


def test_replay_on_open(poller: Poller) -> None:
    """wrenmq feature: ``replay: <seconds>`` (or ``since``, a server time) first returns the
    journal's matching messages (a client falling back from Socket.IO loses nothing); without it
    they are not returned."""
    poller.server.publish("log/1", b"missed")
    poller.server.publish("other", b"unrelated")
    replayed = poller.open({"filters": ["log/#"], "replay": 60})["id"]
    message = poller.messages(replayed, 1)[0]
    assert (message["topic"], message["payload"]) == ("log/1", "missed")
    fresh = poller.open({"filters": ["log/#"]})["id"]
    assert poller.poll(fresh, 0.3)["messages"] == []
    since = poller.open({"filters": ["log/#"], "since": message["timestamp"] - 0.001})["id"]
    assert [m["payload"] for m in poller.messages(since, 1)] == ["missed"]
    after = poller.open({"filters": ["log/#"], "since": message["timestamp"]})["id"]
    assert poller.poll(after, 0.3)["messages"] == []


def test_dropped_count_when_buffer_exceeded(poller_factory: Callable[..., Poller]) -> None:
    """wrenmq feature: a session holds at most stream_buffer messages between polls; the oldest go
    and the next batch says how many."""
    poller = poller_factory(stream_buffer=3)
    sid = poller.open({"filters": ["burst"]})["id"]
    for i in range(7):
        poller.server.publish("burst", str(i))
    batch = poller.poll(sid)
    assert [m["payload"] for m in batch["messages"]] == ["4", "5", "6"] and batch["dropped"] == 4
    assert poller.poll(sid)["dropped"] == 0


def _wait_status(paho: PahoClient, status: str) -> dict[str, Any]:
    message = paho.receive(1)[0]
    body: dict[str, Any] = json.loads(message.payload)
    assert body["status"] == status, body
    return body


def test_session_expires_and_its_presence_goes_offline(poller_factory: Callable[..., Poller]) -> None:
    """wrenmq feature: a session nobody polls for realtime_poll_expiry seconds ends (its id is then
    404); a presence given on open is online (retained, [MQTT-3.3.1-5]) while it lives and offline
    after. Polling keeps a session alive."""
    poller = poller_factory(realtime_poll_expiry=0.5)
    watcher = poller.paho(MQTTv311)
    watcher.subscribe("presence/#", 1)
    sid = poller.open({"filters": ["a"], "presence": {"id": "carol", "name": "Carol"}})["id"]
    online = _wait_status(watcher, "online")
    assert online["id"] == "carol" and online["name"] == "Carol" and online["transport"] == "polling"
    kept = poller.open({"filters": ["a"]})["id"]
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # three expiry periods
        poller.poll(kept, 0.2)
    _wait_status(watcher, "offline")
    deadline = time.monotonic() + TIMEOUT
    while sid in poller.sessions:
        assert time.monotonic() < deadline, "the session did not expire"
        time.sleep(0.05)
    problem(poller.http.get(f"{POLL}/{sid}", params={"timeout": 0}), 404)
    assert poller.poll(kept)["messages"] == []


def test_delete_publishes_offline(poller: Poller) -> None:
    """wrenmq feature: closing a present session publishes the user's retained offline presence."""
    watcher = poller.paho(MQTTv5)
    watcher.subscribe("presence/dave", 1)
    sid = poller.open({"filters": ["a"], "presence": {"id": "dave"}})["id"]
    _wait_status(watcher, "online")
    assert poller.http.delete(f"{POLL}/{sid}").status_code == 204
    _wait_status(watcher, "offline")


# -- static files -----------------------------------------------------------------------------------

STATIC = ["wrenmq-realtime.js", "vendor/mqtt.min.js", "vendor/socket.io.min.js"]


@pytest.mark.parametrize("name", STATIC)
def test_static_files_served(poller: Poller, name: str) -> None:
    """wrenmq feature: the API serves the browser client and its vendored libraries under /static/,
    as JavaScript, byte for byte the package's files, without an API key."""
    response = poller.http.get(f"/static/{name}")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.content == (ROOT / "src/wrenmq/static" / name).read_bytes()


def test_static_files_are_package_data() -> None:
    """wrenmq feature: the static files are installed with the package: the package-data globs in
    pyproject.toml cover every file the API serves."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wrenmq"]
    package = ROOT / "src/wrenmq"
    covered = {path for glob in globs for path in package.glob(glob) if path.is_file()}  # as setuptools globs
    served = [path for path in (package / "static").rglob("*") if path.is_file()]
    assert all(package / "static" / name in covered for name in STATIC)
    uncovered = [str(path) for path in served if path not in covered]
    assert not uncovered, uncovered


def test_a_message_refused_by_a_later_hook_reaches_no_poll_session(poller: Poller) -> None:
    """wrenmq feature: realtime readers are subscriptions in the broker's router, delivered after
    every publish hook, so a hook added after the API started that refuses a message keeps it
    from browsers too, as from MQTT subscribers."""
    from wrenmq.hooks import Hook, Reject

    class Censor(Hook):
        def on_publish(self, client: Any, message: Any) -> Any:
            if message.topic.startswith("secret/"):
                raise Reject(reason="censored")
            return message

    session = poller.open({"filters": ["#"], "retained": False})

    async def add() -> None:
        poller.server.broker.hooks.add(Censor())

    poller.server.call(add())
    with pytest.raises(Reject):
        poller.server.publish("secret/plans", b"x")
    poller.server.publish("public/news", b"y")
    (message,) = poller.messages(session["id"], 1)
    assert message["topic"] == "public/news"


def test_client_id_with_u0000_is_refused(poller: Poller) -> None:
    """[MQTT-1.5.4-2] as for an MQTT client id: a realtime client id with U+0000 (how the broker
    names its own origins, such as a bridge's) or over 128 characters is refused with 422; a
    plain one is accepted (the sentinel)."""
    answer = poller.open({"filters": ["t/#"], "client_id": "\x00bridge:upstream"}, status=422)
    assert "U+0000" in answer["detail"]
    poller.open({"filters": ["t/#"], "client_id": "x" * 129}, status=422)
    assert poller.open({"filters": ["t/#"], "client_id": "plain"})["client_id"] == "plain"
