"""``wrenmq pub`` and ``wrenmq sub`` as subprocesses, against wrenmq and a real Mosquitto, checked
against mosquitto_pub / mosquitto_sub: same flags, same output formats, same exit codes. These are
wrenmq features (command-line tools are outside the MQTT spec); each test says what it checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs import make_ca, make_cert
from mosquitto_fixture import MosquittoBroker, free_port
from wrenmq.pytest_plugin import WrenmqServer

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
STDBUF = shutil.which("stdbuf")
needs_mosquitto_clients = pytest.mark.skipif(
    MOSQUITTO_PUB is None or MOSQUITTO_SUB is None or STDBUF is None,
    reason="mosquitto_pub/mosquitto_sub (or coreutils' stdbuf) are not installed",
)
TIMEOUT = 20.0


@dataclass(frozen=True)
class Peer:
    name: str
    port: int

    @property
    def address(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port)]


@pytest.fixture(params=["wrenmq", "mosquitto"])
def peer(
    request: pytest.FixtureRequest,
    wrenmq_server_factory: Callable[..., WrenmqServer],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> Peer:
    if request.param == "wrenmq":
        return Peer("wrenmq", wrenmq_server_factory().port)
    return Peer("mosquitto", mosquitto_factory().port)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WRENMQ_")}


def wrenmq(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m wrenmq ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "wrenmq", *args], input=stdin, capture_output=True, timeout=TIMEOUT, env=_env()
    )


def mosquitto_client(program: str | None, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert program is not None
    return subprocess.run([program, *args], capture_output=True, timeout=TIMEOUT)


class Subscriber:
    """A subscriber process, started and waited on until its SUBACK is in (its -d/--debug output)."""

    def __init__(self, command: list[str], debug_to_stdout: bool = False) -> None:
        self.debug_to_stdout = debug_to_stdout  # mosquitto_sub -d writes to stdout, wrenmq sub -d to stderr
        self.process = subprocess.Popen([*command, "-d"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        log = self.process.stdout if debug_to_stdout else self.process.stderr
        assert log is not None
        while True:
            line = log.readline()
            if not line:
                raise AssertionError(f"the subscriber ended before SUBACK: {self.finish()}")
            if b"suback" in line.lower():
                break

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, bytes, bytes]:
        """Wait for the process to exit; returns (exit status, stdout without debug lines, stderr)."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(f"the subscriber did not exit: {out!r} {err!r}") from None
        if self.debug_to_stdout:
            debug = (b"Client ", b"Subscribed (mid")
            out = b"".join(line for line in out.splitlines(keepends=True) if not line.startswith(debug))
        return self.process.returncode, out, err


def wrenmq_sub(*args: str) -> Subscriber:
    return Subscriber([sys.executable, "-m", "wrenmq", "sub", *args])


def mosquitto_sub(*args: str) -> Subscriber:
    assert MOSQUITTO_SUB is not None and STDBUF is not None
    # Its -d lines go to stdout: line-buffered, or they would wait in a stdio buffer until it exits.
    return Subscriber([STDBUF, "-oL", MOSQUITTO_SUB, *args], debug_to_stdout=True)


