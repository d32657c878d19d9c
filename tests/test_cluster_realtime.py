"""The realtime platform across cluster nodes (issue 16): Socket.IO, the browser client and
realtime resume, with two nodes sharing a real ``redis-server``.

The nodes here run in this process (``wrenmq_server_factory``: each on its own thread and event
loop, each a full ``Services`` with its own API), so a test can also call a node's Socket.IO
server directly; they talk to each other only through Redis, as separate machines would. The
clients are real: socket.io-client in Node.js, paho-mqtt, httpx, wrenmq-realtime.js in Chromium.
Routes travel through Redis asynchronously, so each test first waits for a probe to cross.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, PahoClient
from redisproc import RedisServer, have_redis
from serveproc import BrokerProcess, free_port
from wrenmq.pytest_plugin import WrenmqServer

pytestmark = pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
TIMEOUT = 15.0


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path).start()
    yield server.url
    server.stop()


@pytest.fixture
def nodes(redis_url: str, wrenmq_server_factory: Callable[..., WrenmqServer]) -> Callable[..., WrenmqServer]:
    """Start a cluster node named ``name`` in this process, with its API (and so realtime)."""

    def start(name: str, **overrides: Any) -> WrenmqServer:
        return wrenmq_server_factory(api_port=0, cluster_url=redis_url, node_name=name, **overrides)

    return start


def bridge(node: WrenmqServer) -> Any:
    assert node.api is not None
    return node.api.app.state.socketio


# -- socket.io-client in Node.js ---------------------------------------------------------------------

SIO_SCRIPT = """
const { io } = require("socket.io-client");
const [url, filter] = process.argv.slice(1);
const say = (data) => process.stdout.write(JSON.stringify(data) + "\\n");
const socket = io(url, { transports: ["websocket"], reconnection: false });
socket.on("welcome", async () => {
  say({ sid: socket.id });
  const answer = await socket.timeout(10000).emitWithAck("subscribe", { filters: [filter], qos: 1, retained: false });
  say({ subscribed: answer });
});
socket.on("message", (data, ack) => { say({ message: data }); if (ack) ack("ok"); });
socket.on("notice", (data) => say({ notice: data }));
socket.on("connect_error", (err) => say({ error: String(err) }));
socket.on("disconnect", (reason) => say({ disconnected: reason }));
process.stdin.on("end", () => { socket.close(); process.exit(0); });
process.stdin.resume();
"""


class SioNode:
    """socket.io-client in Node.js: what the server sends it, one JSON line each, in a queue."""

    def __init__(self, url: str, topic_filter: str) -> None:
        if shutil.which("node") is None or not (NODE_MODULES / "socket.io-client").exists():
            pytest.skip("node and the repository's node_modules (socket.io-client) are needed")
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
        self.process = subprocess.Popen(
            ["node", "-e", SIO_SCRIPT, url, topic_filter],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, key: str, timeout: float = TIMEOUT) -> Any:
        """The next line with ``key`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            assert "error" not in data, data
            if key in data:
                return data[key]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def probe_until(send: Callable[[], None], arrived: Callable[[float], bool], timeout: float = TIMEOUT) -> None:
    """Call ``send`` until ``arrived(wait)`` says something came (a route or a channel crossed)."""
    deadline = time.monotonic() + timeout
    while True:
        send()
        if arrived(0.25):
            return
        assert time.monotonic() < deadline, "no probe crossed the cluster"


def _got(client: SioNode, key: str, match: Callable[[Any], bool]) -> Callable[[float], bool]:
    def arrived(wait: float) -> bool:
        try:
            return match(client.next(key, wait))
        except queue.Empty:
            return False

    return arrived


def drain(client: SioNode, until: str) -> list[dict[str, Any]]:
    """The messages up to and including the one on topic ``until`` (the sentinel)."""
    found = []
    while True:
        message = client.next("message")
        found.append(message)
        if message["topic"] == until:
            return found


def test_cluster_socketio_client_gets_publish_from_another_node(nodes: Callable[..., WrenmqServer]) -> None:
    """Issue 16: a Socket.IO client (socket.io-client in Node.js) attached to node A receives what
    paho publishes on node B, at QoS 1, each message once, with B's message id."""
    a, b = nodes("a"), nodes("b")
    client = SioNode(a.api_url, "sio/#")
    publisher = PahoClient(b.port, MQTTv5, client_id="sio-pub")
    try:
        assert client.next("subscribed")["ok"]
        probe_until(lambda: publisher.publish("sio/probe", b"{}", qos=0), _got(client, "message", lambda m: True))
        time.sleep(0.3)  # (probes in flight land; the sentinel below ends what is counted)
        for i in range(20):
            publisher.publish(f"sio/{i % 2}", json.dumps({"n": i}).encode(), qos=1)
        publisher.publish("sio/end", b"{}", qos=1)
        got = [m for m in drain(client, "sio/end") if m["topic"] != "sio/probe"]
        assert [json.loads(m["payload"])["n"] for m in got[:-1]] == list(range(20))
        assert all(m["qos"] == 1 for m in got)
        assert len({m["message_id"] for m in got}) == 21
    finally:
        publisher.close()
        client.close()


def test_cluster_socketio_room_emit_reaches_a_socket_on_another_node(nodes: Callable[..., WrenmqServer]) -> None:
    """Issue 16: with a cluster, the Socket.IO server runs on python-socketio's Redis manager: an
    emit made on node B to a room (the topic filter a socket subscribed to) reaches the socket on
    node A, and a socket in no such room gets nothing (a sentinel emitted to it after says so); an
    emit to one socket of A and a disconnect of one made on B reach it too."""
    a, b = nodes("a"), nodes("b")
    member = SioNode(a.api_url, "rooms/#")
    other = SioNode(a.api_url, "elsewhere/#")
    try:
        member_sid, other_sid = member.next("sid"), other.next("sid")
        assert member.next("subscribed")["ok"] and other.next("subscribed")["ok"]
        probe_until(
            lambda: b.call(bridge(b).emit("notice", {"probe": True}, room="rooms/#")),
            _got(member, "notice", lambda data: data == {"probe": True}),
        )
        b.call(bridge(b).emit("notice", {"text": "to the room"}, room="rooms/#"))
        while (notice := member.next("notice")) == {"probe": True}:
            pass  # (probes still in flight)
        assert notice == {"text": "to the room"}
        b.call(bridge(b).emit("notice", {"text": "sentinel"}, room="elsewhere/#"))
        assert other.next("notice") == {"text": "sentinel"}  # the room emit before it never came
        b.call(bridge(b).emit("notice", {"text": "to you"}, to=other_sid))
        assert other.next("notice") == {"text": "to you"}
        b.call(bridge(b).sio.disconnect(member_sid))  # a socket of node A, disconnected from node B
        assert member.next("disconnected") == "io server disconnect"
    finally:
        member.close()
        other.close()


# -- wrenmq-realtime.js in Chromium -------------------------------------------------------------------

PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="/static/vendor/mqtt.min.js"></script>
<script src="/static/vendor/socket.io.min.js"></script>
<script src="/static/wrenmq-realtime.js"></script>
<script>
window.report = { numbers: [], transports: [], errors: [] };
window.start = function (options, filter) {
  const rt = WrenmqRealtime.connect(options);
  window.rt = rt;
  rt.on("status", (s) => { if (s.state === "connected") window.report.transports.push(s.transport); });
  rt.on("error", (e) => window.report.errors.push(String(e)));
  rt.subscribe(filter, (msg) => {
    if (msg.json && typeof msg.json.n === "number") window.report.numbers.push(msg.json.n);
  });
};
</script>
"""


def open_page(browser: Any, node: WrenmqServer, **options: Any) -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.route(node.api_url + "/test", lambda route: route.fulfill(body=PAGE, content_type="text/html"))
    page.goto(node.api_url + "/test")
    settings = {
        "url": node.api_url,
        "mqttUrl": f"ws://127.0.0.1:{free_port()}/mqtt",  # nothing listens: MQTT fails, the client falls back
        "backoffInitial": 200,
        "connectTimeout": 3000,
        "pollTimeout": 5,
        **options,
    }
    page.evaluate("([o, f]) => window.start(o, f)", [settings, "web/#"])
    return page


def test_cluster_browser_client_on_fallbacks_gets_publishes_from_another_node(
    nodes: Callable[..., WrenmqServer], browser: Any
) -> None:
    """Issue 16: wrenmq-realtime.js on node A, fallen back from MQTT (unreachable) to Socket.IO, and
    another on long polling only, both show each message paho publishes on node B exactly once."""
    a, b = nodes("a"), nodes("b")
    on_socketio = open_page(browser, a)
    on_polling = open_page(browser, a, transports=["polling"])
    publisher = PahoClient(b.port, MQTTv5, client_id="web-pub")
    try:
        for page, transport in ((on_socketio, "socketio"), (on_polling, "polling")):
            page.wait_for_function("(t) => window.report.transports.includes(t)", arg=transport, timeout=20_000)

        def probe() -> None:
            publisher.publish("web/probe", b'{"n": -1}', qos=0)

        def both(wait: float) -> bool:
            time.sleep(wait)
            return all(page.evaluate("() => window.report.numbers.includes(-1)") for page in (on_socketio, on_polling))

        probe_until(probe, both)
        for i in range(30):
            publisher.publish(f"web/{i % 3}", json.dumps({"n": i}).encode(), qos=1)
        for page in (on_socketio, on_polling):
            page.wait_for_function(
                "() => new Set(window.report.numbers.filter((n) => n >= 0)).size === 30", timeout=20_000
            )
            found = page.evaluate("() => window.report")
            numbers = [n for n in found["numbers"] if n >= 0]
            assert numbers == list(range(30)), numbers  # once each, in order
            assert not found["errors"], found["errors"]
        assert on_socketio.evaluate("() => window.rt.status.transport") == "socketio"
        assert on_polling.evaluate("() => window.rt.status.transport") == "polling"
    finally:
        publisher.close()
        for page in (on_socketio, on_polling):
            page.context.close()


# -- realtime resume on another node ------------------------------------------------------------------


class Switch:
    """A TCP load balancer in front of one node's API at a time: ``move(port)`` sends new
    connections to another node and cuts the open ones (as when a node goes out of the pool)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.links += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def move(self, port: int) -> None:
        self.target = port
        with self.lock:
            links, self.links = self.links, []
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        self.move(self.target)


RT_SCRIPT = """
const WrenmqRealtime = require(process.argv[1]);
const options = JSON.parse(process.argv[2]);
const say = (data) => process.stdout.write(JSON.stringify(data) + "\\n");
const rt = WrenmqRealtime.connect(options);
rt.subscribe("resume/#", (msg) => say({ message: msg.json, transport: msg.transport }));
rt.on("status", (s) => { if (s.state === "connected") say({ connected: s.transport }); });
process.stdin.on("end", () => { rt.close(); setTimeout(() => process.exit(0), 200); });
process.stdin.resume();
"""


class RealtimeNode(SioNode):
    """wrenmq-realtime.js (this repository's file) in Node.js, printing what it shows."""

    def __init__(self, options: dict[str, Any]) -> None:
        if shutil.which("node") is None or not (NODE_MODULES / "socket.io-client").exists():
            pytest.skip("node and the repository's node_modules (socket.io-client) are needed")
        script = ROOT / "src" / "wrenmq" / "static" / "wrenmq-realtime.js"
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
        self.process = subprocess.Popen(
            ["node", "-e", RT_SCRIPT, str(script), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()


def journal_has(node: WrenmqServer, topic: str) -> bool:
    async def look() -> bool:
        assert node.services is not None and node.services.realtime is not None
        return any(message.topic == topic for _, _, message in node.services.realtime.journal.since(0))

    return node.call(look())


@pytest.mark.parametrize("transport", ["socketio", "polling"])
def test_cluster_realtime_resume_on_another_node_misses_nothing(
    nodes: Callable[..., WrenmqServer], transport: str
) -> None:
    """Issue 16: wrenmq-realtime.js reading through a load balancer from node A is moved to node B
    while paho keeps publishing on A; on B it replays what it missed from B's journal, which holds
    A's messages because the realtime readers' filters are held cluster-wide: every number shown
    exactly once (repeats near the cut carry the same message id and are dropped)."""
    a, b = nodes("a"), nodes("b")
    switch = Switch(a.api.port if a.api else 0)
    client = RealtimeNode(
        {
            "url": f"http://127.0.0.1:{switch.port}",
            "transports": [transport],
            "backoffInitial": 200,
            "backoffMax": 1000,
            "connectTimeout": 3000,
            "pollTimeout": 2,
        }
    )
    publisher = PahoClient(a.port, MQTTv5, client_id="resume-pub")
    sent = 0
    shown: list[int] = []

    def in_b_journal(wait: float) -> bool:
        if journal_has(b, "resume/probe"):
            return True
        time.sleep(wait)
        return False

    def publish(count: int, pause: float = 0.0) -> None:
        nonlocal sent
        for _ in range(count):
            publisher.publish("resume/x", json.dumps({"n": sent}).encode(), qos=1)
            sent += 1
            time.sleep(pause)

    try:
        assert client.next("connected") == transport
        # B's journal holds A's messages for the filter A's reader holds (announced through Redis).
        probe_until(lambda: publisher.publish("resume/probe", b'{"n": -1}', qos=0), in_b_journal)
        publish(20)
        while not shown or shown[-1] != sent - 1:
            shown.append(client.next("message")["n"])
        switch.move(b.api.port if b.api else 0)  # the client is cut off, and comes back on B...
        publish(40, 0.01)  # ...while A goes on publishing
        assert client.next("connected") == transport
        publisher.publish("resume/end", b'{"n": -2}', qos=1)
        while (n := client.next("message")["n"]) != -2:
            shown.append(n)
    finally:
        publisher.close()
        client.close()
        switch.close()
    numbers = [n for n in shown if n >= 0]
    assert sorted(numbers) == list(range(sent)), (len(numbers), sorted(set(range(sent)) - set(numbers)))


def test_cluster_realtime_journal_filters_held_while_read_then_for_journal_seconds(
    nodes: Callable[..., WrenmqServer],
) -> None:
    """Issue 16: a filter a poll session on A reads is held by B's journal (so A forwards its
    messages to B) while the session lives; once it is closed, B lets go of it after
    ``realtime_journal_seconds`` (1 s here; at B's next refresh) and A forwards nothing more."""
    a, b = nodes("a", realtime_journal_seconds=1), nodes("b", realtime_journal_seconds=1)

    def b_holds() -> bool:
        async def look() -> bool:
            assert b.services is not None and b.services.realtime is not None
            shared = b.services.realtime.shared
            return shared is not None and "gone/#" in shared.held

        return b.call(look())

    def a_forwards_to_b() -> bool:
        async def look() -> bool:
            assert a.services is not None and a.services.cluster is not None
            return "b" in a.services.cluster.routes.match("gone/x").nodes

        return a.call(look())

    def until(condition: Callable[[], bool], what: str) -> float:
        deadline = time.monotonic() + 40  # (held up to 11 s from the subscribe, dropped at a 5 s refresh)
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)
        return time.monotonic()

    with httpx.Client(base_url=a.api_url, timeout=10) as http:
        session = http.post("/api/v1/realtime/poll", json={"filters": ["gone/#"]}).json()["id"]
        until(lambda: b_holds() and a_forwards_to_b(), "B never held A's reader's filter")
        assert http.delete(f"/api/v1/realtime/poll/{session}").status_code == 204
        closed = time.monotonic()
        assert b_holds()  # (still: its messages may be asked for)
        let_go = until(lambda: not b_holds() and not a_forwards_to_b(), "B held the filter for ever")
    assert let_go - closed >= 1.0


def test_cluster_realtime_resume_after_its_node_is_killed(
    nodes: Callable[..., WrenmqServer], redis_url: str, tmp_path: Path
) -> None:
    """Issue 16: wrenmq-realtime.js on Socket.IO through a load balancer to node K, which is killed
    (kill -9) while paho keeps publishing on node C; the balancer sends it to node B, whose journal
    holds C's messages because K's reader's filter was held cluster-wide: every number is shown
    exactly once."""
    b, c = nodes("b"), nodes("c")
    api_port = free_port()
    doomed = BrokerProcess(tmp_path, "--cluster-url", redis_url, "--node-name", "k", "--api-port", str(api_port))
    doomed.start()
    switch = Switch(api_port)
    client = RealtimeNode(
        {"url": f"http://127.0.0.1:{switch.port}", "transports": ["socketio"], "backoffInitial": 200,
         "backoffMax": 1000, "connectTimeout": 3000}
    )  # fmt: skip
    publisher = PahoClient(c.port, MQTTv5, client_id="killed-pub")
    sent = 0
    shown: list[int] = []

    def publish(count: int, pause: float = 0.0) -> None:
        nonlocal sent
        for _ in range(count):
            publisher.publish("resume/x", json.dumps({"n": sent}).encode(), qos=1)
            sent += 1
            time.sleep(pause)

    def probed(wait: float) -> bool:
        try:
            got = client.next("message", wait)["n"] == -1
        except queue.Empty:
            return False
        return got and journal_has(b, "resume/probe")

    try:
        assert client.next("connected") == "socketio"
        # C forwards to K (its reader) and to B (the filter held for B's journal).
        probe_until(lambda: publisher.publish("resume/probe", b'{"n": -1}', qos=0), probed)
        publish(20)
        while not shown or shown[-1] != sent - 1:
            shown.append(client.next("message")["n"])
        doomed.kill()
        switch.move(b.api.port if b.api else 0)
        publish(40, 0.01)  # while K is dead (and then reaped), the client comes back on B
        assert client.next("connected") == "socketio"
        publisher.publish("resume/end", b'{"n": -2}', qos=1)
        while (n := client.next("message")["n"]) != -2:
            shown.append(n)
    finally:
        publisher.close()
        client.close()
        switch.close()
    numbers = [n for n in shown if n >= 0]
    assert sorted(numbers) == list(range(sent)), (len(numbers), sorted(set(range(sent)) - set(numbers)))
