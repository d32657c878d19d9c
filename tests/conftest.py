"""Shared fixtures: a broker per test (from the wrenmq pytest plugin) and raw clients for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mqttraw import RawClient


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