def ok(result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


# --- pub and sub together ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["311", "5"])
def test_sub_prints_what_pub_sends(peer: Peer, version: str) -> None:
    """`wrenmq sub -t x -C 1 -v` receives what `wrenmq pub -t x -m hi` sends, on wrenmq and Mosquitto."""
    sub = wrenmq_sub(*peer.address, "-V", version, "-t", "cli/x", "-C", "1", "-v")
    ok(wrenmq("pub", *peer.address, "-V", version, "-t", "cli/x", "-m", "hi"))
    status, out, _ = sub.finish()
    assert (status, out) == (0, b"cli/x hi\n")


@needs_mosquitto_clients
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_interoperates_with_mosquitto_pub_and_sub(peer: Peer, version: str) -> None:
    """Cross-check: mosquitto_sub prints what `wrenmq pub` sends and `wrenmq sub` what mosquitto_pub sends."""
    sub = mosquitto_sub(*peer.address, "-V", version, "-t", "cross/#", "-C", "2", "-v", "-q", "2")
    ok(wrenmq("pub", *peer.address, "-V", version, "-t", "cross/a", "-m", "from wrenmq", "-q", "1"))
    ok(wrenmq("pub", *peer.address, "-V", version, "-t", "cross/b", "-m", "qos 2", "-q", "2"))
    status, out, _ = sub.finish()
    assert (status, out) == (0, b"cross/a from wrenmq\ncross/b qos 2\n")

    sub = wrenmq_sub(*peer.address, "-V", version, "-t", "cross/#", "-C", "1", "-v", "-q", "1")
    ok(
        mosquitto_client(
            MOSQUITTO_PUB, *peer.address, "-V", version, "-t", "cross/c", "-m", "from mosquitto", "-q", "1"
        )
    )
    status, out, _ = sub.finish()
    assert (status, out) == (0, b"cross/c from mosquitto\n")


def test_pub_message_sources(peer: Peer, tmp_path: Path) -> None:
    """-m, -f FILE, -s (stdin), -n (null message), -l (one message per stdin line) and -r, as mosquitto_pub."""
    sub = wrenmq_sub(*peer.address, "-t", "src/#", "-C", "6", "-F", "%t:%l:%p")
    ok(wrenmq("pub", *peer.address, "-t", "src/m", "-m", "text"))
    (tmp_path / "payload").write_bytes(b"from a file")
    ok(wrenmq("pub", *peer.address, "-t", "src/f", "-f", str(tmp_path / "payload")))
    ok(wrenmq("pub", *peer.address, "-t", "src/s", "-s", stdin=b"all of\nstdin"))
    ok(wrenmq("pub", *peer.address, "-t", "src/n", "-n"))
    ok(wrenmq("pub", *peer.address, "-t", "src/l", "-l", "-q", "1", stdin=b"line one\nline two\n"))
    status, out, _ = sub.finish()
    assert status == 0
    assert out.split(b"\n")[:6] == [
        b"src/m:4:text",
        b"src/f:11:from a file",
        b"src/s:12:all of",  # the payload's own newline splits the printed line
        b"stdin",
        b"src/n:0:",
        b"src/l:8:line one",
    ]
    retained = wrenmq("pub", *peer.address, "-t", "src/r", "-m", "kept", "-r")
    ok(retained)
    assert ok(wrenmq("sub", *peer.address, "-t", "src/r", "-C", "1", "-F", "%r %p")).stdout == b"1 kept\n"


# --- output formats ------------------------------------------------------------------------------------


@needs_mosquitto_clients
def test_format_matches_mosquitto_sub(peer: Peer) -> None:
    """-F prints what mosquitto_sub -F prints, for every sequence that does not depend on the clock."""
    assert MOSQUITTO_PUB is not None
    properties = [
        *("-D", "publish", "user-property", "k1", "v1"),
        *("-D", "publish", "user-property", "k2", "v2"),
        *("-D", "publish", "content-type", "text/plain"),
        *("-D", "publish", "response-topic", "reply/here"),
        *("-D", "publish", "correlation-data", "corr"),
        *("-D", "publish", "payload-format-indicator", "1"),
    ]
    publish = [*peer.address, "-V", "5", "-t", "fmt/topic", "-m", "Hello, wörld", "-q", "1", "-r", *properties]
    ok(mosquitto_client(MOSQUITTO_PUB, *publish))
    fmt = r"%t|%p|%q|%r|%l|%x|%X|%%|%12t|%-12t.|%.3t|%06l|%C|%R|%D|%F|%P|%A|\t|@@|\\|%-8l|%08x|%5p|%7X|%5m|%5S"
    args = [*peer.address, "-V", "5", "-t", "fmt/#", "-C", "1", "-q", "1", "-F", fmt]
    theirs = ok(mosquitto_client(MOSQUITTO_SUB, *args)).stdout
    ours = ok(wrenmq("sub", *args)).stdout
    assert ours == theirs
    assert ours.startswith("fmt/topic|Hello, wörld|1|1|13|".encode())


def test_json_formats_and_pretty(peer: Peer) -> None:
    """%j (payload as a string), %J (payload as JSON), --pretty; and --pretty on a JSON payload without -F."""
    ok(wrenmq("pub", *peer.address, "-V", "5", "-t", "json/a", "-m", '{"temp": 21.5}', "-r"))
    base = [*peer.address, "-V", "5", "-t", "json/a", "-C", "1"]
    document = json.loads(ok(wrenmq("sub", *base, "-F", "%j")).stdout)
    assert {k: document[k] for k in ("topic", "qos", "retain", "payloadlen", "payload")} == {
        "topic": "json/a",
        "qos": 0,
        "retain": 1,
        "payloadlen": 14,
        "payload": '{"temp": 21.5}',
    }
    assert "T" in document["tst"]
    pretty = ok(wrenmq("sub", *base, "-F", "%J", "--pretty")).stdout.decode()
    assert pretty.startswith("{\n  ") and json.loads(pretty)["payload"] == {"temp": 21.5}
    assert ok(wrenmq("sub", *base, "--pretty")).stdout == b'{\n  "temp": 21.5\n}\n'
    assert ok(wrenmq("sub", *base, "-v")).stdout == b'json/a {"temp": 21.5}\n'


def test_bad_format_is_a_usage_error(wrenmq_server: WrenmqServer) -> None:
    """An unknown -F parameter is refused before connecting (exit 2, naming it)."""
    result = wrenmq("sub", "-p", str(wrenmq_server.port), "-t", "x", "-F", "%t %Z")
    assert result.returncode == 2 and b"%Z" in result.stderr


def test_filter_out_and_retained_options(peer: Peer) -> None:
    """-T hides matching topics, -R hides retained (stale) messages, --retained-only stops at a fresh one."""
    ok(wrenmq("pub", *peer.address, "-t", "opt/stale", "-m", "old", "-r"))
    sub = wrenmq_sub(*peer.address, "-t", "opt/#", "-T", "opt/hidden/#", "-R", "-C", "1", "-v")
    ok(wrenmq("pub", *peer.address, "-t", "opt/hidden/x", "-m", "no"))
    ok(wrenmq("pub", *peer.address, "-t", "opt/shown", "-m", "yes"))
    assert sub.finish()[:2] == (0, b"opt/shown yes\n")
    only = wrenmq_sub(*peer.address, "-t", "opt/#", "--retained-only", "-v")
    ok(wrenmq("pub", *peer.address, "-t", "opt/fresh", "-m", "new"))
    assert only.finish()[:2] == (0, b"opt/stale old\n")


# --- exit codes ----------------------------------------------------------------------------------------


@needs_mosquitto_clients
def test_timeout_exits_27_like_mosquitto_sub(peer: Peer) -> None:
    """-W SECONDS with nothing received: "Timed out" and exit status 27, as mosquitto_sub."""
    args = [*peer.address, "-t", "silence", "-W", "1"]
    ours, theirs = wrenmq("sub", *args), mosquitto_client(MOSQUITTO_SUB, *args)
    assert ours.returncode == theirs.returncode == 27
    assert b"Timed out" in ours.stderr


@needs_mosquitto_clients
@pytest.mark.parametrize(("version", "status"), [("311", 5), ("5", 135)])
def test_refused_connection_exits_with_the_connack_code(
    version: str,
    status: int,
    wrenmq_server_factory: Callable[..., WrenmqServer],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    """Refused (no anonymous access): the exit status is the CONNACK code, as mosquitto_pub/sub's."""
    for port in (wrenmq_server_factory(allow_anonymous=False).port, mosquitto_factory(allow_anonymous=False).port):
        address = ["-h", "127.0.0.1", "-p", str(port), "-V", version, "-t", "t"]
        assert mosquitto_client(MOSQUITTO_SUB, *address).returncode == status
        assert wrenmq("sub", *address).returncode == status
        assert wrenmq("pub", *address, "-m", "x").returncode == status


def test_unreachable_broker_exits_1() -> None:
    """Nothing listening: an error message and exit status 1 (mosquitto_pub: "Connection refused", 1)."""
    result = wrenmq("pub", "-h", "127.0.0.1", "-p", str(free_port()), "-t", "t", "-m", "x")
    assert result.returncode == 1
    assert b"cannot connect" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["sub", "-t", "x", "-V", "7"],  # no such protocol version
        ["sub", "-t", "x", "-c"],  # a persistent session needs -i
        ["pub", "-t", "x"],  # no message
        ["pub", "-t", "a/+", "-m", "x"],  # a wildcard in a topic name
        ["sub", "-t", "x", "-L", "mqtt://h/t", "-p", "1"],  # -L and -p
        ["sub", "-t", "x", "--cert", "c.pem"],  # TLS options without TLS
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    """Flags that do not fit exit 2 with a message, before any connection is attempted."""
    result = wrenmq(*args)
    assert result.returncode == 2
    assert result.stderr


def test_help_lists_pub_and_sub() -> None:
    """`wrenmq --help` names both commands; -h is the host, so help is --help."""
    result = subprocess.run([sys.executable, "-m", "wrenmq", "--help"], capture_output=True, text=True, env=_env())
    assert "pub" in result.stdout and "sub" in result.stdout
    help_text = wrenmq("sub", "--help").stdout.decode()
    for flag in ("-h HOST", "-t TOPIC", "-C COUNT", "-W SECONDS", "-F FORMAT", "--pretty", "--cafile", "-L URL"):
        assert flag in help_text


# --- connection options --------------------------------------------------------------------------------


def test_url_option(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """-L mqtt://host:port/topic (topic from the path, as mosquitto's) and ws://host:port/path."""
    server = wrenmq_server_factory(ws_port=0)
    sub = wrenmq_sub("-L", f"mqtt://127.0.0.1:{server.port}/url/%23", "-C", "2", "-v")
    ok(wrenmq("pub", "-L", f"mqtt://127.0.0.1:{server.port}/url/tcp", "-m", "a"))
    ok(wrenmq("pub", "-L", f"ws://127.0.0.1:{server.ws_port}/mqtt", "-t", "url/ws", "-m", "b", "-V", "5"))
    assert sub.finish()[:2] == (0, b"url/tcp a\nurl/ws b\n")


def test_tls_with_cafile(tmp_path: Path, wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """--cafile turns TLS on and trusts that CA; without it the broker's certificate is not trusted."""
    ca = make_ca(tmp_path)
    cert, key = make_cert(ca, tmp_path, "broker", server=True)
    server = wrenmq_server_factory(tls_port=0, certfile=cert, keyfile=key)
    address = ["-h", "127.0.0.1", "-p", str(server.tls_port)]
    ok(wrenmq("pub", *address, "--cafile", str(ca.cert), "-t", "tls/x", "-m", "secret", "-r"))
    assert ok(wrenmq("sub", *address, "--cafile", str(ca.cert), "-t", "tls/x", "-C", "1")).stdout == b"secret\n"
    untrusted = wrenmq("sub", *address, "--tls-use-os-certs", "-t", "tls/x", "-C", "1")
    assert untrusted.returncode == 1 and b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_will_is_published_when_the_process_is_killed(peer: Peer) -> None:
    """--will-topic/--will-payload: SIGKILL the subscriber, and its will reaches another one [MQTT-3.1.2-8]."""
    watcher = wrenmq_sub(*peer.address, "-t", "cli-will/#", "-C", "1", "-v")
    victim = wrenmq_sub(*peer.address, "-t", "elsewhere", "--will-topic", "cli-will/victim", "--will-payload", "bye")
    victim.process.send_signal(signal.SIGKILL)
    victim.finish()
    assert watcher.finish()[:2] == (0, b"cli-will/victim bye\n")


@pytest.mark.parametrize("version", ["311", "5"])
def test_persistent_session_with_c_and_i(peer: Peer, version: str) -> None:
    """-c -i ID keeps the session: -E subscribes and exits, QoS 1 messages queue, the next run gets them."""
    session = [*peer.address, "-V", version, "-c", "-i", f"cli-session-{version}", "-q", "1", "-t", "sess/#"]
    ok(wrenmq("sub", *session, "-E"))
    for n in ("one", "two"):
        ok(wrenmq("pub", *peer.address, "-t", "sess/x", "-m", n, "-q", "1"))
    assert ok(wrenmq("sub", *session, "-C", "2")).stdout == b"one\ntwo\n"
