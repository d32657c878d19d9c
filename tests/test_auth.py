"""Password files: the file format, ``wrenmq passwd``, CONNECT with a user name and password (section
3.1.4 and the CONNACK codes of 3.2.2), and reloading without a restart.

Real files, real argon2id hashes, real peers: raw sockets, paho-mqtt at 3.1.1 and 5.0,
mosquitto_pub/mosquitto_sub, and ``python -m wrenmq`` as a subprocess.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from certs import make_ca, make_cert
from mqttraw import RawClient
from paho_sync import PROTOCOLS
from serveproc import clean_env, free_port, serve_command
from userfiles import write_passwords
from wrenmq.auth import passwords as passwords_module
from wrenmq.auth.files import POLL_INTERVAL
from wrenmq.auth.passwords import PasswordFile, PasswordFileError
from wrenmq.config import ConfigError
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode

TIMEOUT = 5.0
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO_PUB is None or MOSQUITTO_SUB is None, reason="mosquitto_pub/mosquitto_sub are not installed"
)
# CONNACK refusals as each protocol level says them: 5.0 reason codes, 3.1.1 return codes
BAD_CREDENTIALS = {5: ReasonCode.BAD_USER_NAME_OR_PASSWORD, 4: ConnackReturnCode.BAD_USERNAME_OR_PASSWORD}
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # valid argon2id, fast to make
NOT_AUTHORIZED = {5: ReasonCode.NOT_AUTHORIZED, 4: ConnackReturnCode.NOT_AUTHORIZED}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    return write_passwords(tmp_path / "passwd", alice="wonderland", bob="hunter2")


def login(
    server: Any, version: int, username: str | None = None, password: bytes | None = None
) -> tuple[RawClient, p.Connack]:
    """A raw client that sent CONNECT, and the CONNACK it got."""
    client = RawClient(server.port, version)
    return client, client.connect("c-" + (username or "anon"), username=username, password=password)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)


def can_login(port: int, username: str, password: bytes) -> bool:
    with RawClient(port, 5) as client:
        return client.connect("probe", username=username, password=password).reason_code == 0


def run_wrenmq(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m wrenmq`` in its own session (no controlling terminal: getpass reads stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "wrenmq", *args],
        env=clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )


# -- the file ---------------------------------------------------------------------------------------


def test_password_file_round_trip(tmp_path):
    """wrenmq feature: argon2id lines, mode 0600, comments kept, verification of right and wrong passwords."""
    path = tmp_path / "passwd"
    path.write_text("# our users\n\n")
    passwords = PasswordFile.load(path)
    assert passwords.set_password("alice", "wonderland") is True
    assert passwords.set_password("bob", "hunter2") is True
    assert passwords.set_password("alice", "looking-glass") is False  # a new password, same user
    passwords.save()
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text().splitlines()
    assert lines[:2] == ["# our users", ""]
    assert [line.split(":", 1)[0] for line in lines[2:]] == ["alice", "bob"]
    assert all(line.split(":", 1)[1].startswith("$argon2id$") for line in lines[2:])
    assert argon2.extract_parameters(lines[2].split(":", 1)[1]).type is argon2.Type.ID

    loaded = PasswordFile.load(path)
    assert loaded.usernames() == ["alice", "bob"]
    assert loaded.verify("alice", b"looking-glass")
    assert loaded.verify("alice", "looking-glass")
    assert not loaded.verify("alice", b"wonderland")
    assert not loaded.verify("carol", b"looking-glass")
    assert loaded.delete("bob") and not loaded.delete("bob")
    loaded.save()
    assert PasswordFile.load(path).usernames() == ["alice"]
    assert path.read_text().startswith("# our users\n\nalice:$argon2id$")


def test_save_replaces_the_file_atomically(tmp_path):
    """wrenmq feature: a save writes a temporary file and renames it over the old one (a new inode),
    so a broker reading the file never sees half of it; no temporary file is left behind."""
    path = write_passwords(tmp_path / "passwd", alice="wonderland")
    before = path.stat().st_ino
    write_passwords(path, alice="wonderland", bob="hunter2")
    assert path.stat().st_ino != before
    assert sorted(os.listdir(tmp_path)) == ["passwd"]


def test_unknown_user_is_checked_against_a_dummy_hash(tmp_path):
    """wrenmq feature: an unknown user costs one argon2 verify against a hash with the file's own
    parameters, so timing does not reveal which users exist."""
    path = tmp_path / "passwd"
    path.write_text("alice:" + CHEAP.hash("x") + "\n")
    passwords = PasswordFile.load(path)
    parameters = argon2.extract_parameters(passwords.hashes["alice"])
    passwords_module._dummies.clear()
    assert not passwords.verify("mallory", b"x")
    (dummy,) = passwords_module._dummies.values()
    assert argon2.extract_parameters(dummy) == parameters
    assert not passwords.verify("mallory", b"x")
    assert list(passwords_module._dummies.values()) == [dummy]  # made once


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("alice\n", 1, "expected user:hash"),
        ("# fine\nalice:\n", 2, "expected user:hash"),
        ("alice:not-a-hash\n", 1, "unsupported password hash"),
        ("bob:$7$101$c2FsdA==$aGFzaA==\n", 1, "malformed mosquitto_passwd hash"),  # a 4-byte digest
        ("bob:$argon2id$v=19$m=oops\n", 1, "malformed argon2id hash"),
        ("alice:{h}\n\nalice:{h}\n", 3, "user 'alice' already appears on line 1"),
        (" alice:{h}\n", 1, "starts or ends with white space"),
        ("alice:{h}\nb\x01b:{h}\n", 2, "control character"),
    ],
)
def test_password_file_errors_name_file_and_line(tmp_path, content, line, problem):
    """wrenmq feature: a malformed password file is refused with the file, the line and the problem."""
    path = tmp_path / "passwd"
    path.write_text(content.replace("{h}", CHEAP.hash("x")))
    with pytest.raises(PasswordFileError) as info:
        PasswordFile.load(path)
    assert str(info.value).startswith(f"password file {path}, line {line}: ")
    assert problem in str(info.value)


def test_password_file_not_utf8_names_line(tmp_path):
    """wrenmq feature: bytes that are not UTF-8 are reported with their line."""
    path = tmp_path / "passwd"
    path.write_bytes(b"# ok\n\xff\xfe:x\n")
    with pytest.raises(PasswordFileError, match=rf"^password file {path}, line 2: not UTF-8"):
        PasswordFile.load(path)


def test_bad_password_file_stops_start_up(wrenmq_server_factory, tmp_path):
    """wrenmq feature: the broker does not start with a bad password file; the error names file and line."""
    path = tmp_path / "passwd"
    path.write_text("# users\nalice:plaintext\n")
    with pytest.raises(ConfigError, match=rf"password file {path}, line 2: unsupported password hash"):
        wrenmq_server_factory(password_file=path)
    with pytest.raises(ConfigError, match=rf"password file {tmp_path / 'missing'}: cannot read"):
        wrenmq_server_factory(password_file=tmp_path / "missing")


def test_serve_with_bad_password_file_exits_2(tmp_path):
    """wrenmq feature: ``wrenmq serve`` reports a bad password file as a configuration error (exit 2)."""
    path = tmp_path / "passwd"
    path.write_text("alice\n")
    result = run_wrenmq(
        "serve",
        "--port",
        "0",
        "--ws-port",
        "off",
        "--api-port",
        "off",
        "--storage",
        "memory",
        "--password-file",
        str(path),
    )
    assert result.returncode == 2, result.stderr
    assert f"password file {path}, line 1: expected user:hash" in result.stderr


# -- CONNECT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [5, 4])
def test_wrong_password_refused(wrenmq_server_factory, password_file, version):
    # [MQTT-3.1.4-2] (5.0) a failed authentication check closes the connection; CONNACK 0x86 (5.0) or
    # return code 4 (3.1.1) says why; Session Present is 0 [MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]) and the
    # connection closes [MQTT-3.2.2-7] (3.1.1: [MQTT-3.2.2-5]).
    server = wrenmq_server_factory(password_file=password_file)
    for username, password in [("alice", b"hunter2"), ("alice", None), ("alice", b""), ("carol", b"wonderland")]:
        client, ack = login(server, version, username, password)
        assert ack.reason_code == BAD_CREDENTIALS[version], (username, password)
        assert ack.session_present is False
        assert client.expect_closed() == []
        client.close()
    assert server.call(_stats(server)) == 4


async def _stats(server: Any) -> int:
    return int(server.broker.stats.auth_failures)


@pytest.mark.parametrize("version", [5, 4])
def test_anonymous_refused_when_not_allowed(wrenmq_server_factory, password_file, version):
    # [MQTT-3.1.4-2] (5.0); CONNACK 0x87 Not authorized (3.1.1: return code 5), then close [MQTT-3.2.2-7]
    server = wrenmq_server_factory(password_file=password_file, allow_anonymous=False)
    client, ack = login(server, version)
    assert ack.reason_code == NOT_AUTHORIZED[version]
    assert client.expect_closed() == []
    client.close()
    good, ack = login(server, version, "alice", b"wonderland")
    assert ack.reason_code == 0
    good.close()


@pytest.mark.parametrize("version", [4, 5])
def test_anonymous_allowed_beside_password_file(wrenmq_server_factory, password_file, version):
    """wrenmq feature: with allow_anonymous, clients without a user name get in, while a user name still
    needs its password (as Mosquitto's password_file with allow_anonymous true)."""
    server = wrenmq_server_factory(password_file=password_file, allow_anonymous=True)
    anonymous, ack = login(server, version)
    assert ack.reason_code == 0
    anonymous.close()
    wrong, ack = login(server, version, "bob", b"wonderland")
    assert ack.reason_code == BAD_CREDENTIALS[version]
    wrong.close()


@pytest.mark.parametrize("version", [3, 4, 5])
def test_right_password_accepted(wrenmq_server_factory, password_file, version):  # [MQTT-3.2.0-1], [MQTT-3.2.2-1]
    server = wrenmq_server_factory(password_file=password_file)
    client, ack = login(server, version, "bob", b"hunter2")
    assert ack.reason_code == 0
    client.send(p.Pingreq())
    client.expect(p.Pingresp)
    client.close()


class PahoUser:
    """A paho client that logs in with a user name and password; callbacks land in ``events``."""

    def __init__(self, port: int, protocol: Any, username: str, password: str) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connack", rc))
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self.events.put(("suback", rcs))
        self.client.on_message = lambda _c, _u, msg: self.events.put(("message", msg))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        kind, self.connack = self.events.get(timeout=TIMEOUT)
        assert kind == "connack"

    def next(self, kind: str) -> Any:
        got, value = self.events.get(timeout=TIMEOUT)
        assert got == kind, (got, value)
        return value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["3.1.1", "5.0"])
