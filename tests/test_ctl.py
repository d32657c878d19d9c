"""``wrenmq ctl`` against a real ``wrenmq serve`` subprocess: status, clients list/show/kick, sessions,
subscriptions, retained list/show/clear, and the errors an operator sees (no key, wrong key, 404,
broker down). Each command runs as its own process, as from a shell."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import wrenmq.mqtt.packets as p
from mqttraw import RawClient
from serveproc import clean_env, free_port, serve_command


class Ctl:
    """A broker with its API on, an API key, and ``run(*args)`` for ``wrenmq ctl``."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.api_port = free_port(), free_port()
        self.env = clean_env(WRENMQ_DATA_DIR=str(data_dir))
        self.log_path = data_dir / "serve.log"
        data_dir.mkdir(exist_ok=True)
        command = serve_command(self.port, data_dir, "--api-port", str(self.api_port), "--allow-anonymous")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        created = self.wrenmq("apikey", "create", "operator")
        assert created.returncode == 0, created.stderr
        self.env["WRENMQ_KEY"] = created.stdout.strip()
        self.url = f"http://127.0.0.1:{self.api_port}"
        for _ in range(100):  # until the API answers
            if self.run("health").returncode == 0:
                break
            assert self.proc.poll() is None, self.log_path.read_text()
        else:
            raise AssertionError(self.log_path.read_text())

    def wrenmq(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wrenmq", *args], env=env or self.env, capture_output=True, text=True, timeout=30
        )

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.wrenmq("ctl", "--url", self.url, *args, env=env)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> object:
        return json.loads(self.ok("--json", *args))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Ctl]:
    found = Ctl(tmp_path / "data")
    yield found
    found.stop()


@pytest.fixture
def clients(ctl: Ctl) -> Iterator[dict[str, RawClient]]:
    """``keeper``: a persistent MQTT 5 session subscribed to ctl/#; ``pub``: a 3.1.1 client that
    left three retained messages."""
    keeper = RawClient(ctl.port, 5)
    assert keeper.connect("keeper", clean=False, properties={0x11: 300}).reason_code == 0
    assert keeper.subscribe("ctl/#", qos=1).reason_codes == [1]
    pub = RawClient(ctl.port, 4)
    assert pub.connect("pub").reason_code == 0
    for topic in ("ctl/a", "ctl/b", "other/c"):
        pub.publish(topic, topic.encode(), qos=1, retain=True)
    assert [keeper.expect(p.Publish).topic for _ in range(2)] == ["ctl/a", "ctl/b"]
    yield {"keeper": keeper, "pub": pub}
    keeper.close()
    pub.close()


def test_ctl_status_reports_version_listeners_and_counts(ctl: Ctl, clients: dict[str, RawClient]) -> None:
    text = ctl.ok("status")
    assert text.startswith(f"wrenmq {ctl.json('status')['version']} running")  # type: ignore[index]
    assert f"tcp:{ctl.port}" in text
    assert "connections: 2" in text.splitlines() and "retained: 3" in text.splitlines()
    assert ctl.ok("ready").strip() == "ready"  # /readyz: listeners bound, store writable
    assert ctl.ok("health").strip() == "ok"


def test_ctl_clients_list_show_and_kick(ctl: Ctl, clients: dict[str, RawClient]) -> None:
    table = ctl.ok("clients", "list").splitlines()
    assert table[0].split()[:2] == ["client_id", "connected"]
    assert [line.split()[0] for line in table[1:]] == ["keeper", "pub"]
    shown = ctl.ok("clients", "show", "keeper")
    assert "subscription: ctl/# qos 1" in shown and "protocol: 5.0" in shown

    assert ctl.ok("clients", "kick", "keeper").strip() == "disconnected keeper"
    disconnect = clients["keeper"].expect(p.Disconnect)
    assert disconnect.reason_code == 0x98  # Administrative action
    assert [row["client_id"] for row in ctl.json("clients", "list")] == ["pub"]  # type: ignore[union-attr, index]
    offline = ctl.json("sessions", "list", "--offline")  # the session outlives the connection
    assert [(row["client_id"], row["subscription_count"]) for row in offline] == [("keeper", 1)]  # type: ignore[union-attr, index]


