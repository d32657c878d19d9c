"""Prometheus metrics beyond the broker core (issue 17, "Observability"): process_* (memory, CPU,
file descriptors), external broker connections and bridges (against a real Mosquitto), device
presence, realtime transports, and ``metrics_public``. Scraped with httpx from a real server."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mosquitto_fixture import MosquittoBroker
from mqttraw import RawClient
from test_metrics import Api

TIMEOUT = 5.0


@pytest.fixture
def api_factory(wrenmq_server_factory: Callable[..., Any]) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(**overrides: Any) -> Api:
        api = Api(wrenmq_server_factory(api_port=0, **overrides))
        made.append(api)
        return api

    yield make
    for api in made:
        api.http.close()


def test_process_metrics_memory_cpu_and_file_descriptors(api_factory: Callable[..., Api]) -> None:
    """prometheus-client's ProcessCollector, in the broker's own registry: this process's numbers."""
    api = api_factory()
    samples = api.scrape()
    assert samples[("process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert samples[("process_virtual_memory_bytes", ())] >= samples[("process_resident_memory_bytes", ())]
    assert samples[("process_cpu_seconds_total", ())] > 0
    assert 3 <= samples[("process_open_fds", ())] <= samples[("process_max_fds", ())]
    started = samples[("process_start_time_seconds", ())]
    assert started <= time.time() and started > time.time() - 3600
    assert len(os.listdir("/proc/self/fd")) - 10 <= samples[("process_open_fds", ())]  # the same process


def test_metrics_public_serves_metrics_without_a_key_and_nothing_else(api_factory: Callable[..., Api]) -> None:
    """metrics_public = true: /metrics answers a scraper with no credentials (annotation-based
    discovery); every other route still needs a key. Off (the default) it needs one (test_metrics)."""
    api = api_factory(metrics_public=True)
    bare = httpx.get(api.server.api_url + "/metrics")
    assert bare.status_code == 200 and "wrenmq_build_info" in bare.text
    assert httpx.get(api.server.api_url + "/api/v1/broker/status").status_code == 401
    spec = httpx.get(api.server.api_url + "/api/openapi.json").json()
    assert "security" not in spec["paths"]["/metrics"]["get"]
    private = api_factory()
    assert httpx.get(private.server.api_url + "/metrics").status_code == 401


def _wait(api: Api, name: str, expected: float, **labels: str) -> None:
    api.wait_for(name, expected, **labels)


def test_bridge_metrics_follow_a_connection_to_mosquitto(
    api_factory: Callable[..., Api], mosquitto: MosquittoBroker
) -> None:
    """Per connection: connected, messages out (acknowledged by Mosquitto) and in, queued."""
    connection = {
        "name": "plant",
        "url": f"mqtt://127.0.0.1:{mosquitto.port}",
        "reconnect_max": 0.5,
        "bridges": ["topic out/# out 1", "topic in/# in 1"],
    }
    api = api_factory(brokers=[connection])
    _wait(api, "wrenmq_bridge_connected", 1, connection="plant")
    client = RawClient(api.server.port, 5)
    try:
        assert client.connect("bridge-metrics").reason_code == 0
        for i in range(3):
            client.publish(f"out/{i}", b"x", qos=1)
        _wait(api, "wrenmq_bridge_messages_out_total", 3, connection="plant")
        assert api.value("wrenmq_bridge_queued_messages", connection="plant") == 0
        remote = RawClient(mosquitto.port, 4)
        assert remote.connect("remote").reason_code == 0
        for _ in range(100):  # the bridge's subscription at Mosquitto may lag its CONNACK
            remote.publish("in/a", b"y", qos=1)
            if api.scrape().get(("wrenmq_bridge_messages_in_total", (("connection", "plant"),)), 0) >= 1:
                break
            time.sleep(0.05)
        assert api.value("wrenmq_bridge_messages_in_total", connection="plant") >= 1
        assert api.value("wrenmq_bridge_dropped_total", connection="plant") == 0
        remote.close()
    finally:
        client.close()
    mosquitto.stop()
    _wait(api, "wrenmq_bridge_connected", 0, connection="plant")


def test_presence_metrics_count_online_and_offline_devices(api_factory: Callable[..., Api]) -> None:
    api = api_factory(presence_snapshot_debounce=0.02)
    assert ("wrenmq_presence_devices", (("state", "online"),)) in api.scrape()
    device = RawClient(api.server.port, 4)
    assert device.connect("meter-1").reason_code == 0
    announce = {"deviceId": "meter-1", "type": "meter", "timestamp": "2026-12-05T00:00:00Z"}
    device.publish("devices/discovery/announce", json.dumps(announce).encode(), qos=1)
    status = {"deviceId": "meter-1", "status": "online", "timestamp": "2026-12-05T00:00:00Z"}
    device.publish("devices/meter-1/status", json.dumps(status).encode(), qos=1, retain=True)
    _wait(api, "wrenmq_presence_devices", 1, state="online")
    assert api.value("wrenmq_presence_devices", state="offline") == 0
    device.disconnect()
    # What its will would publish (tests/test_presence.py covers wills themselves).
    other = RawClient(api.server.port, 4)
    assert other.connect("will-stand-in").reason_code == 0
    will = {"deviceId": "meter-1", "status": "offline", "timestamp": "2026-12-05T00:00:01Z"}
    other.publish("devices/meter-1/lwt", json.dumps(will).encode(), qos=1, retain=True)
    other.close()
    _wait(api, "wrenmq_presence_devices", 1, state="offline")
    assert api.value("wrenmq_presence_devices", state="online") == 0


def test_realtime_metrics_count_clients_by_transport_and_present_users(api_factory: Callable[..., Api]) -> None:
    api = api_factory()
    assert api.value("wrenmq_realtime_clients", transport="polling") == 0
    opened = api.http.post("/api/v1/realtime/poll", json={"filters": ["rt/#"], "presence": {"id": "alice"}})
    assert opened.status_code == 201, opened.text
    assert api.value("wrenmq_realtime_clients", transport="polling") == 1
    assert api.value("wrenmq_realtime_clients", transport="socketio") == 0
    assert api.value("wrenmq_realtime_presence_users") == 1
    _wait(api, "wrenmq_realtime_journal_messages", 1)  # alice's retained presence/alice "online"
    published = api.http.post("/api/v1/publish", json={"topic": "rt/x", "payload": "1", "qos": 1})
    assert published.status_code == 200, published.text
    _wait(api, "wrenmq_realtime_journal_messages", 2)
    closed = api.http.delete(f"/api/v1/realtime/poll/{opened.json()['id']}")
    assert closed.status_code == 204
    assert api.value("wrenmq_realtime_clients", transport="polling") == 0
    assert api.value("wrenmq_realtime_presence_users") == 0
    assert api.value("wrenmq_realtime_socketio_messages_sent_total") == 0


DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "wrenmq-dashboard.json"
METRIC_NAME = re.compile(r"\b(?:wrenmq|process)_[a-zA-Z0-9_]+\b")


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            queries += [target["expr"] for target in inner.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_grafana_dashboard_queries_name_only_exported_metrics(
    api_factory: Callable[..., Api], mosquitto: MosquittoBroker
) -> None:
    """contrib/grafana/wrenmq-dashboard.json is valid JSON, every panel has a query, and every metric
    a query names is one a broker (with a bridge, presence and realtime on) exports, sample by sample
    (``_total``, ``_bucket`` included): a renamed metric cannot leave an empty panel unnoticed."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "wrenmq"
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert graphs and all(panel.get("targets") for panel in graphs)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))

    connection = {"name": "plant", "url": f"mqtt://127.0.0.1:{mosquitto.port}", "bridges": ["topic a/# out 1"]}
    api = api_factory(brokers=[connection])
    _wait(api, "wrenmq_bridge_connected", 1, connection="plant")
    api.http.get("/api/v1/broker/status")  # an API request, so wrenmq_api_requests has a sample
    exported = {name for name, _ in api.scrape()}
    named = {name for query in _dashboard_queries(dashboard) for name in METRIC_NAME.findall(query)}
    assert len(named) > 30
    assert not named - exported, sorted(named - exported)
