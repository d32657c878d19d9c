"""pytest fixtures that start a real wrenmq broker on a free port (registered as the ``wrenmq`` plugin).

The broker runs in a background thread with its own event loop, so synchronous tests (paho-mqtt,
raw sockets, mosquitto_pub) and async tests alike can talk to it over TCP. Tests get isolated,
fast brokers: memory storage, no $SYS, a temporary data_dir, and no WRENMQ_* environment leaking in.

Fixtures:
    wrenmq_server_factory(**overrides) -> WrenmqServer   start brokers with other settings
    wrenmq_server -> WrenmqServer                          one broker with the test defaults
    wrenmq_broker -> Broker                                (pytest-asyncio) a broker in the test's loop

This module is imported by every pytest run where wrenmq is installed, so it imports nothing heavy
(no broker, no uvloop, no pytest-asyncio requirement) until a fixture is used.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from wrenmq.config import Config, load_config

if TYPE_CHECKING:
    from wrenmq.api import ApiServer
    from wrenmq.broker import Broker
    from wrenmq.services import Services
    from wrenmq.services.brokers import BrokerConnections

__all__ = ["WrenmqServer", "server_config"]

T = TypeVar("T")
TIMEOUT = 10.0  # seconds to wait for start, stop and cross-thread calls


def server_config(data_dir: Path, **overrides: Any) -> Config:
    """Test defaults (port 0, memory storage, no $SYS) under ``overrides``; the environment is ignored."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "api_port": "off",  # tests that use the API ask for api_port=0
        "ws_port": "off",  # (None would mean "not set" to load_config)
        "storage": "memory",
        "sys_interval": 0,
        "data_dir": data_dir,
    }
    settings.update(overrides)
    return load_config(env={}, overrides=settings)


class WrenmqServer:
    """A broker running on its own event loop in a daemon thread; every method is thread-safe."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = _new_event_loop()
        self._broker: Broker | None = None
        self.services: Services | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"wrenmq-{id(self):x}", daemon=True)

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("the broker is not running")
        return self._broker

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        """The bound TCP port (the config asks for port 0, so this is what clients must use)."""
        return self.broker.port

    def listener_port(self, kind: str) -> int:
        """The bound port of the first listener of type ``kind`` (tcp, tls, ws or wss)."""
        return self.broker.listener_port(kind)

    @property
    def ws_port(self) -> int:
        """The bound WebSocket port (start the server with ``ws_port=0``)."""
        return self.listener_port("ws")

    @property
    def tls_port(self) -> int:
        """The bound TLS port (start the server with ``tls_port=0`` and a certificate)."""
        return self.listener_port("tls")

    @property
    def wss_port(self) -> int:
        """The bound secure WebSocket port (start the server with ``wss_port=0`` and a certificate)."""
        return self.listener_port("wss")

    def start(self) -> WrenmqServer:
        self._thread.start()
        if not self._started.wait(TIMEOUT):
            raise TimeoutError(f"wrenmq did not start within {TIMEOUT}s")
        if self._start_error is not None:
            self._thread.join(TIMEOUT)
            raise self._start_error
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        """Run ``coro`` on the broker's loop and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: dict[int, Any] | None = None,
    ) -> int:
        """Publish as the server would (no client), e.g. to feed subscribers under test."""
        return self.call(self.broker.publish(topic, payload, qos=qos, retain=retain, properties=properties))

    def stop(self) -> None:
        """Stop the broker gracefully, then its loop and thread; safe to call twice."""
        if not self._thread.is_alive():
            return
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            _close_loop(self.loop)
            return
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            _close_loop(self.loop)

    async def _start(self) -> None:
        from wrenmq.broker import Broker  # lazily: importing the plugin must stay cheap
        from wrenmq.services import Services

        broker = Broker(self.config)  # built on its own loop, in case it binds loop objects
        services = Services(broker)  # external brokers and bridges, the API
        await services.start_all()  # as `wrenmq serve` does: all or nothing
        self._broker, self.services = broker, services

    async def _stop(self) -> None:
        if self.services is not None:
            await self.services.stop()
        if self._broker is not None:
            await self._broker.stop()

    @property
    def api(self) -> ApiServer | None:
        """The HTTP API server (None unless started with ``api_port``)."""
        return self.services.api if self.services is not None else None

    @property
    def connections(self) -> BrokerConnections | None:
        """External broker connections and bridges."""
        return self.services.connections if self.services is not None else None

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the management API (start with ``api_port=0``)."""
        api = self.api
        if api is None:
            raise RuntimeError("the API is off: start the server with api_port=0")
        return api.url

    def __repr__(self) -> str:
        port = self._broker.port if self._broker is not None else None
        return f"<WrenmqServer {self.host}:{port}>"


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the broker left behind so teardown does not warn about pending tasks."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def wrenmq_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WrenmqServer]]:
    """Start brokers with config overrides, e.g. ``wrenmq_server_factory(maximum_qos=1)``; all stop after."""
    servers: list[WrenmqServer] = []

    def start(**overrides: Any) -> WrenmqServer:
        overrides.setdefault("data_dir", tmp_path_factory.mktemp("wrenmq"))
        server = WrenmqServer(server_config(**overrides))
        servers.append(server)
        return server.start()

    yield start
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.stop()
        except BaseException as exc:  # stop the rest before reporting
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def wrenmq_server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    """A running broker on 127.0.0.1 with a free port, memory storage and $SYS off."""
    return wrenmq_server_factory()


try:
    import pytest_asyncio
except ImportError:  # pytest-asyncio is optional: only the threaded fixtures are offered
    pass
else:

    @pytest_asyncio.fixture
    async def wrenmq_broker(tmp_path: Path) -> AsyncIterator[Broker]:
        """A started Broker on the test's own event loop, for async tests that call it directly."""
        from wrenmq.broker import Broker

        broker = Broker(server_config(tmp_path / "wrenmq"))
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()
