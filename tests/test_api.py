"""The management HTTP API's REST endpoints (wrenmq feature, issue 6), tested with httpx against a
real broker and real MQTT peers (raw sockets on the project's codec, paho-mqtt 3.1.1 and 5.0):
API keys (401 / 403), problem details for every error (404, 405, 409, 422 naming the field),
broker status, clients (list, detail, disconnect with 0x98, discarding sessions), subscriptions
and topics, retained messages, publishing (single, batch, compatibility route, hook rejections),
and the password and ACL files, changed without a restart.

Spec statements are MQTT 5.0's where cited.
"""

from __future__ import annotations

import base64
import json
import queue
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mqttraw import RawClient
from paho_sync import MQTTv5, MQTTv311, PahoClient
from problems import problem
from wrenmq.api.keys import ApiKeyStore
from wrenmq.auth.passwords import PasswordFile
from wrenmq.hooks import Hook, Reject
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode
from wrenmq.pytest_plugin import WrenmqServer

_P = PropertyId
TIMEOUT = 5.0


class Api:
    """A broker with its API on a free port, and httpx clients: ``http`` with a read-write key,
    ``viewer`` with a read-only key, ``anonymous`` with none."""

    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        store = ApiKeyStore(server.broker.config.api_keys_path)
        name = f"test-{id(self):x}"  # a restarted server shares its data_dir (and keys file)
        self.key = store.create(name)
        url = server.api_url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.key}"}, timeout=TIMEOUT)
        viewer_key = store.create(f"viewer-{id(self):x}", read_only=True)
        self.viewer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {viewer_key}"}, timeout=TIMEOUT)
        self.anonymous = httpx.Client(base_url=url, timeout=TIMEOUT)
        self.mqtt: list[RawClient] = []
        self.paho: list[PahoClient] = []

    @property
    def broker(self) -> Any:
        return self.server.broker

    def raw(self, client_id: str, version: int = 5, **connect: Any) -> RawClient:
        """A raw MQTT client, connected (CONNACK accepted)."""
        client = RawClient(self.server.port, version)
        self.mqtt.append(client)
        ack = client.connect(client_id, **connect)
        assert ack.reason_code == 0, ack.reason_code
        return client

    def paho_client(self, protocol: Any, client_id: str, **connect: Any) -> PahoClient:
        client = PahoClient(self.server.port, protocol, client_id, **connect)
        self.paho.append(client)
        return client

    def close(self) -> None:
        for client in self.mqtt:
            client.close()
        for paho in self.paho:
            paho.close()
        for http in (self.http, self.viewer, self.anonymous):
            http.close()


@pytest.fixture
def api_factory(wrenmq_server_factory: Callable[..., WrenmqServer]) -> Iterator[Callable[..., Api]]:
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


def fields(body: dict[str, Any]) -> dict[str, str]:
    """field -> message of a 422 problem's errors."""
    assert body["type"] == "urn:wrenmq:problem:invalid-request"
    return {error["field"]: error["message"] for error in body["errors"]}


def receive(client: RawClient, timeout: float = TIMEOUT) -> p.Publish:
    packet = client.expect(p.Publish, timeout)
    if packet.qos == 1:
        client.send(p.Puback(packet.packet_id))
    return packet


def wait_offline(api: Api, client_id: str) -> None:
    """Wait until the broker has seen ``client_id``'s connection close (its session stays)."""
    deadline = time.monotonic() + TIMEOUT
    while api.http.get(f"/api/v1/clients/{client_id}").json()["connected"]:
        assert time.monotonic() < deadline, f"{client_id} still connected"
        time.sleep(0.01)


async def _add_hook(server: WrenmqServer, hook: Hook) -> None:
    server.broker.hooks.add(hook)


# -- API keys ----------------------------------------------------------------------------------

