"""Live message streams of the management API (issue 6): ``GET /api/v1/stream`` as Server-Sent
Events and ``/api/v1/stream/ws`` as a WebSocket. A wrenmq feature, not MQTT: each test says what it
checks in its docstring, and cites the spec where a stream must behave as an MQTT subscriber.

Streams are read with httpx (SSE) and a wsproto client on a plain socket, while messages are
published over MQTT by paho-mqtt and raw clients, in-process, and through ``POST /publish``."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, RejectConnection, RejectData, Request, TextMessage

from mqttraw import RawClient
from paho_sync import MQTTv5, PahoClient
from wrenmq.api import streams
from wrenmq.api.keys import ApiKeyStore
from wrenmq.mqtt.properties import PropertyId

TIMEOUT = 5.0


class SseStream:
    """One open SSE response, read event by event (comments included, as ``{"comment": ...}``)."""

    def __init__(self, http: httpx.Client, params: dict[str, Any] | list[tuple[str, str]], **kw: Any) -> None:
        self._context = http.stream("GET", "/api/v1/stream", params=params, **kw)
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> dict[str, str]:
        """The next event or comment; StopIteration when the server ends the stream."""
        event: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if event:
                    return event
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if not field:
                return {"comment": value}
            event[field] = event[field] + "\n" + value if field in event else value
        raise StopIteration("the stream ended")

    def message(self) -> dict[str, Any]:
        """The next message event (skipping comments), its data parsed."""
        while True:
            event = self.next()
            if "data" in event:
                assert event.get("event", "message") == "message", event
                data: dict[str, Any] = json.loads(event["data"])
                assert event["id"] == str(data["id"])
                return data

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class Api:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.broker = server.broker
        self.token = ApiKeyStore(server.broker.config.api_keys_path).create("test")
        self.http = httpx.Client(
            base_url=server.api_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(TIMEOUT),
        )
        self.opened: list[SseStream] = []

    def stream(self, *filters: str, **kw: Any) -> SseStream:
        """An open stream, past its opening comment (so it is subscribed)."""
        sse = SseStream(self.http, [("filter", f) for f in filters], **kw)
        self.opened.append(sse)
        assert sse.response.status_code == 200, sse.response.read()
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        opening = sse.next()
        assert opening["comment"].startswith("wrenmq stream"), opening
        return sse

    def hooks_publish(self) -> list[Any]:
        """The stream hook's publish handler while it is registered (other services have their own)."""
        return [hook for hook in self.broker.hooks.hooks if isinstance(hook, streams.StreamHub)]

    def wait_no_stream_hook(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.hooks_publish():
            assert time.monotonic() < deadline, f"the stream hook is still registered: {self.hooks_publish()}"
            time.sleep(0.02)

    def close(self) -> None:
        for sse in self.opened:
            sse.close()
        self.http.close()


@pytest.fixture
def api_factory(wrenmq_server_factory: Callable[..., Any]) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(**overrides: Any) -> Api:
        api = Api(wrenmq_server_factory(api_port=0, **overrides))
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


# -- WebSocket client -----------------------------------------------------------------------------


class WsStream:
    """A WebSocket client (wsproto on a socket) for /api/v1/stream/ws."""

    def __init__(self, port: int, target: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=target, extra_headers=headers or [])))
        self.answer = self._event()
        self.reject_body = b""
        if isinstance(self.answer, RejectConnection):
            while self.answer.has_body:
                data = self._event()
                assert isinstance(data, RejectData)
                self.reject_body += data.data
                if data.body_finished:
                    break

    def _event(self) -> Event:
        while not self.events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                raise ConnectionError("closed")
        return self.events.pop(0)

    def receive(self) -> Any:
        """The next JSON message; a CloseConnection event if the server closes."""
        text = ""
        while True:
            event = self._event()
            if isinstance(event, CloseConnection):
                return event
            assert isinstance(event, TextMessage), event
            text += event.data
            if event.message_finished:
                return json.loads(text)

    def message(self) -> dict[str, Any]:
        while True:
            data = self.receive()
            assert isinstance(data, dict), data
            if data["type"] == "message":
                return data

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:
            pass
        self.sock.close()


# -- Server-Sent Events ---------------------------------------------------------------------------


