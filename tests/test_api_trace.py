"""``GET /api/v1/trace`` (issue 18: "a trace view: follow one client id or topic filter live"): a
client trace has that client's connect, subscribe, publish, delivery, unsubscribe and disconnect,
in order, and nothing of other clients; a topic trace has the publishes and subscriptions under its
filter, from any client. A management route; the hook is registered only while a trace is open.
Real broker, paho-mqtt clients, the SSE read with httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, PahoClient
from problems import problem
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.api.trace import TraceHub
from wrenmq.broker.message import Message
from wrenmq.hooks import ClientInfo, Hook, Reject
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0


class TraceReader:
    """One open trace, read event by event (``tracing``, ``trace``, ``dropped``)."""

    def __init__(self, http: httpx.Client, **params: str) -> None:
        self._context = http.stream("GET", "/api/v1/trace", params=params)
        self.response = self._context.__enter__()
        assert self.response.status_code == 200, self.response.read()
        self._lines = self.response.iter_lines()
        opening = self.next()
        assert opening["event"] == "tracing" and json.loads(opening["data"]) == params, opening

    def next(self) -> dict[str, str]:
        event: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if event:
                    return event
                continue
            field, _, value = line.partition(":")
            if field:
                event[field] = value.removeprefix(" ")
        raise StopIteration("the trace ended")

    def event(self) -> dict[str, Any]:
        found = self.next()
        assert found["event"] == "trace", found
        data: dict[str, Any] = json.loads(found["data"])
        return data

    def close(self) -> None:
        self._context.__exit__(None, None, None)


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", bob="builder")
    return wrenmq_server_factory(api_port=0, password_file=passwd, console_users=["bob"], allow_anonymous=True)


@pytest.fixture
def http(server: WrenmqServer) -> Iterator[httpx.Client]:
    key = ApiKeyStore(server.broker.config.api_keys_path).create("ops")
    with httpx.Client(base_url=server.api_url, headers={"Authorization": "Bearer " + key}, timeout=TIMEOUT) as client:
        yield client


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["event"], event["client_id"], event.get("topic") or event.get("topic_filter"))


def test_trace_follows_one_client_from_connect_to_disconnect(server: WrenmqServer, http: httpx.Client) -> None:
    trace = TraceReader(http, client_id="traced")
    other = PahoClient(server.port, MQTTv5, "other")
    traced = PahoClient(server.port, MQTTv5, "traced")
    try:
        traced.subscribe("t/#", 1)
        other.publish("x/1", b"not traced", qos=1)  # another client: not in this trace
        traced.publish("t/1", b"hello", qos=1)  # it gets its own message back: a delivery
        traced.messages.get(timeout=TIMEOUT)
        traced.unsubscribe("t/#")
    finally:
        traced.close()
    connect = trace.event()
    assert connect["event"] == "connect" and connect["protocol"] == 5 and connect["clean_start"] is True
    assert connect["keep_alive"] == 30 and connect["peer"]
    seen = [brief(trace.event()) for _ in range(5)]
    assert seen == [
        ("subscribe", "traced", "t/#"),
        ("publish", "traced", "t/1"),
        ("deliver", "traced", "t/1"),
        ("unsubscribe", "traced", "t/#"),
        ("disconnect", "traced", None),
    ]
    trace.close()
    other.close()


def test_trace_follows_a_topic_filter_from_any_client(server: WrenmqServer, http: httpx.Client) -> None:
    trace = TraceReader(http, filter="plant/#")
    a = PahoClient(server.port, MQTTv5, "a")
    b = PahoClient(server.port, MQTTv5, "b")
    try:
        b.subscribe("plant/+/temp", 0)
        a.publish("office/1", b"x", qos=1)  # not under plant/#
        a.publish("plant/1/temp", b"21.5", qos=1)
        b.messages.get(timeout=TIMEOUT)
        published = http.post("/api/v1/publish", json={"topic": "plant/2/temp", "payload": "22"})
        assert published.status_code == 200, published.text
        b.messages.get(timeout=TIMEOUT)
        seen = [brief(trace.event()) for _ in range(5)]
        assert seen == [
            ("subscribe", "b", "plant/+/temp"),
            ("publish", "a", "plant/1/temp"),
            ("deliver", "b", "plant/1/temp"),
            ("publish", None, "plant/2/temp"),  # from the broker itself (the API)
            ("deliver", "b", "plant/2/temp"),
        ]
    finally:
        a.close()
        b.close()
        trace.close()
    deadline = time.monotonic() + TIMEOUT  # the last trace closed: the hook is gone
    while server.broker.hooks.find(TraceHub):
        assert time.monotonic() < deadline, "the trace hook stayed registered"
        time.sleep(0.05)


class RefuseTopic(Hook):
    """A publish hook that refuses one topic."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def on_publish(self, client: ClientInfo | None, message: Message) -> Message:
        if message.topic == self.topic:
            raise Reject(reason="refused for the test")
        return message


def test_trace_shows_no_publish_a_later_hook_refused(server: WrenmqServer, http: httpx.Client) -> None:
    """A publish is traced once routed: a hook registered after the trace opened (behind the
    trace's own hook) that refuses the message leaves no publish event. The sentinel published
    after it is the next event, with the subscriptions it reached."""
    trace = TraceReader(http, filter="t/#")
    refuse = RefuseTopic("t/refused")

    async def add() -> None:
        server.broker.hooks.add(refuse)

    server.call(add())
    publisher = PahoClient(server.port, MQTTv5, "pub")
    watcher = PahoClient(server.port, MQTTv5, "watcher")
    try:
        watcher.subscribe("t/sentinel", 0)
        publisher.publish("t/refused", b"no", qos=1)
        publisher.publish("t/sentinel", b"yes", qos=1)
        watcher.messages.get(timeout=TIMEOUT)
        assert brief(trace.event()) == ("subscribe", "watcher", "t/sentinel")
        published = trace.event()
        assert brief(published) == ("publish", "pub", "t/sentinel") and published["matched"] == 1
        assert brief(trace.event()) == ("deliver", "watcher", "t/sentinel")
    finally:
        publisher.close()
        watcher.close()
        trace.close()

        async def remove() -> None:
            server.broker.hooks.remove(refuse)

        server.call(remove())


def test_trace_is_a_management_route_with_one_target(server: WrenmqServer, http: httpx.Client) -> None:
    problem(http.get("/api/v1/trace"), 422)
    problem(http.get("/api/v1/trace", params={"client_id": "a", "filter": "b/#"}), 422)
    problem(http.get("/api/v1/trace", params={"filter": "a/#/b"}), 422)
    problem(httpx.get(server.api_url + "/api/v1/trace", params={"client_id": "a"}), 401)
    signed_in = httpx.post(server.api_url + "/api/v1/session", json={"username": "bob", "password": "builder"})
    bob = {"Authorization": "Bearer " + signed_in.json()["token"]}
    problem(httpx.get(server.api_url + "/api/v1/trace", params={"client_id": "a"}, headers=bob), 403)
