"""Start-up is all or nothing (issue 14, item 16): ``wrenmq serve`` checks every setting that names a
file and binds every listener (MQTT and API) before it creates anything on disk or accepts anyone.

Each test runs ``wrenmq serve`` as a subprocess on the default SQLite storage, so a data directory
that exists afterwards is something a failed start left behind.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import make_ca, make_cert
from serveproc import clean_env, free_port, serve_command
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode

CONNECT = encode(p.Connect(client_id="early", keep_alive=30), 4)


def serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def knock_until_exit(port: int, proc: subprocess.Popen[str], replies: list[bytes]) -> None:
    """Connect to ``port`` and send CONNECT again and again until ``proc`` has exited, keeping every
    reply (the sentinel that ends the watch is the process's exit, not a silence window)."""
    while proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(CONNECT)
                reply = sock.recv(16)
        except OSError:  # refused (not accepting yet), reset (closed), or no answer
            time.sleep(0.002)  # pacing only: two cores are shared with the broker starting up
            continue
        if reply:
            replies.append(reply)


def test_api_port_taken_no_mqtt_client_is_served_and_no_files_are_left(tmp_path: Path, taken_port: int) -> None:
    port = free_port()
    data = tmp_path / "data"
    args = serve_command(port, data, "--api-port", str(taken_port), storage=None)
    replies: list[bytes] = []
    with subprocess.Popen(args, env=clean_env(), stderr=subprocess.PIPE, text=True) as proc:
        watcher = threading.Thread(target=knock_until_exit, args=(port, proc, replies))
        watcher.start()
        _, err = proc.communicate(timeout=30)
        watcher.join(10)
    assert replies == []  # no CONNACK, not even for a moment
    assert not data.exists()
    assert proc.returncode == 1, err
    assert f"API listener on 127.0.0.1:{taken_port}: " in err


def test_mqtt_port_taken_exits_1_naming_the_listener(tmp_path: Path, taken_port: int) -> None:
    result = serve(*serve_command(taken_port, tmp_path / "data", storage=None))
    assert result.returncode == 1
    assert f"listener tcp:{taken_port} on 127.0.0.1:{taken_port}: " in result.stderr
    assert not (tmp_path / "data").exists()


def test_second_listener_port_taken_leaves_nothing(tmp_path: Path, taken_port: int) -> None:
    result = serve(*serve_command(free_port(), tmp_path / "data", "--ws-port", str(taken_port), storage=None))
    assert result.returncode == 1
    assert f"listener ws:{taken_port} on 127.0.0.1:{taken_port}" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("certs")
    return make_cert(make_ca(directory), directory, "localhost", server=True)


MISSING = "/nonexistent/wrenmq-test"

# Settings read from files at start-up, each broken: (TOML, what the error must say).
FILE_ERRORS = {
    "password_file": (f'password_file = "{MISSING}/passwd"', f"password file {MISSING}/passwd: cannot read"),
    "acl_file": (f'acl_file = "{MISSING}/acl"', f"ACL file {MISSING}/acl: cannot read"),
    "jwt_public_key_file": (
        f'jwt_algorithms = ["RS256"]\njwt_public_key_file = "{MISSING}/key.pem"',
        f"jwt_public_key_file {MISSING}/key.pem: cannot read",
    ),
    "jwt_jwks_file": (f'jwt_jwks_file = "{MISSING}/jwks.json"', f"jwt_jwks_file {MISSING}/jwks.json: cannot read"),
    "certfile": (
        f'tls_port = 0\ncertfile = "{MISSING}/c.pem"\nkeyfile = "{MISSING}/k.pem"',
        f"listener tls:0: certfile {MISSING}/c.pem / keyfile {MISSING}/k.pem: cannot load",
    ),
    "cafile": (
        'tls_port = 0\ncertfile = "CERT"\nkeyfile = "KEY"\n' + f'cafile = "{MISSING}/ca.pem"',
        f"listener tls:0: cafile {MISSING}/ca.pem: cannot load",
    ),
    "ciphers": (
        'tls_port = 0\ncertfile = "CERT"\nkeyfile = "KEY"\nciphers = "NO-SUCH-CIPHER"',
        "listener tls:0: ciphers 'NO-SUCH-CIPHER': No cipher can be selected.",
    ),
    "api_certfile": (
        f'api_port = 0\napi_certfile = "{MISSING}/c.pem"\napi_keyfile = "{MISSING}/k.pem"',
        f"api_certfile {MISSING}/c.pem / api_keyfile {MISSING}/k.pem: cannot load",
    ),
    "brokers.cafile": (
        f'[[brokers]]\nname = "cloud"\nurl = "mqtts://127.0.0.1:1"\ncafile = "{MISSING}/ca.pem"',
        f"broker 'cloud': cafile {MISSING}/ca.pem: cannot load it",
    ),
}


def write_config(path: Path, data: Path, body: str, cert: tuple[Path, Path]) -> Path:
    body = body.replace('"CERT"', f'"{cert[0]}"').replace('"KEY"', f'"{cert[1]}"')
    head = ["port = 0", 'ws_port = "off"', "sys_interval = 0", f'data_dir = "{data}"']
    if "api_port" not in body:
        head.append('api_port = "off"')
    path.write_text("\n".join(head) + "\n" + body + "\n")  # tables ([[brokers]]) last
    return path


@pytest.mark.parametrize("key", list(FILE_ERRORS))
def test_setting_that_does_not_load_exits_2_and_creates_nothing(
    tmp_path: Path, server_cert: tuple[Path, Path], key: str
) -> None:
    body, message = FILE_ERRORS[key]
    config = write_config(tmp_path / "wrenmq.toml", tmp_path / "data", body, server_cert)
    result = serve(sys.executable, "-m", "wrenmq", "serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "data").exists()


def test_every_setting_that_does_not_load_is_reported_at_once(tmp_path: Path, server_cert: tuple[Path, Path]) -> None:
    keys = ("certfile", "jwt_jwks_file", "api_certfile", "brokers.cafile")
    body = "\n".join(FILE_ERRORS[key][0] for key in keys)
    config = write_config(tmp_path / "wrenmq.toml", tmp_path / "data", body, server_cert)
    result = serve(sys.executable, "-m", "wrenmq", "serve", "--config", str(config))
    assert result.returncode == 2
    for key in keys:
        assert FILE_ERRORS[key][1] in result.stderr
    assert not (tmp_path / "data").exists()
