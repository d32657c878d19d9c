"""Cluster on Redis: nodes as real ``wrenmq serve`` subprocesses sharing a real ``redis-server``,
clients are paho-mqtt (3.1.1 and 5.0) and mosquitto_pub.

Routes travel through Redis asynchronously, so each test first waits for a probe to cross (a
publish on one node reaching a subscriber on another) before it counts: a condition, not a sleep.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_sync import MQTTv5, MQTTv311, PahoClient
from redisproc import RedisSentinel, RedisServer, have_redis
from serveproc import BrokerProcess, clean_env, free_port

pytestmark = pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")

Node = BrokerProcess
SERVE = [
    sys.executable,
    "-m",
    "wrenmq",
    "serve",
    "--port",
    "0",
    "--ws-port",
    "off",
    "--api-port",
    "off",
    "--storage",
    "memory",
]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(name: str, *args: str) -> Node:
        data = tmp_path / name
        data.mkdir(exist_ok=True)
        node = BrokerProcess(data, "--cluster-url", redis_server.url, "--node-name", name, *args)
        nodes.append(node.start())
        wait_for_log(node, "joined at")
        return node

    yield start
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()


def wait_for_log(node: Node, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log():
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{node.log()}"
        time.sleep(0.05)


def wait_until_routed(publisher: PahoClient, subscriber: PahoClient, topic: str, timeout: float = 10.0) -> None:
    """Publish probes on ``topic`` until one reaches ``subscriber``; then drain what arrived."""
    deadline = time.monotonic() + timeout
    while True:
        publisher.publish(topic, b"probe", qos=0)
        try:
            subscriber.messages.get(timeout=0.2)
            break
        except queue.Empty:
            assert time.monotonic() < deadline, f"no probe on {topic} crossed the cluster"
    time.sleep(0.3)  # let probes in flight land, then forget them all
    while not subscriber.messages.empty():
        subscriber.messages.get_nowait()


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5])
def test_cluster_cross_node_delivery_qos012(cluster: Callable[..., Node], protocol: int) -> None:
    """A message published on node A reaches a subscriber on node B once, at every QoS
    [MQTT-4.3.1-1], [MQTT-4.3.2-2], [MQTT-4.3.3-2] (QoS 2: exactly once), in order [MQTT-4.6.0-5]."""
    a, b = cluster("a"), cluster("b")
    sub = PahoClient(b.port, protocol, client_id="sub")
    sub.subscribe("probe/#", 0)
    pub = PahoClient(a.port, protocol, client_id="pub")
    wait_until_routed(pub, sub, "probe/x")
    assert sub.subscribe("data/+", 2) == [2]
    wait_until_routed(pub, sub, "data/probe")
    for qos in (0, 1, 2):
        for i in range(20):
            pub.publish(f"data/q{qos}", f"{qos}-{i}".encode(), qos=qos)
    pub.publish("data/end", b"sentinel", qos=2)
    got = sub.receive(61, timeout=15)
    payloads = [m.payload.decode() for m in got]
    assert payloads[-1] == "sentinel"
    for qos in (0, 1, 2):
        mine = [p for p in payloads if p.startswith(f"{qos}-")]
        assert mine == [f"{qos}-{i}" for i in range(20)], f"QoS {qos}: {mine}"
    assert [m.qos for m in got[:-1]] == [0] * 20 + [1] * 20 + [2] * 20
    pub.close()
    sub.close()


def test_cluster_no_forward_without_subscribers(cluster: Callable[..., Node]) -> None:
    """A message goes only to nodes with matching subscribers: B's counters show what crossed."""
    a, b = cluster("a", "--api-port", str(api_a := free_port())), cluster("b")
    sub = PahoClient(b.port, MQTTv5, client_id="sub")
    sub.subscribe("wanted/#", 1)
    pub = PahoClient(a.port, MQTTv5, client_id="pub")
    wait_until_routed(pub, sub, "wanted/probe")
    before = _node_counts(a, api_a, "a")["forwarded"]
    for i in range(50):
        pub.publish(f"unwanted/{i}", b"x", qos=1)
    pub.publish("wanted/end", b"sentinel", qos=1)
    assert sub.receive(1)[0].payload == b"sentinel"
    after = _node_counts(a, api_a, "a")["forwarded"]
    assert after - before == 1  # only the sentinel crossed
    pub.close()
    sub.close()


