"""The Socket.IO bridge (wrenmq feature, issue 8): ``/socket.io/`` on the API listener.

The Socket.IO peer is python-socketio's AsyncClient (an independent implementation of the
protocol); the MQTT side is paho-mqtt 2.x; the broker is a real one on free ports. Where the
bridge mirrors MQTT (topic filter matching, retained messages on subscribe, ``$``-topics and
wildcards), the statement is cited beside the check; everything else is a wrenmq feature, said
so in each test's docstring.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import socketio
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hookrec import CountDrops, add_hook
from paho_sync import MQTTv5, MQTTv311, PahoClient
from wrenmq.api.keys import ApiKeyStore
from wrenmq.auth.passwords import PasswordFile
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 5.0
QUIET = 0.3  # how long "nothing more arrives" is watched for


class NoAckClient(socketio.AsyncClient):  # type: ignore[misc]
    """A Socket.IO client that never acknowledges an event (python-socketio always does)."""

    async def _handle_event(self, namespace: str | None, id: int | None, data: Any) -> None:
        await super()._handle_event(namespace, None, data)


class Sio:
    """One python-socketio client and what it was sent: ``message`` and ``dropped`` events in
    queues, ``welcome`` and ``connect_error`` data."""

    def __init__(self, acks: bool = True) -> None:
        self.client = (socketio.AsyncClient if acks else NoAckClient)(reconnection=False)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.dropped: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.welcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.errors: list[Any] = []
        self.acked = 0
        self.client.on("message", self._message)
        self.client.on("dropped", self.dropped.put_nowait)
        self.client.on("welcome", lambda data: self.welcome.done() or self.welcome.set_result(data))
        self.client.on("connect_error", self.errors.append)

    def _message(self, data: dict[str, Any]) -> str:
        self.messages.put_nowait(data)
        self.acked += 1
        return "ok"  # the acknowledgement of a QoS 1 message

    async def connect(self, url: str, auth: dict[str, Any] | None = None, **kw: Any) -> Sio:
        await self.client.connect(url, auth=auth, wait_timeout=TIMEOUT, **kw)
        await asyncio.wait_for(asyncio.shield(self.welcome), TIMEOUT)
        return self

    async def call(self, event: str, data: Any) -> Any:
        return await self.client.call(event, data, timeout=TIMEOUT)

    async def subscribe(self, *filters: str, **options: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call("subscribe", {"filters": list(filters), **options})
        assert answer["ok"], answer
        return answer

    async def message(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def nothing(self, timeout: float = QUIET) -> None:
        try:
            data = await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message {data}")

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()
        http = self.client.eio.http  # a refused client's HTTP session stays open
        if http is not None and not http.closed:
            await http.close()


class Realtime:
    """A broker with its API (and so Socket.IO) on a free port, and the clients a test opened."""

    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        self.url = server.api_url
        self.keys = ApiKeyStore(server.broker.config.api_keys_path)
        self.sockets: list[Sio] = []
        self.paho_clients: list[PahoClient] = []

    @property
    def bridge(self) -> Any:
        assert self.server.api is not None
        return self.server.api.app.state.socketio

    @property
    def service(self) -> Any:
        assert self.server.api is not None
        return self.server.services.realtime if self.server.services else None

    async def sio(self, auth: dict[str, Any] | None = None, acks: bool = True, **kw: Any) -> Sio:
        """A connected, welcomed Socket.IO client."""
        client = Sio(acks)
        self.sockets.append(client)
        return await client.connect(self.url, auth, **kw)

    async def refused(self, auth: dict[str, Any] | None = None, **kw: Any) -> Sio:
        """A Socket.IO client whose connection was refused (its ``errors`` say why)."""
        client = Sio()
        self.sockets.append(client)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.client.connect(self.url, auth=auth, wait_timeout=TIMEOUT, **kw)
        assert not client.welcome.done()
        return client

    def paho(self, protocol: Any = MQTTv5, client_id: str = "", **kw: Any) -> PahoClient:
        client = PahoClient(self.server.port, protocol, client_id, **kw)
        self.paho_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.sockets:
            await client.close()
        for paho in self.paho_clients:
            paho.close()


@pytest.fixture
async def realtime_factory(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> AsyncIterator[Callable[..., Realtime]]:
    made: list[Realtime] = []

    def make(**overrides: Any) -> Realtime:
        made.append(Realtime(wrenmq_server_factory(api_port=0, **overrides)))
        return made[-1]

    yield make
    for realtime in made:
        await realtime.close()


@pytest.fixture
async def rt(realtime_factory: Callable[..., Realtime]) -> Realtime:
    return realtime_factory()


def write_passwords(path: Path, **users: str) -> Path:
    path.write_text("")
    passwords = PasswordFile.load(path)
    for username, password in users.items():
        passwords.set_password(username, password)
    passwords.save()
    return path


ACL = """\
# anonymous clients
topic read public/#
topic write public/inbox

