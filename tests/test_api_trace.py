"""``GET /api/v1/trace`` (issue 18: "a trace view: follow one client id or topic filter live"): a
client trace has that client's connect, subscribe, publish, delivery, unsubscribe and disconnect,
in order, and nothing of other clients; a topic trace has the publishes and subscriptions under its
filter, from any client. A management route; the hook is registered only while a trace is open.
Real broker, paho-mqtt clients, the SSE read with httpx."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hookrec import add_hook
from mqttraw import RawClient
from paho_sync import MQTTv5, PahoClient
from problems import problem
from test_socketio import Sio
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.api.trace import TraceHub
from wrenmq.hooks import Hook, Reject
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode
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


def expiring(seconds: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


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


def test_trace_is_a_management_route_with_one_target(server: WrenmqServer, http: httpx.Client) -> None:
    problem(http.get("/api/v1/trace"), 422)
    problem(http.get("/api/v1/trace", params={"client_id": "a", "filter": "b/#"}), 422)
    problem(http.get("/api/v1/trace", params={"filter": "a/#/b"}), 422)
    problem(httpx.get(server.api_url + "/api/v1/trace", params={"client_id": "a"}), 401)
    signed_in = httpx.post(server.api_url + "/api/v1/session", json={"username": "bob", "password": "builder"})
    bob = {"Authorization": "Bearer " + signed_in.json()["token"]}
    problem(httpx.get(server.api_url + "/api/v1/trace", params={"client_id": "a"}, headers=bob), 403)


class RefuseTopic(Hook):
    """Refuses every message on one topic, as an application's publish hook would."""

    name = "refuse-topic"

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def on_publish(self, client: Any, message: Any) -> Any:
        if message.topic == self.topic:
            raise Reject(ReasonCode.PAYLOAD_FORMAT_INVALID, "not a reading")
        return message


@pytest.fixture
def strict(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite q/#\npattern readwrite r/#\npattern readwrite deep/#\n")
    return wrenmq_server_factory(
        api_port=0,
        allow_anonymous=True,
        acl_file=acl,
        max_topic_levels=4,
        max_queued_messages=2,
        slow_consumer_timeout=1.0,
    )


def drops(trace: TraceReader, until: Callable[[dict[str, Any]], bool]) -> list[tuple[Any, ...]]:
    """The trace's events up to the one ``until`` accepts (the sentinel), briefly."""
    seen: list[tuple[Any, ...]] = []
    while True:
        event = trace.event()
        if event["event"] == "drop":
            seen.append(("drop", event["reason"], event["topic"]))
        else:
            seen.append(brief(event))
        if until(event):
            return seen


def test_trace_shows_what_the_broker_drops_for_a_client_and_why(strict: WrenmqServer) -> None:
    # [MQTT-3.1.2-25] too large for the client, [MQTT-3.3.2-5] expired while queued, the ACL on
    # PUBLISH and SUBSCRIBE, the topic limits, a full queue, QoS 0 while away, a slow consumer.
    key = ApiKeyStore(strict.broker.config.api_keys_path).create("ops")
    headers = {"Authorization": "Bearer " + key}
    with httpx.Client(base_url=strict.api_url, headers=headers, timeout=TIMEOUT) as http:
        trace = TraceReader(http, client_id="lazy")
        publisher = PahoClient(strict.port, MQTTv5, "publisher")
        lazy = RawClient(strict.port, 5)
        props = {
            PropertyId.RECEIVE_MAXIMUM: 1,
            PropertyId.SESSION_EXPIRY_INTERVAL: 300,
            PropertyId.MAXIMUM_PACKET_SIZE: 200,
        }
        try:
            assert lazy.connect("lazy", properties=props).reason_code == 0
            assert lazy.publish("secret/1", b"x", qos=1).reason_code == ReasonCode.NOT_AUTHORIZED  # type: ignore[union-attr]
            assert lazy.publish("deep/1/2/3/4/5", b"x", qos=1).reason_code == ReasonCode.TOPIC_NAME_INVALID  # type: ignore[union-attr]
            assert lazy.subscribe("secret/#", 1).reason_codes == [ReasonCode.NOT_AUTHORIZED]
            assert lazy.subscribe("q/#", 1).reason_codes == [1]
            publisher.publish("q/big", b"x" * 300, qos=1)  # over its Maximum Packet Size
            publisher.publish("q/1", b"1", qos=1)  # in flight (Receive Maximum 1, never acknowledged)
            publisher.publish("q/2", b"2", qos=1, properties=expiring(1))  # queued; expires in 1 s
            publisher.publish("q/3", b"3", qos=1)  # queued: the queue (2) is full now
            publisher.publish("q/4", b"4", qos=1)  # dropped; the client is at its cap, not draining
            lazy.expect_closed(5.0)  # a slow consumer: disconnected after slow_consumer_timeout
            publisher.publish("q/0", b"0", qos=0)  # QoS 0 for a client that is away: not queued
            again = RawClient(strict.port, 5)
            assert again.connect(
                "lazy", clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 300}
            ).session_present
            received = [again.expect(p.Publish).topic for _ in range(2)]  # q/1 resent, q/2 expired, then q/3
            assert received == ["q/1", "q/3"], received
            seen = drops(trace, lambda e: e["event"] == "deliver" and e["topic"] == "q/3")
            again.close()
        finally:
            publisher.close()
            lazy.close()
            trace.close()
    assert seen == [
        ("connect", "lazy", None),
        ("drop", "publish_denied", "secret/1"),
        ("drop", "topic_limits", "deep/1/2/3/4/5"),
        ("drop", "subscribe_denied", "secret/#"),
        ("subscribe", "lazy", "q/#"),
        ("drop", "too_large", "q/big"),
        ("deliver", "lazy", "q/1"),
        ("drop", "queue_full", "q/4"),
        ("drop", "slow_consumer", None),
        ("disconnect", "lazy", None),
        ("drop", "offline", "q/0"),
        ("connect", "lazy", None),
        ("deliver", "lazy", "q/1"),
        ("drop", "expired", "q/2"),
        ("deliver", "lazy", "q/3"),
    ], seen


