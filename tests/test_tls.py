"""TLS listeners: certificates and keys, minimum version and ciphers, client certificates and the
certificate's CN as the username. wrenmq features (MQTT leaves TLS to the transport, section 4.2);
each test says what it checks. Real peers: paho-mqtt, mosquitto_pub/sub and Python's ssl module,
against a CA the tests make with ``cryptography`` (tests/certs.py).
"""

from __future__ import annotations

import queue
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from certs import CA, make_ca, make_cert
from hookrec import RecordUsernames, add_hook
from paho_sync import PROTOCOLS, MQTTv5, MQTTv311
from serveproc import serve_command
from wrenmq.config import ConfigError, load_config
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 5.0
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO_PUB is None or MOSQUITTO_SUB is None, reason="mosquitto_pub/mosquitto_sub are not installed"
)


@dataclass(frozen=True)
class Pki:
    ca: CA
    server: tuple[Path, Path]  # certfile, keyfile for 127.0.0.1 / localhost
    alice: tuple[Path, Path]  # client certificate from ca, CN alice
    mallory: tuple[Path, Path]  # client certificate from another CA, CN mallory


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    other = make_ca(directory / "other", "another CA")
    return Pki(
        ca,
        make_cert(ca, directory, "broker", server=True),
        make_cert(ca, directory, "alice", server=False),
        make_cert(other, directory / "other", "mallory", server=False),
    )


def tls_settings(pki: Pki, **more: Any) -> dict[str, Any]:
    return {"tls_port": 0, "certfile": pki.server[0], "keyfile": pki.server[1], **more}


# -- clients --------------------------------------------------------------------------------------


