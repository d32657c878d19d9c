"""Operating a cluster as the README says (issue 16, a wrenmq feature): the two-terminal recipe's
commands run as written (only the ports and directories changed) against a real ``redis-server``,
and contrib/cluster's compose file names what exists and runs: its nodes' command and config, its
Redis command, and its HAProxy config in front of them (Debian's ``haproxy``), with paho clients
spread over both nodes through it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
import yaml

import wrenmq.cluster
from paho_sync import MQTTv5, PahoClient
from redisproc import RedisServer, have_redis
from serveproc import BrokerProcess, clean_env, free_port
from wrenmq.cli import _build_parser
from wrenmq.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "contrib" / "cluster"
README = ROOT / "README.md"
HAPROXY = "/usr/sbin/haproxy"

needs_redis = pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")


def _env(**settings: str) -> dict[str, str]:
    """No WRENMQ_* of the developer's, and ``wrenmq`` on PATH as an installed package has it."""
    env = clean_env(**settings)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _wait(condition: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def _recipe() -> list[str]:
    """The command lines of the README's two-terminal recipe (comments dropped), in order."""
    text = README.read_text()
    start = text.index("<!-- cluster-recipe -->")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None
    lines = [line.split("  #")[0].rstrip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class Started:
    """Processes started by a test, killed at its end whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self, args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def started() -> Iterator[Started]:
    procs = Started()
    yield procs
    procs.close()


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


def _wait_for_log(proc: subprocess.Popen[bytes], log: Path, text: str) -> None:
    """Until ``text`` is in the process's log; its log if it exits first."""
    deadline = time.monotonic() + 20
    while not _log_has(log, text):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{text!r} not in {log.read_text()}"
        time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _ping_redis(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@needs_redis
def test_cluster_readme_recipe_runs_as_written(tmp_path: Path, started: Started) -> None:
    """Redis and two nodes from the recipe; a subscriber on b gets a publish on a; "phone" leaves
    a persistent session on node a, a message for it is queued through node b, and it takes the
    session over on node b with that message [MQTT-3.2.2-2]; the recipe's curl lists both nodes."""
    ports = {"6379": free_port(), "1883": free_port(), "1884": free_port(), "8080": free_port(), "8081": free_port()}

    def as_here(line: str) -> str:
        for written, port in ports.items():
            line = re.sub(rf"\b{written}\b", str(port), line)
        return line

    lines = _recipe()
    env = _env()
    logs: list[Path] = []
    pending: list[tuple[subprocess.Popen[bytes], str]] = []  # a background subscriber, its command
    last_pub: tuple[str, str] | None = None
    for line in map(as_here, lines):
        args = shlex.split(line.removesuffix("&").strip())
        if args[0] == "redis-server":
            started(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(lambda: _ping_redis(ports["6379"]), "the recipe's redis-server")
        elif args[:2] == ["wrenmq", "serve"]:
            log = tmp_path / f"node{len(logs)}.log"
            logs.append(log)
            node = started(args, cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            _wait_for_log(node, log, " joined at ")
        elif args[:2] == ["wrenmq", "sub"] and line.endswith("&"):
            sub = started(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            pending.append((sub, line))
        elif args[:2] == ["wrenmq", "pub"]:
            topic, payload = args[args.index("-t") + 1], args[args.index("-m") + 1]
            last_pub = (topic, payload)
            if not pending:  # for a subscription made earlier: once every node knows every route
                _wait(lambda: _routes_settled(tmp_path, ports, env), "the nodes' route replicas")
                subprocess.run(args, cwd=tmp_path, env=env, check=True, timeout=30)
                continue
            sub, sub_line = pending.pop()
            deadline = time.monotonic() + 20
            while sub.poll() is None:  # until the new subscription has crossed to the publisher's node
                subprocess.run(args, cwd=tmp_path, env=env, check=True, timeout=30)
                assert time.monotonic() < deadline, f"{sub_line!r} got nothing from {line!r}"
                time.sleep(0.2)
            out, err = sub.communicate()
            assert sub.returncode == 0, err
            assert out.decode().splitlines() == [f"{topic} {payload}"], (line, out, err)
        elif args[:2] == ["wrenmq", "sub"]:
            done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            if "-C" in args:  # the message queued for it, from its session
                assert last_pub is not None and done.stdout.splitlines() == [" ".join(last_pub)], done
        elif args[0] == "curl":
            answer = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert answer.returncode == 0, answer.stderr
            status = json.loads(answer.stdout)
            assert status["node"] == "a"
            assert {(n["name"], n["state"]) for n in status["nodes"]} == {("a", "alive"), ("b", "alive")}
        else:
            raise AssertionError(f"the recipe has a command this test does not know: {line}")
    assert len(logs) == 2 and not pending
    kinds = [shlex.split(line)[0:2] for line in lines]
    assert kinds.count(["wrenmq", "pub"]) == 2 and kinds.count(["wrenmq", "sub"]) == 3 and ["curl", "-H"] in kinds


def _routes_settled(workdir: Path, ports: dict[str, int], env: dict[str, str]) -> bool:
    """Whether each node's replica holds every other node's filters as Redis has them."""
    client = redis_py.Redis(port=ports["6379"])
    try:
        for name, api in (("a", ports["8080"]), ("b", ports["8081"])):
            key_file = workdir / f"test-key-{name}"
            if not key_file.exists():
                made = subprocess.run(
                    ["wrenmq", "apikey", "--data-dir", f"node-{name}", "create", "test"],
                    cwd=workdir, env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                key_file.write_text(made.stdout.strip())
            answer = httpx.get(
                f"http://127.0.0.1:{api}/api/v1/cluster",
                headers={"Authorization": f"Bearer {key_file.read_text()}"},
                timeout=5,
            )
            others = [n["name"] for n in answer.json()["nodes"] if not n["self"]]
            if answer.json()["routes"] != sum(client.scard(f"wrenmq:default:routes:{o}") for o in others):
                return False
        return True
    finally:
        client.close()


def _compose() -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / "compose.yaml").read_text())  # type: ignore[no-any-return]


def test_cluster_compose_names_what_exists() -> None:
    """The compose file parses; its wrenmq services run the repository's image with a `serve`
    command wrenmq's parser takes and a config file that loads; its Redis and HAProxy images are
    official ones; what it mounts is in contrib/cluster."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"redis", "api-keys", "wrenmq-a", "wrenmq-b", "lb"}
    assert services["redis"]["image"] == "redis:7" and services["redis"]["command"][0] == "redis-server"
    assert services["lb"]["image"] == "haproxy:2.8"
    assert services["api-keys"]["image"] == "busybox:1.36"
    assert (CLUSTER / services["wrenmq-a"]["build"] / "Dockerfile").is_file()
    names = set()
    for name in ("wrenmq-a", "wrenmq-b"):
        service = services[name]
        assert service["image"] == "wrenmq:latest"
        args = _build_parser().parse_args(service["command"])
        assert args.run.__name__ == "_run_serve"
        names.add(args.node_name)
        mounts = dict(volume.split(":")[:2] for volume in service["volumes"])  # source -> target
        assert mounts["./"] == "/etc/wrenmq" and service["environment"]["WRENMQ_CONFIG"] == "/etc/wrenmq/wrenmq.toml"
        assert mounts["api-keys"] == "/var/lib/wrenmq-keys"
        assert set(mounts) - {"./"} <= set(compose["volumes"])
    assert names == {"a", "b"}
    config = load_config(CLUSTER / "wrenmq.toml")
    assert config.cluster.url == "redis://redis:6379/0"
    assert str(config.api_keys_path).startswith("/var/lib/wrenmq-keys/")
    lb = services["lb"]
    assert {p.split(":")[0] for p in lb["ports"]} == {"1883", "8080"}
    assert lb["volumes"] == ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    assert (CLUSTER / "haproxy.cfg").is_file()


@needs_redis
def test_cluster_compose_redis_command_runs(tmp_path: Path, started: Started) -> None:
    """The compose file's Redis command, as written (plus a port and directory of the test's)."""
    port = free_port()
    command = [*_compose()["services"]["redis"]["command"], "--port", str(port), "--dir", str(tmp_path)]
    started(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: _ping_redis(port), "the compose file's redis-server")


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="needs Debian's haproxy")
@needs_redis
def test_cluster_compose_nodes_behind_haproxy(tmp_path: Path, started: Started) -> None:
    """The compose file's two nodes (its command, wrenmq.toml, the image's environment) and its
    HAProxy config, with addresses of the test's: MQTT clients through HAProxy land on both nodes
    (GET /api/v1/cluster through HAProxy counts them), a message crosses, and a key made with
    `wrenmq apikey` on one node works on both (the shared keys file)."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        _run_compose_behind_haproxy(tmp_path, started, redis)
    finally:
        redis.stop()


def _run_compose_behind_haproxy(tmp_path: Path, started: Started, redis: RedisServer) -> None:
    services = _compose()["services"]
    config = (CLUSTER / "wrenmq.toml").read_text()
    for written in ('"redis://redis:6379/0"', '"/var/lib/wrenmq-keys/api_keys.json"'):
        assert written in config
    keys = tmp_path / "keys" / "api_keys.json"
    config = config.replace('"redis://redis:6379/0"', f'"{redis.url}"')
    config = config.replace('"/var/lib/wrenmq-keys/api_keys.json"', f'"{keys}"')
    (tmp_path / "wrenmq.toml").write_text(config)
    mqtt = {"a": free_port(), "b": free_port()}
    api = {"a": free_port(), "b": free_port()}
    for node in ("a", "b"):
        service = services[f"wrenmq-{node}"]
        env = _env(
            WRENMQ_CONFIG=str(tmp_path / "wrenmq.toml"),
            WRENMQ_HOST="127.0.0.1",  # the image has 0.0.0.0
            WRENMQ_API_HOST="127.0.0.1",
            WRENMQ_DATA_DIR=str(tmp_path / node),
            WRENMQ_PORT=str(mqtt[node]),
            WRENMQ_API_PORT=str(api[node]),
            WRENMQ_WS_PORT="off",
        )
        log = tmp_path / f"{node}.log"
        proc = started(["wrenmq", *service["command"]], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        _wait_for_log(proc, log, f"node {node} joined")
    key_env = _env(WRENMQ_CONFIG=str(tmp_path / "wrenmq.toml"), WRENMQ_DATA_DIR=str(tmp_path / "a"))
    key = subprocess.run(
        ["wrenmq", "apikey", "create", "admin"], env=key_env, capture_output=True, text=True, check=True
    ).stdout.strip()

    lb_mqtt, lb_api = free_port(), free_port()
    cfg = (CLUSTER / "haproxy.cfg").read_text()
    for written, here in (
        ("bind :1883", f"bind 127.0.0.1:{lb_mqtt}"),
        ("bind :8080", f"bind 127.0.0.1:{lb_api}"),
        ("wrenmq-a:1883", f"127.0.0.1:{mqtt['a']}"),
        ("wrenmq-b:1883", f"127.0.0.1:{mqtt['b']}"),
        ("wrenmq-a:8080", f"127.0.0.1:{api['a']}"),
        ("wrenmq-b:8080", f"127.0.0.1:{api['b']}"),
    ):
        assert cfg.count(written) == 1, written
        cfg = cfg.replace(written, here)
    (tmp_path / "haproxy.cfg").write_text(cfg)
    check = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    started([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: _accepts(lb_mqtt) and _accepts(lb_api), "HAProxy to listen")

    def cluster(port: int) -> dict[str, Any] | None:
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/cluster", headers={"Authorization": f"Bearer {key}"}, timeout=5
            )
        except httpx.HTTPError:
            return None
        assert answer.status_code == 200, answer.text  # the key works on whichever node answers
        return answer.json()  # type: ignore[no-any-return]

    for port in api.values():  # the key made on node a's side works on node b too
        _wait(lambda port=port: cluster(port), f"the API on {port} with the key")

    subs = [PahoClient(lb_mqtt, MQTTv5, client_id=f"lb-{i}") for i in range(6)]
    for sub in subs:
        sub.subscribe("lb/#", 1)
    pub = PahoClient(lb_mqtt, MQTTv5, client_id="lb-pub")
    waiting = list(subs)
    deadline = time.monotonic() + 20
    while waiting:  # the routes crossed: a publish reaches the subscribers on both nodes
        assert time.monotonic() < deadline, "no probe reached every subscriber"
        pub.publish("lb/probe", b"probe")
        time.sleep(0.1)
        waiting = [sub for sub in waiting if sub.messages.empty()]

    def spread() -> dict[str, int] | None:
        status = cluster(lb_api)
        if status is None:
            return None
        counts = {n["name"]: n["connections"] for n in status["nodes"] if n["state"] == "alive"}
        return counts if sum(counts.values()) == 7 else None

    counts = _wait(spread, "both nodes' heartbeats to count the clients")
    assert counts["a"] > 0 and counts["b"] > 0, counts  # leastconn: 7 clients, 3 and 4
    for client in [*subs, pub]:
        client.close()


class _SlowStart:
    """A Cluster whose node keeps its loop busy for ``BLOCK`` seconds right after joining, as a
    node does that imports the API on a busy machine (a subclass made at run time: the cluster
    module is plain Python, and its class is what Services builds)."""

    BLOCK = 6.0

    @classmethod
    def of(cls, base: type) -> type:
        class SlowStart(base):  # type: ignore[misc, valid-type]
            async def start(self) -> None:
                await super().start()
                time.sleep(cls.BLOCK)  # the loop runs nothing meanwhile: no heartbeat

        return SlowStart


@needs_redis
def test_cluster_node_slow_to_start_is_not_taken_for_dead(
    tmp_path: Path, wrenmq_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose start-up holds its loop for 6 s after joining (before its first heartbeat) is
    not reaped by the node already running: its first heartbeat lasts START_TTL, not 3 s."""

    server = RedisServer(tmp_path)
    server.start()
    try:
        (tmp_path / "w").mkdir()
        watcher = BrokerProcess(tmp_path / "w", "--cluster-url", server.url, "--node-name", "watcher").start()
        monkeypatch.setattr(wrenmq.cluster, "Cluster", _SlowStart.of(wrenmq.cluster.Cluster))
        started_at = time.monotonic()
        wrenmq_server_factory(cluster_url=server.url, node_name="slow")  # returns once started: 6 s later
        assert time.monotonic() - started_at >= _SlowStart.BLOCK
        client = redis_py.Redis(port=server.port)
        assert client.hexists("wrenmq:default:nodes", "slow"), watcher.log()
        assert "node slow stopped heartbeating" not in watcher.log()
        client.close()
        watcher.kill()
    finally:
        server.stop()


@needs_redis
def test_cluster_redis_unreachable_local_traffic_goes_on_and_acks_wait(tmp_path: Path) -> None:
    """The README's partition promises, with Redis stopped (SIGSTOP: its connections hang, as
    across a lost network) for less than the heartbeat TTL: node A still delivers a local publish
    [MQTT-4.3.1-1]; a QoS 1 publish for a subscriber on node B is not acknowledged (strict
    durability, SQLite) until Redis is back [MQTT-4.3.2-2], and then reaches B."""
    server = RedisServer(tmp_path)
    server.start()
    nodes = []
    clients: list[PahoClient] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            nodes.append(BrokerProcess(tmp_path / name, "--cluster-url", server.url, "--node-name", name).start())
        a, b = nodes
        far = PahoClient(b.port, MQTTv5, client_id="far")
        near = PahoClient(a.port, MQTTv5, client_id="near")
        pub = PahoClient(a.port, MQTTv5, client_id="pub")
        clients += [far, near, pub]
        far.subscribe("far/#", 1)
        near.subscribe("near/#", 0)
        deadline = time.monotonic() + 20
        while far.messages.empty():  # the route crossed
            pub.publish("far/probe", b"probe")
            time.sleep(0.1)
            assert time.monotonic() < deadline
        time.sleep(0.3)  # probes in flight land; then forget them
        while not far.messages.empty():
            far.messages.get_nowait()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            pub.publish("near/one", b"local", qos=0)
            assert near.messages.get(timeout=5).payload == b"local"  # local traffic goes on
            held = pub.client.publish("far/x", b"crossing", qos=1)
            pub.publish("near/sentinel", b"after", qos=0)
            assert near.messages.get(timeout=5).payload == b"after"
            assert not held.is_published(), "PUBACK before Redis took the forward"
            assert time.monotonic() - stopped < 2.5, "too slow: the nodes' heartbeats would expire"
        finally:
            server.proc.send_signal(signal.SIGCONT)
        held.wait_for_publish(10)
        assert held.is_published()
        message = far.messages.get(timeout=10)
        assert (message.topic, message.payload) == ("far/x", b"crossing")
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.kill()
        server.stop()