def _api_key(node: Node) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wrenmq",
            "apikey",
            "--data-dir",
            str(node.data_dir),
            "create",
            f"t{time.monotonic_ns()}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def _cluster_status(node: Node, api_port: int) -> dict:  # type: ignore[type-arg]
    key = getattr(node, "_key", None) or _api_key(node)
    node._key = key  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30  # (generous: a loaded machine)
    while True:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{api_port}/api/v1/cluster", headers={"Authorization": f"Bearer {key}"}, timeout=5
            )
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _node_counts(node: Node, api_port: int, name: str) -> dict:  # type: ignore[type-arg]
    status = _cluster_status(node, api_port)
    return next(n for n in status["nodes"] if n["name"] == name)


def test_cluster_retained_on_every_node(cluster: Callable[..., Node]) -> None:
    """A retained message published on A is sent to a new subscriber on B [MQTT-3.3.1-9], and on a
    node that joins later; clearing it on A [MQTT-3.3.1-6] clears it on B."""
    a, b = cluster("a"), cluster("b")
    pub = PahoClient(a.port, MQTTv311, client_id="pub")
    pub.publish("config/site", b"v1", qos=1, retain=True)
    pub.publish("config/other", b"o1", qos=1, retain=True)
    _wait_retained(b.port, "config/site", b"v1")
    c = cluster("c")  # joins after: loads the cluster's retained messages from Redis
    _wait_retained(c.port, "config/other", b"o1")
    pub.publish("config/site", b"", qos=1, retain=True)
    pub.publish("config/site2", b"marker", qos=1, retain=True)
    _wait_retained(b.port, "config/site2", b"marker")
    probe = PahoClient(b.port, MQTTv311, client_id="probe2")
    probe.subscribe("config/#", 1)
    got = probe.receive(2)
    assert sorted((m.topic, m.payload) for m in got) == [("config/other", b"o1"), ("config/site2", b"marker")]
    probe.publish("config/zz", b"after", qos=1)  # sentinel: nothing else was retained under config/#
    assert probe.receive(1)[0].payload == b"after"
    pub.close()
    probe.close()


def _wait_retained(port: int, topic: str, payload: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        client = PahoClient(port, MQTTv311)
        client.subscribe(topic, 1)
        try:
            found = client.messages.get(timeout=0.5)
            if found.payload == payload and found.retain:
                client.close()
                return
        except queue.Empty:
            pass
        client.close()
        assert time.monotonic() < deadline, f"{topic} never retained as {payload!r}"


def test_cluster_shared_subscription_each_message_once(cluster: Callable[..., Node]) -> None:
    """``$share/workers/jobs/#`` with a member on A and one on B: each message of a publisher on C
    goes to exactly one member cluster-wide [MQTT-4.8.2-3], and both take turns."""
    a, b, c = cluster("a"), cluster("b"), cluster("c")
    wa = PahoClient(a.port, MQTTv5, client_id="worker-a")
    wb = PahoClient(b.port, MQTTv5, client_id="worker-b")
    wa.subscribe("$share/workers/jobs/#", 1)
    wb.subscribe("$share/workers/jobs/#", 1)
    watch_a = PahoClient(a.port, MQTTv5, client_id="watch-a")
    watch_b = PahoClient(b.port, MQTTv5, client_id="watch-b")
    watch_a.subscribe("jobs/#", 1)
    watch_b.subscribe("jobs/#", 1)
    pub = PahoClient(c.port, MQTTv5, client_id="pub")
    wait_until_routed(pub, watch_a, "jobs/probe")
    wait_until_routed(pub, watch_b, "jobs/probe")
    deadline = time.monotonic() + 10  # both members' routes have reached C once C alternates
    while True:
        for q in (wa.messages, wb.messages):
            while not q.empty():
                q.get_nowait()
        for _ in range(4):
            pub.publish("jobs/probe", b"p", qos=1)
        watch_a.receive(4)
        time.sleep(0.2)
        if not wa.messages.empty() and not wb.messages.empty():
            break
        assert time.monotonic() < deadline, "the shared group never spread over both nodes"
    time.sleep(0.3)
    for q in (wa.messages, wb.messages, watch_a.messages):
        while not q.empty():
            q.get_nowait()
    n = 40
    for i in range(n):
        pub.publish(f"jobs/{i}", str(i).encode(), qos=1)
    watch_a.receive(n, timeout=15)  # every job has reached node A by now (the sentinel)
    watch_b.receive(n, timeout=15)
    time.sleep(0.5)  # (the members' deliveries are already sent with the watchers')
    got = []
    per_member = []
    for q in (wa.messages, wb.messages):
        mine = []
        while not q.empty():
            mine.append(q.get_nowait())
        per_member.append(len(mine))
        got += mine
    assert all(per_member), per_member  # both members took turns
    payloads = sorted(int(m.payload) for m in got)
    assert payloads == list(range(n)), payloads  # each once, none lost
    for client in (wa, wb, watch_a, watch_b, pub):
        client.close()


def test_cluster_client_id_is_one_connection(cluster: Callable[..., Node]) -> None:
    """A client id is one connection cluster-wide: connecting on B closes the connection on A
    with 0x8E Session taken over [MQTT-3.1.4-3]."""
    a, b = cluster("a"), cluster("b")
    reasons: queue.Queue[int] = queue.Queue()
    first = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="device-7", protocol=mqtt.MQTTv5)
    first.on_disconnect = lambda _c, _u, _f, rc, _p: reasons.put(rc.value)
    connected: queue.Queue[int] = queue.Queue()
    first.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc.value)
    first.connect("127.0.0.1", a.port)
    first.loop_start()
    assert connected.get(timeout=5) == 0
    time.sleep(0.3)  # its claim of the client id reaches Redis (written within a loop turn)
    second = PahoClient(b.port, MQTTv5, client_id="device-7")
    assert reasons.get(timeout=10) == 0x8E
    first.loop_stop()
    second.close()