@pytest.fixture
def paho_tls() -> Iterator[Callable[..., tuple[mqtt.Client, queue.Queue[Any]]]]:
    """Connect paho clients over TLS (verifying the broker against the test CA); stopped after the test."""
    made: list[mqtt.Client] = []

    def connect(
        port: int,
        protocol: Any,
        ca: Path,
        cert: tuple[Path, Path] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> tuple[mqtt.Client, queue.Queue[Any]]:
        events: queue.Queue[Any] = queue.Queue()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        if username is not None:
            client.username_pw_set(username, password)
        client.tls_set(ca_certs=str(ca), certfile=cert and str(cert[0]), keyfile=cert and str(cert[1]))
        client.on_connect = lambda _c, _u, _f, rc, _p: events.put(("connack", rc))
        client.on_subscribe = lambda _c, _u, _mid, rcs, _p: events.put(("suback", rcs))
        client.on_message = lambda _c, _u, msg: events.put(("message", msg))
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        made.append(client)
        kind, rc = events.get(timeout=TIMEOUT)
        assert kind == "connack" and not rc.is_failure, f"paho could not connect over TLS: {rc}"
        return client, events

    yield connect
    for client in made:
        client.disconnect()
        client.loop_stop()


def tls_connect(
    port: int,
    ca: Path,
    cert: tuple[Path, Path] | None = None,
    maximum_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> bytes | Exception:
    """Handshake, send a 3.1.1 CONNECT and return the broker's first bytes (b"" if it closed), or the
    error that ended the attempt. With TLS 1.3 a refused client certificate surfaces after the
    client's handshake, on the first read: both count as refusal."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    if maximum_version is not None:
        context.maximum_version = maximum_version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(encode(p.Connect("tls-probe", 4, True, 30), 4))
            return sock.recv(16)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc


def refused(outcome: bytes | Exception) -> bool:
    return isinstance(outcome, ssl.SSLError | ConnectionError) or outcome == b""


# -- certificate and key --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["3.1.1", "5.0"])
def test_paho_publish_subscribe_over_tls(wrenmq_server_factory, pki, paho_tls, protocol):
    """A TLS listener serves MQTT like the TCP one: connect, subscribe, publish, receive (paho)."""
    server = wrenmq_server_factory(**tls_settings(pki))
    port = server.broker.listener_port("tls")
    client, events = paho_tls(port, protocol, pki.ca.cert)
    client.subscribe("secure/#", 1)
    kind, rcs = events.get(timeout=TIMEOUT)
    assert kind == "suback" and [rc.value for rc in rcs] == [1]
    client.publish("secure/greeting", b"over tls", qos=1)
    kind, message = events.get(timeout=TIMEOUT)
    assert kind == "message"
    assert (message.topic, message.payload, message.qos) == ("secure/greeting", b"over tls", 1)


def test_tls_and_tcp_listeners_share_one_broker(wrenmq_server_factory, pki, paho_tls):
    """A message published over TLS reaches a TCP subscriber: one broker behind both listeners."""
    server = wrenmq_server_factory(**tls_settings(pki))
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5)
    plain.on_message = lambda _c, _u, msg: received.put(msg)
    plain.on_subscribe = lambda *_: subscribed.put(True)
    plain.on_connect = lambda c, *_: c.subscribe("mixed/topic", 1)
    plain.connect("127.0.0.1", server.port)
    plain.loop_start()
    try:
        subscribed.get(timeout=TIMEOUT)
        secure, _ = paho_tls(server.broker.listener_port("tls"), MQTTv311, pki.ca.cert)
        secure.publish("mixed/topic", b"from tls", qos=1)
        assert received.get(timeout=TIMEOUT).payload == b"from tls"
    finally:
        plain.disconnect()
        plain.loop_stop()


def test_plain_mqtt_on_the_tls_port_gets_no_connack(wrenmq_server_factory, pki):
    """A client speaking plain MQTT to the TLS port is not served: the handshake fails, the socket closes."""
    server = wrenmq_server_factory(**tls_settings(pki))
    with socket.create_connection(("127.0.0.1", server.broker.listener_port("tls")), timeout=TIMEOUT) as sock:
        sock.sendall(encode(p.Connect("plain", 4, True, 30), 4))
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionError:
            pass
    assert not data.startswith(b"\x20\x02")  # at most a TLS alert, never a CONNACK


def test_silent_socket_on_tls_port_is_closed_after_connect_timeout(wrenmq_server_factory, pki):
    """A socket that never starts its TLS handshake is closed after connect_timeout, as on TCP."""
    server = wrenmq_server_factory(**tls_settings(pki, connect_timeout=0.5))
    with socket.create_connection(("127.0.0.1", server.broker.listener_port("tls")), timeout=TIMEOUT) as sock:
        started = time.monotonic()
        try:
            assert sock.recv(16) == b""
        except ConnectionError:
            pass
        assert time.monotonic() - started < 4  # the default handshake timeout would be 60 s


# -- mosquitto clients ----------------------------------------------------------------------------


def _subscriptions(server: WrenmqServer) -> int:
    async def count() -> int:
        return server.broker.router.count

    return server.call(count())


def _mosquitto_sub(server: WrenmqServer, *args: str) -> subprocess.Popen[str]:
    """Start mosquitto_sub (-C 1) and return once its subscription is in place."""
    assert MOSQUITTO_SUB is not None
    before = _subscriptions(server)
    proc = subprocess.Popen(
        [MOSQUITTO_SUB, "-h", "127.0.0.1", "-C", "1", "-W", "10", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and _subscriptions(server) <= before:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"mosquitto_sub did not subscribe: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def _mosquitto_pub(*args: str) -> None:
    assert MOSQUITTO_PUB is not None
    done = subprocess.run(
        [MOSQUITTO_PUB, "-h", "127.0.0.1", "-q", "1", *args], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr


@needs_mosquitto
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_sub_over_tls_receives_from_tcp(wrenmq_server_factory, pki, version):
    """mosquitto_sub --cafile on the TLS port gets what mosquitto_pub sends over TCP."""
    server = wrenmq_server_factory(**tls_settings(pki))
    tls_port = str(server.broker.listener_port("tls"))
    sub = _mosquitto_sub(server, "--cafile", str(pki.ca.cert), "-p", tls_port, "-V", version, "-t", "tls/in")
    _mosquitto_pub("-p", str(server.port), "-V", version, "-t", "tls/in", "-m", "hello over tls")
    out, err = sub.communicate(timeout=TIMEOUT + 6)
    assert sub.returncode == 0, err
    assert out.splitlines() == ["hello over tls"]


@needs_mosquitto
def test_mosquitto_pub_over_tls_reaches_tcp_subscriber(wrenmq_server_factory, pki):
    """mosquitto_pub --cafile publishes over TLS; a mosquitto_sub on TCP receives it."""
    server = wrenmq_server_factory(**tls_settings(pki))
    sub = _mosquitto_sub(server, "-p", str(server.port), "-t", "tls/out")
    tls_port = str(server.broker.listener_port("tls"))
    _mosquitto_pub("--cafile", str(pki.ca.cert), "-p", tls_port, "-t", "tls/out", "-m", "from tls")
    out, err = sub.communicate(timeout=TIMEOUT + 6)
    assert sub.returncode == 0, err
    assert out.splitlines() == ["from tls"]


@needs_mosquitto
def test_mosquitto_client_certificate_identity(wrenmq_server_factory, pki):
    """mosquitto_pub --cert/--key logs in on a require_certificate listener; without them it cannot."""
    server = wrenmq_server_factory(**tls_settings(pki, cafile=pki.ca.cert, require_certificate=True))
    tls_port = str(server.broker.listener_port("tls"))
    sub = _mosquitto_sub(server, "-p", str(server.port), "-t", "cert/topic")
    assert MOSQUITTO_PUB is not None
    base = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", tls_port, "--cafile", str(pki.ca.cert), "-t", "cert/topic"]
    without = subprocess.run([*base, "-m", "no cert"], capture_output=True, text=True, timeout=TIMEOUT)
    assert without.returncode != 0
    cert = ["--cert", str(pki.alice[0]), "--key", str(pki.alice[1])]
    _mosquitto_pub("-p", tls_port, "--cafile", str(pki.ca.cert), *cert, "-t", "cert/topic", "-m", "with cert")
    out, err = sub.communicate(timeout=TIMEOUT + 6)
    assert out.splitlines() == ["with cert"], err


# -- version and ciphers --------------------------------------------------------------------------


def test_tls_version_minimum_refuses_older_clients(wrenmq_server_factory, pki):
    """tls_version = "TLSv1.3" refuses a client that offers at most TLS 1.2; TLS 1.3 clients connect."""
    server = wrenmq_server_factory(**tls_settings(pki, tls_version="TLSv1.3"))
    port = server.broker.listener_port("tls")
    capped = tls_connect(port, pki.ca.cert, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert isinstance(capped, ssl.SSLError), capped
    assert tls_connect(port, pki.ca.cert) == CONNACK_ACCEPTED


def test_tls_1_2_clients_accepted_by_default(wrenmq_server_factory, pki):
    """The default minimum is TLS 1.2, so the client refused above is served here."""
    server = wrenmq_server_factory(**tls_settings(pki))
    port = server.broker.listener_port("tls")
    assert tls_connect(port, pki.ca.cert, maximum_version=ssl.TLSVersion.TLSv1_2) == CONNACK_ACCEPTED


def test_ciphers_restrict_tls_1_2_suites(wrenmq_server_factory, pki):
    """``ciphers`` limits the TLS 1.2 cipher suites: a client offering only another suite is refused."""
    server = wrenmq_server_factory(**tls_settings(pki, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    port = server.broker.listener_port("tls")
    tls12 = ssl.TLSVersion.TLSv1_2
    other = tls_connect(port, pki.ca.cert, maximum_version=tls12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
    assert isinstance(other, ssl.SSLError), other
    same = tls_connect(port, pki.ca.cert, maximum_version=tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    assert same == CONNACK_ACCEPTED


# -- client certificates --------------------------------------------------------------------------


def test_require_certificate(wrenmq_server_factory, pki):
    """require_certificate: no certificate or one from another CA fails the handshake; the CA's connects."""
    server = wrenmq_server_factory(**tls_settings(pki, cafile=pki.ca.cert, require_certificate=True))
    port = server.broker.listener_port("tls")
    without = tls_connect(port, pki.ca.cert)
    assert refused(without), without
    foreign = tls_connect(port, pki.ca.cert, cert=pki.mallory)
    assert refused(foreign), foreign
    assert tls_connect(port, pki.ca.cert, cert=pki.alice) == CONNACK_ACCEPTED
    # The same refusals hold when the handshake is TLS 1.2, where they happen inside it.
    tls12 = ssl.TLSVersion.TLSv1_2
    assert isinstance(tls_connect(port, pki.ca.cert, maximum_version=tls12), ssl.SSLError)
    assert tls_connect(port, pki.ca.cert, cert=pki.alice, maximum_version=tls12) == CONNACK_ACCEPTED


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["3.1.1", "5.0"])
def test_certificate_cn_becomes_username(wrenmq_server_factory, pki, paho_tls, protocol):
    """use_identity_as_username: the client certificate's CN replaces whatever username the client sent."""
    server = wrenmq_server_factory(
        **tls_settings(pki, cafile=pki.ca.cert, require_certificate=True, use_identity_as_username=True)
    )
    recorder = RecordUsernames()
    add_hook(server, recorder)
    port = server.broker.listener_port("tls")
    paho_tls(port, protocol, pki.ca.cert, cert=pki.alice)
    assert recorder.usernames.get(timeout=TIMEOUT) == "alice"
    # A client that claims another username with the same certificate is still alice.
    paho_tls(port, protocol, pki.ca.cert, cert=pki.alice, username="bob", password="whatever")
    assert recorder.usernames.get(timeout=TIMEOUT) == "alice"


def test_certificate_identity_wins_over_jwt(wrenmq_server_factory, pki, paho_tls):
    """With JWT configured too, a use_identity_as_username listener takes the certificate as the
    credential: the password (not a JWT here) is not checked, and the CN stays the username."""
    server = wrenmq_server_factory(
        **tls_settings(pki, cafile=pki.ca.cert, require_certificate=True, use_identity_as_username=True),
        jwt_secret="wrenmq-test-secret-that-is-long-enough-for-hs256",
    )
    recorder = RecordUsernames()
    add_hook(server, recorder)
    port = server.broker.listener_port("tls")
    paho_tls(port, MQTTv5, pki.ca.cert, cert=pki.alice, username="mallory", password="not-a-token")
    assert recorder.usernames.get(timeout=TIMEOUT) == "alice"
    # Without a certificate the handshake already fails: the token path is never the way around it.
    assert refused(tls_connect(port, pki.ca.cert))


def test_listener_table_with_certificate_identity(wrenmq_server_factory, pki):
    """A tls listener from ``listeners`` with its own cafile, require_certificate and
    use_identity_as_username: the CN of the client certificate is the username."""
    server = wrenmq_server_factory(
        listeners=[
            {
                "type": "tls",
                "port": 0,
                "certfile": pki.server[0],
                "keyfile": pki.server[1],
                "cafile": pki.ca.cert,
                "require_certificate": True,
                "use_identity_as_username": True,
            }
        ]
    )
    recorder = RecordUsernames()
    add_hook(server, recorder)
    assert tls_connect(server.broker.listener_port("tls"), pki.ca.cert, cert=pki.alice) == CONNACK_ACCEPTED
    assert recorder.usernames.get(timeout=TIMEOUT) == "alice"


# -- configuration --------------------------------------------------------------------------------


def test_tls_port_without_certificate_is_a_config_error():
    """tls_port (or wss_port) without certfile and keyfile stops start-up naming the keys."""
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"tls_port": 8883})
    message = str(info.value)
    assert "tls_port" in message and "certfile" in message and "keyfile" in message
    with pytest.raises(ConfigError, match="wss_port"):
        load_config(env={}, overrides={"wss_port": 8084, "keyfile": "/etc/wrenmq/key.pem"})