READS = [
    ("GET", "/api/v1/broker/status"),
    ("GET", "/broker/status"),
    ("GET", "/api/v1/clients"),
    ("GET", "/api/v1/clients/someone"),
    ("GET", "/api/v1/subscriptions"),
    ("GET", "/api/v1/topics"),
    ("GET", "/api/v1/retained"),
    ("GET", "/api/v1/retained/a/b"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/acl"),
]
WRITES = [
    ("DELETE", "/api/v1/clients/someone", None),
    ("DELETE", "/api/v1/retained/a/b", None),
    ("POST", "/api/v1/publish", {"topic": "a/b", "payload": "x"}),
    ("POST", "/api/v1/publish/batch", {"messages": [{"topic": "a/b"}]}),
    ("POST", "/publish", {"broker": "internal", "topic": "a/b", "payload": "x"}),
    ("POST", "/api/v1/users", {"username": "eve", "password": "pw"}),
    ("DELETE", "/api/v1/users/admin", None),
    ("POST", "/api/v1/acl", {"user": "eve", "access": "read", "topic": "x/#"}),
    ("DELETE", "/api/v1/acl/0123456789abcdef", None),
]


def test_every_endpoint_needs_an_api_key(api: Api) -> None:
    """Without a key, or with a wrong one, every REST endpoint (compatibility routes included)
    answers 401 with a problem and WWW-Authenticate: Bearer, before looking at the request."""
    wrong = httpx.Client(base_url=api.server.api_url, headers={"Authorization": "Bearer wmq_not-a-key"})
    for method, path, body in [(m, path, None) for m, path in READS] + WRITES:
        for http in (api.anonymous, wrong):
            response = http.request(method, path, json=body)
            assert problem(response, 401)["detail"].startswith("a valid API key is required"), (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
    # Invalid JSON from someone without a key is still a 401, not a validation error.
    response = api.anonymous.post("/api/v1/publish", content=b"{", headers={"content-type": "application/json"})
    problem(response, 401)
    wrong.close()


def test_read_only_key_reads_but_gets_403_on_every_write(api: Api) -> None:
    """A read-only key may read everything and change nothing (403 before anything happens)."""
    api.server.publish("a/b", b"kept", retain=True)
    for method, path in READS:
        response = api.viewer.request(method, path)
        assert response.status_code in (200, 404, 409), (method, path, response.text)  # not 401/403
    for method, path, body in WRITES:
        body_problem = problem(api.viewer.request(method, path, json=body), 403)
        assert "read-only" in body_problem["detail"], (method, path)
    # Refused before the body is read.
    response = api.viewer.post("/api/v1/publish", content=b"{", headers={"content-type": "application/json"})
    problem(response, 403)
    assert api.http.get("/api/v1/retained/a/b").status_code == 200  # the DELETE did not happen


# -- problem details -----------------------------------------------------------------------------


def test_errors_are_problem_details(api: Api) -> None:
    """404 for unknown routes and resources, 405 for a wrong method, 422 for a bad query or body:
    all application/problem+json with type, title, status and detail."""
    assert problem(api.http.get("/api/v1/nothing-here"), 404)["type"] == "about:blank"
    assert "someone" in problem(api.http.get("/api/v1/clients/someone"), 404)["detail"]
    assert "a/b" in problem(api.http.get("/api/v1/retained/a/b"), 404)["detail"]
    assert problem(api.http.put("/api/v1/clients"), 405)["detail"] == "PUT is not allowed on /api/v1/clients"
    body = problem(api.http.get("/api/v1/clients", params={"limit": 0, "connected": "maybe"}), 422)
    errors = fields(body)
    assert "greater than or equal to 1" in errors["query.limit"]
    assert "boolean" in errors["query.connected"]
    assert "query.limit" in body["detail"] and "query.connected" in body["detail"]
    response = api.http.post("/api/v1/publish", content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in fields(problem(response, 422))["body.1"]
    assert fields(problem(api.http.post("/api/v1/publish", json={"payload": "x"}), 422)) == {
        "body.topic": "Field required"
    }


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"topic": "a/+"}, "body.topic", "wildcard"),
        ({"topic": "a/#"}, "body.topic", "wildcard"),
        ({"topic": ""}, "body.topic", "at least one character"),
        ({"topic": "a\u0000b"}, "body.topic", "U+0000"),
        ({"topic": "\ud800"}, "body.topic", "lone surrogate"),
        ({"topic": "$SYS/broker/uptime"}, "body.topic", "starts with '$'"),
        ({"topic": "a", "qos": 3}, "body.qos", "0, 1 or 2"),
        ({"topic": "a", "payload": "x", "payload_base64": "eA=="}, "body", "at most one of"),
        ({"topic": "a", "payload_base64": "not base64!"}, "body.payload_base64", "not valid base64"),
        ({"topic": "a", "properties": {"response_topic": "r/#"}}, "body.properties.response_topic", "wildcard"),
        (
            {"topic": "a", "properties": {"message_expiry_interval": -1}},
            "body.properties.message_expiry_interval",
            "greater than or equal to 0",
        ),
        ({"topic": "a", "properties": {"correlation_data": "%%"}}, "body.properties.correlation_data", "base64"),
        (
            {"topic": "a", "payload_base64": "/w==", "properties": {"payload_format_indicator": 1}},
            "body",
            "not UTF-8",
        ),
        (
            {"topic": "a", "properties": {"user_properties": [{"name": "k\u0000", "value": "v"}]}},
            "body.properties.user_properties.0.name",
            "U+0000",
        ),
    ],
)
def test_publish_refuses_invalid_messages(api: Api, body: dict[str, Any], field: str, reason: str) -> None:
    """422 naming the field and the MQTT rule broken; nothing is published. [MQTT-3.3.2-2],
    [MQTT-4.7.3-1], [MQTT-1.5.4-1], [MQTT-1.5.4-2], [MQTT-4.7.2-1], [MQTT-3.3.2-4]"""
    response = api.http.post("/api/v1/publish", content=json.dumps(body), headers={"content-type": "application/json"})
    errors = fields(problem(response, 422))
    assert reason in errors[field], errors


def test_publish_refuses_what_the_broker_settings_refuse(api_factory: Callable[..., Api]) -> None:
    """QoS above maximum_qos, retain when retain_available is off, topics past max_topic_length or
    max_topic_levels, and a PUBLISH over max_packet_size: 422 naming each, with the limit. The
    size check is exact: a packet of max_packet_size bytes goes through."""
    api = api_factory(
        maximum_qos=1, retain_available=False, max_packet_size=1024, max_topic_length=20, max_topic_levels=3
    )
    body = {"topic": "a/b/c/d", "qos": 2, "retain": True}
    errors = fields(problem(api.http.post("/api/v1/publish", json=body), 422))
    assert "maximum_qos (1)" in errors["body.qos"]
    assert "retain_available" in errors["body.retain"]
    assert "max_topic_levels (3)" in errors["body.topic"]
    errors = fields(problem(api.http.post("/api/v1/publish", json={"topic": "t" * 21}), 422))
    assert "max_topic_length (20)" in errors["body.topic"]
    # PUBLISH "t" at QoS 0 to MQTT 5: 1 + 2 (length) + 3 (topic) + 1 (properties) + payload.
    sub = api.raw("sub")
    sub.subscribe("t", 0)
    assert api.http.post("/api/v1/publish", json={"topic": "t", "payload": "x" * 1017}).status_code == 200
    assert len(receive(sub).payload) == 1017
    errors = fields(problem(api.http.post("/api/v1/publish", json={"topic": "t", "payload": "x" * 1018}), 422))
    assert "1025 bytes, over the broker's max_packet_size (1024)" in errors["body.payload"]
    big = base64.b64encode(b"\xff" * 2000).decode()
    errors = fields(problem(api.http.post("/api/v1/publish", json={"topic": "t", "payload_base64": big}), 422))
    assert "max_packet_size" in errors["body.payload_base64"]
    sub.nothing()


