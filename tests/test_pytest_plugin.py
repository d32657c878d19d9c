"""The pytest plugin's fixtures, used the way a user would: a real broker, reached over TCP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.subscribe as subscribe
import pytest

from wrenmq.pytest_plugin import WrenmqServer

if TYPE_CHECKING:
    from wrenmq.broker import Broker

if not hasattr(pytest.importorskip("wrenmq.broker"), "Broker"):
    pytest.skip("wrenmq.broker.Broker does not exist yet", allow_module_level=True)

# MQTT 3.1.1 CONNECT, clean session, keep alive 60, client id "p".
CONNECT_311 = bytes.fromhex("100d00044d5154540402003c000170")


def test_server_listens_on_a_free_port(wrenmq_server: WrenmqServer) -> None:
    assert wrenmq_server.host == "127.0.0.1"
    assert wrenmq_server.port > 0
    with socket.create_connection((wrenmq_server.host, wrenmq_server.port), timeout=5) as sock:
        sock.sendall(CONNECT_311)
        assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted


def test_server_publish_reaches_a_synchronous_subscriber(wrenmq_server: WrenmqServer) -> None:
    wrenmq_server.publish("greetings", b"hello", qos=1, retain=True)
    message = subscribe.simple("greetings", hostname=wrenmq_server.host, port=wrenmq_server.port, keepalive=10)
    assert (message.topic, message.payload, message.retain) == ("greetings", b"hello", True)


def test_factory_applies_overrides_and_test_defaults(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    first = wrenmq_server_factory(maximum_qos=1)
    second = wrenmq_server_factory()
    assert first.config.limits.maximum_qos == 1
    assert (second.config.storage, second.config.sys_interval) == ("memory", 0)
    assert first.port != second.port
    assert first.config.data_dir != second.config.data_dir


async def test_async_broker_fixture_runs_on_the_test_loop(wrenmq_broker: Broker) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", wrenmq_broker.port)
    writer.write(CONNECT_311)
    assert await reader.readexactly(4) == b"\x20\x02\x00\x00"
    writer.close()
    await writer.wait_closed()
