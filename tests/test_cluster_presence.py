"""Device presence across cluster nodes (issue 16): the registry is the same whichever node a
device or an API request lands on, and a node's death marks its devices offline.

Nodes run in this process (``nodes`` from test_cluster_realtime: each its own loop and API) and,
for the node that is killed, as a ``wrenmq serve`` subprocess; one real ``redis-server``. Devices
are paho-mqtt clients following the topic scheme (test_presence.Device), the API is read with
httpx.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from redisproc import have_redis
from serveproc import BrokerProcess
from test_cluster_realtime import nodes, redis_url  # noqa: F401  (fixtures)
from test_presence import Device
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

pytestmark = pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")

TIMEOUT = 15.0


def api(node: WrenmqServer) -> httpx.Client:
    key = ApiKeyStore(node.broker.config.api_keys_path).create(f"k{time.monotonic_ns()}")
    return httpx.Client(base_url=node.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def wait_device(http: httpx.Client, device_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll ``GET /api/v1/devices/{id}`` until ``check`` holds for the entry (a condition)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = http.get(f"/api/v1/devices/{device_id}")
        if response.status_code == 200 and check(found := response.json()):
            return found
        assert time.monotonic() < deadline, f"{device_id}: {response.status_code} {response.text}"
        time.sleep(0.1)


def test_cluster_presence_device_on_a_seen_through_b(nodes: Callable[..., WrenmqServer]) -> None:  # noqa: F811
    """Issue 16: a device connected to node A is listed online, with its status and events, by
    ``/api/v1/devices`` on node B; its clean DISCONNECT on A shows it offline on B; forgetting it
    through B forgets it on A."""
    a, b = nodes("a", presence_snapshot_debounce=0.05), nodes("b", presence_snapshot_debounce=0.05)
    on_a, on_b = api(a), api(b)
    device = Device(a.port, mqtt.MQTTv5, "tv-1")
    try:
        device.status("playing", session="s-1", position=42)
        device.event("started", title="x")
        entry = wait_device(on_b, "tv-1", lambda e: e["online"] and e["status"] == "playing" and e["events"])
        assert entry["client_id"] == "tv-1" and entry["sessionId"] == "s-1" and entry["positionMs"] == 42
        assert [e["event"] for e in entry["events"]] == ["started"]
        listed = on_b.get("/api/v1/devices").json()
        assert [d["deviceId"] for d in listed["items"]] == ["tv-1"]
        device.disconnect()
        wait_device(on_b, "tv-1", lambda e: not e["online"])
        assert on_b.delete("/api/v1/devices/tv-1").status_code == 204
        deadline = time.monotonic() + TIMEOUT
        while on_a.get("/api/v1/devices/tv-1").status_code != 404:
            assert time.monotonic() < deadline, "A still knows the device B forgot"
            time.sleep(0.1)
    finally:
        device.client.loop_stop()
        on_a.close()
        on_b.close()


def test_cluster_presence_killed_node_devices_go_offline(
    nodes: Callable[..., WrenmqServer],  # noqa: F811
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Issue 16: kill -9 of the node two devices are connected to: the surviving node's registry
    shows the one with a will offline once a survivor publishes its will [MQTT-3.1.2-8] (the
    cluster's tests time that), and the one without a will once it has been silent for the
    heartbeat timeout."""
    survivor = nodes(
        "b", presence_heartbeat_interval=1.0, presence_missed_heartbeats=2, presence_snapshot_debounce=0.05
    )
    doomed = BrokerProcess(tmp_path, "--cluster-url", redis_url, "--node-name", "k").start()
    http = api(survivor)
    willed = Device(doomed.port, mqtt.MQTTv5, "willed")
    silent = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="silent", protocol=mqtt.MQTTv5)
    try:
        silent.connect("127.0.0.1", doomed.port)
        silent.loop_start()
        silent.publish(
            "devices/discovery/announce", b'{"deviceId": "silent", "type": "sensor"}', qos=1
        ).wait_for_publish(10)
        for device_id in ("willed", "silent"):
            wait_device(http, device_id, lambda e: e["online"])
        time.sleep(0.5)  # the wills are in Redis within a loop turn of CONNECT
        doomed.kill()
        wait_device(http, "willed", lambda e: not e["online"])
        wait_device(http, "silent", lambda e: not e["online"])
        offline = http.get("/api/v1/devices", params={"status": "offline"}).json()
        assert sorted(d["deviceId"] for d in offline["items"]) == ["silent", "willed"]
    finally:
        willed.client.loop_stop()
        silent.loop_stop()
        http.close()