# -- broker status -----------------------------------------------------------------------------


def test_broker_status(api: Api) -> None:
    """Running, version, uptime, listeners with their connections, and the counters; the
    compatibility route GET /broker/status answers the same."""
    sub = api.raw("status-sub")
    sub.subscribe("s/#", 1)
    api.raw("status-pub").publish("s/1", b"hello", 1, retain=True)
    receive(sub)
    status = api.http.get("/api/v1/broker/status").json()
    assert status["running"] is True
    assert status["version"] == __import__("wrenmq").__version__
    assert 0 <= status["uptime"] < 60 and status["started_at"] <= time.time()
    [listener] = status["listeners"]
    assert listener["type"] == "tcp" and listener["url"] == f"mqtt://127.0.0.1:{api.server.port}"
    assert listener["connections"] == 2 and listener["connections_total"] == 2
    assert listener["listening"] is True
    counts = status["counts"]
    assert counts["connections"] == 2 and counts["sessions"] == 2
    assert counts["subscriptions"] == 1 and counts["retained"] == 1
    assert counts["messages_received"] == 1 and counts["messages_sent"] == 1
    assert counts["messages_dropped"] == 0
    assert counts["queued"] == 0
    compat = api.http.get("/broker/status").json()
    assert compat.keys() == status.keys() and compat["counts"]["retained"] == 1


def test_broker_status_counts_queued_messages(api: Api) -> None:
    """``queued`` counts the QoS 1 messages waiting for a disconnected persistent session [MQTT-3.1.2-5]."""
    away = api.raw("away", properties={_P.SESSION_EXPIRY_INTERVAL: 300})
    away.subscribe("q/#", 1)
    away.disconnect()
    wait_offline(api, "away")
    publisher = api.raw("queue-pub")
    for n in range(3):
        publisher.publish(f"q/{n}", b"x", 1)
    deadline = time.monotonic() + 5
    while api.http.get("/api/v1/broker/status").json()["counts"]["queued"] != 3:
        assert time.monotonic() < deadline, "the three messages were not counted as queued"
        time.sleep(0.05)


# -- clients -----------------------------------------------------------------------------------


def test_clients_list_filters_and_pages(api: Api) -> None:
    """Sessions without a connection are clients too; filters: id prefix, username, connected."""
    api.raw("alpha-1", username="ann")
    api.paho_client(MQTTv311, "beta")
    gone = api.raw("alpha-2", properties={_P.SESSION_EXPIRY_INTERVAL: 300})
    gone.disconnect()
    wait_offline(api, "alpha-2")

    def ids(**params: Any) -> list[str]:
        page = api.http.get("/api/v1/clients", params=params).json()
        return [item["client_id"] for item in page["items"]]

    assert ids() == ["alpha-1", "alpha-2", "beta"]
    assert ids(prefix="alpha") == ["alpha-1", "alpha-2"]
    assert ids(connected="false") == ["alpha-2"]
    assert ids(connected="true") == ["alpha-1", "beta"]
    assert ids(username="ann") == ["alpha-1"]
    page = api.http.get("/api/v1/clients", params={"limit": 1, "offset": 1}).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [item["client_id"] for item in page["items"]] == ["alpha-2"]
    items = {item["client_id"]: item for item in api.http.get("/api/v1/clients").json()["items"]}
    assert items["beta"]["protocol"] == "3.1.1" and items["beta"]["connected"] is True
    assert items["alpha-1"]["protocol"] == "5.0" and items["alpha-1"]["username"] == "ann"
    assert items["alpha-2"]["address"] is None and items["alpha-2"]["username"] is None


def test_client_detail(api: Api) -> None:
    """Address, protocol, keep alive, session expiry, subscriptions with their options, and the
    in-flight and queued counts of an offline session."""
    client = api.raw("detail", keep_alive=42, properties={_P.SESSION_EXPIRY_INTERVAL: 120})
    client.send(
        p.Subscribe(
            1,
            [p.Subscription("d/+", 1, no_local=True, retain_as_published=True, retain_handling=2)],
            {_P.SUBSCRIPTION_IDENTIFIER: 7},
        )
    )
    client.expect(p.Suback)
    client.subscribe("$share/workers/jobs/#", 0)
    detail = api.http.get("/api/v1/clients/detail").json()
    host, port = client.sock.getsockname()
    assert detail["address"] == f"{host}:{port}"
    assert (detail["protocol"], detail["keep_alive"], detail["session_expiry_interval"]) == ("5.0", 42, 120)
    assert detail["connected"] is True and detail["listener"] == "tcp:0"
    assert abs(detail["connected_since"] - time.time()) < 30
    subs = {sub["topic_filter"]: sub for sub in detail["subscriptions"]}
    assert subs["d/+"] == {
        "topic_filter": "d/+",
        "qos": 1,
        "no_local": True,
        "retain_as_published": True,
        "retain_handling": 2,
        "subscription_identifier": 7,
        "share_group": None,
    }
    assert subs["$share/workers/jobs/#"]["share_group"] == "workers"
    assert detail["subscription_count"] == 2
    client.disconnect()
    wait_offline(api, "detail")
    for n in range(3):
        api.http.post("/api/v1/publish", json={"topic": "d/x", "payload": str(n), "qos": 1})
    offline = api.http.get("/api/v1/clients/detail").json()
    assert offline["connected"] is False and offline["keep_alive"] is None and offline["address"] is None
    assert (offline["queued"], offline["inflight"]) == (3, 0)


