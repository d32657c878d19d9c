"""Services around the broker: each plugs in through hooks and the broker's public methods, with
its own API routes (see STYLE.md).

``Services`` is the one wiring point: it builds, starts and stops them beside a running broker,
in one place for ``wrenmq serve``, the pytest plugin and applications that embed wrenmq: device
presence (``presence``; first, so it sees every device from the start), the external broker
connections and bridges, then with the HTTP API (when ``api_port`` is set) its key store, the
resource change events and the realtime service, and the API itself, which is handed them
(``create_app(broker, services)``): no route or service looks another up. Stopping goes in
reverse, the API first, so no request reaches a stopped service.

``start_all`` starts the broker and its services all or nothing: every setting that names a file
is checked (all problems reported together) and every listener, MQTT and API, is bound before the
data directory is created or anyone is served; clients are accepted only once everything runs.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ..config import ConfigError

if TYPE_CHECKING:
    from ..api import ApiServer
    from ..api.keys import ApiKeyStore
    from ..broker.broker import Broker
    from ..cluster import Cluster
    from .brokers import BrokerConnections
    from .changes import ChangeService
    from .presence import Presence
    from .realtime import RealtimeService

__all__ = ["Services"]


class Services:
    """What runs beside ``broker``: ``await Services(broker).start()`` once the broker has started,
    or ``await Services(broker).start_all()`` to start the broker too, all or nothing."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.cluster: Cluster | None = None  # with cluster_url
        self.connections: BrokerConnections | None = None
        self.presence: Presence | None = None
        self.api_keys: ApiKeyStore | None = None  # with the API
        self.changes: ChangeService | None = None  # with the API (its resource routes publish them)
        self.realtime: RealtimeService | None = None  # with the API, unless realtime = false
        self.api: ApiServer | None = None
        self._api_socket: socket.socket | None = None  # bound by bind(), served by start()

    def check(self) -> list[str]:
        """What would stop the services from starting (the API's TLS files, a bridge's cafile), as
        messages naming the key; nothing is bound or created."""
        from .brokers import check_connection  # lazily: `wrenmq --help` must not import the client

        config = self.broker.config
        errors = [found for found in map(check_connection, config.brokers) if found is not None]
        if config.api.port is not None:
            from ..api import check_api

            errors += check_api(config)
        return errors

    def bind(self) -> None:
        """Bind the API's address (an ``OSError`` names it), serving no one until ``start``."""
        if self.broker.config.api.port is not None and self._api_socket is None:
            from ..api import bind_api

            self._api_socket = bind_api(self.broker.config)

    async def start_all(self) -> None:
        """Start the broker and these services, all or nothing: check every setting (one
        ``ConfigError`` lists every problem), bind every listener (``OSError`` names the address),
        then create the storage, start the services and only then accept clients. On failure
        everything is stopped again; before the storage opens, nothing has been written to disk."""
        broker = self.broker
        errors = broker.check() + self.check()
        if errors:
            await broker.stop()  # forgets what check() prepared
            raise ConfigError("\n".join(errors))
        try:
            await broker.bind()
            self.bind()
            await broker.start(serve=False)
            await self.start()
            await broker.serve()
        except BaseException:
            await self.stop()
            await broker.stop()
            raise

    async def start(self) -> None:
        from .brokers import BrokerConnections  # lazily: `wrenmq --help` must not import the client

        cluster_url = self.broker.config.cluster.url
        if cluster_url is not None:  # first: every service's routes go cluster-wide
            from ..cluster import Cluster, default_node_name

            config = self.broker.config
            self.cluster = Cluster(
                self.broker,
                cluster_url,
                config.cluster.node_name or default_node_name(config.port),
                f"wrenmq:{config.cluster.name}:",
            )
            await self.cluster.start()
        if self.broker.config.presence.enabled:
            from .presence import Presence

            self.presence = Presence(self.broker, self.cluster)  # device registry, wills, heartbeats, snapshot
            await self.presence.start()
        # External brokers and bridges ([[brokers]]); in a cluster, each run by one node at a time.
        self.connections = BrokerConnections(self.broker, self.cluster)
        await self.connections.start()
        config = self.broker.config
        if config.api.port is not None:
            from ..api import ApiServer
            from ..api.keys import ApiKeyStore
            from .changes import ChangeService

            self.api_keys = ApiKeyStore(config.api_keys_path)
            store = None
            if self.cluster is not None:  # the cluster's keys, console sessions and resources, in Redis
                from ..api.cluster_keys import ClusterKeyStore
                from ..storage.redis_resources import RedisResources

                self.api_keys = ClusterKeyStore(config.api_keys_path, self.cluster)
                store = RedisResources(self.cluster.redis, self.cluster.key)
            self.changes = ChangeService(self.broker, store)
            if config.realtime.enabled:
                from .realtime import RealtimeService

                self.realtime = RealtimeService(self.broker, self.api_keys, self.cluster)
            self.api = ApiServer(self.broker, self)
            await self.api.start(self._api_socket)
            self._api_socket = None  # the API's now

    async def stop(self) -> None:
        sock, self._api_socket = self._api_socket, None
        if sock is not None:  # bound, never served
            sock.close()
        api, self.api = self.api, None
        if api is not None:
            await api.stop()  # (it stops the realtime service it serves)
        self.realtime = self.changes = self.api_keys = None
        connections, self.connections = self.connections, None
        if connections is not None:
            await connections.stop()
        presence, self.presence = self.presence, None
        if presence is not None:
            await presence.stop()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.stop()
