"""Shared fixtures: a broker per test (from the wrenmq pytest plugin) and raw clients for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mosquitto_fixture import mosquitto, mosquitto_factory  # noqa: F401  (fixtures: a real Mosquitto)
from mqttraw import RawClient
from paho_sync import PahoFactory


@pytest.fixture
def broker(wrenmq_server):  # type: ignore[no-untyped-def]
    """A fresh broker on a free port, memory storage, $SYS off."""
    return wrenmq_server


@pytest.fixture
def raw(broker) -> Iterator[Callable[..., RawClient]]:  # type: ignore[no-untyped-def]
    """Factory for raw clients connected (TCP only) to ``broker``; closed after the test."""
    clients: list[RawClient] = []

    def make(version: int = 4) -> RawClient:
        client = RawClient(broker.port, version)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def paho(broker) -> Iterator[PahoFactory]:  # type: ignore[no-untyped-def]
    """Factory for paho-mqtt clients (3.1.1 or 5.0) connected to ``broker``; stopped after the test."""
    factory = PahoFactory(broker.port)
    yield factory
    factory.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., RawClient]]:
    """Raw clients for brokers started with ``wrenmq_server_factory``; closed after the test."""
    made: list[RawClient] = []

    def make(server: Any, version: int = 5) -> RawClient:
        client = RawClient(server.port, version)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, launched once per test module (see tests/browser.py)."""
    from browser import chromium

    with chromium() as launched:
        yield launched


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="longer crash-suite runs (tests/test_crash.py)")