def test_disconnect_v5_client_with_administrative_action(api: Api) -> None:
    """DELETE /clients/{id}: an MQTT 5 client gets DISCONNECT 0x98 Administrative action and the
    connection is closed [MQTT-4.13.2-1]; its will is published, as for any connection the server
    closes [MQTT-3.1.2-8]; the session stays, and the client resumes it [MQTT-3.2.2-2]."""
    watcher = api.raw("watcher")
    watcher.subscribe("wills/#", 0)
    victim = api.raw(
        "victim", properties={_P.SESSION_EXPIRY_INTERVAL: 300}, will=p.Will("wills/victim", b"gone", 0, False)
    )
    victim.subscribe("keep/#", 1)
    assert api.http.delete("/api/v1/clients/victim").status_code == 204
    [disconnect] = victim.expect_closed()
    assert isinstance(disconnect, p.Disconnect)
    assert disconnect.reason_code == ReasonCode.ADMINISTRATIVE_ACTION
    assert receive(watcher).payload == b"gone"
    detail = api.http.get("/api/v1/clients/victim").json()
    assert detail["connected"] is False and [s["topic_filter"] for s in detail["subscriptions"]] == ["keep/#"]
    api.http.post("/api/v1/publish", json={"topic": "keep/1", "payload": "while away", "qos": 1})
    back = RawClient(api.server.port, 5)
    api.mqtt.append(back)
    assert back.connect("victim", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 300}).session_present
    assert receive(back).payload == b"while away"


def test_disconnect_with_discard_session(api: Api) -> None:
    """?discard_session=true ends the session too: it is gone from the API, and the client's next
    CONNECT without Clean Start finds no session [MQTT-3.2.2-3]."""
    client = api.raw("discarded", properties={_P.SESSION_EXPIRY_INTERVAL: 300})
    client.subscribe("gone/#", 1)
    response = api.http.delete("/api/v1/clients/discarded", params={"discard_session": "true"})
    assert response.status_code == 204
    [disconnect] = client.expect_closed()
    assert disconnect.reason_code == ReasonCode.ADMINISTRATIVE_ACTION
    problem(api.http.get("/api/v1/clients/discarded"), 404)
    assert api.http.get("/api/v1/subscriptions", params={"client_id": "discarded"}).json()["total"] == 0
    again = RawClient(api.server.port, 5)
    api.mqtt.append(again)
    assert not again.connect("discarded", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 300}).session_present
    # An offline session is discarded the same way; without discard_session it is left alone.
    again.disconnect()
    wait_offline(api, "discarded")
    assert api.http.delete("/api/v1/clients/discarded").status_code == 204
    assert api.http.get("/api/v1/clients/discarded").status_code == 200
    assert api.http.delete("/api/v1/clients/discarded?discard_session=true").status_code == 204
    problem(api.http.get("/api/v1/clients/discarded"), 404)
    problem(api.http.delete("/api/v1/clients/discarded"), 404)


def test_disconnect_v311_clients_are_closed(api: Api) -> None:
    """A 3.1.1 client has no DISCONNECT from the server: its connection is closed (raw client:
    no packet before the close; paho reports an unexpected disconnect)."""
    raw = api.raw("raw311", version=4)
    assert api.http.delete("/api/v1/clients/raw311").status_code == 204
    assert raw.expect_closed() == []
    paho = api.paho_client(MQTTv311, "paho311")
    disconnects: queue.Queue[Any] = queue.Queue()
    paho.client.on_disconnect = lambda _c, _u, _flags, rc, _props: disconnects.put(rc)
    assert api.http.delete("/api/v1/clients/paho311").status_code == 204
    assert disconnects.get(timeout=TIMEOUT).is_failure


def test_paho_v5_sees_administrative_action(api: Api) -> None:
    """paho-mqtt (MQTT 5) receives the DISCONNECT's reason code 0x98."""
    paho = api.paho_client(MQTTv5, "paho5")
    disconnects: queue.Queue[Any] = queue.Queue()
    paho.client.on_disconnect = lambda _c, _u, _flags, rc, _props: disconnects.put(rc)
    assert api.http.delete("/api/v1/clients/paho5").status_code == 204
    assert disconnects.get(timeout=TIMEOUT).value == ReasonCode.ADMINISTRATIVE_ACTION


# -- subscriptions and topics ------------------------------------------------------------------


