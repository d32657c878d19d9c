"""Services around the broker: each plugs in through hooks and the broker's public methods, with
its own API routes (see STYLE.md).

``Services`` starts and stops them beside a running broker, in one place for ``wrenmq serve`` and
the pytest plugin: device presence (``presence``; first, so it sees every device from the
start), the external broker connections and bridges, then the HTTP API (when ``api_port`` is
set). Stopping goes in reverse, the API first, so no request reaches a stopped service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api import ApiServer
    from ..broker.broker import Broker
    from .brokers import BrokerConnections
    from .presence import Presence

__all__ = ["Services"]


class Services:
    """What runs beside ``broker``: ``await Services(broker).start()`` once the broker has started."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: BrokerConnections | None = None
        self.presence: Presence | None = None
        self.api: ApiServer | None = None

    async def start(self) -> None:
        from .brokers import BrokerConnections  # lazily: `wrenmq --help` must not import the client

        if self.broker.config.presence:
            from .presence import Presence

            self.presence = Presence(self.broker)  # device registry, wills, heartbeats, snapshot
            await self.presence.start()
        self.connections = BrokerConnections(self.broker)  # external brokers and bridges ([[brokers]])
        await self.connections.start()
        if self.broker.config.api_port is not None:
            from ..api import ApiServer

            self.api = ApiServer(self.broker)
            await self.api.start()

    async def stop(self) -> None:
        api, self.api = self.api, None
        if api is not None:
            await api.stop()
        connections, self.connections = self.connections, None
        if connections is not None:
            await connections.stop()
        presence, self.presence = self.presence, None
        if presence is not None:
            await presence.stop()
