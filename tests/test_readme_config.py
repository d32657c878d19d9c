"""The README's "Secure production config" works as documented (a wrenmq feature, no MQTT statement):
its TOML, ACL file, `wrenmq passwd` commands and JWT example are taken from README.md itself, with
only file paths, ports and bind addresses swapped for test ones, and a broker is started from them.
"""

from __future__ import annotations

import json
import queue
import re
import shlex
import time
from pathlib import Path
from typing import Any

import jwt
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from paho.mqtt.enums import CallbackAPIVersion

from certs import make_ca, make_cert
from mqttraw import RawClient
from wrenmq.cli import main as wrenmq_main
from wrenmq.config import load_config
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ReasonCode
from wrenmq.pytest_plugin import WrenmqServer

README = Path(__file__).resolve().parent.parent / "README.md"
TIMEOUT = 5.0


def block_after(marker: str, language: str = "") -> str:
    """The first fenced code block (```language) after ``<!-- marker`` in README.md."""
    text = README.read_text()
    start = text.index(f"<!-- {marker}")
    found = re.compile(rf"^```{language}\n(.*?)^```$", re.S | re.M).search(text, start)
    assert found is not None, f"no ```{language} block after {marker}"
    return found.group(1)


def replace_all(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"README block no longer contains {old!r}: update this test with it"
        text = text.replace(old, new)
    return text


def to_test_ports(toml: str) -> str:
    """Every port to 0 (free ports) and every public bind address to loopback."""
    toml = re.sub(r"^(port|ws_port) = \d+", r"\1 = 0", toml, flags=re.M)
    return toml.replace('host = "0.0.0.0"', 'host = "127.0.0.1"')


@pytest.fixture
def secure_server(tmp_path: Path) -> Any:
    """A broker started from the README's secure config, users created with its passwd commands."""
    ca = make_ca(tmp_path / "pki")
    certfile, keyfile = make_cert(ca, tmp_path / "pki", "mqtt.example.com", server=True)
    passwd, acl, data = tmp_path / "passwd", tmp_path / "acl", tmp_path / "data"
    acl.write_text(block_after("secure-acl"))
    paths = {"/etc/wrenmq/passwd": str(passwd), "/etc/wrenmq/acl": str(acl)}

    commands = [line for line in block_after("secure-config", "sh").splitlines() if line.startswith("wrenmq passwd")]
    assert any(" add " in line for line in commands)
    for line in commands:
        argv = shlex.split(line.split("#")[0])[1:]
        argv = [paths.get(arg, arg) for arg in argv]
        if argv[1] == "add":
            argv += ["-p", f"{argv[-1]}-password"]
        assert wrenmq_main(argv) == 0, line

    toml = replace_all(
        block_after("secure-config", "toml"),
        {
            '"/etc/wrenmq/tls/fullchain.pem"': json.dumps(str(certfile)),
            '"/etc/wrenmq/tls/privkey.pem"': json.dumps(str(keyfile)),
            '"/etc/wrenmq/passwd"': json.dumps(str(passwd)),
            '"/etc/wrenmq/acl"': json.dumps(str(acl)),
            '"/var/lib/wrenmq"': json.dumps(str(data)),
            'host = "0.0.0.0"': 'host = "0.0.0.0"',  # (asserts the public listeners are still there)
        },
    )
    config_file = tmp_path / "wrenmq.toml"
    config_file.write_text(to_test_ports(toml))
    server = WrenmqServer(load_config(config_file, env={}, overrides={"api_port": "off"})).start()
    server.ca = ca.cert  # type: ignore[attr-defined]
    yield server
    server.stop()


def raw_login(server: Any, username: str | None, password: str | None, version: int = 5) -> RawClient:
    client = RawClient(server.port, version)
    client.connect(username or "anon", username=username, password=password.encode() if password else None)
    return client


def test_secure_config_listeners(secure_server):
    """The documented config starts tcp and ws on loopback and tls and wss, all closed to anonymous clients."""
    broker = secure_server.broker
    assert sorted(listener.type for listener in broker.listeners) == ["tcp", "tls", "ws", "wss"]
    assert not any(listener.anonymous for listener in broker.listeners)
    assert {listener.name for listener in broker.listeners if listener.type in ("tls", "wss")} == {"mqtts", "wss"}


def test_secure_config_passwords_and_acl(secure_server):
    """The users from the README's passwd commands log in; anonymous and wrong passwords do not; the
    ACL lets a device publish under its own name only and keeps $SYS for admin."""
    with RawClient(secure_server.port, 5) as anonymous:
        assert anonymous.connect("anon").reason_code == ReasonCode.NOT_AUTHORIZED
    with RawClient(secure_server.port, 5) as wrong:
        wrong.send(p.Connect("w", 5, username="admin", password=b"nope"))
        assert wrong.expect(p.Connack).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD

    admin = RawClient(secure_server.port, 5)
    dashboard = RawClient(secure_server.port, 5)
    try:
        assert admin.connect("admin", username="admin", password=b"admin-password").reason_code == 0
        assert admin.subscribe("$SYS/#", 0).reason_codes == [0]
        assert dashboard.connect("dash", username="dashboard", password=b"dashboard-password").reason_code == 0
        assert dashboard.subscribe("$SYS/#", 0).reason_codes == [ReasonCode.NOT_AUTHORIZED]
        assert dashboard.subscribe("sensors/#", 1).reason_codes == [1]

        # sensor-1 over TLS, verifying the broker's certificate, as the README's mosquitto_pub line does.
        acks: queue.Queue[Any] = queue.Queue()
        sensor = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensor-1", protocol=mqtt.MQTTv5)
        sensor.username_pw_set("sensor-1", "sensor-1-password")
        sensor.tls_set(ca_certs=str(secure_server.ca))
        sensor.on_connect = lambda _c, _u, _f, rc, _p: acks.put(rc)
        sensor.connect("127.0.0.1", secure_server.broker.listener_port("tls"))
        sensor.loop_start()
        try:
            assert not acks.get(timeout=TIMEOUT).is_failure
            sensor.publish("sensors/sensor-2/temperature", b"spoofed", qos=1).wait_for_publish(TIMEOUT)
            sensor.publish("sensors/sensor-1/temperature", b"21.5", qos=1).wait_for_publish(TIMEOUT)
        finally:
            sensor.disconnect()
            sensor.loop_stop()
        delivered = dashboard.expect(p.Publish)
        assert (delivered.topic, delivered.payload) == ("sensors/sensor-1/temperature", b"21.5")
        dashboard.nothing()
    finally:
        admin.close()
        dashboard.close()


def test_readme_jwt_config_and_token(tmp_path):
    """The README's JWT block loads with an RSA key at its path, and its example token (with a fresh
    exp) logs in as sensor-1, restricted by its publish claim."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    toml = replace_all(block_after("jwt-config", "toml"), {'"/etc/wrenmq/jwt/issuer.pem"': json.dumps(str(pem))})
    config_file = tmp_path / "jwt.toml"
    config_file.write_text(f'port = 0\nws_port = "off"\nstorage = "memory"\nsys_interval = 0\n{toml}')
    server = WrenmqServer(load_config(config_file, env={}, overrides={"api_port": "off"})).start()
    try:
        claims = json.loads(block_after("jwt-config", "json")) | {"exp": int(time.time()) + 60}
        token = jwt.encode(claims, private, algorithm="RS256")
        client = RawClient(server.port, 5)
        try:
            assert client.connect("sensor", username="sensor-1", password=token.encode()).reason_code == 0
            assert client.publish("sensors/sensor-2/x", b"no", qos=1).reason_code == ReasonCode.NOT_AUTHORIZED
            assert client.subscribe("commands/sensor-1/reboot", 0).reason_codes == [0]
        finally:
            client.close()
    finally:
        server.stop()
