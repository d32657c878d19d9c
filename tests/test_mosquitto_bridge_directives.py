"""More of a Mosquitto bridge block's directives (mosquitto.conf(5)) carried over to wrenmq's external
broker connection, each checked against real Mosquittos (issue 17; Mosquitto's bridge options, not
the MQTT specification): ``address`` with several hosts and ``round_robin``,
``bridge_max_packet_size``, ``bridge_attempt_unsubscribe``, ``bridge_bind_address``, ``start_type
once``, and ``bridge_tls_version`` and ``bridge_alpn`` against a TLS server of the test's own."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

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


def connection_of(server: WrenmqServer, name: str):  # type: ignore[no-untyped-def]
    assert server.connections is not None
    return server.connections.connections[name]


def wait_until(what: Callable[[], bool], why: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def wait_for_log(mosquitto: MosquittoBroker, pattern: str) -> None:
    wait_until(lambda: re.search(pattern, mosquitto.log.read_text(errors="replace")) is not None, pattern)


def paho_client(port: int, client_id: str = "", clean: bool = True) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id, clean_session=clean, protocol=paho.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("round_robin", [False, True])
def test_bridge_addresses_fail_over_and_round_robin(mosquitto_factory, from_conf, round_robin: bool) -> None:  # type: ignore[no-untyped-def]
    """``address A B C``: A is down at start, so the bridge connects to B. With A back and the
    connection to B lost, it starts again from A; with ``round_robin true`` it goes on to C."""
    first, second, third = (mosquitto_factory() for _ in range(3))
    first.stop()
    server = from_conf(
        f"connection fo\naddress 127.0.0.1:{first.port} 127.0.0.1:{second.port} 127.0.0.1:{third.port}\n"
        f"round_robin {str(round_robin).lower()}\nrestart_timeout 1\ntopic fo/# out 1\n"
    )
    client = connection_of(server, "fo").client
    wait_until(lambda: client.connected, "no connection")
    assert client.port == second.port
    first.start()

    async def drop() -> None:  # the connection to B goes, with B still up
        assert client._conn is not None
        client._conn.abort()

    server.call(drop())
    wait_until(lambda: client.connected and client.port != second.port, "no new connection")
    assert client.port == (third.port if round_robin else first.port)
    wait_for_log(third if round_robin else first, r"New bridge connected from \S+ as \S+\.fo ")


def test_bridge_max_packet_size_drops_larger_messages(mosquitto: MosquittoBroker, from_conf) -> None:  # type: ignore[no-untyped-def]
    """``bridge_max_packet_size 100``: a bridged PUBLISH over 100 bytes is not sent (counted as
    dropped); smaller ones are."""
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    reader = paho_client(mosquitto.port)
    reader.on_message = lambda c, u, msg: got.put((msg.topic, msg.payload))
    reader.subscribe("m/#", 1)
    server = from_conf(
        f"connection mp\naddress 127.0.0.1:{mosquitto.port}\nbridge_max_packet_size 100\ntopic m/# out 1\n"
    )
    wait_until(lambda: connection_of(server, "mp").connected, "no connection")
    try:
        server.publish("m/small", b"x" * 50, qos=1)  # 2 + 2 + 7 + 2 + 50 bytes
        server.publish("m/large", b"x" * 95, qos=1)  # 108 bytes
        server.publish("m/sentinel", b"", qos=1)
        seen = []
        while not seen or seen[-1] != "m/sentinel":
            seen.append(got.get(timeout=TIMEOUT)[0])
        assert seen == ["m/small", "m/sentinel"]
        assert connection_of(server, "mp").status()["dropped"] == 1
    finally:
        close(reader)


@pytest.mark.parametrize("attempt", [True, False])
def test_bridge_attempt_unsubscribe_clears_a_stale_remote_subscription(
    mosquitto: MosquittoBroker, from_conf, attempt: bool
) -> None:  # type: ignore[no-untyped-def]
    """Mosquitto's default (``bridge_attempt_unsubscribe true``): on connecting, the bridge sends
    UNSUBSCRIBE for its out topics, so a session kept at the remote from when the topic was ``both``
    stops sending them; with ``false`` the stale subscription stays and the remote keeps sending."""
    client_id = f"stale-{attempt}"
    old = paho_client(mosquitto.port, client_id, clean=False)  # the session as an earlier `both` left it
    old.subscribe("u/#", 1)
    wait_for_log(mosquitto, rf"{client_id} 1 u/#")
    close(old)
    lines = f"bridge_attempt_unsubscribe {str(attempt).lower()}\n"
    server = from_conf(
        f"connection st\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid {client_id}\n{lines}topic u/# out 1\n"
    )
    wait_until(lambda: connection_of(server, "st").connected, "no connection")
    if attempt:
        wait_for_log(mosquitto, rf"Received UNSUBSCRIBE from {client_id}")
    got: queue.Queue[str] = queue.Queue()
    watcher = paho_client(mosquitto.port)
    watcher.on_message = lambda c, u, msg: got.put(msg.topic)
    watcher.subscribe("sentinel", 1)
    wait_for_log(mosquitto, r"Received SUBSCRIBE from (?!stale)")
    try:
        watcher.publish("u/y", b"from mosquitto", qos=1)
        watcher.publish("sentinel", b"", qos=1)
        assert got.get(timeout=TIMEOUT) == "sentinel"
        sent = re.search(rf"Sending PUBLISH to {client_id} \([^)]*'u/y'", mosquitto.log.read_text(errors="replace"))
        assert (sent is None) == attempt
        assert ("Received UNSUBSCRIBE from " + client_id in mosquitto.log.read_text()) == attempt
    finally:
        close(watcher)


def test_bridge_start_type_once_is_not_restarted(mosquitto: MosquittoBroker, from_conf) -> None:  # type: ignore[no-untyped-def]
    """``start_type once``: started with the broker, not restarted once the connection fails."""
    server = from_conf(
        f"connection once\naddress 127.0.0.1:{mosquitto.port}\nstart_type once\nrestart_timeout 1\ntopic o/# out 1\n"
    )
    connection = connection_of(server, "once")
    wait_until(lambda: connection.connected, "no connection")
    mosquitto.restart()
    wait_until(lambda: connection.state == "stopped", "still trying")
    assert connection.client.stats.connect_attempts == 1


@pytest.mark.parametrize("server_max", ["TLSv1_3", "TLSv1_2"])
def test_bridge_tls_version_and_alpn_reach_the_tls_handshake(tmp_path: Path, from_conf, server_max: str) -> None:  # type: ignore[no-untyped-def]
    """``bridge_tls_version tlsv1.3`` and ``bridge_alpn mqtt``: the handshake offers ALPN "mqtt"
    and TLS 1.3 at least, so a server that stops at TLS 1.2 is refused. (A TLS server of the
    test's own: it records the handshake and says no more.)"""
    import socket
    import ssl
    import threading

    from certs import make_ca, make_cert

    ca = make_ca(tmp_path / "pki")
    cert, key = make_cert(ca, tmp_path / "pki", "127.0.0.1", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.maximum_version = getattr(ssl.TLSVersion, server_max)
    context.set_alpn_protocols(["mqtt"])
    listener = socket.create_server(("127.0.0.1", 0))
    handshakes: queue.Queue[tuple[str | None, str | None] | str] = queue.Queue()

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    handshakes.put((tls.version(), tls.selected_alpn_protocol()))
            except (ssl.SSLError, OSError) as exc:
                handshakes.put(f"refused: {exc}")

    threading.Thread(target=serve, daemon=True).start()
    try:
        from_conf(
            f"connection tls\naddress 127.0.0.1:{listener.getsockname()[1]}\nbridge_cafile {ca.cert}\n"
            "bridge_tls_version tlsv1.3\nbridge_alpn mqtt\ntopic t/# out 1\n"
        )
        first = handshakes.get(timeout=TIMEOUT)
        if server_max == "TLSv1_3":
            assert first == ("TLSv1.3", "mqtt")
        else:
            assert isinstance(first, str) and "refused" in first
    finally:
        listener.close()


def test_bridge_bind_address_is_the_address_the_remote_sees(mosquitto: MosquittoBroker, from_conf) -> None:  # type: ignore[no-untyped-def]
    """``bridge_bind_address 127.0.0.2``: Mosquitto logs the bridge connecting from that address
    (any 127.0.0.0/8 address is the loopback's on Linux)."""
    from_conf(
        f"connection bound\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid bound-bridge\n"
        "bridge_bind_address 127.0.0.2\ntopic b/# out 1\n"
    )
    wait_for_log(mosquitto, r"New bridge connected from 127\.0\.0\.2:\d+ as bound-bridge ")


def test_bridge_without_round_robin_moves_back_to_the_first_address(
    mosquitto_factory, from_conf, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """``round_robin false`` (the default): connected to a later address, the bridge checks the first
    one every few seconds (here shortened) and moves back to it once it takes connections."""
    from wrenmq.services import brokers

    monkeypatch.setattr(brokers, "PRIMARY_RETRY", 0.2)
    first, second = mosquitto_factory(), mosquitto_factory()
    first.stop()
    server = from_conf(
        f"connection back\naddress 127.0.0.1:{first.port} 127.0.0.1:{second.port}\nrestart_timeout 1\ntopic b/# out 1\n"
    )
    client = connection_of(server, "back").client
    wait_until(lambda: client.connected, "no connection")
    assert client.port == second.port
    first.start()
    wait_until(lambda: client.connected and client.port == first.port, "not back on the first address")
    wait_for_log(first, r"New bridge connected from \S+ as \S+\.back ")