def test_ctl_sessions_list_and_discard(ctl: Ctl, clients: dict[str, RawClient]) -> None:
    clients["keeper"].close()  # a persistent session without a connection
    for _ in range(50):
        if ctl.json("sessions", "list", "--offline"):
            break
    rows = ctl.ok("sessions", "list").splitlines()
    assert [line.split()[:2] for line in rows[1:]] == [["keeper", "no"], ["pub", "yes"]]
    assert ctl.ok("sessions", "discard", "keeper").strip() == "ended the session of keeper"
    assert [row["client_id"] for row in ctl.json("sessions", "list")] == ["pub"]  # type: ignore[union-attr, index]
    assert ctl.json("subscriptions", "list") == []


def test_ctl_subscriptions_list(ctl: Ctl, clients: dict[str, RawClient]) -> None:
    rows = ctl.json("subscriptions", "list", "--client-id", "keeper")
    assert [(row["client_id"], row["topic_filter"], row["qos"]) for row in rows] == [("keeper", "ctl/#", 1)]  # type: ignore[union-attr, index]
    assert ctl.json("subscriptions", "list", "--prefix", "other/") == []
    # The options work after the action too, as an operator types them.
    after = json.loads(ctl.ok("subscriptions", "list", "--client-id", "keeper", "--json"))
    assert after == rows


def test_ctl_retained_list_show_and_clear(ctl: Ctl, clients: dict[str, RawClient]) -> None:
    listed = ctl.ok("retained", "list", "ctl/#").splitlines()
    assert [line.split()[0] for line in listed] == ["topic", "ctl/a", "ctl/b"]
    assert ctl.ok("retained", "show", "ctl/a") == "ctl/a\n"
    assert ctl.ok("retained", "clear", "--filter", "ctl/#").splitlines() == ["cleared ctl/a", "cleared ctl/b"]
    assert [row["topic"] for row in ctl.json("retained", "list")] == ["other/c"]  # type: ignore[union-attr, index]
    # Cleared as an empty retained PUBLISH would: a new subscriber gets only what is left.
    late = RawClient(ctl.port, 5)
    try:
        assert late.connect("late").reason_code == 0
        late.subscribe("#", qos=1)
        message = late.expect(p.Publish)
        assert (message.topic, message.retain) == ("other/c", True)
        late.publish("sentinel/x", b"", qos=0)
        assert late.expect(p.Publish).topic == "sentinel/x"  # nothing else came before it
    finally:
        late.close()
    assert ctl.ok("retained", "clear", "other/c").strip() == "cleared other/c"


def test_ctl_errors_name_the_cause(ctl: Ctl) -> None:
    missing = ctl.run("clients", "kick", "nobody")
    assert missing.returncode == 1 and "404 no client 'nobody'" in missing.stderr
    without_key = ctl.run("status", env={key: value for key, value in ctl.env.items() if key != "WRENMQ_KEY"})
    assert without_key.returncode == 1 and "an API key is needed" in without_key.stderr
    wrong_key = ctl.run("--key", "not-a-key", "status")
    assert wrong_key.returncode == 1 and wrong_key.stderr.startswith("wrenmq ctl: GET /api/v1/broker/status: 401")
    ctl.stop()
    down = ctl.run("status")
    assert down.returncode == 1 and f"cannot reach the API at {ctl.url}" in down.stderr


def test_ctl_finds_the_api_from_the_brokers_settings(ctl: Ctl, tmp_path: Path) -> None:
    """Without --url: api_host and api_port as wrenmq serve reads them (a config file here)."""
    config = tmp_path / "wrenmq.toml"
    config.write_text(f'api_host = "0.0.0.0"\napi_port = {ctl.api_port}\n')
    result = ctl.wrenmq("ctl", "--config", str(config), "status")
    assert result.returncode == 0 and f"tcp:{ctl.port}" in result.stdout, result.stderr
    off = ctl.wrenmq("ctl", "status", env={**ctl.env, "WRENMQ_API_PORT": "off"})
    assert off.returncode == 2 and "the API is off in this configuration (api_port)" in off.stderr