def test_cluster_node_killed_wills_published(cluster: Callable[..., Node]) -> None:
    """kill -9 of node A: a surviving node publishes the wills of A's clients within 5 s
    [MQTT-3.1.2-8], and a will with a Will Delay Interval only after it [MQTT-3.1.3-9]."""
    a, b = cluster("a"), cluster("b")
    watcher = PahoClient(b.port, MQTTv5, client_id="watcher")
    watcher.subscribe("status/#", 1)
    devices = []
    for i, delay in ((1, 0), (2, 0), (3, 3)):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev{i}", protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.WILLMESSAGE)
        if delay:
            props.WillDelayInterval = delay
        client.will_set(f"status/dev{i}", b"offline", qos=1, retain=False, properties=props)
        client.connect("127.0.0.1", a.port, properties=_session_props())
        client.loop_start()
        devices.append(client)
    pub = PahoClient(a.port, MQTTv5, client_id="pub")
    wait_until_routed(pub, watcher, "status/probe")
    pub.close()
    time.sleep(0.5)  # the wills are in Redis within a loop turn of CONNECT
    killed_at = time.monotonic()
    a.kill()
    got = watcher.receive(2, timeout=10)
    elapsed = time.monotonic() - killed_at
    assert sorted(m.topic for m in got) == ["status/dev1", "status/dev2"]
    assert elapsed < 5.0, f"wills took {elapsed:.1f}s"
    delayed = watcher.receive(1, timeout=10)
    assert delayed[0].topic == "status/dev3"
    assert time.monotonic() - killed_at >= 3.0
    for client in devices:
        client.loop_stop()
    watcher.close()


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 60
    return props


