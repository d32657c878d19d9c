"""``wrenmq serve --workers N`` (a wrenmq feature, no MQTT statement): worker processes sharing the
listeners with SO_REUSEPORT, each a node of the cluster on a real ``redis-server``, supervised by the
parent. Clients are paho-mqtt; what each worker holds is read from ``GET /api/v1/cluster``.

The kernel spreads connections over the workers by a hash of their ports: with 16 connections the
chance that all land on one of two workers is 2**-15, so "both workers got some" is a safe check.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, PahoClient
from redisproc import RedisServer, have_redis
from serveproc import BrokerProcess, clean_env, free_port, serve_command

CLIENTS = 16


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_workers_need_cluster_url(tmp_path: Path) -> None:
    """Without cluster_url, --workers stops start-up with exit status 2 and says what to set."""
    result = subprocess.run(
        serve_command(free_port(), tmp_path, "--workers", "2"), env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "--workers needs cluster_url" in result.stderr
    assert not (tmp_path / "w1").exists()  # nothing started


def test_workers_refuse_port_zero(tmp_path: Path) -> None:
    """Port 0 would give each worker a port of its own: refused, naming the listener."""
    cmd = serve_command(0, tmp_path, "--workers", "2", "--cluster-url", "redis://127.0.0.1:1/0")
    result = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "port 0 would give each worker a port of its own" in result.stderr


def test_workers_refuse_a_unix_socket_listener(tmp_path: Path) -> None:
    """SO_REUSEPORT is for TCP: a Unix socket listener cannot be shared, and start-up says so."""
    config = tmp_path / "wrenmq.toml"
    config.write_text(f'[[listeners]]\ntype = "unix"\nsocket = "{tmp_path / "mqtt.sock"}"\n')
    cmd = serve_command(free_port(), tmp_path, "--workers", "2", "--cluster-url", "redis://127.0.0.1:1/0")
    result = subprocess.run([*cmd, "--config", str(config)], env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "a Unix socket cannot be shared by worker processes" in result.stderr
    assert not (tmp_path / "mqtt.sock").exists()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _arg(pid: int, flag: str) -> str:
    """The last value of ``flag`` on process ``pid``'s command line (the one argparse takes)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return args[len(args) - args[::-1].index(flag)]


def _node_name(pid: int) -> str:
    return _arg(pid, "--node-name")