user alice
topic readwrite home/alice/#
topic read public/#
"""


@pytest.fixture
def users(tmp_path: Path) -> dict[str, Any]:
    """Settings for a broker with users (alice, bob), an ACL, and anonymous access off."""
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland", bob="hunter2")
    return {"password_file": passwd, "acl_file": acl, "allow_anonymous": False}


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


# -- signing in -----------------------------------------------------------------------------------


async def test_anonymous_connect_on_loopback_gets_welcome(rt: Realtime) -> None:
    """wrenmq feature: with allow_anonymous unset and everything on loopback, a Socket.IO client
    without credentials connects, as an MQTT client would; ``welcome`` names its client id (the
    one it asked for), no user, and the server time."""
    before = time.time()
    client = await rt.sio({"clientId": "browser-1"})
    welcome = client.welcome.result()
    assert welcome["clientId"] == "browser-1" and welcome["username"] is None
    assert before - 1 <= welcome["now"] <= time.time() + 1
    assert rt.bridge.connected == 1
    generated = (await rt.sio()).welcome.result()["clientId"]
    assert generated.startswith("sio-") and generated != "browser-1"


async def test_anonymous_refused_when_off(realtime_factory: Callable[..., Realtime], users: dict[str, Any]) -> None:
    """wrenmq feature: allow_anonymous=false refuses a Socket.IO client without credentials with
    a connect_error saying why, as CONNACK 0x87 would for MQTT [MQTT-3.1.4-2]."""
    rt = realtime_factory(**users)
    refused = await rt.refused()
    assert refused.errors and "anonymous" in refused.errors[0]["message"]
    assert rt.bridge.connected == 0


async def test_api_key_sign_in(realtime_factory: Callable[..., Realtime], users: dict[str, Any]) -> None:
    """wrenmq feature: an API key in ``auth.token`` signs in with anonymous access off; the key's
    name is the user name. An unknown key is refused."""
    rt = realtime_factory(**users)
    token = rt.keys.create("dashboard")
    client = await rt.sio({"token": token})
    assert client.welcome.result()["username"] == "dashboard"
    refused = await rt.refused({"token": token + "x"})
    assert refused.errors[0]["message"] == "invalid API key"


async def test_user_and_password_sign_in(realtime_factory: Callable[..., Realtime], users: dict[str, Any]) -> None:
    """wrenmq feature: a broker user's name and password (the password file, checked by the same
    hooks as an MQTT CONNECT [MQTT-3.1.4-2]) sign a Socket.IO client in; a wrong password, or an
    unknown user, gets connect_error."""
    rt = realtime_factory(**users)
    client = await rt.sio({"username": "alice", "password": "wonderland"})
    assert client.welcome.result()["username"] == "alice"
    for auth in ({"username": "alice", "password": "wrong"}, {"username": "mallory", "password": "x"}):
        refused = await rt.refused(auth)
        assert refused.errors and refused.errors[0]["message"], auth
    assert rt.bridge.connected == 1


async def test_not_accepting_refuses_new_connections(rt: Realtime) -> None:
    """wrenmq feature: ``SocketIOBridge.accepting = False`` refuses new connections (the browser
    client then falls back to polling); existing ones keep working."""
    first = await rt.sio()
    rt.bridge.accepting = False
    refused = await rt.refused()
    assert "not accepting" in refused.errors[0]["message"]
    await first.subscribe("a")
    rt.server.publish("a", b"still here")
    assert (await first.message())["payload"] == "still here"


async def test_socketio_does_not_open_the_rest_api(rt: Realtime) -> None:
    """wrenmq feature: the Socket.IO endpoint is separate from the REST API: with an anonymous
    Socket.IO client connected, /api/v1/broker/status still needs an API key (401)."""
    await rt.sio()
    async with httpx.AsyncClient(base_url=rt.url, timeout=TIMEOUT) as http:
        response = await http.get("/api/v1/broker/status")
        assert response.status_code == 401
        key = rt.keys.create("ops")
        response = await http.get("/api/v1/broker/status", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200


async def test_cross_origin_refused_unless_listed(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature: a connection whose Origin is another site is refused (CORS, same origin by
    default) unless realtime_cors_origins lists it; the API's own origin is always accepted (the
    setting lists origins *other* than the API's own)."""
    rt = realtime_factory()
    await rt.refused(headers={"Origin": "http://evil.example"})
    await rt.sio(headers={"Origin": rt.url})
    listed = realtime_factory(realtime_cors_origins=["http://app.example"])
    await listed.sio(headers={"Origin": "http://app.example"})
    await listed.sio(headers={"Origin": listed.url})
    await listed.refused(headers={"Origin": "http://evil.example"})
    for transports in (["polling"], ["websocket"]):
        await rt.refused(headers={"Origin": "http://evil.example"}, transports=transports)