def test_cluster_api_lists_nodes_and_death(cluster: Callable[..., Node]) -> None:
    """``GET /api/v1/cluster`` lists the nodes; a killed node leaves the list once reaped."""
    api = free_port()
    a = cluster("a", "--api-port", str(api))
    b = cluster("b")
    deadline = time.monotonic() + 30  # (generous: a loaded machine)
    while True:
        status = _cluster_status(a, api)
        names = {n["name"]: n for n in status["nodes"]}
        if "b" in names:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["enabled"] is True and status["node"] == "a" and status["connected"] is True
    assert names["a"]["self"] is True and names["b"]["state"] == "alive"
    PahoClient(b.port, MQTTv5, client_id="counted")  # one connection on B, counted in the totals
    deadline = time.monotonic() + 30  # (generous: a loaded machine)
    while _cluster_status(a, api)["totals"]["connections"] < 1:
        assert time.monotonic() < deadline, _cluster_status(a, api)
        time.sleep(0.2)
    assert "redis_version" in status and json.dumps(status)
    b.kill()
    deadline = time.monotonic() + 30  # (generous: a loaded machine)
    while "b" in {n["name"] for n in _cluster_status(a, api)["nodes"]}:
        assert time.monotonic() < deadline, "a dead node stays listed"
        time.sleep(0.2)