def test_subscriptions_and_topics(api: Api) -> None:
    """/subscriptions lists (client, filter) pairs, filterable by client id and filter prefix;
    /topics lists each subscribed filter and retained topic once, with subscriber counts."""
    one = api.raw("one")
    one.subscribe("sensors/#", 1)
    one.subscribe("$share/g/sensors/#", 0)
    two = api.raw("two")
    two.subscribe("sensors/#", 0)
    two.subscribe("alerts/+", 1)
    api.server.publish("sensors/kitchen", b"21", retain=True)

    def filters(**params: Any) -> list[tuple[str, str]]:
        page = api.http.get("/api/v1/subscriptions", params=params).json()
        return [(item["topic_filter"], item["client_id"]) for item in page["items"]]

    assert filters() == [("$share/g/sensors/#", "one"), ("alerts/+", "two"), ("sensors/#", "one"), ("sensors/#", "two")]
    assert filters(client_id="two") == [("alerts/+", "two"), ("sensors/#", "two")]
    assert filters(prefix="sensors") == [("sensors/#", "one"), ("sensors/#", "two")]
    assert filters(client_id="nobody") == []
    item = api.http.get("/api/v1/subscriptions", params={"prefix": "$share"}).json()["items"][0]
    assert (item["share_group"], item["qos"], item["connected"]) == ("g", 0, True)
    topics = {item["topic"]: item for item in api.http.get("/api/v1/topics").json()["items"]}
    assert topics["sensors/#"] == {
        "topic": "sensors/#",
        "wildcard": True,
        "subscribers": 2,
        "shared_subscribers": 1,
        "retained": False,
    }
    assert topics["sensors/kitchen"] == {
        "topic": "sensors/kitchen",
        "wildcard": False,
        "subscribers": 0,
        "shared_subscribers": 0,
        "retained": True,
    }
    assert topics["alerts/+"]["subscribers"] == 1
    assert [item["topic"] for item in api.http.get("/api/v1/topics", params={"prefix": "alerts"}).json()["items"]] == [
        "alerts/+"
    ]


# -- retained messages -------------------------------------------------------------------------


def test_retained_round_trip_with_mqtt_clients(api: Api) -> None:
    """A retained message published over MQTT is listed and read through the API; DELETE clears it,
    so a new subscriber gets nothing [MQTT-3.3.1-6]; one published through the API is received on
    subscribe [MQTT-3.3.1-9]."""
    publisher = api.paho_client(MQTTv5, "r-pub")
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "text/plain"
    props.UserProperty = [("unit", "C")]
    publisher.publish("house/kitchen/temp", b"21.5", qos=1, retain=True, properties=props)
    publisher.publish("house/hall/temp", b"\xff\xfe", qos=0, retain=True)
    listing = api.http.get("/api/v1/retained", params={"filter": "house/+/temp"}).json()
    assert listing["total"] == 2
    assert [item["topic"] for item in listing["items"]] == ["house/hall/temp", "house/kitchen/temp"]
    assert listing["items"][1] == {
        "topic": "house/kitchen/temp",
        "qos": 1,
        "payload_size": 4,
        "content_type": "text/plain",
        "message_expiry_interval": None,
    }
    message = api.http.get("/api/v1/retained/house/kitchen/temp").json()
    assert (message["payload"], message["payload_base64"], message["qos"]) == ("21.5", "MjEuNQ==", 1)
    assert message["properties"]["content_type"] == "text/plain"
    assert message["properties"]["user_properties"] == [{"name": "unit", "value": "C"}]
    binary = api.http.get("/api/v1/retained/house/hall/temp").json()
    assert binary["payload"] is None and base64.b64decode(binary["payload_base64"]) == b"\xff\xfe"

    assert api.http.delete("/api/v1/retained/house/kitchen/temp").status_code == 204
    problem(api.http.get("/api/v1/retained/house/kitchen/temp"), 404)
    problem(api.http.delete("/api/v1/retained/house/kitchen/temp"), 404)
    late = api.paho_client(MQTTv311, "r-late")
    late.subscribe("house/#", 0)
    [hall] = late.receive(1)
    assert hall.topic == "house/hall/temp"
    late.nothing()

    api.http.post("/api/v1/publish", json={"topic": "house/door", "payload": "locked", "retain": True, "qos": 1})
    later = api.paho_client(MQTTv311, "r-later")
    later.subscribe("house/door", 1)
    [door] = later.receive(1)
    assert (door.payload, door.retain) == (b"locked", True)


def test_retained_listing_pages_and_filters(api: Api) -> None:
    """Paged in topic order; the filter takes MQTT wildcards, and '#' does not include $SYS."""
    for n in range(25):
        api.server.publish(f"r/{n:02d}", b"x", retain=True)
    api.server.publish("$SYS/broker/test", b"x", retain=True)
    page = api.http.get("/api/v1/retained", params={"limit": 10, "offset": 20}).json()
    assert page["total"] == 25
    assert [item["topic"] for item in page["items"]] == [f"r/{n}" for n in range(20, 25)]
    assert api.http.get("/api/v1/retained", params={"filter": "$SYS/#"}).json()["total"] == 1
    assert api.http.get("/api/v1/retained", params={"filter": "r/0+"}).status_code == 422
    errors = fields(problem(api.http.get("/api/v1/retained", params={"filter": "r/#/x"}), 422))
    assert "not a valid topic filter" in errors["query.filter"]


def test_retained_listing_searches_topics_and_text_payloads(api: Api) -> None:
    """``search`` keeps the messages whose topic or UTF-8 payload contains it, ignoring case; it
    narrows the filter (and paging counts only what it keeps)."""
    api.server.publish("plant/line1/temperature", b'{"celsius": 21.5}', retain=True)
    api.server.publish("plant/line2/state", b"RUNNING", retain=True)
    api.server.publish("office/printer", b"\xff\xfe running low", retain=True)
    api.server.publish("office/lamp", b"off", retain=True)

    def topics(**params: str) -> list[str]:
        page = api.http.get("/api/v1/retained", params=params).json()
        assert page["total"] == len(page["items"])
        return [item["topic"] for item in page["items"]]

    assert topics(search="LINE") == ["plant/line1/temperature", "plant/line2/state"]
    assert topics(search="running") == [
        "office/printer",
        "plant/line2/state",
    ]  # payloads, any case, bytes not UTF-8 skipped
    assert topics(search="celsius") == ["plant/line1/temperature"]
    assert topics(search="running", filter="office/#") == ["office/printer"]
    assert topics(search="nowhere") == []


