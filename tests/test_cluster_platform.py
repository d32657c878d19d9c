"""The platform's own state across cluster nodes (issue 16): resource change events numbered once
for the cluster, external broker connections run by one node at a time, API keys and console
sessions valid on every node. Nodes are ``wrenmq serve`` subprocesses sharing a real
``redis-server`` (the fixtures of test_cluster.py); clients are httpx, paho-mqtt and a real Mosquitto.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import test_cluster
from paho_sync import MQTTv5, PahoClient
from redisproc import have_redis
from serveproc import BrokerProcess, free_port
from test_cluster import _api_key, wait_until_routed

redis_server = test_cluster.redis_server  # the fixtures, shared
cluster = test_cluster.cluster

pytestmark = pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")

Node = BrokerProcess
TIMEOUT = 10.0


def api_node(cluster: Callable[..., Node], name: str, *args: str) -> tuple[Node, httpx.Client]:
    """A node with its API, and an httpx client signed in with a key from its own keys file."""
    port = free_port()
    node = cluster(name, "--api-port", str(port), *args)
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {_api_key(node)}"}, timeout=TIMEOUT
    )
    return node, http


def crossed(a: Node, b: Node, topic: str) -> tuple[PahoClient, PahoClient]:
    """A subscriber to ``topic`` on each node, each known to the other node (a probe crossed)."""
    sub_a, sub_b = PahoClient(a.port, MQTTv5, client_id="sub-a"), PahoClient(b.port, MQTTv5, client_id="sub-b")
    pub_a, pub_b = PahoClient(a.port, MQTTv5, client_id="pub-a"), PahoClient(b.port, MQTTv5, client_id="pub-b")
    for sub, probe in ((sub_a, "probe/a"), (sub_b, "probe/b")):
        sub.subscribe(probe, 0)
        sub.subscribe(topic, 1)
    wait_until_routed(pub_a, sub_b, "probe/b")
    wait_until_routed(pub_b, sub_a, "probe/a")
    pub_a.close()
    pub_b.close()
    return sub_a, sub_b


def test_cluster_resource_seq_gap_free_across_nodes(cluster: Callable[..., Node]) -> None:
    """PUTs alternating between two nodes, then at once on both: the kind's events are numbered
    1..N with no gap and no repeat, the log reads the same on both nodes, and a subscriber on
    either node gets every event once."""
    a, http_a = api_node(cluster, "a")
    b, http_b = api_node(cluster, "b")
    sub_a, sub_b = crossed(a, b, "events/all")
    seqs = []
    for i in range(10):
        http = http_a if i % 2 == 0 else http_b
        response = http.put(f"/api/v1/resources/thing/t{i % 3}", json={"n": i})
        assert response.status_code in (200, 201), response.text
        seqs.append(response.json()["event"]["seq"])
    assert seqs == list(range(1, 11))

    def put(args: tuple[httpx.Client, int]) -> int:
        http, i = args
        response = http.put(f"/api/v1/resources/thing/c{i % 4}", json={"n": i})
        assert response.status_code in (200, 201), response.text
        return int(response.json()["event"]["seq"])

    with ThreadPoolExecutor(8) as pool:  # both nodes at once: commits meet in Redis
        concurrent = list(pool.map(put, [(http_a if i % 2 else http_b, i) for i in range(30)]))
    assert sorted(concurrent) == list(range(11, 41))

    for http in (http_a, http_b):
        page = http.get("/api/v1/resources/thing/events", params={"since": 0, "limit": 1000}).json()
        assert [event["seq"] for event in page["items"]] == list(range(1, 41))
        assert page["last_seq"] == 40
    assert http_b.get("/api/v1/resources/thing/t2").json() == {"n": 8}
    listing = http_a.get("/api/v1/resources/thing", params={"limit": 2, "offset": 1}).json()
    assert [item["id"] for item in listing["items"]] == ["c1", "c2"] and listing["total"] == 7
    for sub in (sub_a, sub_b):
        got = sorted(json.loads(m.payload)["seq"] for m in sub.receive(40, timeout=15))
        assert got == list(range(1, 41))
        sub.close()
    # A delete on B of what A created: one more event, for both subscribers' nodes.
    assert http_b.delete("/api/v1/resources/thing/t0").json()["event"]["seq"] == 41
    assert http_a.get("/api/v1/resources/thing/t0").status_code == 404
    http_a.close()
    http_b.close()


def _json(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()
