"""``Listener``: binds one ``ListenerConfig`` (one address, one transport) and hands every accepted
socket to a broker ``Connection`` (tcp, tls) or to a ``WebSocketAdapter`` in front of one (ws, wss)."""

from __future__ import annotations

import asyncio
import functools
import logging
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

    async def start(self, broker: Broker) -> None:
        from ..broker.connection import Connection

        config = self.config
        loop = asyncio.get_running_loop()
        ssl_context = server_context(config) if config.secure else None
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
                ssl=ssl_context,
                # A socket that stalls its handshake gets no longer than one that never sends CONNECT.
                ssl_handshake_timeout=broker.config.connect_timeout if ssl_context is not None else None,
                reuse_address=True,
                backlog=4096,
            )
        except OSError as exc:
            raise OSError(exc.errno, f"listener {self.name} on {config.host}:{config.port}: {exc.strerror}") from exc
        server: Any = self._server  # uvloop's Server.sockets is a list where typeshed says tuple
        self.port = server.sockets[0].getsockname()[1]

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