def test_sse_stream_carries_messages_published_over_mqtt(api: Api) -> None:
    """Messages from paho (MQTT 5, with properties) and a raw 3.1.1 client arrive as SSE events:
    topic, QoS, retain, payload as text or (not UTF-8) base64, properties, timestamp, numbered ids."""
    sse = api.stream("sensors/#")
    paho = PahoClient(api.server.port, MQTTv5, "stream-paho")
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "text/plain"
    props.ResponseTopic = "replies/1"
    props.CorrelationData = b"\x00\x01"
    props.UserProperty = [("unit", "C"), ("unit", "K")]
    before = time.time()
    paho.publish("sensors/kitchen/temp", b"21.5", qos=1, properties=props)
    raw = RawClient(api.server.port, 4)
    raw.connect("stream-raw")
    raw.publish("elsewhere", b"not streamed", qos=1)
    raw.publish("sensors/bin", b"\xff\x00\xfe", qos=0, retain=True)

    first = sse.message()
    assert first["id"] == 1
    assert first["topic"] == "sensors/kitchen/temp"
    assert (first["qos"], first["retain"]) == (1, False)
    assert (first["payload"], first["encoding"]) == ("21.5", "utf-8")
    assert first["properties"] == {
        "content_type": "text/plain",
        "response_topic": "replies/1",
        "correlation_data": base64.b64encode(b"\x00\x01").decode(),
        "user_properties": [["unit", "C"], ["unit", "K"]],
    }
    assert before - 1 <= first["timestamp"] <= time.time() + 1
    second = sse.message()
    assert second["id"] == 2
    assert (second["topic"], second["qos"], second["retain"]) == ("sensors/bin", 0, True)
    assert (second["payload"], second["encoding"]) == (base64.b64encode(b"\xff\x00\xfe").decode(), "base64")
    assert "properties" not in second
    paho.close()
    raw.close()


def test_sse_filters_match_as_subscriptions_do(api: Api) -> None:
    """A stream gets what a subscription to its filters would: single- and multi-level wildcards,
    several filters at once, and `$`-topics only for filters that start with `$` [MQTT-4.7.2-1]."""
    everything = api.stream("#")
    several = api.stream("a/+/c", "x/#")
    dollar = api.stream("$app/#")
    for topic in ("a/b/c", "a/b/c/d", "x", "$app/status", "z"):
        api.server.publish(topic, topic.encode())
    assert [everything.message()["topic"] for _ in range(4)] == ["a/b/c", "a/b/c/d", "x", "z"]
    assert [several.message()["topic"] for _ in range(2)] == ["a/b/c", "x"]
    assert dollar.message()["topic"] == "$app/status"
    # Nothing else reached them: the next message each sees is the marker.
    api.server.publish("x/marker", b"end")
    assert everything.message()["topic"] == "x/marker"
    assert several.message()["topic"] == "x/marker"
    api.server.publish("$app/marker", b"end")
    assert dollar.message()["topic"] == "$app/marker"


def test_sse_streams_the_brokers_sys_topics_to_a_filter_naming_them(api_factory: Callable[..., Api]) -> None:
    """The broker's own periodic `$SYS` messages reach a stream whose filter names `$SYS` (the
    router matches streams with clients), and not a `#` stream [MQTT-4.7.2-1]."""
    api = api_factory(sys_interval=0.2)
    everything = api.stream("#")
    sys = api.stream("$SYS/broker/#")
    assert sys.message()["topic"].startswith("$SYS/broker/")
    api.server.publish("after/sys", b"end")
    assert everything.message()["topic"] == "after/sys"


def test_stream_of_a_message_from_post_publish(api: Api) -> None:
    """A message published with POST /api/v1/publish reaches a stream (end to end through the API)."""
    if "/api/v1/publish" not in api.http.get("/api/openapi.json").json()["paths"]:
        pytest.skip("POST /api/v1/publish is not installed in this build")
    sse = api.stream("api/#")
    answer = api.http.post("/api/v1/publish", json={"topic": "api/hello", "payload": "hi", "qos": 1})
    assert answer.status_code == 200, answer.text
    message = sse.message()
    assert (message["topic"], message["payload"], message["qos"]) == ("api/hello", "hi", 1)


def test_stream_needs_a_key_header_or_token(api: Api) -> None:
    """401 without an API key; the key works as a bearer header or as ?token= (for EventSource)."""
    bare = httpx.get(api.server.api_url + "/api/v1/stream", params={"filter": "#"})
    assert bare.status_code == 401
    assert bare.headers["content-type"] == "application/problem+json"
    assert "?token=" in bare.json()["detail"]
    wrong = httpx.get(api.server.api_url + "/api/v1/stream", params={"filter": "#", "token": "wmq_nope"})
    assert wrong.status_code == 401
    with httpx.Client(base_url=api.server.api_url, timeout=TIMEOUT) as anonymous:
        sse = SseStream(anonymous, {"filter": "t", "token": api.token})
        assert sse.response.status_code == 200
        assert sse.next()["comment"].startswith("wrenmq stream")
        api.server.publish("t", b"by token")
        assert sse.message()["payload"] == "by token"
        sse.close()


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        (["a/#/b"], "not a valid topic filter"),  # [MQTT-4.7.1-1]
        (["a+"], "not a valid topic filter"),  # [MQTT-4.7.1-2]
        (["$share/g/a"], "shared subscription"),
        ([], "filter"),
        ([f"t/{i}" for i in range(17)], "at most 16"),
    ],
)
def test_stream_refuses_bad_filters(api: Api, filters: list[str], reason: str) -> None:
    """A malformed, shared, missing or excessive filter list is 422 with the reason."""
    answer = api.http.get("/api/v1/stream", params=[("filter", f) for f in filters])
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert reason in answer.text
    assert not api.hooks_publish()


