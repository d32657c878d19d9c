"""Start and stop the brokers under test as subprocesses, with equivalent settings.

Both listen on a free loopback port, keep everything in memory (Mosquitto's ``persistence false``;
wrenmq's ``storage = "memory"``), publish no $SYS topics, log only errors, never limit outbound
QoS 1/2 messages in flight below 65,535 per client and queue up to a million messages per offline
session, so that neither drops what the benchmark counts. Each keeps its own default for Nagle's
algorithm: Mosquitto's ``set_tcp_nodelay false`` (it writes each packet with its own ``send()``, and
Nagle coalesces them into fewer TCP segments), wrenmq's TCP_NODELAY (it coalesces its writes itself,
once per event-loop turn). ``BrokerOptions(mosquitto_nodelay=True)`` gives Mosquitto TCP_NODELAY,
its best latency and about half its throughput (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..mqtt import packets as p
from ..mqtt.codec import Parser, encode
from . import procfs

__all__ = [
    "BROKERS",
    "BrokerOptions",
    "BrokerProcess",
    "find_mosquitto",
    "free_port",
    "mosquitto_version",
    "start_broker",
]

QUEUE_LIMIT = 1_000_000
START_TIMEOUT = 15.0
BROKER_NOFILE = 120_000  # descriptors a broker may open, where the limit can be raised that far

# The wrenmq settings that mirror the Mosquitto configuration below, key for key.
WRENMQ_SETTINGS = {
    "host": "127.0.0.1",
    "ws_port": "off",  # one TCP listener, as Mosquitto's configuration has
    "api_port": "off",  # and no HTTP API
    "storage": "memory",  # = persistence false
    "sys_interval": 0.0,  # = sys_interval 0
    "log_level": "error",  # = log_type error
    "max_inflight_messages": 65535,  # = max_inflight_messages 0 (65535 is the protocol's ceiling)
    "receive_maximum": 65535,  # Mosquitto does not limit inbound QoS 1/2 from MQTT 3.1.1 clients
    "max_queued_messages": QUEUE_LIMIT,  # = max_queued_messages 1000000
    "max_queued_bytes": 0,  # = max_queued_bytes 0
}

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
sys_interval 0
log_dest stderr
log_type error
set_tcp_nodelay {nodelay}
max_inflight_messages 0
max_queued_messages {queue}
max_queued_bytes 0
max_connections -1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def mosquitto_version(path: str | None = None) -> str:
    path = path or find_mosquitto()
    if path is None:
        return "not installed"
    try:
        out = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


class BrokerProcess:
    """A broker running as a child process, pinned to its cores."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return procfs.cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return procfs.rss_kib(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _preexec(cpus: set[int], nice: int) -> Callable[[], None]:
    def setup() -> None:
        if nice:
            os.nice(nice)
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)
        procfs.raise_nofile_limit(BROKER_NOFILE)

    return setup


def _wrenmq_command(workdir: Path, port: int, options: BrokerOptions) -> list[str]:
    lines = [f"port = {port}", f'data_dir = "{workdir}"']
    for key, value in {**WRENMQ_SETTINGS, **options.wrenmq}.items():
        lines.append(f"{key} = {value!r}".replace("'", '"') if isinstance(value, str) else f"{key} = {value}")
    config = workdir / "wrenmq.toml"
    config.write_text("\n".join(lines) + "\n")
    return [sys.executable, "-m", "wrenmq", "serve", "--config", str(config)]


def _mosquitto_command(workdir: Path, port: int, options: BrokerOptions) -> list[str]:
    path = find_mosquitto()
    if path is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    config = workdir / "mosquitto.conf"
    nodelay = "true" if options.mosquitto_nodelay else "false"
    config.write_text(MOSQUITTO_CONF.format(port=port, queue=QUEUE_LIMIT, nodelay=nodelay))
    return [path, "-c", str(config)]


@dataclass(frozen=True)
class BrokerOptions:
    """Departures from the equivalent settings above, for the scenarios and experiments that need them."""

    mosquitto_nodelay: bool = False  # Mosquitto's own default: Nagle's algorithm on its sockets
    wrenmq: dict[str, Any] = field(default_factory=dict)  # more wrenmq settings (e.g. an API port)


BROKERS: dict[str, Callable[[Path, int, BrokerOptions], list[str]]] = {
    "wrenmq": _wrenmq_command,
    "mosquitto": _mosquitto_command,
}


def start_broker(
    name: str, workdir: Path, cpus: set[int], nice: int = 0, options: BrokerOptions | None = None
) -> BrokerProcess:
    """Start broker ``name`` on a free port and return once it answers an MQTT CONNECT."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o777)  # Mosquitto started as root drops to the mosquitto user
    port = free_port()
    command = BROKERS[name](workdir, port, options or BrokerOptions())
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENMQ_")}
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_preexec(cpus, nice),
        )
    broker = BrokerProcess(name, proc, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not broker.alive():
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{broker.log_tail()}")
        if _answers_connect(port):
            return broker
        if time.monotonic() > deadline:
            broker.stop()
            raise RuntimeError(f"{name} did not accept connections within {START_TIMEOUT}s:\n{broker.log_tail()}")
        time.sleep(0.05)


def _answers_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(encode(p.Connect("bench-probe", p.MQTT_3_1_1), p.MQTT_3_1_1))
            data = sock.recv(4)
            sock.sendall(b"\xe0\x00")
    except OSError:
        return False
    packets = Parser(protocol_level=p.MQTT_3_1_1).feed(data) if len(data) == 4 else []
    return bool(packets) and isinstance(packets[0], p.Connack) and packets[0].reason_code == 0