def test_retained_deletion_is_persisted(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> None:
    """With SQLite storage, a retained message deleted through the API stays deleted after a
    restart, while one left alone is restored."""
    first = Api(wrenmq_server_factory(api_port=0, storage="sqlite", data_dir=tmp_path))
    for topic in ("p/deleted", "p/kept"):
        first.http.post("/api/v1/publish", json={"topic": topic, "payload": "v", "retain": True, "qos": 1})
    assert first.http.delete("/api/v1/retained/p/deleted").status_code == 204
    first.close()
    first.server.stop()
    second = Api(wrenmq_server_factory(api_port=0, storage="sqlite", data_dir=tmp_path))
    try:
        topics = [item["topic"] for item in second.http.get("/api/v1/retained").json()["items"]]
        assert topics == ["p/kept"]
    finally:
        second.close()


# -- publishing --------------------------------------------------------------------------------


def test_publish_is_received_by_paho(api: Api) -> None:
    """POST /publish reaches paho-mqtt 3.1.1 and 5.0 subscribers; the response counts them."""
    old = api.paho_client(MQTTv311, "p311")
    new = api.paho_client(MQTTv5, "p5")
    old.subscribe("api/#", 1)
    new.subscribe("api/+", 2)
    response = api.http.post("/api/v1/publish", json={"topic": "api/text", "payload": "héllo", "qos": 1})
    assert response.json() == {"topic": "api/text", "qos": 1, "retain": False, "payload_size": 6, "matched": 2}
    for client in (old, new):
        [message] = client.receive(1)
        assert (message.topic, message.payload, message.qos) == ("api/text", "héllo".encode(), 1)
    api.http.post("/api/v1/publish", json={"topic": "api/bin", "payload_base64": "AAH/"})
    assert old.receive(1)[0].payload == new.receive(1)[0].payload == b"\x00\x01\xff"
    api.http.post("/api/v1/publish", json={"topic": "api/json", "payload_json": {"t": 21.5, "ok": [True, None]}})
    assert json.loads(new.receive(1)[0].payload) == {"t": 21.5, "ok": [True, None]}
    assert old.receive(1)[0].payload == b'{"t":21.5,"ok":[true,null]}'
    none = api.http.post("/api/v1/publish", json={"topic": "nobody/listens"}).json()
    assert (none["matched"], none["payload_size"]) == (0, 0)


def test_publish_properties_reach_a_v5_subscriber(api: Api) -> None:
    """MQTT 5 properties given to POST /publish are forwarded unaltered [MQTT-3.3.2-4],
    [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17], [MQTT-3.3.2-20]; the Message Expiry
    Interval is what is left of it [MQTT-3.3.2-6]."""
    sub = api.raw("props")
    sub.subscribe("props/#", 1)
    properties = {
        "message_expiry_interval": 300,
        "content_type": "application/json",
        "response_topic": "props/reply",
        "correlation_data": base64.b64encode(b"\x00req-1").decode(),
        "user_properties": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}, {"name": "b", "value": ""}],
        "payload_format_indicator": 1,
    }
    body = {"topic": "props/x", "payload_json": [1, 2], "qos": 1, "properties": properties}
    assert api.http.post("/api/v1/publish", json=body).json()["matched"] == 1
    message = receive(sub)
    assert message.payload == b"[1,2]"
    props = message.properties
    assert 299 <= props[_P.MESSAGE_EXPIRY_INTERVAL] <= 300
    assert props[_P.CONTENT_TYPE] == "application/json"
    assert props[_P.RESPONSE_TOPIC] == "props/reply"
    assert props[_P.CORRELATION_DATA] == b"\x00req-1"
    assert props[_P.USER_PROPERTY] == [("a", "1"), ("a", "2"), ("b", "")]
    assert props[_P.PAYLOAD_FORMAT_INDICATOR] == 1
    paho = api.paho_client(MQTTv5, "props-paho")
    paho.subscribe("props/#", 0)
    api.http.post("/api/v1/publish", json=body)
    got = paho.receive(1)[0].properties
    assert (got.ContentType, got.ResponseTopic, got.CorrelationData) == (
        "application/json",
        "props/reply",
        b"\x00req-1",
    )


