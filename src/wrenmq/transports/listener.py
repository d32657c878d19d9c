"""``Listener``: binds one ``ListenerConfig`` (one address, one transport) and hands every accepted
socket to a broker ``Connection`` (tcp, tls) or to a ``WebSocketAdapter`` in front of one (ws, wss)."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any

from ..config import ListenerConfig
from .tls import server_context

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["Listener"]

log = logging.getLogger("wrenmq.listener")


class Listener:
    """A bound listener and what connections need from it: its settings and its own counters."""

    def __init__(self, config: ListenerConfig, anonymous: bool) -> None:
        self.config = config
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

    def prepare(self) -> None:
        """Load what the listener reads from files (its TLS certificate, key and CA), so a bad
        one stops start-up before anything is bound; ``ConfigError`` names the setting."""
        if self.config.secure and self._ssl is None:
            self._ssl = server_context(self.config)

    async def bind(self, broker: Broker) -> None:
        """Bind the address without accepting anyone yet (``serve`` does): until then the kernel
        refuses connections, so no client reaches a broker that may still fail to start.
        ``OSError`` names the listener and its address."""
        from ..broker.connection import Connection

        self.prepare()
        config = self.config
        loop = asyncio.get_running_loop()
        factory: Any
        if config.type in ("tcp", "tls"):
            factory = functools.partial(Connection, broker, self)  # no Python frame per accepted socket
        else:
            from .websocket import WebSocketAdapter

            def factory() -> WebSocketAdapter:
                return WebSocketAdapter(Connection(broker, self), config.path)

        try:
            self._server = await loop.create_server(
                factory,
                config.host,
                config.port,
                ssl=self._ssl,
                # A socket that stalls its handshake gets no longer than one that never sends CONNECT.
                ssl_handshake_timeout=broker.config.connect_timeout if self._ssl is not None else None,
                reuse_address=True,
                backlog=4096,
                start_serving=False,
            )
        except OSError as exc:
            raise OSError(exc.errno, f"listener {self.name} on {config.host}:{config.port}: {exc.strerror}") from exc
        server: Any = self._server  # uvloop's Server.sockets is a list where typeshed says tuple
        self.port = server.sockets[0].getsockname()[1]

    async def serve(self) -> None:
        """Start accepting connections on the bound address."""
        assert self._server is not None, "bind() first"
        try:
            await self._server.start_serving()
        except OSError as exc:  # listen() lost a race for the port to another process
            raise OSError(exc.errno, f"listener {self.name} on {self.config.host}:{self.port}: {exc.strerror}") from exc

    async def start(self, broker: Broker) -> None:
        """Bind and serve at once (a listener reopened on a running broker)."""
        await self.bind(broker)
        await self.serve()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def bound(self) -> bool:
        """Accepting connections."""
        return self._server is not None and self._server.is_serving()

    @property
    def url(self) -> str:
        config = self.config
        scheme = {"tcp": "mqtt", "tls": "mqtts", "ws": "ws", "wss": "wss"}[config.type]
        path = config.path if config.type in ("ws", "wss") else ""
        return f"{scheme}://{config.host}:{self.port}{path}"

    def __repr__(self) -> str:
        return f"<Listener {self.name} {self.url}>"