def test_listener_table_without_certificate_is_a_config_error(tmp_path):
    """A [[listeners]] table of type tls without certfile names the listener entry and the keys."""
    config_file = tmp_path / "wrenmq.toml"
    config_file.write_text('[[listeners]]\ntype = "tls"\nport = 8883\n')
    with pytest.raises(ConfigError) as info:
        load_config(config_file, env={})
    message = str(info.value)
    assert "listeners[0]" in message and "certfile" in message and "keyfile" in message


def test_bad_certfile_stops_serve(tmp_path, pki):
    """`wrenmq serve` with a certfile that does not exist exits 2 with a message naming certfile."""
    missing = tmp_path / "missing.pem"
    result = subprocess.run(
        serve_command(0, tmp_path, "--tls-port", "0", "--certfile", str(missing), "--keyfile", str(pki.server[1])),
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert result.returncode == 2, result.stderr
    assert "certfile" in result.stderr and str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_tls_listener_from_toml_listeners_table(tmp_path, pki, paho_tls):
    """A tls listener declared in a [[listeners]] table of a TOML file serves paho over TLS."""
    config_file = tmp_path / "wrenmq.toml"
    config_file.write_text(
        f"""
port = 0
ws_port = "off"
storage = "memory"
sys_interval = 0
data_dir = "{tmp_path}"

[[listeners]]
type = "tls"
host = "127.0.0.1"
port = 0
name = "devices"
certfile = "{pki.server[0]}"
keyfile = "{pki.server[1]}"
tls_version = "TLSv1.3"
"""
    )
    server = WrenmqServer(load_config(config_file, env={}, overrides={"api_port": "off"})).start()
    try:
        (listener,) = [found for found in server.broker.listeners if found.type == "tls"]
        assert listener.name == "devices"
        client, events = paho_tls(listener.port, MQTTv5, pki.ca.cert)
        client.subscribe("toml/#", 0)
        assert events.get(timeout=TIMEOUT)[0] == "suback"
        client.publish("toml/x", b"listener table")
        kind, message = events.get(timeout=TIMEOUT)
        assert kind == "message" and message.payload == b"listener table"
    finally:
        server.stop()