def test_stream_obeys_the_acl(api_factory: Callable[..., Api], tmp_path: Path) -> None:
    """The filters are checked as a subscription by a client whose username is the key's name
    (READ): an allowed filter streams, any other is 403 and counted as an ACL denial."""
    acl = tmp_path / "acl"
    acl.write_text("user test\ntopic read allowed/#\n")
    api = api_factory(acl_file=str(acl))
    denied = api.http.get("/api/v1/stream", params={"filter": "secret/#"})
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert "secret/#" in denied.json()["detail"]
    # `#` would include topics the rules do not allow.
    assert api.http.get("/api/v1/stream", params={"filter": "#"}).status_code == 403
    both = api.http.get("/api/v1/stream", params=[("filter", "allowed/#"), ("filter", "secret/x")])
    assert both.status_code == 403
    assert not api.hooks_publish()
    sse = api.stream("allowed/+")
    api.server.publish("allowed/x", b"ok")
    assert sse.message()["topic"] == "allowed/x"
    metrics = api.http.get("/metrics").text
    assert "wrenmq_acl_denials_total 3.0" in metrics


def test_stream_acl_hook_sees_a_client_like_object(api: Api) -> None:
    """ACL hooks get what they read on a connection: client_id api-stream:<key>, username <key>,
    no listener, auth or certificate, MQTT 5, and the filter with READ access."""
    from wrenmq.hooks import READ, Hook

    seen: list[tuple[Any, ...]] = []

    class Recorder(Hook):
        def on_acl_check(self, client: Any, topic: str, access: int) -> bool | None:
            seen.append(
                (
                    client.client_id,
                    client.username,
                    client.listener,
                    client.auth,
                    client.cert_identity,
                    client.version,
                    client.peer,
                    topic,
                    access,
                )
            )
            return topic != "no/#"

    async def add() -> None:
        api.broker.hooks.add(Recorder())

    api.server.call(add())
    assert api.http.get("/api/v1/stream", params={"filter": "no/#"}).status_code == 403
    assert seen == [("api-stream:test", "test", None, None, None, 5, "api", "no/#", READ)]


def test_slow_reader_loses_the_oldest_and_is_told(api_factory: Callable[..., Api]) -> None:
    """A stream holds stream_buffer messages for its reader; beyond that the oldest go, and the
    reader gets a `dropped` event with the count before the newest messages (ids show the gap)."""
    api = api_factory(stream_buffer=5)
    sse = api.stream("flood/#")

    async def flood() -> None:  # one event-loop turn: the stream cannot read in between
        for i in range(20):
            await api.broker.publish(f"flood/{i}", str(i).encode())

    api.server.call(flood())
    notice = sse.next()
    assert notice.get("event") == "dropped", notice
    assert json.loads(notice["data"]) == {"dropped": 15, "next_id": 16}
    got = [sse.message() for _ in range(5)]
    assert [m["id"] for m in got] == [16, 17, 18, 19, 20]
    assert [m["payload"] for m in got] == ["15", "16", "17", "18", "19"]
    api.server.publish("flood/after", b"x")
    assert sse.message()["id"] == 21  # no new notice: nothing more was lost
    metrics = api.http.get("/metrics").text
    assert "wrenmq_api_stream_dropped_total 15.0" in metrics


