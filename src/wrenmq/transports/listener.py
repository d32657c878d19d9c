"""``Listener``: binds one ``ListenerConfig`` (one address, one transport) and hands every accepted
socket to a new connection (tcp, tls, unix) or to a ``WebSocketAdapter`` in front of one (ws, wss).
The connections come from a factory that whoever serves the listener hands it (the broker: its
``Connection``), so transports import nothing of the broker's.

A unix listener (Mosquitto 2's ``listener 0 /path``) serves MQTT on a Unix domain socket whose file
mode decides who may connect: the owner only, or the owner and ``socket_group``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ConfigError, ListenerConfig
from .served import ServedConnection
from .tls import server_context

__all__ = ["ConnectionFactory", "Listener"]

# A new connection for each accepted socket: an asyncio.Protocol that is also what the WebSocket
# adapter needs of the connection behind it.
ConnectionFactory = Callable[[], ServedConnection]

log = logging.getLogger("wrenmq.listener")


def socket_gid(listener: str, group: str) -> int:
    """The group id of ``socket_group`` (a name or a number); ``ConfigError`` if there is none."""
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"listener {listener}: socket_group {group!r}: no such group") from None


def numeric_socket(host: str, port: int, reuse_port: bool) -> socket.socket | None:
    """A TCP socket bound to ``host`` and ``port`` when ``host`` is a numeric address, else None.

    Bound here rather than by ``create_server(host, port)``, which looks even a numeric address up
    through ``getaddrinfo`` in the event loop's thread pool: uvloop then starts four libuv worker
    threads and imports the IDNA codec (``unicodedata``) to encode the host, 0.4 MiB of an idle
    broker's RSS for nothing (issue 19). The options are the loop's own: SO_REUSEADDR, SO_REUSEPORT
    when asked, IPV6_V6ONLY on an IPv6 socket."""
    family = address_family(host)
    if family is None:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def address_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 for a numeric address (``127.0.0.1``, ``0.0.0.0``, ``::1``), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


class Listener:
    """A bound listener and what connections need from it: its settings and its own counters."""

    def __init__(self, config: ListenerConfig, anonymous: bool, reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port  # worker processes share the port (serve --workers)
        self.name = config.label
        self.type = config.type
        self.anonymous = anonymous  # clients without a username may connect here
        self.use_identity_as_username = config.use_identity_as_username
        self.max_connections = config.max_connections
        self.connections = 0  # sockets open now
        self.connections_total = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._ssl: ssl.SSLContext | None = None
        self._gid: int | None = None  # socket_group, looked up by prepare()
        self._socket_path: Path | None = None  # the unix socket this listener created (removed on close)

    def prepare(self) -> None:
        """Load what the listener reads from files (its TLS certificate, key and CA) and look up
        its socket group, so a bad one stops start-up before anything is bound; ``ConfigError``
        names the setting."""
        if self.config.secure and self._ssl is None:
            self._ssl = server_context(self.config)
        if self.config.socket_group is not None and self._gid is None:
            self._gid = socket_gid(self.name, self.config.socket_group)

    async def bind(self, new_connection: ConnectionFactory, handshake_timeout: float) -> None:
        """Bind the address without accepting anyone yet (``serve`` does): until then the kernel
        refuses connections, so no client reaches a broker that may still fail to start.
        ``new_connection`` makes the connection of each accepted socket (for tcp, tls and unix,
        called by the loop directly: no Python frame of ours per socket); a TLS handshake gets
        ``handshake_timeout`` seconds. ``OSError`` names the listener and its address."""
        self.prepare()
        config = self.config
        loop = asyncio.get_running_loop()
        factory: Any = new_connection
        if config.type in ("ws", "wss"):
            from .websocket import WebSocketAdapter  # wsproto and h11 only for a WebSocket listener

            path = config.path

            def factory() -> WebSocketAdapter:
                return WebSocketAdapter(new_connection(), path)

        if config.type == "unix":
            await self._bind_unix(loop, factory)
            return
        # A socket that stalls its handshake gets no longer than one that never sends CONNECT.
        tls: dict[str, Any] = {
            "ssl": self._ssl,
            "ssl_handshake_timeout": handshake_timeout if self._ssl is not None else None,
        }
        try:
            sock = numeric_socket(config.host, config.port, self.reuse_port)
            if sock is not None:
                try:
                    self._server = await loop.create_server(
                        factory, sock=sock, backlog=4096, start_serving=False, **tls
                    )
                except BaseException:
                    sock.close()
                    raise
            else:  # a host name (or "" for every interface): the loop looks it up
                self._server = await loop.create_server(
                    factory,
                    config.host,
                    config.port,
                    reuse_address=True,
                    reuse_port=self.reuse_port,
                    backlog=4096,
                    start_serving=False,
                    **tls,
                )
        except OSError as exc:
            raise OSError(exc.errno, f"listener {self.name} on {config.host}:{config.port}: {exc.strerror}") from exc
        server: Any = self._server  # uvloop's Server.sockets is a list where typeshed says tuple
        self.port = server.sockets[0].getsockname()[1]

    async def _bind_unix(self, loop: asyncio.AbstractEventLoop, factory: Any) -> None:
        """Bind the socket path, then set its mode (0600; 0660 and the group with ``socket_group``)
        before ``serve`` listens, so no one else can connect in between. A socket file left by an
        earlier run is replaced; any other file at the path is an error."""
        path = self.config.socket
        assert path is not None
        try:
            if path.exists() and not stat.S_ISSOCK(path.stat().st_mode):
                raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
            self._server = await loop.create_unix_server(factory, str(path), backlog=4096, start_serving=False)
            self._socket_path = path  # ours now: close() removes it
            if self._gid is not None:
                os.chown(path, -1, self._gid)
            os.chmod(path, 0o660 if self._gid is not None else 0o600)
        except OSError as exc:
            self.close()
            raise OSError(exc.errno, f"listener {self.name} on {path}: {exc.strerror}") from exc

    async def serve(self) -> None:
        """Start accepting connections on the bound address."""
        assert self._server is not None, "bind() first"
        try:
            await self._server.start_serving()
        except OSError as exc:  # listen() lost a race for the port to another process
            raise OSError(exc.errno, f"listener {self.name} on {self.address}: {exc.strerror}") from exc

    async def start(self, new_connection: ConnectionFactory, handshake_timeout: float) -> None:
        """Bind and serve at once (a listener reopened on a running broker)."""
        await self.bind(new_connection, handshake_timeout)
        await self.serve()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        path, self._socket_path = self._socket_path, None
        if path is not None:
            with contextlib.suppress(OSError):  # someone else removed it; nothing to do
                path.unlink()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def bound(self) -> bool:
        """Accepting connections."""
        return self._server is not None and self._server.is_serving()

    @property
    def address(self) -> str:
        """Where it listens: ``host:port``, or the socket path."""
        return str(self.config.socket) if self.config.type == "unix" else f"{self.config.host}:{self.port}"

    @property
    def url(self) -> str:
        config = self.config
        if config.type == "unix":
            return f"unix://{config.socket}"
        scheme = {"tcp": "mqtt", "tls": "mqtts", "ws": "ws", "wss": "wss"}[config.type]
        path = config.path if config.type in ("ws", "wss") else ""
        return f"{scheme}://{config.host}:{self.port}{path}"

    def __repr__(self) -> str:
        return f"<Listener {self.name} {self.url}>"
