"""The seam between the broker and its transports: a ``Listener`` serves whatever connection its
factory makes, and the WebSocket adapter needs of the connection behind it only the narrow
``ServedConnection`` protocol, so ``transports/`` imports nothing of ``broker/`` (the broker
imports transports, never the other way: no import circle). Real sockets on 127.0.0.1; the
connection here is an echo, which is all a transport may assume about what it serves."""

from __future__ import annotations

import ast
import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from wrenmq.config import ListenerConfig
from wrenmq.transports import Listener
from wrenmq.transports.websocket import ServedConnection
from wsraw import WsRawClient

TRANSPORTS = Path(__file__).parent.parent / "src" / "wrenmq" / "transports"


def _imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, relative ones made absolute (``wrenmq.transports.x``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["wrenmq", "transports"][: 3 - node.level] if node.level <= 2 else []
                found.append(".".join([*base, node.module or ""]).rstrip("."))
            else:
                found.append(node.module or "")
    return found


def test_transports_import_nothing_of_the_broker() -> None:
    """Not even for type checking: the connection is a factory's product and a protocol."""
    for path in sorted(TRANSPORTS.glob("*.py")):
        broker = [name for name in _imported_modules(path) if name.startswith("wrenmq.broker")]
        assert broker == [], f"{path.name} imports {broker}"


class _Limits:
    max_packet_size = 1024
    connect_timeout = 5.0


class _Counters:
    internal_errors = 0
    websocket_upgrades_refused = 0


class EchoConnection(asyncio.Protocol):
    """A connection that sends back what it receives: a ``ServedConnection`` with no broker."""

    def __init__(self, loop: asyncio.AbstractEventLoop, made: list[EchoConnection]) -> None:
        self.loop = loop
        self.limits = _Limits()
        self.counters = _Counters()
        self.lingering: set[Any] = set()
        self.transport: asyncio.Transport | None = None
        made.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.close()


PINGRESP = b"\xd0\x00"  # what is echoed: bytes the WebSocket client's MQTT parser takes


def _tcp_echo(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PINGRESP)
        received = b""
        while len(received) < len(PINGRESP):
            received += sock.recv(64)
        return received


def _ws_echo(port: int) -> bytes:
    client = WsRawClient(port, path="/echo")
    try:
        client.handshake()
        client.send_binary(PINGRESP)
        return client.recv_bytes(len(PINGRESP))
    finally:
        client.sock.close()


@pytest.mark.parametrize(("kind", "talk"), [("tcp", _tcp_echo), ("ws", _ws_echo)])
async def test_listener_serves_the_connections_its_factory_makes(kind: str, talk: Any) -> None:
    loop = asyncio.get_running_loop()
    made: list[EchoConnection] = []

    def new_connection() -> ServedConnection:
        return EchoConnection(loop, made)

    listener = Listener(ListenerConfig(type=kind, port=0, path="/echo"), anonymous=True)
    await listener.start(new_connection, 5.0)
    try:
        assert await asyncio.to_thread(talk, listener.port) == PINGRESP
        assert len(made) == 1
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.mark.parametrize(
    ("host", "family"),
    [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6), ("localhost", None)],
)
async def test_listener_binds_numeric_addresses_itself_and_host_names_through_the_loop(
    host: str, family: socket.AddressFamily | None
) -> None:
    """A numeric address is bound by the listener (no lookup in the loop's thread pool), a name
    through the loop's lookup; either way the listener serves on the address it was given."""
    from wrenmq.transports.listener import address_family

    assert address_family(host) == family
    loop = asyncio.get_running_loop()
    made: list[EchoConnection] = []
    listener = Listener(ListenerConfig(host=host, port=0), anonymous=True)
    await listener.start(lambda: EchoConnection(loop, made), 5.0)
    try:

        def echo() -> bytes:
            with socket.create_connection((host, listener.port), timeout=5) as sock:
                sock.sendall(PINGRESP)
                return sock.recv(64)

        assert await asyncio.to_thread(echo) == PINGRESP
        assert len(made) == 1
    finally:
        listener.close()
        await listener.wait_closed()