def test_heartbeat_comments(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle stream sends a comment every HEARTBEAT seconds, so proxies keep it open."""
    monkeypatch.setattr(streams, "HEARTBEAT", 0.2)
    sse = api.stream("quiet")
    assert sse.next() == {"comment": "keep-alive"}
    assert sse.next() == {"comment": "keep-alive"}


def test_stream_hook_only_while_streams_are_open(api: Api) -> None:
    """The publish hook is registered with the first stream and removed with the last, so the
    broker pays nothing for streams when none is open; a client going away ends its stream."""
    assert api.hooks_publish() == []
    one = api.stream("a")
    two = api.stream("b")
    assert len(api.hooks_publish()) == 1
    one.close()
    api.server.publish("b", b"still here")
    assert two.message()["payload"] == "still here"
    assert len(api.hooks_publish()) == 1
    two.close()
    api.wait_no_stream_hook()
    assert "wrenmq_api_streams 0.0" in api.http.get("/metrics").text


def test_api_stop_ends_open_streams(api: Api) -> None:
    """ApiServer.stop returns promptly with streams open (uvicorn waits for open responses, so
    streams end themselves), SSE responses end and WebSockets are closed with 1001 Going away."""
    sse = api.stream("s")
    ws = WsStream(api.server.api.port, f"/api/v1/stream/ws?filter=s&token={api.token}")
    assert isinstance(ws.answer, AcceptConnection)
    assert ws.receive()["type"] == "subscribed"
    started = time.monotonic()
    api.server.call(api.server.api.stop(), timeout=TIMEOUT)
    assert time.monotonic() - started < TIMEOUT
    with pytest.raises(StopIteration):
        while True:
            sse.next()
    closed = ws.receive()
    assert isinstance(closed, CloseConnection) and closed.code == 1001
    ws.close()
    assert api.hooks_publish() == []


# -- WebSocket ------------------------------------------------------------------------------------


def test_websocket_stream(api: Api) -> None:
    """/api/v1/stream/ws sends a `subscribed` message, then each message as JSON; the key may be
    a bearer header or ?token= (browsers cannot set headers on a WebSocket)."""
    ws = WsStream(
        api.server.api.port,
        "/api/v1/stream/ws?filter=w/%23",
        headers=[(b"authorization", f"Bearer {api.token}".encode())],
    )
    assert isinstance(ws.answer, AcceptConnection)
    assert ws.receive() == {"type": "subscribed", "filters": ["w/#"]}
    by_token = WsStream(api.server.api.port, f"/api/v1/stream/ws?filter=w/one&token={api.token}")
    assert isinstance(by_token.answer, AcceptConnection)
    assert by_token.receive()["type"] == "subscribed"
    raw = RawClient(api.server.port, 5)
    raw.connect("ws-pub")
    raw.publish("w/one", b"1", qos=1, properties={PropertyId.CONTENT_TYPE: "text/plain"})
    raw.publish("w/two", b"2", qos=0)
    first = ws.message()
    assert (first["id"], first["topic"], first["payload"], first["qos"]) == (1, "w/one", "1", 1)
    assert first["properties"] == {"content_type": "text/plain"}
    assert (ws.message()["topic"]) == "w/two"
    assert by_token.message()["topic"] == "w/one"
    ws.close()
    by_token.close()
    raw.close()
    api.wait_no_stream_hook()


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/api/v1/stream/ws?filter=w", 401),
        ("/api/v1/stream/ws?filter=w&token=wmq_nope", 401),
        ("/api/v1/stream/ws?filter=a/%23/b&token={token}", 422),
        ("/api/v1/stream/ws?token={token}", 422),
    ],
)
def test_websocket_refused(api: Api, target: str, status: int) -> None:
    """A refused WebSocket stream gets the HTTP status and a problem body instead of the upgrade."""
    ws = WsStream(api.server.api.port, target.format(token=api.token))
    assert isinstance(ws.answer, RejectConnection)
    assert ws.answer.status_code == status
    assert json.loads(ws.reject_body)["status"] == status
    ws.close()
    assert not api.hooks_publish()


def test_websocket_obeys_the_acl(api_factory: Callable[..., Api], tmp_path: Path) -> None:
    """The WebSocket variant checks the ACL as the SSE one does: 403 for a filter not allowed."""
    acl = tmp_path / "acl"
    acl.write_text("user test\ntopic read allowed/#\n")
    api = api_factory(acl_file=str(acl))
    ws = WsStream(api.server.api.port, f"/api/v1/stream/ws?filter=secret&token={api.token}")
    assert isinstance(ws.answer, RejectConnection) and ws.answer.status_code == 403
    ws.close()
    ok = WsStream(api.server.api.port, f"/api/v1/stream/ws?filter=allowed/x&token={api.token}")
    assert isinstance(ok.answer, AcceptConnection)
    ok.close()


def test_slow_websocket_reader_is_told_of_drops(api_factory: Callable[..., Api]) -> None:
    """The WebSocket variant drops the oldest past stream_buffer too, and says how many."""
    api = api_factory(stream_buffer=3)
    ws = WsStream(api.server.api.port, f"/api/v1/stream/ws?filter=f/%23&token={api.token}")
    assert ws.receive()["type"] == "subscribed"

    async def flood() -> None:
        for i in range(10):
            await api.broker.publish(f"f/{i}", b"x")

    api.server.call(flood())
    assert ws.receive() == {"type": "dropped", "dropped": 7, "next_id": 8}
    assert [ws.message()["id"] for _ in range(3)] == [8, 9, 10]
    ws.close()