def test_paho_login(wrenmq_server_factory, password_file, protocol):
    # [MQTT-3.1.4-2]; CONNACK return code 4 / reason code 0x86 for a wrong password, 0 for the right one
    server = wrenmq_server_factory(password_file=password_file, allow_anonymous=False)
    users: list[PahoUser] = []
    try:
        users.append(PahoUser(server.port, protocol, "alice", "wrong"))
        assert users[-1].connack.is_failure and users[-1].connack.value == ReasonCode.BAD_USER_NAME_OR_PASSWORD
        sub = PahoUser(server.port, protocol, "alice", "wonderland")
        users.append(sub)
        assert not sub.connack.is_failure
        sub.client.subscribe("paho/#", 1)
        assert [rc.value for rc in sub.next("suback")] == [1]
        pub = PahoUser(server.port, protocol, "bob", "hunter2")
        users.append(pub)
        pub.client.publish("paho/login", b"hello", 1).wait_for_publish(TIMEOUT)
        message = sub.next("message")
        assert (message.topic, message.payload) == ("paho/login", b"hello")
    finally:
        for user in users:
            user.close()


@needs_mosquitto
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_clients_with_password(wrenmq_server_factory, password_file, version):
    # [MQTT-3.1.4-2]; [MQTT-3.2.2-5] (3.1.1) / [MQTT-3.2.2-7] (5.0): refused logins end the connection
    server = wrenmq_server_factory(password_file=password_file, allow_anonymous=False)
    common = ["-h", "127.0.0.1", "-p", str(server.port), "-V", version]
    assert MOSQUITTO_PUB is not None and MOSQUITTO_SUB is not None
    sub = subprocess.Popen(
        [MOSQUITTO_SUB, *common, "-u", "alice", "-P", "wonderland", "-t", "auth/#", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _subscribed(server), TIMEOUT, "mosquitto_sub subscribing")
        bad = subprocess.run(
            [MOSQUITTO_PUB, *common, "-u", "bob", "-P", "wrong", "-t", "auth/x", "-m", "nope"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert bad.returncode != 0
        assert "bad user name or password" in (bad.stderr + bad.stdout).lower()
        good = subprocess.run(
            [MOSQUITTO_PUB, *common, "-u", "bob", "-P", "hunter2", "-q", "1", "-t", "auth/x", "-m", "hello"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert good.returncode == 0, good.stderr
        out, err = sub.communicate(timeout=TIMEOUT + 5)
        assert sub.returncode == 0, err
        assert out.splitlines() == ["hello"]  # the refused publisher's message never arrived
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()


def _subscribed(server: Any) -> bool:
    async def count() -> int:
        return int(server.broker.router.count)

    return server.call(count()) >= 1


def test_listener_uses_its_own_password_file(wrenmq_server_factory, password_file, tmp_path):
    """wrenmq feature: a listener's password_file replaces the top-level one on that listener only."""
    other = write_passwords(tmp_path / "other", carol="carols-secret")
    server = wrenmq_server_factory(
        password_file=password_file, listeners=[{"type": "tcp", "port": 0, "password_file": other}]
    )
    main_port = server.port
    other_port = next(lst.port for lst in server.broker.listeners if lst.port != main_port)
    assert can_login(main_port, "alice", b"wonderland")
    assert not can_login(main_port, "carol", b"carols-secret")
    assert can_login(other_port, "carol", b"carols-secret")
    assert not can_login(other_port, "alice", b"wonderland")


def test_certificate_identity_needs_no_password(wrenmq_server_factory, password_file, tmp_path):
    """wrenmq feature: with use_identity_as_username the client certificate is the credential: its CN
    is the user name and no password is checked, even where a password file is configured."""
    ca = make_ca(tmp_path / "pki")
    server_cert = make_cert(ca, tmp_path / "pki", "broker", server=True)
    dave = make_cert(ca, tmp_path / "pki", "dave", server=False)
    server = wrenmq_server_factory(
        password_file=password_file,
        tls_port=0,
        certfile=server_cert[0],
        keyfile=server_cert[1],
        cafile=ca.cert,
        require_certificate=True,
        use_identity_as_username=True,
    )
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.load_cert_chain(str(dave[0]), str(dave[1]))
    with (
        socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(encode(p.Connect("dave", 4, True, 30, username="dave", password=b"not-checked"), 4))
        assert sock.recv(16) == b"\x20\x02\x00\x00"
    # The plain TCP listener still checks passwords.
    assert not can_login(server.port, "dave", b"not-checked")


# -- reloading --------------------------------------------------------------------------------------


def test_password_file_reloaded_when_changed(wrenmq_server_factory, password_file, caplog):
    """wrenmq feature: a changed password file takes effect without a restart (checked every
    POLL_INTERVAL seconds); a file that turns bad is logged and the loaded version kept."""
    # (auth_failure_limit=0: polling with a login that fails until the reload must not be throttled)
    server = wrenmq_server_factory(password_file=password_file, auth_failure_limit=0)
    assert not can_login(server.port, "carol", b"carols-secret")
    write_passwords(password_file, alice="wonderland", carol="carols-secret")
    wait_until(lambda: can_login(server.port, "carol", b"carols-secret"), 3 * POLL_INTERVAL, "reload")
    assert not can_login(server.port, "bob", b"hunter2")  # bob was dropped from the new file

    with caplog.at_level(logging.ERROR, logger="wrenmq.auth"):
        password_file.write_text(password_file.read_text() + "broken line\n")
        wait_until(lambda: "keeping the version loaded before" in caplog.text, 3 * POLL_INTERVAL, "reload error")
    assert f"password file {password_file}, line 3: expected user:hash" in caplog.text
    assert can_login(server.port, "carol", b"carols-secret")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sighup_reloads_password_file(tmp_path, password_file):
    """wrenmq feature: ``wrenmq serve`` re-reads its password file on SIGHUP (as Mosquitto does)."""
    port = free_port()
    command = serve_command(port, tmp_path / "data", "--password-file", str(password_file))
    with subprocess.Popen(command, env=clean_env(), stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        try:
            lines = read_until(proc, "listening on")
            assert can_login(port, "alice", b"wonderland")
            # SIGHUP with an unchanged file still re-reads it (the file watch would not).
            proc.send_signal(signal.SIGHUP)
            lines += read_until(proc, "reloaded password file")
            write_passwords(password_file, carol="carols-secret")
            proc.send_signal(signal.SIGHUP)
            lines += read_until(proc, "reloaded password file")
            assert can_login(port, "carol", b"carols-secret")
            assert not can_login(port, "alice", b"wonderland")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, "".join(lines) + err


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 20) -> list[str]:
    """stderr lines of ``proc`` up to and including the first containing ``marker``."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} from wrenmq serve:\n" + "".join(lines))


# -- wrenmq passwd ----------------------------------------------------------------------------------


def test_passwd_add_list_delete(tmp_path, wrenmq_server_factory):
    """wrenmq feature: ``wrenmq passwd`` manages the file a broker then accepts logins from."""
    path = tmp_path / "passwd"
    missing = run_wrenmq("passwd", "add", str(path), "alice", "-p", "wonderland")
    assert missing.returncode == 1 and "use -c to create it" in missing.stderr
    assert run_wrenmq("passwd", "add", "-c", str(path), "alice", "-p", "wonderland").returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert run_wrenmq("passwd", "add", str(path), "bob", "--stdin", stdin="hunter2\n").returncode == 0
    # Without -p or --stdin the password is asked for twice (getpass; here read from stdin).
    prompted = run_wrenmq("passwd", "add", str(path), "carol", stdin="carols-secret\ncarols-secret\n")
    assert prompted.returncode == 0, prompted.stderr
    mismatch = run_wrenmq("passwd", "add", str(path), "dave", stdin="one\ntwo\n")
    assert mismatch.returncode == 1 and "do not match" in mismatch.stderr
    listed = run_wrenmq("passwd", "list", str(path))
    assert listed.returncode == 0 and listed.stdout.splitlines() == ["alice", "bob", "carol"]

    server = wrenmq_server_factory(password_file=path)
    assert can_login(server.port, "bob", b"hunter2")
    assert can_login(server.port, "carol", b"carols-secret")
    assert not can_login(server.port, "dave", b"one")

    unknown = run_wrenmq("passwd", "delete", str(path), "mallory")
    assert unknown.returncode == 1 and "user 'mallory' is not in" in unknown.stderr
    assert run_wrenmq("passwd", "delete", str(path), "bob").returncode == 0
    assert run_wrenmq("passwd", "list", str(path)).stdout.splitlines() == ["alice", "carol"]
    # -c starts over, as mosquitto_passwd -c does.
    assert run_wrenmq("passwd", "add", "-c", str(path), "erin", "-p", "x").returncode == 0
    assert run_wrenmq("passwd", "list", str(path)).stdout.splitlines() == ["erin"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "{f}", "bad:name", "-p", "x"], None, "contains ':'"),
        (["add", "{f}", "alice", "--stdin"], "\n", "the password is empty"),
        (["list", "{f}/nope"], None, "cannot read"),
    ],
)
def test_passwd_errors_exit_1(tmp_path, args, stdin, message):
    """wrenmq feature: ``wrenmq passwd`` refuses bad input with exit status 1 and says why."""
    path = write_passwords(tmp_path / "passwd", alice="wonderland")
    result = run_wrenmq("passwd", *(arg.replace("{f}", str(path)) for arg in args), stdin=stdin)
    assert result.returncode == 1
    assert result.stderr.startswith("wrenmq passwd: error: ") and message in result.stderr
