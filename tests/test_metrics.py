"""Prometheus metrics at ``GET /metrics`` (issue 6, "Metrics and health"): a wrenmq feature, not
MQTT, so each test says in its docstring what it checks. Scraped with httpx from a real server and
parsed with prometheus-client's own parser; MQTT traffic comes from raw clients on real sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mqttraw import RawClient
from wrenmq.api.keys import ApiKeyStore
from wrenmq.auth.passwords import PasswordFile
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId

TIMEOUT = 5.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Api:
    """A server with its API on, an API key, and a scraper."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.token = ApiKeyStore(server.broker.config.api_keys_path).create("test")
        self.http = httpx.Client(base_url=server.api_url, headers={"Authorization": f"Bearer {self.token}"})

    def scrape(self) -> Samples:
        response = self.http.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.scrape()[(name, tuple(sorted(labels.items())))]

    def wait_for(self, name: str, expected: float, **labels: str) -> None:
        """Scrape until ``name{labels}`` reads ``expected`` (the broker's thread catches up)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            found = self.scrape().get((name, tuple(sorted(labels.items()))))
            if found == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} is {found}, expected {expected}")
            time.sleep(0.05)


@pytest.fixture
def api_factory(wrenmq_server_factory: Callable[..., Any]) -> Callable[..., Api]:
    made: list[Api] = []

    def make(**overrides: Any) -> Api:
        api = Api(wrenmq_server_factory(api_port=0, **overrides))
        made.append(api)
        return api

    yield make  # type: ignore[misc]
    for api in made:
        api.http.close()


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


def client(api: Api, version: int = 4, client_id: str = "", **connect: Any) -> RawClient:
    raw = RawClient(api.server.port, version)
    assert raw.connect(client_id, **connect).reason_code == 0
    return raw


def test_metrics_need_an_api_key(api: Api) -> None:
    """/metrics answers 401 without a valid bearer token (Prometheus sends one), 200 with one."""
    bare = httpx.get(api.server.api_url + "/metrics")
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(api.server.api_url + "/metrics", headers={"Authorization": "Bearer wmq_not-a-key"})
    assert wrong.status_code == 401
    assert api.http.get("/metrics").status_code == 200
    assert httpx.get(api.server.api_url + "/healthz").status_code == 200  # health needs no key


def test_every_metric_is_named_wrenmq_and_has_help(api: Api) -> None:
    """Every family is wrenmq_* (or prometheus-client's standard process_*), documented, and the
    families the README lists are all there; nothing goes to prometheus-client's global registry
    (two brokers in a process stay apart)."""
    text = api.http.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, family in families.items():
        assert name.startswith(("wrenmq_", "process_")), name
        assert family.documentation, f"{name} has no HELP"
    expected = {
        "wrenmq_build_info": "gauge",
        "wrenmq_start_time_seconds": "gauge",
        "wrenmq_clients_connected": "gauge",
        "wrenmq_client_connections": "counter",
        "wrenmq_listener_connections": "gauge",
        "wrenmq_listener_accepted": "counter",
        "wrenmq_messages_received": "counter",
        "wrenmq_messages_sent": "counter",
        "wrenmq_received_bytes": "counter",
        "wrenmq_sent_bytes": "counter",
        "wrenmq_messages_dropped": "counter",
        "wrenmq_slow_consumers_disconnected": "counter",
        "wrenmq_retained_messages": "gauge",
        "wrenmq_subscriptions": "gauge",
        "wrenmq_sessions": "gauge",
        "wrenmq_queued_messages": "gauge",
        "wrenmq_inflight_messages": "gauge",
        "wrenmq_auth_failures": "counter",
        "wrenmq_acl_denials": "counter",
        "wrenmq_session_owner_conflicts": "counter",
        "wrenmq_protocol_errors": "counter",
        "wrenmq_internal_errors": "counter",
        "wrenmq_websocket_upgrades_refused": "counter",
        "wrenmq_api_requests": "counter",
        "wrenmq_api_request_duration_seconds": "histogram",
        "wrenmq_api_streams": "gauge",
        "wrenmq_api_stream_messages": "counter",
        "wrenmq_api_stream_dropped": "counter",
        "wrenmq_event_loop_lag_seconds": "gauge",
        "wrenmq_event_loop_lag_distribution_seconds": "histogram",
        "wrenmq_bridge_connected": "gauge",
        "wrenmq_bridge_messages_in": "counter",
        "wrenmq_bridge_messages_out": "counter",
        "wrenmq_bridge_queued_messages": "gauge",
        "wrenmq_bridge_dropped": "counter",
        "wrenmq_bridge_refused": "counter",
        "wrenmq_presence_devices": "gauge",
        "wrenmq_realtime_clients": "gauge",
        "wrenmq_realtime_presence_users": "gauge",
        "wrenmq_realtime_journal_messages": "gauge",
        "wrenmq_realtime_messages_dropped": "counter",
        "wrenmq_realtime_socketio_messages_sent": "counter",
        "wrenmq_realtime_socketio_messages_resent": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_cpu_seconds": "counter",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
    }
    assert {name: families[name].type for name in expected if name in families} == expected
    assert b"wrenmq_" not in generate_latest(REGISTRY)


def test_connections_by_listener_and_protocol(api: Api) -> None:
    """Connected clients by listener and protocol version go up and down; the totals only up."""
    listener = api.server.broker.listeners[0]
    labels = {"listener": listener.name}
    assert api.value("wrenmq_clients_connected", protocol="3.1.1", **labels) == 0
    v4 = client(api, 4, "m-v4")
    v5 = client(api, 5, "m-v5")
    samples = api.scrape()
    assert samples[("wrenmq_clients_connected", (("listener", listener.name), ("protocol", "3.1.1")))] == 1
    assert samples[("wrenmq_clients_connected", (("listener", listener.name), ("protocol", "5.0")))] == 1
    assert samples[("wrenmq_client_connections_total", (("protocol", "3.1.1"),))] == 1
    assert samples[("wrenmq_client_connections_total", (("protocol", "5.0"),))] == 1
    tcp = (("listener", listener.name), ("type", "tcp"))
    assert samples[("wrenmq_listener_connections", tcp)] == 2
    assert samples[("wrenmq_listener_accepted_total", tcp)] == 2
    assert samples[("wrenmq_sessions", (("state", "connected"),))] == 2
    v4.disconnect()
    v5.disconnect()
    api.wait_for("wrenmq_clients_connected", 0, protocol="5.0", **labels)
    api.wait_for("wrenmq_listener_connections", 0, listener=listener.name, type="tcp")
    samples = api.scrape()
    assert samples[("wrenmq_clients_connected", (("listener", listener.name), ("protocol", "3.1.1")))] == 0
    assert samples[("wrenmq_client_connections_total", (("protocol", "5.0"),))] == 1
    assert samples[("wrenmq_listener_accepted_total", tcp)] == 2


def test_messages_and_bytes_by_qos(api: Api) -> None:
    """Messages in and out are counted by QoS (out: the QoS delivered), bytes by direction."""
    before = api.scrape()
    subscriber = client(api, 4, "m-sub")
    assert subscriber.subscribe("m/#", qos=2).reason_codes == [2]
    publisher = client(api, 4, "m-pub")
    publisher.publish("m/0", b"zero", qos=0)
    publisher.publish("m/1", b"one", qos=1)
    publisher.publish("m/1", b"one again", qos=1)
    publisher.publish("m/2", b"two", qos=2)
    for _ in range(4):
        message = subscriber.expect(p.Publish)
        if message.qos == 1:
            subscriber.send(p.Puback(message.packet_id))
        elif message.qos == 2:
            subscriber.send(p.Pubrec(message.packet_id))
            subscriber.expect(p.Pubrel)
            subscriber.send(p.Pubcomp(message.packet_id))
    api.wait_for("wrenmq_inflight_messages", 0)
    samples = api.scrape()
    for qos, count in (("0", 1), ("1", 2), ("2", 1)):
        assert samples[("wrenmq_messages_received_total", (("qos", qos),))] == count
        assert samples[("wrenmq_messages_sent_total", (("qos", qos),))] == count
    for name in ("wrenmq_received_bytes_total", "wrenmq_sent_bytes_total"):
        assert samples[(name, ())] > before[(name, ())] + len(b"zeroone")
    assert samples[("wrenmq_subscriptions", ())] == 1
    # A QoS 1 subscription takes a QoS 2 message as QoS 1 [MQTT-3.8.4-8]: counted as sent at QoS 1.
    low = client(api, 4, "m-low")
    low.subscribe("m/2", qos=1)
    publisher.publish("m/2", b"two", qos=2)
    low.send(p.Puback(low.expect(p.Publish).packet_id))
    subscriber.send(p.Pubrec(subscriber.expect(p.Publish).packet_id))
    api.wait_for("wrenmq_messages_sent_total", 3, qos="1")
    assert api.value("wrenmq_messages_sent_total", qos="2") == 2
    for raw in (subscriber, publisher, low):
        raw.close()


def test_retained_sessions_queued_and_in_flight(api: Api) -> None:
    """Retained count, sessions by state, and queued / in-flight messages summed over sessions."""
    publisher = client(api, 4, "m-pub")
    publisher.publish("r/a", b"kept", qos=1, retain=True)
    publisher.publish("r/b", b"kept", qos=1, retain=True)
    assert api.value("wrenmq_retained_messages") == 2
    publisher.publish("r/a", b"", qos=1, retain=True)  # an empty retained message clears it
    assert api.value("wrenmq_retained_messages") == 1

    offline = client(api, 4, "m-offline", clean=False)
    offline.subscribe("q/#", qos=1)
    offline.disconnect()
    api.wait_for("wrenmq_sessions", 1, state="disconnected")
    for i in range(3):
        publisher.publish(f"q/{i}", b"x", qos=1)
    assert api.value("wrenmq_queued_messages") == 3

    holder = client(api, 4, "m-holder")  # takes a QoS 1 message and never acknowledges it
    holder.subscribe("h", qos=1)
    publisher.publish("h", b"held", qos=1)
    holder.expect(p.Publish)
    assert api.value("wrenmq_inflight_messages") == 1
    holder.close()
    publisher.close()


def test_drops_by_cause(api_factory: Callable[..., Api]) -> None:
    """Drops are split by cause: a full session queue, a message over the client's Maximum Packet
    Size, and a publish the ACL refuses (also counted as an ACL denial)."""
    api = api_factory(max_queued_messages=2)
    publisher = client(api, 4, "m-pub")
    offline = client(api, 4, "m-offline", clean=False)
    offline.subscribe("q/#", qos=1)
    offline.disconnect()
    api.wait_for("wrenmq_sessions", 1, state="disconnected")
    for i in range(5):
        publisher.publish(f"q/{i}", b"x", qos=1)
    api.wait_for("wrenmq_messages_dropped_total", 3, cause="queue_full")

    small = client(api, 5, "m-small", properties={PropertyId.MAXIMUM_PACKET_SIZE: 64})
    small.subscribe("big", qos=0)
    publisher.publish("big", b"x" * 200, qos=1)
    api.wait_for("wrenmq_messages_dropped_total", 1, cause="too_large")
    small.nothing()  # [MQTT-3.1.2-25]: not sent to a client that cannot take it
    samples = api.scrape()
    assert samples[("wrenmq_messages_dropped_total", (("cause", "denied"),))] == 0
    assert samples[("wrenmq_messages_dropped_total", (("cause", "congested"),))] == 0
    assert samples[("wrenmq_messages_dropped_total", (("cause", "expired"),))] == 0
    small.close()
    publisher.close()


def test_acl_denials_auth_failures_and_protocol_errors(api_factory: Callable[..., Api], tmp_path: Path) -> None:
    """A refused publish counts as a denied drop and an ACL denial, a refused subscription as an
    ACL denial, an anonymous login where it is off as an auth failure, and a PUBLISH before CONNECT
    as a protocol error."""
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite open/#\n")
    passwd = PasswordFile(tmp_path / "passwd")
    passwd.set_password("alice", "wonderland")
    passwd.save()
    api = api_factory(acl_file=str(acl), password_file=str(passwd.path), allow_anonymous=False)
    alice = client(api, 5, "m-alice", username="alice", password=b"wonderland")
    suback = alice.subscribe("closed/#", qos=0)
    assert suback.reason_codes == [0x87]  # [MQTT-3.9.3-1 context]: Not authorized
    puback = alice.publish("closed/x", b"no", qos=1)
    assert puback is not None and puback.reason_code == 0x87
    samples = api.scrape()
    assert samples[("wrenmq_acl_denials_total", ())] == 2
    assert samples[("wrenmq_messages_dropped_total", (("cause", "denied"),))] == 1

    anonymous = RawClient(api.server.port, 4)
    assert anonymous.connect("m-anon").reason_code == 5  # not authorized
    api.wait_for("wrenmq_auth_failures_total", 1)

    rogue = RawClient(api.server.port, 4)
    rogue.send(p.Publish("x", b"", 0))  # [MQTT-3.1.0-1]: CONNECT must come first
    rogue.expect_closed()
    api.wait_for("wrenmq_protocol_errors_total", 1)
    assert api.value("wrenmq_internal_errors_total") == 0
    for raw in (alice, anonymous, rogue):
        raw.close()


def test_api_requests_by_route_template_and_status(api: Api) -> None:
    """Requests are counted by route template, never the raw path (bounded label values), and by
    status; an unknown path counts as "unmatched"."""
    app = api.server.api.app

    @app.get("/test/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    assert api.http.get("/test/items/1").status_code == 200
    assert api.http.get("/test/items/2").status_code == 200
    assert api.http.get("/test/items/x").status_code == 422
    assert api.http.get("/no/such/path").status_code == 404
    assert httpx.get(api.server.api_url + "/metrics").status_code == 401
    assert httpx.get(api.server.api_url + "/api/openapi.json").status_code == 200  # a plain Starlette route
    samples = api.scrape()
    requests = {labels: value for (name, labels), value in samples.items() if name == "wrenmq_api_requests_total"}
    template = "/test/items/{item_id}"
    assert requests[(("method", "GET"), ("route", template), ("status", "200"))] == 2
    assert requests[(("method", "GET"), ("route", template), ("status", "422"))] == 1
    assert requests[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    assert requests[(("method", "GET"), ("route", "/metrics"), ("status", "401"))] == 1
    assert requests[(("method", "GET"), ("route", "/api/openapi.json"), ("status", "200"))] == 1
    assert not any("/test/items/1" in dict(labels)["route"] for labels in requests)
    durations = ("wrenmq_api_request_duration_seconds_count", (("method", "GET"), ("route", template)))
    assert samples[durations] == 3
    # The scrape is counted once it has been answered.
    assert api.value("wrenmq_api_requests_total", method="GET", route="/metrics", status="200") >= 1


def test_event_loop_lag(api: Api) -> None:
    """The loop is sampled every 0.5 s; a callback that blocks the loop shows up as lag."""
    deadline = time.monotonic() + TIMEOUT
    while api.value("wrenmq_event_loop_lag_distribution_seconds_count") < 1:
        assert time.monotonic() < deadline, "no lag samples"
        time.sleep(0.1)
    blocked = threading.Event()

    def block() -> None:
        time.sleep(0.7)  # blocks the broker's loop (deliberately): the sample due meanwhile is late
        blocked.set()

    api.server.loop.call_soon_threadsafe(block)
    assert blocked.wait(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while api.value("wrenmq_event_loop_lag_distribution_seconds_sum") < 0.15:
        assert time.monotonic() < deadline, "the blocked loop was not seen as lag"
        time.sleep(0.1)