def test_publish_batch(api: Api) -> None:
    """All messages are checked first: one invalid item refuses the whole batch (422 naming the
    item), and nothing is published; a valid batch is published in order with a result each."""
    sub = api.raw("batch")
    sub.subscribe("b/#", 1)
    bad = {"messages": [{"topic": "b/1", "payload": "one"}, {"topic": "b/+"}, {"topic": "b/3", "qos": 7}]}
    errors = fields(problem(api.http.post("/api/v1/publish/batch", json=bad), 422))
    assert set(errors) == {"body.messages.1.topic", "body.messages.2.qos"}
    sub.nothing()
    good = {"messages": [{"topic": f"b/{n}", "payload": str(n), "qos": 1} for n in range(5)]}
    result = api.http.post("/api/v1/publish/batch", json=good).json()
    assert (result["published"], result["rejected"]) == (5, 0)
    assert [item["result"]["matched"] for item in result["results"]] == [1] * 5
    assert [receive(sub).payload for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    assert api.http.post("/api/v1/publish/batch", json={"messages": []}).status_code == 422


class Gatekeeper(Hook):
    """Refuses secret/ topics as not authorised and quota/ topics as over quota."""

    def on_publish(self, client: Any, message: Any) -> Any:
        if message.topic.startswith("secret/"):
            raise Reject(ReasonCode.NOT_AUTHORIZED, "secrets stay secret")
        if message.topic.startswith("quota/"):
            raise Reject(ReasonCode.QUOTA_EXCEEDED, "over quota")
        return message


def test_publish_hook_rejection(api: Api) -> None:
    """A Reject from a publish hook: 403 for 0x87 Not authorized, 422 otherwise, with its reason and
    reason code; in a batch, the rejected item is reported and the others are published."""
    api.server.call(_add_hook(api.server, Gatekeeper()))
    sub = api.raw("gate")
    sub.subscribe("#", 0)
    body = problem(api.http.post("/api/v1/publish", json={"topic": "secret/plans", "payload": "x"}), 403)
    assert (body["type"], body["reason_code"]) == ("urn:wrenmq:problem:publish-rejected", 0x87)
    assert "secrets stay secret" in body["detail"]
    body = problem(api.http.post("/publish", json={"broker": "internal", "topic": "quota/x", "payload": "x"}), 422)
    assert body["reason_code"] == ReasonCode.QUOTA_EXCEEDED and "over quota" in body["detail"]
    sub.nothing()
    batch = {"messages": [{"topic": "open/1"}, {"topic": "secret/2"}, {"topic": "open/3"}]}
    result = api.http.post("/api/v1/publish/batch", json=batch).json()
    assert (result["published"], result["rejected"]) == (2, 1)
    assert result["results"][1]["published"] is False and result["results"][1]["reason_code"] == 0x87
    assert [receive(sub).topic for _ in range(2)] == ["open/1", "open/3"]


def test_compatibility_publish(api: Api) -> None:
    """POST /publish with {"broker": "internal", ...} as integrations send it: a string payload is
    text, another JSON value is sent as JSON text; any other broker is 404 "unknown broker"."""
    sub = api.paho_client(MQTTv311, "compat")
    sub.subscribe("compat/#", 1)
    body = {"broker": "internal", "topic": "compat/a", "payload": "plain", "qos": 1, "retain": False}
    result = api.http.post("/publish", json=body).json()
    assert (result["broker"], result["matched"]) == ("internal", 1)
    assert sub.receive(1)[0].payload == b"plain"
    api.http.post("/publish", json={**body, "payload": {"level": 3}})
    assert sub.receive(1)[0].payload == b'{"level":3}'
    unknown = problem(api.http.post("/publish", json={**body, "broker": "cloud"}), 404)
    assert unknown["type"] == "urn:wrenmq:problem:unknown-broker" and "unknown broker 'cloud'" in unknown["detail"]
    assert "body.topic" in fields(problem(api.http.post("/publish", json={**body, "topic": "a/#"}), 422))
    assert "body.qos" in fields(problem(api.http.post("/publish", json={**body, "qos": 5}), 422))
    sub.nothing()


# -- users ---------------------------------------------------------------------------------------


@pytest.fixture
def users_api(api_factory: Callable[..., Api], tmp_path: Path) -> Api:
    path = tmp_path / "passwd"
    path.write_text("# wrenmq users\n")
    passwords = PasswordFile.load(path)
    passwords.set_password("admin", "admin-secret")
    passwords.save()
    return api_factory(password_file=path, allow_anonymous=False)


def login(api: Api, username: str, password: str) -> int:
    """CONNECT (MQTT 5) with these credentials; the CONNACK's reason code."""
    with RawClient(api.server.port, 5) as client:
        return client.connect(f"login-{username}", username=username, password=password.encode()).reason_code


def test_users_change_the_next_connect_without_restart(users_api: Api) -> None:
    """POST /users adds a user (201) or sets a password (200), DELETE removes one: the next CONNECT
    sees it, without a restart [MQTT-3.1.4-2]. The file keeps its comments and mode 0600."""
    api = users_api
    path = Path(api.broker.config.password_file)
    assert api.http.get("/api/v1/users").json() == {"password_file": str(path), "users": ["admin"]}
    assert login(api, "bob", "pw1") == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    response = api.http.post("/api/v1/users", json={"username": "bob", "password": "pw1"})
    assert (response.status_code, response.json()) == (201, {"username": "bob", "created": True})
    assert login(api, "bob", "pw1") == 0
    response = api.http.post("/api/v1/users", json={"username": "bob", "password": "pw2"})
    assert (response.status_code, response.json()["created"]) == (200, False)
    assert login(api, "bob", "pw1") == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert login(api, "bob", "pw2") == 0
    assert api.http.get("/api/v1/users").json()["users"] == ["admin", "bob"]
    assert api.http.delete("/api/v1/users/bob").status_code == 204
    assert login(api, "bob", "pw2") == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert login(api, "admin", "admin-secret") == 0
    problem(api.http.delete("/api/v1/users/bob"), 404)
    text = path.read_text()
    assert text.startswith("# wrenmq users\nadmin:$argon2id$") and "bob" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_users_validation(users_api: Api) -> None:
    """A user name the password file cannot hold, or an empty password, is a 422 naming the field."""
    api = users_api
    errors = fields(problem(api.http.post("/api/v1/users", json={"username": "a:b", "password": "x"}), 422))
    assert "contains ':'" in errors["body.username"]
    errors = fields(problem(api.http.post("/api/v1/users", json={"username": "carol", "password": ""}), 422))
    assert "body.password" in errors
    assert api.http.get("/api/v1/users").json()["users"] == ["admin"]


def test_users_and_acl_need_their_files(api: Api) -> None:
    """Without password_file / acl_file there is nothing to manage: 409 saying which setting."""
    for method, path, body in [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"username": "x", "password": "y"}),
        ("DELETE", "/api/v1/users/x", None),
        ("GET", "/api/v1/acl", None),
        ("POST", "/api/v1/acl", {"topic": "x"}),
        ("DELETE", "/api/v1/acl/x", None),
    ]:
        body_problem = problem(api.http.request(method, path, json=body), 409)
        assert body_problem["type"] == "urn:wrenmq:problem:not-configured"
        assert ("password_file" if "users" in path else "acl_file") in body_problem["detail"]


