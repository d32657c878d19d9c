"""The platform's own state across cluster nodes (issue 16): resource change events numbered once
for the cluster, external broker connections run by one node at a time, API keys and console
sessions valid on every node. Nodes are ``wrenmq serve`` subprocesses sharing a real
``redis-server`` (the fixtures of test_cluster.py); clients are httpx, paho-mqtt and a real Mosquitto.
"""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import test_cluster
from paho_sync import MQTTv5, PahoClient
from redisproc import have_redis
from serveproc import BrokerProcess, free_port
from test_cluster import _api_key, wait_until_routed
from wrenmq.auth.passwords import PasswordFile

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


def _brokers(http: httpx.Client) -> dict[str, Any]:
    return {item["name"]: item for item in _json(http.get("/api/v1/brokers"))["brokers"]}


def _bridge_connections(mosquitto: Any) -> list[str]:
    """The client ids of the connections Mosquitto accepted, but the test's own clients."""
    found = re.findall(r"New client connected from \S+ as (\S+) ", mosquitto.log.read_text(errors="replace"))
    return [client_id for client_id in found if not client_id.startswith("remote-")]


def _wait_runner(nodes: dict[str, httpx.Client], timeout: float = 15.0) -> str:
    """The node that runs connection ``cloud``, once it is connected and subscribed there and every
    other node reports it in standby, run by that node."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {name: _brokers(http)["cloud"] for name, http in nodes.items()}
        running = [name for name, status in seen.items() if status["state"] != "standby"]
        if len(running) == 1:
            runner = running[0]
            mine = seen[runner]
            if (
                mine["state"] == "connected"
                and mine["subscribed"]
                and all(status["node"] == runner for status in seen.values())
            ):
                return runner
        assert time.monotonic() < deadline, f"no single runner: {seen}"
        time.sleep(0.1)


def test_cluster_external_broker_one_runner_and_takeover(
    cluster: Callable[..., Node], mosquitto: Any, tmp_path: Path
) -> None:
    """Two nodes with the same [[brokers]] entry for a real Mosquitto: one runs it, the other
    waits in standby. A message on the remote arrives once on subscribers of both nodes; a message
    published on either node goes out to the remote once. After kill -9 of the runner, the other
    node takes the connection over within seconds and bridges both ways."""
    config = tmp_path / "wrenmq.toml"
    config.write_text(
        '[[brokers]]\nname = "cloud"\n'
        f'url = "mqtt://127.0.0.1:{mosquitto.port}"\n'
        'bridges = ["topic in/# in 1 local/ remote/", "topic out/# out 1 local/ remote/"]\n'
    )
    nodes: dict[str, Node] = {}
    https: dict[str, httpx.Client] = {}
    for name in ("a", "b"):
        nodes[name], https[name] = api_node(cluster, name, "--config", str(config))
    runner = _wait_runner(https)
    other = "b" if runner == "a" else "a"
    sub_a, sub_b = crossed(nodes["a"], nodes["b"], "local/in/#")
    remote_pub = PahoClient(mosquitto.port, MQTTv5, client_id="remote-pub")
    remote_sub = PahoClient(mosquitto.port, MQTTv5, client_id="remote-sub")
    remote_sub.subscribe("remote/out/#", 1)

    def check_in(tag: str, subs: list[PahoClient]) -> None:
        for i in range(5):
            remote_pub.publish(f"remote/in/{tag}", f"{tag}-{i}".encode(), qos=1)
        remote_pub.publish("remote/in/end", tag.encode(), qos=1)  # the sentinel: nothing twice before it
        for sub in subs:
            got = [(m.topic, m.payload.decode()) for m in sub.receive(6, timeout=15)]
            assert got == [(f"local/in/{tag}", f"{tag}-{i}") for i in range(5)] + [("local/in/end", tag)]

    def check_out(tag: str, publishers: list[PahoClient]) -> None:
        for n, pub in enumerate(publishers):
            pub.publish(f"local/out/{tag}", f"{tag}-{n}".encode(), qos=1)
        sentinel = publishers[0]
        sentinel.publish("local/out/end", tag.encode(), qos=1)
        got = sorted((m.topic, m.payload.decode()) for m in remote_sub.receive(len(publishers) + 1, timeout=15))
        want = [(f"remote/out/{tag}", f"{tag}-{n}") for n in range(len(publishers))] + [("remote/out/end", tag)]
        assert got == sorted(want)

    check_in("first", [sub_a, sub_b])
    pub_a = PahoClient(nodes["a"].port, MQTTv5, client_id="local-pub-a")
    pub_b = PahoClient(nodes["b"].port, MQTTv5, client_id="local-pub-b")
    pub_other = pub_a if other == "a" else pub_b
    # The standby node's messages reach the runner's out bridge: wait until its route crossed.
    deadline = time.monotonic() + 15
    while True:
        pub_other.publish("local/out/probe", b"probe", qos=0)
        try:
            remote_sub.messages.get(timeout=0.2)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, "the standby node's messages never reached the remote"
    time.sleep(0.3)
    while not remote_sub.messages.empty():
        remote_sub.messages.get_nowait()
    check_out("first", [pub_a, pub_b])
    # API publishing through the connection: on the standby node it names the runner.
    refused = https[other].post("/publish", json={"broker": "cloud", "topic": "x", "payload": "y", "queue": True})
    assert refused.status_code == 503 and f"node {runner!r}" in refused.json()["detail"]

    # The remote saw one connection of the cluster's, with the cluster's client id (not one per node).
    assert _bridge_connections(mosquitto) == ["wrenmq.default.cloud"]

    started = time.monotonic()
    nodes[runner].kill()
    for client in (pub_a, pub_b, sub_a if runner == "a" else sub_b):
        client.close()
    assert _wait_runner({other: https[other]}, timeout=20) == other
    took = time.monotonic() - started
    assert took < 10, f"the takeover took {took:.1f}s"
    survivor_sub = sub_b if other == "b" else sub_a
    check_in("second", [survivor_sub])
    pub_survivor = PahoClient(nodes[other].port, MQTTv5, client_id="local-pub-2")
    check_out("second", [pub_survivor])
    assert _bridge_connections(mosquitto) == ["wrenmq.default.cloud"] * 2  # the same session, resumed
    for client in (survivor_sub, pub_survivor, remote_pub, remote_sub):
        client.close()
    for http in https.values():
        http.close()


def test_cluster_api_keys_and_console_sessions_work_on_every_node(cluster: Callable[..., Node], tmp_path: Path) -> None:
    """A key created through the API on node A works on node B for the very next request, and once
    revoked on B is refused on A; a console sign-in on A is valid on B, keeps its JWT's ACL
    claims there, and a sign-out on B ends it on A. A key from a node's own keys file still works
    on that node."""
    import jwt

    secret = "cluster-test-secret-of-32-bytes!"
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    passwords = PasswordFile.load(passwd)
    passwords.set_password("alice", "wonderland")
    passwords.save()
    config = tmp_path / "wrenmq.toml"
    config.write_text(
        f'password_file = "{passwd}"\njwt_secret = "{secret}"\n'
        'console_admins = ["alice", "carol"]\nconsole_users = ["bob"]\n'
    )
    _a, ops_a = api_node(cluster, "a", "--config", str(config))
    _b, ops_b = api_node(cluster, "b", "--config", str(config))
    url_a, url_b = str(ops_a.base_url), str(ops_b.base_url)

    def on(url: str, token: str) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)

    # API keys: created on A (with A's file key), used on B at once, listed everywhere, revoked on B.
    for round_ in range(3):
        created = _json(ops_a.post("/api/v1/keys", json={"name": f"shared{round_}"}))
        with on(url_b, created["key"]) as shared_b, on(url_a, created["key"]) as shared_a:
            assert _json(shared_b.get("/api/v1/session"))["name"] == f"shared{round_}"
            assert f"shared{round_}" in [key["name"] for key in _json(shared_b.get("/api/v1/keys"))["keys"]]
            assert shared_b.delete(f"/api/v1/keys/shared{round_}").status_code == 204
            assert shared_a.get("/api/v1/session").status_code == 401
            assert shared_b.get("/api/v1/session").status_code == 401
    assert ops_b.post("/api/v1/keys", json={"name": "once"}).status_code == 201
    assert ops_a.post("/api/v1/keys", json={"name": "once"}).status_code == 409  # one name cluster-wide
    # A node's file key is that node's: A's does not sign in on B.
    assert httpx.get(url_b + "/api/v1/session", headers=ops_a.headers, timeout=TIMEOUT).status_code == 401

    # Console sessions: a password sign-in on A, used on B, signed out on B.
    signed_in = httpx.post(url_a + "/api/v1/session", json={"username": "alice", "password": "wonderland"})
    assert signed_in.status_code == 201, signed_in.text
    with on(url_b, signed_in.json()["token"]) as alice_b, on(url_a, signed_in.json()["token"]) as alice_a:
        assert _json(alice_b.get("/api/v1/session"))["kind"] == "console"
        assert alice_b.get("/api/v1/clients").status_code == 200  # an admin: manages on B too
        assert alice_b.delete("/api/v1/session").status_code == 204
        assert alice_a.get("/api/v1/session").status_code == 401
        assert alice_b.get("/api/v1/session").status_code == 401

    # A JWT sign-in keeps its token's ACL claims on the other node.
    token = jwt.encode({"sub": "carol", "exp": 4102444800, "publish": ["public/#"]}, secret, "HS256")
    signed_in = httpx.post(url_b + "/api/v1/session", json={"username": "carol", "password": token})
    assert signed_in.status_code == 201, signed_in.text
    with on(url_a, signed_in.json()["token"]) as carol_a:
        assert carol_a.post("/api/v1/publish", json={"topic": "public/x", "payload": "x"}).status_code == 200
        assert carol_a.post("/api/v1/publish", json={"topic": "private/x", "payload": "x"}).status_code == 403
    ops_a.close()
    ops_b.close()


async def test_cluster_lease_one_holder_handover_and_redis_loss(redis_server: Any) -> None:
    """services.lease against a real redis-server: one holder at a time; a holder that stops hands
    the lease over at once (no TTL wait); a holder that loses Redis gives the lease up on its own
    before it could expire, so no other node runs the thing while it still does."""
    import asyncio

    import redis.asyncio as aioredis

    from wrenmq.services.lease import Lease

    events: list[tuple[str, str]] = []

    def lease(redis: Any, holder: str) -> Lease:
        async def acquired() -> None:
            events.append((holder, "acquired"))

        async def lost() -> None:
            events.append((holder, "lost"))

        return Lease(redis, "test:lease", holder, acquired, lost, ttl=2.0, renew=0.2)

    async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)

    ra = aioredis.from_url(redis_server.url)
    rb = aioredis.from_url(redis_server.url)
    a, b = lease(ra, "a"), lease(rb, "b")
    a.start()
    await until(lambda: a.held)
    b.start()
    await until(lambda: b.seen == "a")
    assert not b.held and events == [("a", "acquired")]
    await a.stop()  # gives it back: b takes it at its next attempt, long before the TTL
    await until(lambda: b.held, timeout=1.0)
    assert events == [("a", "acquired"), ("b", "acquired")]
    redis_server.stop()  # b can no longer renew: it gives the lease up within the TTL
    await until(lambda: not b.held, timeout=3.0)
    assert events[-1] == ("b", "lost")
    await b.stop()
    await ra.aclose()
    await rb.aclose()


def test_cluster_resources_503_while_redis_is_away(cluster: Callable[..., Node], redis_server: Any) -> None:
    """The cluster's resources are in Redis: while it is out of reach a change answers 503 (not
    500, and nothing half-stored); once it is back, changes continue at the next seq."""
    _a, http = api_node(cluster, "a")
    assert _json(http.put("/api/v1/resources/thing/t", json={"n": 1}))["event"]["seq"] == 1
    redis_server.stop()
    refused = http.put("/api/v1/resources/thing/t", json={"n": 2})
    assert refused.status_code == 503 and "Redis" in refused.json()["detail"], refused.text
    assert refused.headers["retry-after"] == "1"
    redis_server.start()  # (empty: nothing is saved to disk) on the same port
    deadline = time.monotonic() + 15
    while (response := http.put("/api/v1/resources/thing/t", json={"n": 3})).status_code == 503:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
    assert response.status_code in (200, 201), response.text
    http.close()