async def test_realtime_off(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature: realtime=false serves neither /socket.io/ nor /api/v1/realtime/poll (404)."""
    rt = realtime_factory(realtime=False)
    async with httpx.AsyncClient(base_url=rt.url, timeout=TIMEOUT) as http:
        assert (await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).status_code == 404
        assert (await http.post("/api/v1/realtime/poll", json={"filters": ["a"]})).status_code == 404
    assert rt.server.api is not None and getattr(rt.server.api.app.state, "socketio", None) is None


# -- receiving ------------------------------------------------------------------------------------


async def test_subscribe_with_wildcards_receives_paho_messages(rt: Realtime) -> None:
    """wrenmq feature (an MQTT subscription over Socket.IO): the filters match as MQTT's do
    [MQTT-4.7.1-2] '#' [MQTT-4.7.1-3] '+'; each matching message arrives once, in the streams'
    format, with its MQTT 5 properties; others do not arrive."""
    client = await rt.sio()
    answer = await client.subscribe("sensors/+/temp", "home/#", "sensors/kitchen/temp", qos=1)
    assert answer["filters"] == ["sensors/+/temp", "home/#", "sensors/kitchen/temp"] and answer["qos"] == 1
    paho = rt.paho(MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("unit", "C")]
    props.ContentType = "text/plain"
    paho.publish("sensors/kitchen/humidity", b"40")  # not matched
    paho.publish("sensors/kitchen/temp", b"21.5", qos=1, properties=props)
    paho.publish("other/home", b"x")  # not matched
    paho.publish("home", b"parent")  # '#' matches the parent level too [MQTT-4.7.1-2]
    paho.publish("home/a/b", b"\xff\x00", qos=0)
    first = await client.message()
    assert first["topic"] == "sensors/kitchen/temp" and first["payload"] == "21.5" and first["encoding"] == "utf-8"
    assert first["qos"] == 1 and first["retain"] is False and first["id"] > 0
    assert first["properties"] == {"content_type": "text/plain", "user_properties": [["unit", "C"]]}
    assert abs(first["timestamp"] - time.time()) < 60
    second = await client.message()
    assert (second["topic"], second["payload"], second["qos"]) == ("home", "parent", 0)
    third = await client.message()
    assert third["topic"] == "home/a/b" and third["encoding"] == "base64"
    assert base64.b64decode(third["payload"]) == b"\xff\x00"
    assert first["id"] < second["id"] < third["id"]
    await client.nothing()


async def test_qos_is_the_lower_of_message_and_subscription(rt: Realtime) -> None:
    """wrenmq feature: a message arrives at the lower of its QoS and the subscription's, as in MQTT
    [MQTT-3.8.4-8]; QoS 2 is granted as 1 (Socket.IO acknowledgements are one-way)."""
    client = await rt.sio()
    assert (await client.subscribe("q0", qos=0))["qos"] == 0
    assert (await client.subscribe("q2", qos=2))["qos"] == 1
    rt.server.publish("q0", b"a", qos=1)
    rt.server.publish("q2", b"b", qos=2)
    assert [(m["topic"], m["qos"]) for m in [await client.message(), await client.message()]] == [("q0", 0), ("q2", 1)]


async def test_sys_topics_not_matched_by_wildcards(rt: Realtime) -> None:
    """wrenmq feature mirroring MQTT: '#' and '+/...' do not match topics starting with '$'
    [MQTT-4.7.2-1]; a filter naming $SYS does."""
    wild = await rt.sio()
    await wild.subscribe("#", "+/broker/test")
    named = await rt.sio()
    await named.subscribe("$SYS/#")
    rt.server.publish("$SYS/broker/test", b"sys")
    rt.server.publish("after", b"plain")
    assert (await named.message())["topic"] == "$SYS/broker/test"
    assert (await wild.message())["topic"] == "after"
    await wild.nothing()


async def test_retained_messages_sent_on_subscribe(rt: Realtime) -> None:
    """wrenmq feature mirroring MQTT: subscribing sends the matching retained messages
    [MQTT-3.3.1-6] with retain set [MQTT-3.3.1-9] (id 0: they are not from the journal);
    ``retained: false`` skips them."""
    paho = rt.paho(MQTTv311)
    paho.publish("state/a", b"on", qos=1, retain=True)
    paho.publish("state/b", b"off", qos=1, retain=True)
    paho.publish("state/c/d", b"deeper", qos=1, retain=True)
    client = await rt.sio()
    await client.subscribe("state/+", qos=1)
    got = sorted([await client.message(), await client.message()], key=lambda m: m["topic"])
    assert [(m["topic"], m["payload"], m["retain"], m["id"]) for m in got] == [
        ("state/a", "on", True, 0),
        ("state/b", "off", True, 0),
    ]
    await client.nothing()
    other = await rt.sio()
    await other.subscribe("state/#", retained=False)
    await other.nothing()
    paho.publish("state/a", b"live")
    live = await other.message()
    assert (live["topic"], live["payload"], live["retain"]) == ("state/a", "live", False)  # [MQTT-3.3.1-9]


async def test_unsubscribe_stops_delivery(rt: Realtime) -> None:
    """wrenmq feature: after ``unsubscribe`` no more messages for that filter arrive; others do
    [MQTT-3.10.4-6]."""
    client = await rt.sio()
    await client.subscribe("a/#", "b")
    rt.server.publish("a/1", b"1")
    assert (await client.message())["topic"] == "a/1"
    assert await client.call("unsubscribe", {"filters": ["a/#"]}) == {"ok": True}
    rt.server.publish("a/2", b"2")
    rt.server.publish("b", b"3")
    assert (await client.message())["topic"] == "b"
    await client.nothing()


async def test_acl_denies_a_filter(realtime_factory: Callable[..., Realtime], users: dict[str, Any]) -> None:
    """wrenmq feature: filters are checked by the ACL as READ, as an MQTT SUBSCRIBE would be
    (SUBACK 0x87 there): a denied one is ``{ok: false, status: 403}`` and nothing is subscribed."""
    rt = realtime_factory(**users)
    alice = await rt.sio({"username": "alice", "password": "wonderland"})
    denied = await alice.call("subscribe", {"filters": ["home/alice/#", "home/bob/#"]})
    assert denied["ok"] is False and denied["status"] == 403 and "home/bob/#" in denied["error"]
    await alice.subscribe("home/alice/#")
    rt.server.publish("home/bob/x", b"no")
    rt.server.publish("home/alice/x", b"yes")
    assert (await alice.message())["topic"] == "home/alice/x"
    await alice.nothing()


async def test_invalid_subscribe_requests(rt: Realtime) -> None:
    """wrenmq feature: a malformed filter [MQTT-4.7.1-1], a shared subscription, a bad QoS or
    replay is 422."""
    client = await rt.sio()
    for data in (
        {"filters": ["a/#/b"]},
        {"filters": ["a+"]},
        {"filters": ["$share/g/a"]},
        {"filters": []},
        {"filters": [["a"]]},
        {"filters": [1]},
        {"filters": ["a"], "qos": 3},
        {"filters": ["a"], "replay": -1},
        ["a"],
    ):
        answer = await client.call("subscribe", data)
        assert answer["ok"] is False and answer["status"] == 422 and answer["error"], (data, answer)


# -- QoS 1 acknowledgements -----------------------------------------------------------------------


async def test_qos1_acknowledged_is_not_resent(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature: a QoS 1 message is sent asking for an acknowledgement; a client that acks
    it does not get it again."""
    rt = realtime_factory(realtime_ack_timeout=0.3)
    client = await rt.sio()
    await client.subscribe("q", qos=1)
    rt.server.publish("q", b"once", qos=1)
    message = await client.message()
    assert message["qos"] == 1 and "dup" not in message
    inflight = rt.bridge.inflight[_sid(client)]
    await wait_until(lambda: not inflight, "the ack is seen")
    await client.nothing(1.5)  # several ack timeouts
    assert rt.bridge.resent == 0


async def test_qos1_unacknowledged_is_resent_with_dup(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature (as MQTT's redelivery with DUP [MQTT-4.4.0-1], [MQTT-3.3.1-1]): a client that
    never acknowledges a QoS 1 message gets it again with ``dup: true`` after realtime_ack_timeout,
    at most 3 more times; QoS 0 messages are never resent."""
    rt = realtime_factory(realtime_ack_timeout=0.3)
    client = await rt.sio(acks=False)
    await client.subscribe("q", qos=1)
    rt.server.publish("q", b"ack me", qos=1)
    rt.server.publish("q", b"fire and forget", qos=0)
    first = await client.message()
    assert (first["payload"], first["qos"]) == ("ack me", 1) and "dup" not in first
    assert (await client.message())["payload"] == "fire and forget"
    again = await client.message(TIMEOUT)
    assert again == {**first, "dup": True}
    resends = [again]
    while True:
        try:
            resends.append(await client.message(3.0))
        except TimeoutError:
            break
    assert len(resends) == 3 and all(m["id"] == first["id"] and m["dup"] for m in resends)


def _sid(client: Sio) -> str:
    return str(client.client.get_sid())


# -- publishing -----------------------------------------------------------------------------------


async def test_publish_event_reaches_paho(rt: Realtime) -> None:
    """wrenmq feature: ``publish`` with the body of POST /api/v1/publish (payload, payload_json or
    payload_base64; qos, retain, MQTT 5 properties) reaches an MQTT subscriber; the ack says how
    many subscriptions matched."""
    paho = rt.paho(MQTTv5)
    paho.subscribe("out/#", 1)
    client = await rt.sio()
    user_properties = [{"name": "from", "value": "browser"}, {"name": "from", "value": "tab 2"}]
    bodies = [
        {"topic": "out/text", "payload": "héllo", "qos": 1, "properties": {"user_properties": user_properties}},
        {"topic": "out/json", "payload_json": {"a": [1, 2]}, "properties": {"content_type": "application/json"}},
        {"topic": "out/bin", "payload_base64": base64.b64encode(b"\x00\xff").decode(), "qos": 1},
    ]
    for body in bodies:
        assert await client.call("publish", body) == {"ok": True, "matched": 1}
    text, js, binary = await asyncio.to_thread(paho.receive, 3)
    assert (text.topic, text.payload, text.qos) == ("out/text", "héllo".encode(), 1)
    assert text.properties.UserProperty == [("from", "browser"), ("from", "tab 2")]  # [MQTT-3.3.2-18]
    assert json.loads(js.payload) == {"a": [1, 2]} and js.properties.ContentType == "application/json"
    assert (binary.payload, binary.qos) == (b"\x00\xff", 1)


async def test_publish_retained(rt: Realtime) -> None:
    """wrenmq feature: ``retain: true`` stores the message as retained: a later MQTT subscriber gets
    it [MQTT-3.3.1-5]."""
    client = await rt.sio()
    assert (await client.call("publish", {"topic": "kept", "payload": "v", "retain": True}))["ok"]
    paho = rt.paho(MQTTv311)
    paho.subscribe("kept")
    message = (await asyncio.to_thread(paho.receive, 1))[0]
    assert (message.payload, message.retain) == (b"v", True)


async def test_catch_all_event_publishes_json(rt: Realtime) -> None:
    """wrenmq feature: any other event name is a topic: its data is published as JSON, at QoS 0,
    or QoS 1 when the client asks for an acknowledgement."""
    paho = rt.paho(MQTTv311)
    paho.subscribe("chat/#", 1)
    client = await rt.sio()
    await client.client.emit("chat/room1", {"text": "hi", "n": 1})
    message = (await asyncio.to_thread(paho.receive, 1))[0]
    assert message.topic == "chat/room1" and json.loads(message.payload) == {"text": "hi", "n": 1}
    assert await client.call("chat/room2", ["x"]) == {"ok": True, "matched": 1}
    message = (await asyncio.to_thread(paho.receive, 1))[0]
    assert message.topic == "chat/room2" and json.loads(message.payload) == ["x"]


async def test_publish_refusals(realtime_factory: Callable[..., Realtime], users: dict[str, Any]) -> None:
    """wrenmq feature: a read-only API key may not publish (403), nor anyone to a topic the ACL
    does not let it write (403, as PUBACK 0x87 for MQTT); an invalid topic or QoS is 422
    [MQTT-3.3.2-2]; nothing refused reaches a subscriber."""
    rt = realtime_factory(**users)
    watcher = await rt.sio({"username": "alice", "password": "wonderland"})
    await watcher.subscribe("home/alice/#")
    viewer = await rt.sio({"token": rt.keys.create("viewer", read_only=True)})
    answer = await viewer.call("publish", {"topic": "home/alice/x", "payload": "no"})
    assert answer["ok"] is False and answer["status"] == 403 and "read-only" in answer["error"]
    bob = await rt.sio({"username": "bob", "password": "hunter2"})
    answer = await bob.call("publish", {"topic": "home/alice/x", "payload": "no"})
    assert answer["ok"] is False and answer["status"] == 403 and "ACL" in answer["error"]
    alice = await rt.sio({"username": "alice", "password": "wonderland"})
    for body in (
        {"topic": "home/alice/+", "payload": "no"},
        {"topic": "", "payload": "no"},
        {"topic": "home/alice/x", "payload": "no", "qos": 3},
        {"topic": "home/alice/x", "payload": "a", "payload_json": 1},
        "not an object",
    ):
        answer = await alice.call("publish", body)
        assert answer["ok"] is False and answer["status"] == 422 and answer["error"], (body, answer)
    assert (await alice.call("publish", {"topic": "home/alice/x", "payload": "yes"}))["ok"]
    assert (await watcher.message())["payload"] == "yes"
    await watcher.nothing()


# -- replay, bounds -------------------------------------------------------------------------------


async def test_replay_sends_what_was_published_before(rt: Realtime) -> None:
    """wrenmq feature: ``replay: <seconds>`` first sends the journal's matching messages of the last
    so many seconds (a client falling back from MQTT loses nothing); without it they are not sent."""
    paho = rt.paho(MQTTv311)
    paho.publish("log/1", b"before", qos=1)
    paho.publish("other", b"unrelated", qos=1)
    resumed = await rt.sio()
    await resumed.subscribe("log/#", replay=60)
    message = await resumed.message()
    assert (message["topic"], message["payload"], message["retain"]) == ("log/1", "before", False)
    assert message["id"] > 0
    await resumed.nothing()
    fresh = await rt.sio()
    await fresh.subscribe("log/#")
    await fresh.nothing()
    since = await rt.sio()
    await since.subscribe("log/#", since=message["timestamp"] - 0.001)
    assert (await since.message())["payload"] == "before"
    after = await rt.sio()
    await after.subscribe("log/#", since=message["timestamp"])
    await after.nothing()


async def test_journal_is_bounded(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature: realtime_journal_size bounds the journal: with 3, only the last 3 messages
    are replayed."""
    rt = realtime_factory(realtime_journal_size=3)
    for i in range(6):
        rt.server.publish("j", str(i))
    client = await rt.sio()
    await client.subscribe("j", replay=300)
    assert [(await client.message())["payload"] for _ in range(3)] == ["3", "4", "5"]
    await client.nothing()


async def test_slow_client_gets_dropped_notice(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature: a client's buffer holds stream_buffer messages; when more arrive before they
    can be sent, the oldest go and a ``dropped`` event says how many. (Made deterministic with a
    replay: all 5 are queued at once, before the sender runs.)"""
    rt = realtime_factory(stream_buffer=2)
    for i in range(5):
        rt.server.publish("burst", str(i))
    client = await rt.sio()
    await client.subscribe("burst", replay=60)
    assert await asyncio.wait_for(client.dropped.get(), TIMEOUT) == {"count": 3}
    assert [(await client.message())["payload"] for _ in range(2)] == ["3", "4"]
    await client.nothing()


async def test_slow_client_drops_are_told_to_the_drop_hooks(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature (issue 18, the trace's drops): the messages a realtime client's full inbox
    loses are told to ``on_dropped`` as that client's, oldest first, with the queue-full reason."""
    rt = realtime_factory(stream_buffer=2)
    drops = CountDrops()
    add_hook(rt.server, drops)
    client = await rt.sio({"clientId": "slow-browser"})
    await client.subscribe("burst")

    async def burst() -> None:  # all five routed before the sender runs: three pushed out
        for i in range(5):
            await rt.server.broker.publish("burst", str(i))

    rt.server.call(burst())
    assert await asyncio.wait_for(client.dropped.get(), TIMEOUT) == {"count": 3}
    assert drops.seen == [("slow-browser", "queue_full", "burst", str(i).encode()) for i in range(3)]


# -- presence -------------------------------------------------------------------------------------


def _status(message: Any) -> str:
    return str(json.loads(message.payload)["status"])


async def test_presence_online_while_connected(rt: Realtime) -> None:
    """wrenmq feature: ``auth.presence = {id}`` publishes a retained presence/<id> online (MQTT
    clients see it, and later subscribers get it as retained [MQTT-3.3.1-6]); the disconnect
    publishes offline."""
    watcher = rt.paho(MQTTv5)
    watcher.subscribe("presence/#", 1)
    client = await rt.sio({"presence": {"id": "alice", "name": "Alice"}})
    online = (await asyncio.to_thread(watcher.receive, 1))[0]
    body = json.loads(online.payload)
    assert online.topic == "presence/alice" and body["status"] == "online"
    assert body["name"] == "Alice" and body["transport"] == "socketio" and body["timestamp"].endswith("Z")
    later = rt.paho(MQTTv311)
    later.subscribe("presence/alice")
    retained = (await asyncio.to_thread(later.receive, 1))[0]
    assert retained.retain and _status(retained) == "online"
    second = await rt.sio({"presence": {"id": "alice"}})  # a second tab: no new announcement
    await second.close()
    await wait_until(lambda: len(rt.service.subscribers) == 1, "the server saw the second tab go")
    watcher.nothing()  # and it going is no offline announcement: the first tab is still there
    await client.call("leave", {})  # a goodbye: offline at once (not after realtime_presence_grace)
    await client.close()
    offline = (await asyncio.to_thread(watcher.receive, 1))[0]
    assert offline.topic == "presence/alice" and _status(offline) == "offline"


def _paho_with_will(port: int, client_id: str, topic: str) -> mqtt.Client:
    """A paho 5.0 client with an offline will on ``topic`` (retained, QoS 1), connected."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv5)
    client.will_set(topic, json.dumps({"status": "offline"}), qos=1, retain=True)
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    assert connected.wait(TIMEOUT), "paho did not connect"
    return client


async def test_mqtt_will_offline_dropped_while_socketio_attached(rt: Realtime) -> None:
    """wrenmq feature: a browser that moved from MQTT to Socket.IO stays online: the MQTT
    connection's will (offline, retained) for the same presence id is dropped while a Socket.IO
    client with that id is connected (the will itself is MQTT's [MQTT-3.1.2-8])."""
    watcher = rt.paho(MQTTv5)
    watcher.subscribe("presence/#", 1)
    tab = _paho_with_will(rt.server.port, "tab-mqtt", "presence/bob")
    try:
        tab.publish("presence/bob", json.dumps({"status": "online"}), qos=1, retain=True).wait_for_publish(TIMEOUT)
        assert _status((await asyncio.to_thread(watcher.receive, 1))[0]) == "online"
        client = await rt.sio({"presence": {"id": "bob"}})
        watcher.nothing()  # already online: no second announcement
        tab.loop_stop()
        sock = tab.socket()
        assert sock is not None
        sock.close()  # abrupt: the broker publishes the will [MQTT-3.1.2-8] ... which the bridge drops
    finally:
        tab.loop_stop()
    again = (await asyncio.to_thread(watcher.receive, 1))[0]
    assert _status(again) == "online" and json.loads(again.payload)["transport"] == "socketio"
    watcher.nothing()
    later = rt.paho(MQTTv311)
    later.subscribe("presence/bob")
    assert _status((await asyncio.to_thread(later.receive, 1))[0]) == "online"
    await client.call("leave", {})
    await client.close()
    assert _status((await asyncio.to_thread(watcher.receive, 1))[0]) == "offline"


async def test_lost_socketio_connection_keeps_presence_for_the_grace(
    realtime_factory: Callable[..., Realtime],
) -> None:
    """wrenmq feature (issue 18): a Socket.IO connection lost without ``leave`` (here ended by the
    server, as a failing proxy would) keeps its user online for realtime_presence_grace; one back
    within it (here over another Socket.IO connection) means no offline at all; once the grace
    passes with no connection, offline."""
    rt = realtime_factory(realtime_presence_grace=1.0)
    watcher = rt.paho(MQTTv5)
    watcher.subscribe("presence/#", 1)
    first = await rt.sio({"presence": {"id": "carol"}})
    assert _status((await asyncio.to_thread(watcher.receive, 1))[0]) == "online"
    bridge = rt.server.api.app.state.socketio if rt.server.api is not None else None
    assert bridge is not None
    await asyncio.to_thread(rt.server.call, bridge.disconnect_all())  # lost: the server ended it
    await first.close()
    second = await rt.sio({"presence": {"id": "carol"}})  # back within the grace
    third = await rt.sio({"presence": {"id": "dave"}})  # a sentinel: announced after the above
    (message,) = await asyncio.to_thread(watcher.receive, 1)
    assert (message.topic, _status(message)) == ("presence/dave", "online")  # carol: nothing between
    started = time.monotonic()
    await asyncio.to_thread(rt.server.call, bridge.sio.disconnect(second.client.get_sid()))
    (message,) = await asyncio.to_thread(watcher.receive, 1)
    assert (message.topic, _status(message)) == ("presence/carol", "offline")
    assert time.monotonic() - started >= 0.9
    await second.close()
    await third.close()


async def _disconnect_as_browsers_do(rt: Realtime, sio: Sio) -> None:
    """socket.io-client's ``disconnect()``: a DISCONNECT packet the server handles ("client
    disconnect") before the transport closes (python-socketio's client closes it at once)."""
    sid = sio.client.get_sid()
    await sio.client._send_packet(socketio.packet.Packet(socketio.packet.DISCONNECT, namespace="/"))
    await wait_until(lambda: "sio:" + sid not in rt.service.subscribers, "the server saw the DISCONNECT")
    await sio.close()


async def test_handover_is_no_goodbye(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature (issue 18): a client that moves to another transport says ``handover``
    before it disconnects the old one, so when the new one is lost at about the same moment (here
    it is ended by the server first) the user keeps realtime_presence_grace instead of going
    offline; a plain ``disconnect()`` stays a goodbye. Sentinels: dave's and erin's announcements."""
    rt = realtime_factory(realtime_presence_grace=1.0)
    watcher = rt.paho(MQTTv5)
    watcher.subscribe("presence/#", 1)
    old = await rt.sio({"presence": {"id": "carol"}})
    assert _status((await asyncio.to_thread(watcher.receive, 1))[0]) == "online"
    new = await rt.sio({"presence": {"id": "carol"}})
    await asyncio.to_thread(rt.server.call, rt.bridge.sio.disconnect(new.client.get_sid()))  # new: lost
    assert (await old.call("handover", {}))["ok"] is True
    await _disconnect_as_browsers_do(rt, old)  # after the new one's loss: carol keeps the grace
    dave = await rt.sio({"presence": {"id": "dave"}})
    (message,) = await asyncio.to_thread(watcher.receive, 1)
    assert (message.topic, _status(message)) == ("presence/dave", "online")  # carol: nothing between
    (message,) = await asyncio.to_thread(watcher.receive, 1)
    assert (message.topic, _status(message)) == ("presence/carol", "offline")  # when the grace ends

    first = await rt.sio({"presence": {"id": "erin"}})
    second = await rt.sio({"presence": {"id": "erin"}})
    await asyncio.to_thread(rt.server.call, rt.bridge.sio.disconnect(second.client.get_sid()))
    (message,) = await asyncio.to_thread(watcher.receive, 1)
    assert (message.topic, _status(message)) == ("presence/erin", "online")
    await _disconnect_as_browsers_do(rt, first)  # no handover: a goodbye, offline at once
    (message,) = await asyncio.to_thread(watcher.receive, 1)
    assert (message.topic, _status(message)) == ("presence/erin", "offline")
    for client in (old, new, dave, first, second):
        await client.close()


async def test_poll_close_on_a_switch_is_no_goodbye(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature (issue 18): ``DELETE /realtime/poll/{id}?goodbye=false`` (the browser client
    leaving polling for a better transport) keeps the user online for realtime_presence_grace when
    that transport was lost meanwhile; a plain DELETE is a goodbye, offline at once."""
    rt = realtime_factory(realtime_presence_grace=1.0)
    watcher = rt.paho(MQTTv5)
    watcher.subscribe("presence/#", 1)
    poll = rt.url + "/api/v1/realtime/poll"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for goodbye in (False, True):
            user = "frank" if goodbye else "grace"
            opened = await http.post(poll, json={"filters": ["none/x"], "presence": {"id": user}})
            assert opened.status_code == 201, opened.text
            assert _status((await asyncio.to_thread(watcher.receive, 1))[0]) == "online"
            sio = await rt.sio({"presence": {"id": user}})  # the better transport, attached ...
            await asyncio.to_thread(rt.server.call, rt.bridge.sio.disconnect(sio.client.get_sid()))  # ... and lost
            query = "" if goodbye else "?goodbye=false"
            closed = await http.delete(f"{poll}/{opened.json()['id']}{query}")
            assert closed.status_code == 204
            sentinel = await rt.sio({"presence": {"id": user + "-sentinel"}})
            first, second = await asyncio.to_thread(watcher.receive, 2)
            if goodbye:
                assert [(m.topic, _status(m)) for m in (first, second)] == [
                    (f"presence/{user}", "offline"),
                    (f"presence/{user}-sentinel", "online"),
                ]
            else:
                assert (first.topic, _status(first)) == (f"presence/{user}-sentinel", "online")
                assert (second.topic, _status(second)) == (f"presence/{user}", "offline")  # the grace ended
            for client in (sio, sentinel):
                await client.close()
            await asyncio.to_thread(watcher.receive, 1)  # the sentinel's own goodbye


async def test_journal_bytes_bound(realtime_factory: Callable[..., Realtime]) -> None:
    """wrenmq feature: realtime_journal_bytes bounds the journal's payload bytes: a message larger
    than the bound is still delivered live but is not kept for replay; older ones make room."""
    rt = realtime_factory(realtime_journal_bytes=8)
    live = await rt.sio()
    await live.subscribe("j")
    for payload in ("aaaa", "bbbb", "too large for it", "cccc"):
        rt.server.publish("j", payload)
    assert [(await live.message())["payload"] for _ in range(4)] == ["aaaa", "bbbb", "too large for it", "cccc"]
    replayed = await rt.sio()
    await replayed.subscribe("j", replay=300)
    assert (await replayed.message())["payload"] == "cccc"
    await replayed.nothing()


async def test_filters_per_client_are_bounded(rt: Realtime) -> None:
    """wrenmq feature: a client holds at most MAX_FILTERS (64) filters, over all its subscribe
    requests (each costs a match per routed message): the one beyond is 422."""
    client = await rt.sio()
    await client.subscribe(*[f"a/{i}" for i in range(60)])
    await client.subscribe(*[f"a/{i}" for i in range(56, 64)])  # 4 already held: 64 in all
    answer = await client.call("subscribe", {"filters": ["a/64"]})
    assert answer["ok"] is False and answer["status"] == 422, answer
    rt.server.publish("a/63", b"held")
    rt.server.publish("a/64", b"not held")
    assert (await client.message())["topic"] == "a/63"
    await client.nothing()


async def test_server_stop_disconnects_clients(rt: Realtime) -> None:
    """wrenmq feature: stopping the server ends its Socket.IO connections (the clients see the
    disconnect and can fall back) instead of holding the shutdown open."""
    client = await rt.sio({"presence": {"id": "erin"}})
    await asyncio.to_thread(rt.server.stop)  # bounded: WrenmqServer.stop waits at most 10 s
    await wait_until(lambda: not client.client.connected, "the client saw the disconnect")


async def test_presence_only_for_a_user_the_acl_lets_publish_it(
    realtime_factory: Callable[..., Realtime], tmp_path: Path
) -> None:
    """wrenmq feature: announcing presence publishes ``presence/<id>``, so it needs ACL WRITE on
    that topic (as an MQTT PUBLISH would, PUBACK 0x87 there): alice may be present as alice, not as
    bob, and the refusal says why."""
    acl = tmp_path / "acl"
    acl.write_text("pattern write presence/%u\npattern read presence/+\n")
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland")
    rt = realtime_factory(password_file=passwd, acl_file=acl, allow_anonymous=False)
    alice = await rt.sio({"username": "alice", "password": "wonderland", "presence": {"id": "alice"}})
    assert "sio:" + _sid(alice) in rt.service.presence.by_key
    refused = await rt.refused({"username": "alice", "password": "wonderland", "presence": {"id": "bob"}})
    assert "presence/bob" in refused.errors[0]["message"]
    assert "bob" not in rt.service.presence.attachments
    await wait_until(lambda: rt.bridge.connected == 1, "the refused socket is gone")


async def test_failed_sign_ins_are_throttled_with_mqtt(
    realtime_factory: Callable[..., Realtime], users: dict[str, Any]
) -> None:
    """wrenmq feature: failed Socket.IO sign-ins count toward ``auth_failure_limit`` per address,
    with MQTT's: past the limit even the right password is refused for a while, and an MQTT
    client from the same address gets CONNACK 0x9F."""
    rt = realtime_factory(auth_failure_limit=3, **users)
    for _ in range(3):
        await rt.refused({"username": "alice", "password": "wrong"})
    refused = await rt.refused({"username": "alice", "password": "wonderland"})
    assert "too many failed logins" in refused.errors[0]["message"]
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late", protocol=MQTTv5)
    paho.username_pw_set("alice", "wonderland")
    codes: list[Any] = []
    paho.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc)
    paho.connect("127.0.0.1", rt.server.port)
    paho.loop_start()
    try:
        await wait_until(lambda: bool(codes), "a CONNACK")
    finally:
        paho.loop_stop()
        paho.disconnect()
    assert codes[0].value == 0x9F  # [MQTT-3.2.2-8]: a refusing CONNACK carries the reason


async def test_goodbye_over_mqtt_ends_the_same_clients_socketio_side(rt: Realtime) -> None:
    """wrenmq feature: a realtime client that switched back to MQTT and then closes publishes its
    goodbye (offline) over MQTT; its own Socket.IO side (client id ``<id>-sio``), still registered
    because its handover was not processed yet, does not hold the goodbye back. Another client's
    Socket.IO attachment of the same user does (the user is still there)."""
    watcher = rt.paho(MQTTv5)
    watcher.subscribe("presence/#", 1)
    for other, expect in (("tab-b-sio", "online"), ("tab-a-sio", "offline")):
        sio = await rt.sio({"presence": {"id": "carl"}, "clientId": other})
        assert _status((await asyncio.to_thread(watcher.receive, 1))[0]) == "online"
        tab = rt.paho(MQTTv5, client_id="tab-a")
        tab.publish("presence/carl", json.dumps({"status": "online"}).encode(), qos=1, retain=True)
        tab.publish("presence/carl", json.dumps({"status": "offline"}).encode(), qos=1, retain=True)
        tab.publish("presence/zz", json.dumps({"status": "sentinel"}).encode(), qos=1)
        got = [_status(m) for m in await asyncio.to_thread(watcher.receive, 2)]
        if expect == "offline":  # its own Socket.IO side went with the goodbye: offline passes
            assert got == ["online", "offline"], got
        else:  # another tab is still there: the goodbye is refused, the sentinel comes next
            assert got == ["online", "sentinel"], got
        tab.close()
        await sio.call("leave", {})
        await sio.close()
        if expect == "online":  # (its MQTT side's end says online again; the other tab leaving ends it)
            assert [_status(m) for m in await asyncio.to_thread(watcher.receive, 2)] == ["online", "offline"]