def _wait(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def _api_key(data_dir: Path) -> str:
    cmd = [sys.executable, "-m", "wrenmq", "apikey", "--data-dir", str(data_dir), "create", "workers-test"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()


def _nodes(api_port: int, key: str) -> dict[str, dict[str, Any]]:
    """The cluster's nodes as the worker that answers sees them."""
    try:
        response = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/cluster", headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
    except httpx.HTTPError:
        return {}
    response.raise_for_status()
    return {node["name"]: node for node in response.json()["nodes"]}


def _spread(port: int, api_port: int, key: str, names: list[str], tag: str) -> list[PahoClient]:
    """Connect ``CLIENTS`` subscribers to ``<tag>/#``; wait until a publish from another client
    reaches every one (the routes crossed Redis) and the heartbeats count them all; return them."""
    subs = [PahoClient(port, MQTTv5, client_id=f"{tag}-{i}") for i in range(CLIENTS)]
    for sub in subs:
        sub.subscribe(f"{tag}/#", 1)
    pub = PahoClient(port, MQTTv5, client_id=f"{tag}-pub")
    waiting = list(subs)
    deadline = time.monotonic() + 30
    while waiting:
        assert time.monotonic() < deadline, "probes did not reach every worker's subscribers"
        pub.publish(f"{tag}/probe", b"probe")
        time.sleep(0.1)
        waiting = [sub for sub in waiting if sub.messages.empty()]

    def counted() -> dict[str, dict[str, Any]] | None:
        nodes = _nodes(api_port, key)
        mine = [nodes.get(name, {}) for name in names]
        if all(n.get("state") == "alive" for n in mine) and sum(n.get("connections") or 0 for n in mine) == CLIENTS + 1:
            return nodes
        return None

    nodes = _wait(counted, "the heartbeats to count every connection")
    assert all(nodes[name]["connections"] > 0 for name in names), {n: nodes[n]["connections"] for n in names}
    forwarded = sum(nodes[name]["forwarded"] for name in names)
    pub.publish(f"{tag}/real", b"hello", qos=1)
    for sub in subs:  # every subscriber, on either worker, gets it: it crossed from one to the other
        while (message := sub.messages.get(timeout=10)).payload == b"probe":
            pass
        assert (message.topic, message.payload, message.qos) == (f"{tag}/real", b"hello", 1)

    def crossed() -> bool:
        nodes = _nodes(api_port, key)
        return all(name in nodes for name in names) and sum(nodes[name]["forwarded"] for name in names) > forwarded

    _wait(crossed, "the heartbeats to count the forward")
    return [*subs, pub]


def _start(node: BrokerProcess) -> None:
    """The supervisor, until every worker is ready: workers start one after another, each taking
    seconds on a busy machine, longer than BrokerProcess.start waits for a first listener."""
    command = serve_command(node.port, node.data_dir, "--log-level", "info", *node.args, storage=None)
    with open(node.log_path, "ab") as log:
        node.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=node.env)
    _wait(lambda: "2 workers ready" in node.log() or node.proc.poll() is not None, "both workers", timeout=90)
    assert node.proc.poll() is None, node.log()


@pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")
def test_workers_share_listeners_forward_restart_and_stop(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two workers: connections land on both, a message crosses between them, a killed worker is
    restarted (and serves again), SIGTERM stops the supervisor and every worker (status 0)."""
    api_port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # as systemd's NOTIFY_SOCKET
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    node = BrokerProcess(
        tmp_path, "--workers", "2", "--cluster-url", redis_server.url, "--node-name", "box",
        "--api-port", str(api_port), "--storage", "memory", "--ws-port", str(free_port()),
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
    )  # fmt: skip
    key = _api_key(tmp_path)  # the supervisor's data_dir: every worker reads this keys file
    _start(node)
    assert notify.recv(100) == b"READY=1"  # once, from the supervisor, when both workers are
    workers = _children(node.proc.pid)
    assert sorted(map(_node_name, workers)) == ["box-w1", "box-w2"]
    assert sorted(_arg(pid, "--data-dir") for pid in workers) == [str(tmp_path / "w1"), str(tmp_path / "w2")]

    clients = _spread(node.port, api_port, key, ["box-w1", "box-w2"], "spread")
    for client in clients:
        client.close()

    victim = workers[0]
    name = _node_name(victim)
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: f"worker {name} was killed by signal 9: restarting it" in node.log(), "the supervisor to notice")
    _wait(lambda: node.log().count(f"node {name} joined") == 2, f"{name} to rejoin", timeout=60)
    restarted = _wait(lambda: [p for p in _children(node.proc.pid) if p not in workers], "a new worker process")
    assert len(_children(node.proc.pid)) == 2 and _node_name(restarted[0]) == name
    clients = _spread(node.port, api_port, key, ["box-w1", "box-w2"], "again")  # the new one serves
    for client in clients:
        client.close()

    node.proc.send_signal(signal.SIGHUP)  # forwarded: each worker reloads its files
    _wait(lambda: node.log().count("reloading hooks' files") == 2, "both workers to reload")

    running = _children(node.proc.pid)
    node.stop()  # SIGTERM: asserts exit status 0
    assert notify.recv(100) == b"STOPPING=1"
    notify.close()
    for pid in running:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the supervisor"
    assert node.log().count("wrenmq stopped") == 2  # both running workers stopped cleanly (the killed run could not)


@pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")
def test_workers_first_start_failure_stops_all(tmp_path: Path, redis_server: RedisServer) -> None:
    """A worker that cannot start (its port taken by another program) is a deployment error: the
    supervisor stops and exits with the worker's status instead of restarting it forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = serve_command(port, tmp_path, "--workers", "2", "--cluster-url", redis_server.url)
        result = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "before it was ready: stopping every worker" in result.stderr
    assert "restarting" not in result.stderr