# -- ACL rules -----------------------------------------------------------------------------------

ACL = """\
# anonymous clients
topic read public/#

user alice
topic readwrite home/alice/#

# every client
pattern readwrite clients/%c/#
"""


@pytest.fixture
def acl_api(api_factory: Callable[..., Api], tmp_path: Path) -> Api:
    path = tmp_path / "acl"
    path.write_text(ACL)
    return api_factory(acl_file=path)


def subscribe_code(api: Api, username: str | None, topic_filter: str) -> int:
    with RawClient(api.server.port, 5) as client:
        assert client.connect(f"sub-{username}", username=username).reason_code == 0
        return int(client.subscribe(topic_filter, 1).reason_codes[0])


def test_acl_rules_listed(acl_api: Api) -> None:
    """GET /acl: each rule with its kind, user (null: anonymous or pattern), access, topic, line."""
    listing = acl_api.http.get("/api/v1/acl").json()
    assert listing["acl_file"] == str(acl_api.broker.config.acl_file)
    rules = [{k: v for k, v in rule.items() if k != "id"} for rule in listing["rules"]]
    assert rules == [
        {"kind": "topic", "user": None, "access": "read", "topic": "public/#", "line": 2},
        {"kind": "topic", "user": "alice", "access": "readwrite", "topic": "home/alice/#", "line": 5},
        {"kind": "pattern", "user": None, "access": "readwrite", "topic": "clients/%c/#", "line": 8},
    ]
    assert len({rule["id"] for rule in listing["rules"]}) == 3


def test_acl_changes_apply_to_the_next_subscribe(acl_api: Api) -> None:
    """A rule added through the API allows the next SUBSCRIBE, and once deleted the next one is
    denied (0x87) [MQTT-3.9.3-1 context], without a restart; the file keeps its comments, and each
    rule lands in its section."""
    api = acl_api
    path = Path(api.broker.config.acl_file)
    assert subscribe_code(api, "alice", "sensors/#") == ReasonCode.NOT_AUTHORIZED
    response = api.http.post("/api/v1/acl", json={"user": "alice", "access": "read", "topic": "sensors/#"})
    assert response.status_code == 201
    rule = response.json()
    assert (rule["kind"], rule["user"], rule["access"], rule["topic"]) == ("topic", "alice", "read", "sensors/#")
    assert subscribe_code(api, "alice", "sensors/#") == 1
    again = api.http.post("/api/v1/acl", json={"user": "alice", "access": "read", "topic": "sensors/#"})
    assert (again.status_code, again.json()["id"]) == (200, rule["id"])  # nothing changed
    api.http.post("/api/v1/acl", json={"access": "read", "topic": "news/#"})  # anonymous
    api.http.post("/api/v1/acl", json={"user": "bob", "access": "write", "topic": "bob/out"})
    api.http.post("/api/v1/acl", json={"kind": "pattern", "access": "read", "topic": "users/%u/#"})
    assert path.read_text() == (
        "# anonymous clients\n"
        "topic read public/#\n"
        "topic read news/#\n"
        "\n"
        "user alice\n"
        "topic readwrite home/alice/#\n"
        "topic read sensors/#\n"
        "\n"
        "# every client\n"
        "pattern readwrite clients/%c/#\n"
        "\n"
        "user bob\n"
        "topic write bob/out\n"
        "pattern read users/%u/#\n"
    )
    assert subscribe_code(api, None, "news/today") == 1
    assert subscribe_code(api, "carol", "users/carol/inbox") == 1
    assert api.http.delete(f"/api/v1/acl/{rule['id']}").status_code == 204
    assert subscribe_code(api, "alice", "sensors/#") == ReasonCode.NOT_AUTHORIZED
    assert "sensors" not in path.read_text()
    problem(api.http.delete(f"/api/v1/acl/{rule['id']}"), 404)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"kind": "pattern", "user": "alice", "topic": "x/%c"}, "body", "leave user null"),
        ({"topic": "a/#/b"}, "body.topic", "invalid topic filter"),
        ({"kind": "pattern", "topic": "dev%c/x"}, "body.topic", "whole topic level"),
        ({"topic": "a\nuser mallory"}, "body.topic", "control characters"),
        ({"user": " alice", "topic": "a"}, "body.user", "white space"),
        ({"access": "everything", "topic": "a"}, "body.access", "'read', 'write', 'readwrite' or 'deny'"),
    ],
)
def test_acl_rule_validation(acl_api: Api, body: dict[str, Any], field: str, reason: str) -> None:
    """A rule the ACL parser would refuse is a 422 naming the field and why; the file is untouched."""
    errors = fields(problem(acl_api.http.post("/api/v1/acl", json=body), 422))
    assert reason in errors[field], errors
    assert Path(acl_api.broker.config.acl_file).read_text() == ACL


def test_acl_file_turned_invalid_is_a_conflict(acl_api: Api) -> None:
    """If the file has become invalid, the API does not build on it: 409 naming the file and line."""
    path = Path(acl_api.broker.config.acl_file)
    path.write_text(ACL + "bogus line\n")
    body = problem(acl_api.http.post("/api/v1/acl", json={"topic": "x"}), 409)
    assert body["type"] == "urn:wrenmq:problem:file-invalid" and "line 9" in body["detail"]
    assert path.read_text() == ACL + "bogus line\n"
