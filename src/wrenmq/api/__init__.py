"""The management HTTP API: FastAPI on the broker's own event loop, on its own listener.

``create_app(broker, services)`` builds the ASGI app over the services ``Services`` made (the one
wiring point: routes are handed the services they serve, they do not look for them);
``ApiServer`` runs it with uvicorn inside the running loop (no thread, no second loop). Routes read
the broker through ``BrokerFacade`` (values, not the broker's own objects) where they have moved
to it, and change it through its public methods and hooks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..storage.private import warn_if_open

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..broker.broker import Broker
    from ..config import Config
    from .wiring import ApiServices

__all__ = ["ApiServer", "bind_api", "check_api", "create_app"]

log = logging.getLogger("wrenmq.api")


def create_app(broker: Broker, services: ApiServices) -> FastAPI:
    """The API app for ``broker``; each area of the API adds its routes in ``install``."""
    from fastapi import FastAPI  # imported here: every `wrenmq` command imports this package

    from . import (
        console,
        docs,
        health,
        history,
        metrics,
        problems,
        routes_admin,
        routes_broker,
        routes_brokers,
        routes_clients,
        routes_cluster,
        routes_devices,
        routes_keys,
        routes_publish,
        routes_realtime,
        routes_resources,
        routes_retained,
        routes_session,
        routes_topics,
        streams,
        trace,
    )

    app = FastAPI(
        title="wrenmq management API",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url=None,  # served from local assets, not a CDN (see docs.py)
        redoc_url=None,
    )
    from ..broker.facade import BrokerFacade

    facade = BrokerFacade(broker)  # what routes may know and do of the broker
    app.state.broker = broker
    app.state.facade = facade
    assert services.changes is not None and services.api_keys is not None, "Services.start builds them with the API"
    app.state.services = services
    app.state.api_keys = services.api_keys
    app.state.on_stop = []  # callables ApiServer.stop runs first: uvicorn's shutdown waits for open responses
    app.state.on_start = []  # callables ApiServer.start runs on the broker's loop once it serves
    problems.install(app, broker)
    health.install(app, facade)
    metrics.install(app, facade)
    history.install(app, broker)
    streams.install(app, broker)
    trace.install(app, broker)
    routes_broker.install(app, facade)
    routes_brokers.install(app, broker, services.connections)
    routes_cluster.install(app, services.cluster)
    routes_clients.install(app, facade)
    routes_topics.install(app, facade)
    routes_retained.install(app, facade)
    routes_resources.install(app, broker, services.changes)
    routes_devices.install(app, broker, services.presence)
    routes_publish.install(app, broker, services.connections)
    routes_admin.install(app, broker)
    routes_keys.install(app, broker)
    routes_realtime.install(app, broker, services.realtime, services.cluster)
    routes_session.install(app, broker)
    docs.install(app, broker)
    console.install(app, broker)
    return app


def check_api(config: Config) -> list[str]:
    """What would stop the API from starting, as messages naming the key (its TLS files); the key
    file's mode is checked too (a warning)."""
    warn_if_open(config.api_keys_path, "API key file")
    if config.api.certfile is None:
        return []
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.api.certfile, config.api.keyfile)
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (getattr(exc, "reason", None) or exc)
        keyfile = f" / api_keyfile {config.api.keyfile}"
        if config.api.keyfile is None:
            keyfile = " (api_keyfile is unset, so the key must be in the same file)"
        return [f"api_certfile {config.api.certfile}{keyfile}: cannot load: {why}"]
    return []


def browsable_host(host: str) -> str:
    """``host`` as a browser on this machine reaches it: a wildcard address by loopback, IPv6 in brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def bind_api(config: Config) -> socket.socket:
    """The API's listening socket, bound before anything starts: a taken port is an ``OSError``
    naming the address (rather than uvicorn's ``sys.exit()`` once the broker is serving)."""
    assert config.api.port is not None, "the API is off (api_port)"
    family = socket.AF_INET6 if ":" in config.api.host else socket.AF_INET
    try:
        sock = socket.create_server(
            (config.api.host, config.api.port), family=family, backlog=1024, reuse_port=config.reuse_port
        )
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"API listener on {config.api.host}:{config.api.port}: {exc.strerror} "
            "(api_port: choose another port, or off for no API and console)",
        ) from exc
    sock.setblocking(False)
    return sock


class ApiServer:
    """uvicorn serving ``create_app(broker, services)`` on ``config.api.host:port`` in the current loop."""

    def __init__(self, broker: Broker, services: ApiServices) -> None:
        self.broker = broker
        self.app = create_app(broker, services)
        self.port = 0
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._main_loop: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (from ``bind_api``), or on a socket bound now."""
        import uvicorn

        from .limits import limit_requests

        config = self.broker.config
        assert config.api.port is not None, "the API is off (api_port)"
        ssl: dict[str, Any] = {}
        if config.api.certfile is not None:
            ssl = {"ssl_certfile": str(config.api.certfile)}
            if config.api.keyfile is not None:  # else the key is in the certificate file
                ssl["ssl_keyfile"] = str(config.api.keyfile)
        bridge = getattr(self.app.state, "socketio", None)  # Socket.IO at /socket.io/, the API around it
        served = bridge.asgi(self.app) if bridge is not None else self.app
        server_config = uvicorn.Config(
            limit_requests(self.app, served),  # bodies and unauthenticated requests bounded first
            host=config.api.host,
            port=config.api.port,
            lifespan="off",
            access_log=False,
            log_config=None,  # keep wrenmq's logging: uvicorn's dictConfig would close its handlers
            log_level="warning",
            server_header=False,
            **ssl,
        )
        server = uvicorn.Server(server_config)
        if sock is None:
            sock = bind_api(self.broker.config)
        # What uvicorn's serve() does, less taking over the process's signal handlers: load the
        # config, start serving on this loop, and run main_loop() (Date header, should_exit).
        server_config.load()
        server.lifespan = server_config.lifespan_class(server_config)
        await server.startup(sockets=[sock])
        for start in self.app.state.on_start:
            start()
        self._server, self._socket = server, sock
        self.port = sock.getsockname()[1]
        self._main_loop = asyncio.get_running_loop().create_task(server.main_loop())
        scheme = "https" if ssl else "http"
        base = f"{scheme}://{browsable_host(config.api.host)}:{self.port}"
        log.info("API listening on %s/api/v1; web console at %s/", base, base)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        for stop in self.app.state.on_stop:  # end streams, which would otherwise hold shutdown open
            stopped = stop()
            if inspect.isawaitable(stopped):
                await stopped
        if self._main_loop is not None:
            await self._main_loop
        await server.shutdown(sockets=[self._socket] if self._socket is not None else None)

    @property
    def url(self) -> str:
        scheme = "https" if self.broker.config.api.certfile is not None else "http"
        return f"{scheme}://{self.broker.config.api.host}:{self.port}"