def test_trace_of_a_topic_shows_publishes_a_hook_refused(strict: WrenmqServer) -> None:
    hook = RefuseTopic("r/refused")
    add_hook(strict, hook)
    key = ApiKeyStore(strict.broker.config.api_keys_path).create("ops")
    headers = {"Authorization": "Bearer " + key}
    with httpx.Client(base_url=strict.api_url, headers=headers, timeout=TIMEOUT) as http:
        trace = TraceReader(http, filter="r/#")
        publisher = PahoClient(strict.port, MQTTv5, "publisher")
        try:
            publisher.publish("r/refused", b"x", qos=1)
            refused = http.post("/api/v1/publish", json={"topic": "r/refused", "payload": "y"})
            assert refused.status_code >= 400, refused.text
            publisher.publish("r/ok", b"z", qos=1)  # the sentinel
            events = []
            while not events or events[-1]["event"] != "publish":
                events.append(trace.event())
        finally:
            publisher.close()
            trace.close()
    assert [(e["event"], e["client_id"], e.get("reason"), e.get("detail")) for e in events] == [
        ("drop", "publisher", "rejected", "not a reading"),
        ("drop", None, "rejected", "not a reading"),  # the API's publish: the broker's own
        ("publish", "publisher", None, None),
    ]
    assert events[0]["qos"] == 1 and events[0]["bytes"] == 1


def test_trace_shows_no_publish_a_later_hook_refused(server: WrenmqServer, http: httpx.Client) -> None:
    """A publish is traced once routed: a hook registered after the trace opened (behind the
    trace's own hook) that refuses the message leaves its drop and no publish event. The
    sentinel published after it follows, with the subscriptions it reached, then its delivery."""
    trace = TraceReader(http, filter="t/#")
    refuse = RefuseTopic("t/refused")
    add_hook(server, refuse)
    publisher = PahoClient(server.port, MQTTv5, "pub")
    watcher = PahoClient(server.port, MQTTv5, "watcher")
    try:
        watcher.subscribe("t/sentinel", 0)
        publisher.publish("t/refused", b"no", qos=1)
        publisher.publish("t/sentinel", b"yes", qos=1)
        watcher.messages.get(timeout=TIMEOUT)
        assert brief(trace.event()) == ("subscribe", "watcher", "t/sentinel")
        dropped = trace.event()
        assert (dropped["event"], dropped["topic"], dropped["reason"]) == ("drop", "t/refused", "rejected")
        published = trace.event()
        assert brief(published) == ("publish", "pub", "t/sentinel") and published["matched"] == 1
        assert brief(trace.event()) == ("deliver", "watcher", "t/sentinel")
    finally:
        publisher.close()
        watcher.close()
        trace.close()


def test_trace_shows_browser_realtime_clients_coming_and_going(server: WrenmqServer, http: httpx.Client) -> None:
    trace = TraceReader(http, client_id="browser-7")
    opened = http.post("/api/v1/realtime/poll", json={"client_id": "browser-7", "filters": ["t/#"]})
    assert opened.status_code == 201, opened.text
    assert http.delete(f"/api/v1/realtime/poll/{opened.json()['id']}").status_code == 204

    async def socketio_visit() -> None:
        sio = await Sio().connect(
            server.api_url, auth={"token": http.headers["Authorization"][7:], "clientId": "browser-7"}
        )
        await sio.call("leave", {})
        await sio.close()

    asyncio.run(socketio_visit())
    seen = []
    while len(seen) < 4:
        event = trace.event()
        seen.append(
            (event["event"], event["transport"], event["client_id"], event.get("expected"), event.get("reason"))
        )
    trace.close()
    assert seen == [
        ("connect", "poll", "browser-7", None, None),
        ("disconnect", "poll", "browser-7", True, "the client left"),
        ("connect", "socketio", "browser-7", None, None),
        ("disconnect", "socketio", "browser-7", True, "the client left"),
    ]
