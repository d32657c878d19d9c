"""Hostile opening handshakes on the ws/wss listeners and hostile bytes on the TLS listener (issue 14,
item 18): each gets a clean HTTP error (or, for TLS, a closed socket), is logged at debug only and
counted (``websocket_upgrades_refused``), and never becomes an ERROR traceback or an internal
error. RFC 6455 4.2.2: a server that finds the client's handshake wrong "MUST stop processing the
client's handshake and return an HTTP response with an appropriate error code (such as 400 Bad
Request)". Raw sockets send exactly the bytes under test.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from certs import make_ca, make_cert
from wrenmq.pytest_plugin import WrenmqServer

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's example: 16 bytes in base64
CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00"  # 3.1.1, clean session, keep alive 30 s


def upgrade(
    *extra: bytes,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    host: bytes | None = b"localhost",
    key: bytes | None = KEY,
    connection: bytes = b"Upgrade",
) -> bytes:
    """An upgrade request for /mqtt, valid unless told otherwise; ``extra`` header lines are added."""
    lines = [method + b" /mqtt " + version, b"Upgrade: websocket", b"Connection: " + connection]
    if host is not None:
        lines.append(b"Host: " + host)
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    lines += [b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Protocol: mqtt", *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``; everything the server answers until it closes (or has switched protocols)."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received or received.startswith(b"HTTP/1.1 4"):
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return received


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("certs")
    return make_cert(make_ca(directory), directory, "localhost", server=True)


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], server_cert: tuple[Path, Path]) -> WrenmqServer:
    certfile, keyfile = server_cert
    return wrenmq_server_factory(ws_port=0, wss_port=0, tls_port=0, certfile=certfile, keyfile=keyfile)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


MALFORMED = {
    # wsproto decodes these headers as ASCII (Host as IDNA): non-ASCII bytes raised UnicodeDecodeError.
    "non-ASCII Sec-WebSocket-Protocol": (upgrade(b"Sec-WebSocket-Protocol: mq\xfftt"), 400),
    "non-ASCII Sec-WebSocket-Extensions": (upgrade(b"Sec-WebSocket-Extensions: perm\xe9ssage-deflate"), 400),
    "non-ASCII Host": (upgrade(host=b"h\xc3\xa9st"), 400),
    "non-ASCII Connection": (upgrade(connection=b"Up\xffgrade"), 400),
    # RFC 6455 4.2.1 item 5: one Sec-WebSocket-Key, the base64 of 16 bytes.
    "non-ASCII Sec-WebSocket-Key": (upgrade(key=b"dGhlIHNh\xffbXBsZSBub25jZQ=="), 400),
    "short Sec-WebSocket-Key": (upgrade(key=b"c2hvcnQ="), 400),
    "Sec-WebSocket-Key not base64": (upgrade(key=b"!!!!!!!!!!!!!!!!!!!!!!!!"), 400),
    "two Sec-WebSocket-Keys": (upgrade(b"Sec-WebSocket-Key: " + KEY), 400),  # RFC 6455 11.3.1
    "no Sec-WebSocket-Key": (upgrade(key=None), 400),
    "no Host": (upgrade(host=None), 400),
    "HTTP/1.0": (upgrade(version=b"HTTP/1.0"), 400),  # RFC 6455 4.1: HTTP/1.1 or later
    "POST": (upgrade(method=b"POST"), 400),  # RFC 6455 4.1: the method must be GET
    "a body (Content-Length)": (upgrade(b"Content-Length: 5") + b"hello", 400),
    "a body (Transfer-Encoding)": (upgrade(b"Transfer-Encoding: chunked") + b"0\r\n\r\n", 400),
    "non-ASCII header name": (upgrade(b"X-F\xffo: a"), 400),
    "NUL in a header": (upgrade(b"X-A: a\x00b"), 400),
    "oversized header": (upgrade(b"X-Padding: " + b"a" * 20_000), 431),
    "too many headers": (upgrade(*(b"X-%d: a" % i for i in range(2000))), 431),
    "binary garbage": (b"\x00\x01\x02\xff\xfe\r\n\r\n", 400),
}


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_upgrade_is_answered_counted_and_not_an_error(  # RFC 6455 4.2.2
    server: WrenmqServer, caplog: pytest.LogCaptureFixture, case: str, secure: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    request, status = MALFORMED[case]
    stats = server.broker.stats
    with socket.create_connection(("127.0.0.1", server.wss_port if secure else server.ws_port), timeout=5) as raw:
        sock = raw
        if secure:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(raw)
        response = exchange(sock, request)
    assert response.startswith(b"HTTP/1.1 %d " % status), response[:200]
    assert stats.websocket_upgrades_refused == 1  # counted before the answer was written
    assert stats.internal_errors == 0
    assert warnings_logged(caplog) == []
    refused = [r for r in caplog.records if r.name == "wrenmq.websocket" and "refused" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.DEBUG]


def test_valid_upgrade_after_refusals_still_switches_protocols(server: WrenmqServer) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=5) as sock:
        assert exchange(sock, upgrade(b"Sec-WebSocket-Protocol: mq\xfftt")).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=5) as sock:
        assert exchange(sock, upgrade(b"X-Note: caf\xc3\xa9")).startswith(b"HTTP/1.1 101 ")  # other headers: any bytes
    assert server.broker.stats.websocket_upgrades_refused == 1


HOSTILE_TLS = {
    "plain HTTP": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "plain MQTT CONNECT": CONNECT,
    "handshake record of garbage": b"\x16\x03\x01\x00\x05\xff\xff\xff\xff\xff",
    "SSLv2 hello": bytes.fromhex("802b0100020012000000100000") + bytes(32),
    "oversized record": b"\x16\x03\x01\xff\xff" + bytes(100),
}


@pytest.mark.parametrize("kind", ["tls", "wss"])
@pytest.mark.parametrize("case", list(HOSTILE_TLS))
def test_hostile_bytes_on_tls_listener_close_quietly(
    server: WrenmqServer, caplog: pytest.LogCaptureFixture, kind: str, case: str, server_cert: tuple[Path, Path]
) -> None:
    caplog.set_level(logging.DEBUG)
    port = server.listener_port(kind)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(HOSTILE_TLS[case])
        try:
            while sock.recv(65536):  # a TLS alert at most, then the close
                pass
        except ConnectionResetError:
            pass
    # The sentinel: a real TLS client is served after it (so the bytes above have been handled).
    context = ssl.create_default_context(cafile=str(server_cert[0].parent / "ca.crt"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        if kind == "tls":
            tls.sendall(CONNECT)
            assert tls.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        else:
            assert exchange(tls, upgrade()).startswith(b"HTTP/1.1 101 ")
    assert server.broker.stats.internal_errors == 0
    assert warnings_logged(caplog) == []
