"""A Mosquitto bridge block's options carried over to wrenmq's external broker connection (issue 17;
Mosquitto's bridge options, not the MQTT specification), each checked against a real Mosquitto
where it has an effect there: ``keepalive_interval`` and ``cleansession`` (Mosquitto logs both),
``try_private`` (the bridge bit: "New bridge" or "New client"), ``bridge_certfile``/``bridge_keyfile``
(a listener that requires a client certificate), ``bridge_insecure`` (a certificate for another
host name) and ``bridge_outgoing_retain``."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from certs import CA, make_ca, make_cert
from mosquitto_fixture import MosquittoBroker, free_port
from wrenmq.config import load_config
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0


@pytest.fixture
def from_conf(tmp_path: Path) -> Iterator[Callable[[str], WrenmqServer]]:
    """Start wrenmq from a mosquitto.conf text (a TCP listener on a free port is added)."""
    servers: list[WrenmqServer] = []

    def start(text: str) -> WrenmqServer:
        conf = tmp_path / f"wrenmq-{len(servers)}.conf"
        conf.write_text(f"listener {free_port()} 127.0.0.1\nallow_anonymous true\n{text}")
        config = load_config(conf, env={}, overrides={"api_port": "off", "data_dir": tmp_path / f"d{len(servers)}"})
        servers.append(WrenmqServer(config).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def wait_for_log(mosquitto: MosquittoBroker, pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = re.search(pattern, mosquitto.log.read_text(errors="replace"))
        if found:
            return found
        assert time.monotonic() < deadline, f"{pattern!r} not in Mosquitto's log:\n{mosquitto.log.read_text()}"
        time.sleep(0.05)


def connection_state(server: WrenmqServer, name: str) -> dict[str, object]:
    async def read() -> dict[str, object]:
        assert server.connections is not None
        return server.connections.connections[name].status()

    return server.call(read())


def wait_state(server: WrenmqServer, name: str, until: Callable[[dict[str, object]], bool]) -> dict[str, object]:
    deadline = time.monotonic() + TIMEOUT
    while not until(state := connection_state(server, name)):
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return state


def test_bridge_keepalive_and_cleansession_reach_mosquitto(mosquitto: MosquittoBroker, from_conf) -> None:  # type: ignore[no-untyped-def]
    from_conf(
        f"connection kept\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid kept-bridge\n"
        "keepalive_interval 17\ncleansession true\ntopic k/# out 1\n"
    )
    wait_for_log(mosquitto, r"New bridge connected from \S+ as kept-bridge \(p2, c1, k17\)")
    from_conf(f"connection plain\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid plain-bridge\ntopic p/# out 1\n")
    # Mosquitto's defaults for a bridge: keep the session, 60 seconds.
    wait_for_log(mosquitto, r"New bridge connected from \S+ as plain-bridge \(p2, c0, k60\)")


def test_bridge_try_private_false_connects_without_the_bridge_bit(mosquitto: MosquittoBroker, from_conf) -> None:  # type: ignore[no-untyped-def]
    from_conf(
        f"connection public\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid public-bridge\n"
        "try_private false\ntopic x/# out 1\n"
    )
    wait_for_log(mosquitto, r"New client connected from \S+ as public-bridge \(p2, c0, k60\)")
    assert "New bridge connected" not in mosquitto.log.read_text()


@pytest.fixture
def tls_mosquitto(mosquitto_factory, tmp_path: Path) -> tuple[MosquittoBroker, int, CA]:  # type: ignore[no-untyped-def]
    """Mosquitto with a TLS listener that requires a client certificate from the test CA; its own
    certificate names another host (not 127.0.0.1). Returns it, the TLS port and the CA."""
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(ca, pki, "remote.example", server=True, sans=["remote.example"])
    mosquitto = mosquitto_factory()
    tls_port = free_port()
    # "user root": Mosquitto started as root stays root, able to read the test's directory.
    mosquitto.config.write_text(
        mosquitto.config.read_text()
        + f"user root\nlistener {tls_port} 127.0.0.1\ncafile {ca.cert}\ncertfile {cert}\nkeyfile {key}\n"
        + "require_certificate true\n"
    )
    mosquitto.restart()
    return mosquitto, tls_port, ca


def subscribe_at(mosquitto: MosquittoBroker, topic: str) -> tuple[paho.Client, queue.Queue[paho.MQTTMessage]]:
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed = queue.Queue[int]()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.on_message = lambda c, u, msg: got.put(msg)
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(mid)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    client.subscribe(topic, 1)
    subscribed.get(timeout=TIMEOUT)
    return client, got


def test_bridge_client_certificate_and_insecure(tls_mosquitto, from_conf, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mosquitto, tls_port, ca = tls_mosquitto
    pki = tmp_path / "client-pki"
    stranger_cert, stranger_key = make_cert(make_ca(tmp_path / "other"), pki, "stranger", server=False)
    bridge_cert, bridge_key = make_cert(ca, pki, "wrenmq-bridge", server=False)
    common = f"address 127.0.0.1:{tls_port}\nbridge_cafile {ca.cert}\ntopic tls/# out 1\n"
    mine = f"bridge_certfile {bridge_cert}\nbridge_keyfile {bridge_key}\n"
    # The remote's certificate names another host: refused, until bridge_insecure says not to check.
    checked = from_conf(f"connection checked\n{common}{mine}")
    insecure = from_conf(f"connection insecure\n{common}{mine}bridge_insecure true\n")
    # A certificate Mosquitto's CA did not sign: Mosquitto refuses the handshake.
    stranger = from_conf(
        f"connection stranger\n{common}bridge_certfile {stranger_cert}\nbridge_keyfile {stranger_key}\n"
        "bridge_insecure true\n"
    )
    subscriber, got = subscribe_at(mosquitto, "tls/#")
    try:
        wait_state(insecure, "insecure", lambda state: state["state"] == "connected")
        insecure.publish("tls/hello", b"over mutual TLS", qos=1)
        message = got.get(timeout=TIMEOUT)
        assert (message.topic, message.payload) == ("tls/hello", b"over mutual TLS")
        state = wait_state(checked, "checked", lambda state: bool(state["last_error"]))
        assert state["state"] != "connected" and "not valid for '127.0.0.1'" in str(state["last_error"]), state
        state = wait_state(stranger, "stranger", lambda state: bool(state["last_error"]))
        assert state["state"] != "connected", state
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()


def test_bridge_outgoing_retain_false_sends_no_retain_flag(mosquitto: MosquittoBroker, from_conf) -> None:  # type: ignore[no-untyped-def]
    servers = {
        name: from_conf(
            f"connection {name}\naddress 127.0.0.1:{mosquitto.port}\nbridge_outgoing_retain {flag}\n"
            f"topic # out 1 {name}/ {name}/\n"
        )
        for name, flag in (("kept", "true"), ("plain", "false"))
    }
    live, got = subscribe_at(mosquitto, "+/state")
    try:
        for name, server in servers.items():
            server.publish(f"{name}/state", b"on", qos=1, retain=True)
        assert {got.get(timeout=TIMEOUT).topic for _ in servers} == {"kept/state", "plain/state"}
    finally:
        live.disconnect()
        live.loop_stop()
    # A new subscriber gets what Mosquitto retained: the first one's only, then the sentinel.
    sentinel = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    sentinel.connect("127.0.0.1", mosquitto.port)
    sentinel.loop_start()
    sentinel.publish("zz/state", b"sentinel", qos=1, retain=True).wait_for_publish(TIMEOUT)
    sentinel.disconnect()
    sentinel.loop_stop()
    later, retained = subscribe_at(mosquitto, "+/state")
    try:
        seen = []
        while not seen or seen[-1] != "zz/state":
            seen.append(retained.get(timeout=TIMEOUT).topic)
        assert sorted(seen) == ["kept/state", "zz/state"]
    finally:
        later.disconnect()
        later.loop_stop()


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"certfile": "c.pem", "keyfile": "k.pem"}, "certfile needs a TLS url"),
        ({"tls_insecure": True}, "tls_insecure needs a TLS url"),
        ({"url": "mqtts://h", "certfile": "c.pem"}, "certfile and keyfile go together"),
        ({"keepalive": 70000}, "keepalive"),
    ],
)
def test_bridge_tls_and_session_settings_are_checked(tmp_path: Path, settings: dict[str, object], error: str) -> None:
    from wrenmq.config import ConfigError
    from wrenmq.pytest_plugin import server_config

    broker = {"name": "remote", "url": "mqtt://h", "bridges": ["topic a out"], **settings}
    with pytest.raises(ConfigError, match=error):
        server_config(tmp_path, brokers=[broker])