def test_cluster_unreachable_redis_stops_start_up(tmp_path: Path) -> None:
    """A Redis that cannot be reached stops start-up with a message naming ``cluster_url``."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [*SERVE, "--cluster-url", dead],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "cluster_url" in result.stderr and "cannot reach Redis" in result.stderr, result.stderr


def test_cluster_bad_url_names_the_key(tmp_path: Path) -> None:
    """A URL that is not Redis's stops start-up naming the setting, as flag and as variable."""
    serve = [sys.executable, "-m", "wrenmq", "serve", "--port", "0"]
    result = subprocess.run([*serve, "--cluster-url", "http://x"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "--cluster-url" in result.stderr, result.stderr
    env = clean_env(WRENMQ_CLUSTER_URL="http://x")
    result = subprocess.run(serve, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode != 0 and "WRENMQ_CLUSTER_URL" in result.stderr, result.stderr


def test_cluster_node_name_in_use_is_refused(
    cluster: Callable[..., Node], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two running nodes may not share a name (their routes and inboxes would mix)."""
    cluster("a")
    result = subprocess.run(
        [*SERVE, "--cluster-url", redis_server.url, "--node-name", "a"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "node_name" in result.stderr, result.stderr


class Persistent:
    """A paho MQTT 5 client with a persistent session (clean start off, expiry 300 s)."""

    def __init__(self, port: int, client_id: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda _c, _u, flags, rc, _p: self.events.put(
            ("connack", (rc.value, flags.session_present))
        )
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.events.put(("disconnect", rc.value))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.events.put(("suback", rcs))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.session_present = self.connect(port)

    def connect(self, port: int) -> bool:
        """Connect (again: paho keeps its QoS 2 state for the session); returns Session Present."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        while True:
            kind, value = self.events.get(timeout=20)
            if kind == "connack":
                rc, present = value
                assert rc == 0, rc
                return bool(present)

    def subscribe(self, topic: str, qos: int) -> None:
        self.client.subscribe(topic, qos)
        kind, _ = self.events.get(timeout=10)
        assert kind == "suback"

    def take(self, count: int, timeout: float = 15.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"got {len(got)} of {count}: {[m.payload for m in got]}"
            got.append(self.messages.get(timeout=remaining))
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Go away without DISCONNECT."""
        self.client.loop_stop()
        self.client.socket().close()  # type: ignore[union-attr]


def test_cluster_session_moves_to_another_node(cluster: Callable[..., Node]) -> None:
    """A persistent session taken up on another node: session present [MQTT-3.2.2-2], with the
    messages queued while it was offline, in order [MQTT-4.6.0-5]; a live connection on the first
    node is closed with 0x8E [MQTT-3.1.4-3]."""
    a, b = cluster("a"), cluster("b")
    first = Persistent(a.port, "mover")
    assert not first.session_present
    first.subscribe("orders/#", 2)
    pub = PahoClient(b.port, MQTTv5, client_id="pub")
    watcher = PahoClient(a.port, MQTTv5, client_id="watch")
    watcher.subscribe("orders/#", 1)
    wait_until_routed(pub, watcher, "orders/probe")
    first.take(first.messages.qsize())  # (probes)
    first.close()
    for i in range(10):
        pub.publish("orders/new", f"o{i}".encode(), qos=1 if i % 2 else 2)
    watcher.receive(10)  # all of them routed by now (a sentinel for the queue on A)
    moved = Persistent(b.port, "mover")
    assert moved.session_present
    got = [m.payload.decode() for m in moved.take(10)]
    # (paho hands a QoS 2 message to the application at PUBREL, so order shows per QoS)
    assert [x for x in got if int(x[1:]) % 2] == [f"o{i}" for i in range(1, 10, 2)], got
    assert [x for x in got if not int(x[1:]) % 2] == [f"o{i}" for i in range(0, 10, 2)], got
    # now live on B: connecting on A takes it back, closing B's connection with 0x8E
    back = Persistent(a.port, "mover")
    assert back.session_present
    kind, code = moved.events.get(timeout=10)
    assert (kind, code) == ("disconnect", 0x8E)
    pub.publish("orders/after", b"after", qos=1)
    assert back.take(1)[0].payload == b"after"
    back.close()
    pub.publish("orders/late", b"queued for the old session", qos=1)
    fresh = PahoClient(b.port, MQTTv5, client_id="mover")  # Clean Start on B discards it [MQTT-3.1.2-4]
    fresh.close()
    again = Persistent(a.port, "mover")
    assert not again.session_present
    again.client.publish("orders/end", b"sentinel", qos=1)  # not subscribed any more: nothing comes
    again.subscribe("orders/end", 1)
    again.client.publish("orders/end", b"sentinel", qos=1)
    assert again.take(1)[0].payload == b"sentinel"  # and not the old session's queued message
    again.close()
    pub.close()
    watcher.close()


def test_cluster_node_killed_sessions_continue(cluster: Callable[..., Node]) -> None:
    """kill -9 of the node holding persistent QoS 1 and QoS 2 subscribers while a publisher on
    another node keeps sending: they reconnect to a survivor and get every message whose PUBACK
    the publisher had [MQTT-4.3.2-2], [MQTT-4.3.3-2]; a QoS 2 message whose flow had completed is
    not delivered again [MQTT-4.3.3-3]."""
    a, b = cluster("a"), cluster("b")
    subs = {1: Persistent(a.port, "s1"), 2: Persistent(a.port, "s2")}
    subs[1].subscribe("feed/#", 1)
    subs[2].subscribe("feed/#", 2)
    acked: list[int] = []
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="feeder", protocol=mqtt.MQTTv5)
    pending: dict[int, int] = {}
    pub.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(pending.pop(mid))
    pub.connect("127.0.0.1", b.port)
    pub.loop_start()
    watcher = PahoClient(b.port, MQTTv5, client_id="w")
    watcher.subscribe("feed/#", 0)
    probe = PahoClient(b.port, MQTTv5, client_id="probe-pub")
    for client in subs.values():
        deadline = time.monotonic() + 30  # (generous: a loaded machine)
        while client.messages.empty():
            probe.publish("feed/probe", b"-1", qos=0)
            time.sleep(0.1)
            assert time.monotonic() < deadline
    time.sleep(0.3)
    before_kill = {qos: [int(m.payload) for m in client.take(client.messages.qsize())] for qos, client in subs.items()}
    n = 0

    def send(count: int) -> None:
        nonlocal n
        for _ in range(count):
            info = pub.publish("feed/x", str(n).encode(), qos=2)  # (QoS 1 to s1, QoS 2 to s2)
            pending[info.mid] = n
            n += 1
            time.sleep(0.005)

    send(100)
    a.kill()
    send(200)  # while A is dead and being reaped
    deadline = time.monotonic() + 30  # (generous: a loaded machine)
    while pending:
        assert time.monotonic() < deadline, "the publisher's messages were not all acknowledged"
        time.sleep(0.05)
    got: dict[int, list[int]] = {}
    for qos, client in subs.items():
        client.client.loop_stop()  # (its connection to A is gone)
        # The same client reconnects to B (as paho's own reconnect would, keeping its QoS 2
        # state): it waits for A's sessions to be adopted, then takes its own over.
        assert client.connect(b.port)
        client.client.publish("feed/end", f"end{qos}".encode(), qos=2)  # (queued after the rest, same flow)
        payloads = []
        while True:
            message = client.take(1)[0]
            if message.payload == f"end{qos}".encode():
                break
            if not message.payload.startswith(b"end"):  # (the other subscriber's sentinel)
                payloads.append(int(message.payload))
        got[qos] = before_kill[qos] + payloads
        client.close()
    for qos in (1, 2):
        missing = sorted(set(acked) - set(got[qos]))
        assert not missing, f"QoS {qos} subscriber lost acknowledged messages: {missing[:20]}"
    dupes = [x for x in got[2] if x >= 0 and got[2].count(x) > 1]
    assert not dupes, f"QoS 2 delivered again: {sorted(set(dupes))[:20]}"
    pub.loop_stop()
    watcher.close()
    probe.close()


def test_cluster_redis_restart_loses_no_acknowledged_message(
    cluster: Callable[..., Node], redis_server: RedisServer
) -> None:
    """Redis restarted empty under two nodes: local traffic goes on meanwhile; a QoS 1 message
    bound for the other node is acknowledged only once Redis took it (strict durability), and
    arrives; the nodes join again (routes, sessions) without being restarted [MQTT-4.3.2-2]."""
    a, b = cluster("a"), cluster("b")
    remote = Persistent(b.port, "remote-sub")
    remote.subscribe("cross/#", 1)
    local = PahoClient(a.port, MQTTv5, client_id="local-sub")
    local.subscribe("local/#", 1)
    pub = PahoClient(a.port, MQTTv5, client_id="pub")
    probe = PahoClient(b.port, MQTTv5, client_id="probe")
    probe.subscribe("cross/#", 0)
    wait_until_routed(pub, probe, "cross/probe")
    remote.take(remote.messages.qsize())
    redis_server.stop()
    pub.publish("local/1", b"during", qos=1)  # A's own subscriber: no wait for Redis
    assert local.receive(1)[0].payload == b"during"
    acked: list[int] = []
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sender", protocol=mqtt.MQTTv5)
    mids: dict[int, int] = {}
    sender.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mids[mid])
    sender.connect("127.0.0.1", a.port)
    sender.loop_start()
    for i in range(5):
        mids[sender.publish("cross/x", str(i).encode(), qos=1).mid] = i
    time.sleep(1.0)
    assert acked == []  # not acknowledged while Redis cannot take them
    redis_server.start()
    deadline = time.monotonic() + 20
    while len(acked) < 5:
        assert time.monotonic() < deadline, f"acknowledged after Redis came back: {acked}"
        time.sleep(0.05)
    got = sorted(int(m.payload) for m in remote.take(5, timeout=20) if m.payload != b"probe")
    assert got == [0, 1, 2, 3, 4]
    # the nodes are back in Redis: new routes reach the other node again
    late = PahoClient(b.port, MQTTv5, client_id="late")
    late.subscribe("later/#", 1)
    wait_until_routed(pub, late, "later/probe", timeout=20)
    sender.loop_stop()
    for client in (local, pub, probe, late):
        client.close()
    remote.close()


def test_cluster_through_redis_sentinel(tmp_path: Path, redis_server: RedisServer) -> None:
    """``redis+sentinel://host:port/db/master``: a node finds Redis through Sentinel and is one
    cluster with a node given Redis's address directly."""
    sentinel = RedisSentinel(tmp_path, redis_server).start()
    nodes = []
    try:
        for name, url in (("s", sentinel.url()), ("d", redis_server.url)):
            data = tmp_path / name
            data.mkdir()
            node = BrokerProcess(data, "--cluster-url", url, "--node-name", name).start()
            nodes.append(node)
            wait_for_log(node, "joined at")
        sub = PahoClient(nodes[1].port, MQTTv5, client_id="sub")
        sub.subscribe("via/#", 1)
        pub = PahoClient(nodes[0].port, MQTTv5, client_id="pub")
        wait_until_routed(pub, sub, "via/probe")
        pub.publish("via/sentinel", b"found", qos=1)
        assert sub.receive(1)[0].payload == b"found"
        pub.close()
        sub.close()
    finally:
        for node in nodes:
            node.kill()
        sentinel.stop()


def test_cluster_sentinel_url_checked() -> None:
    """A Sentinel URL without its master's name stops start-up naming the setting."""
    env = clean_env(WRENMQ_CLUSTER_URL="redis+sentinel://127.0.0.1:26379/0")
    result = subprocess.run(SERVE, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode != 0 and "WRENMQ_CLUSTER_URL" in result.stderr and "master" in result.stderr
