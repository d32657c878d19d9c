"""Embedding: ``wrenmq.Broker`` inside an application's own asyncio event loop.

The raw test clients block, so they run in the loop's default executor while the broker serves on
the loop itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import wrenmq
from mqttraw import RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def subscriber(port: int, topic_filter: str, qos: int = 1, version: int = 4, client_id: str = "") -> RawClient:
    client = RawClient(port, version)
    assert client.connect(client_id or f"sub-{topic_filter}").reason_code == 0
    client.subscribe(topic_filter, qos)
    return client


async def test_async_with_broker_publish_reaches_subscriber():  # [MQTT-3.8.4-8]
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory") as broker:
        sub = await blocking(subscriber, broker.port, "emb/#", 1)
        try:
            matched = await broker.publish("emb/x", b"hello", qos=1)
            assert matched == 1
            packet = await blocking(sub.expect, p.Publish)
            assert (packet.topic, packet.payload, packet.qos, packet.retain) == ("emb/x", b"hello", 1, False)
            sub.send(p.Puback(packet.packet_id))
        finally:
            sub.close()


async def test_publish_returns_the_match_count():  # [MQTT-3.3.4-2]: one copy per client, however many filters
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0) as broker:
        one = await blocking(subscriber, broker.port, "count/+", 0, 4, "one")
        two = await blocking(subscriber, broker.port, "count/#", 0, 4, "two")
        try:
            await blocking(two.subscribe, "count/x", 0)  # overlapping: still one delivery to "two"
            assert await broker.publish("count/x", "str payload") == 2
            assert await broker.publish("count/x/deeper", b"") == 1
            assert await broker.publish("elsewhere", b"") == 0
            assert (await blocking(one.expect, p.Publish)).payload == b"str payload"
            assert (await blocking(two.expect, p.Publish)).payload == b"str payload"
        finally:
            one.close()
            two.close()


async def test_in_process_retained_publish():  # [MQTT-3.3.1-5], [MQTT-3.3.1-9]
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory") as broker:
        assert await broker.publish("state/lamp", b"on", qos=1, retain=True) == 0
        sub = await blocking(subscriber, broker.port, "state/#", 1, 5)
        try:
            packet = await blocking(sub.expect, p.Publish)
            assert (packet.topic, packet.payload, packet.retain) == ("state/lamp", b"on", True)
        finally:
            sub.close()


async def test_in_process_publish_with_properties():  # [MQTT-3.3.2-17], [MQTT-3.3.2-6]
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory") as broker:
        sub = await blocking(subscriber, broker.port, "props/#", 1, 5)
        try:
            props = {PropertyId.USER_PROPERTY: [("k", "v")], PropertyId.MESSAGE_EXPIRY_INTERVAL: 30}
            assert await broker.publish("props/x", b"x", qos=1, properties=props) == 1
            packet = await blocking(sub.expect, p.Publish)
            assert packet.properties[PropertyId.USER_PROPERTY] == [("k", "v")]
            assert 29 <= packet.properties[PropertyId.MESSAGE_EXPIRY_INTERVAL] <= 30
        finally:
            sub.close()


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "#", "a\x00b"])
async def test_publish_to_an_invalid_topic_raises_value_error(topic):  # [MQTT-3.3.2-2], [MQTT-4.7.3-1..2]
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0) as broker:
        with pytest.raises(ValueError):
            await broker.publish(topic, b"x")


async def test_publish_with_an_invalid_qos_raises_value_error():  # [MQTT-3.3.1-4]
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0) as broker:
        with pytest.raises(ValueError):
            await broker.publish("a/b", b"x", qos=3)


async def test_broker_from_a_config_object(tmp_path: Path):
    config = wrenmq.Config(
        port=0, ws_port=None, storage="memory", sys_interval=0, max_packet_size=1024, data_dir=tmp_path
    )
    broker = wrenmq.Broker(config)
    assert broker.config is config
    overridden = wrenmq.Broker(config, receive_maximum=10)
    assert overridden.config.limits.receive_maximum == 10 and overridden.config.limits.max_packet_size == 1024
    async with broker:
        client = RawClient(broker.port, 5)
        try:
            ack = await blocking(client.connect, "configured")
            assert ack.properties[PropertyId.MAXIMUM_PACKET_SIZE] == 1024  # the config object is in force
        finally:
            client.close()


async def test_stop_is_idempotent_and_disconnects_clients():  # [MQTT-4.13.2-1] (DISCONNECT 0x8B, then close)
    broker = wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0)
    await broker.stop()  # never started: nothing to do
    await broker.start()
    port = broker.port
    client = RawClient(port, 5)
    try:
        await blocking(client.connect, "leaving")
        await broker.stop()
        await broker.stop()
        seen = await blocking(client.expect_closed)
        assert [(type(x), x.reason_code) for x in seen] == [(p.Disconnect, ReasonCode.SERVER_SHUTTING_DOWN)]
    finally:
        client.close()
    with pytest.raises(ConnectionRefusedError):  # the listener is gone
        RawClient(port, 4)


async def test_two_brokers_in_one_loop():
    async with (
        wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0) as first,
        wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0) as second,
    ):
        assert first.port != second.port
        sub_first = await blocking(subscriber, first.port, "same/topic", 0)
        sub_second = await blocking(subscriber, second.port, "same/topic", 0)
        try:
            assert await first.publish("same/topic", b"first") == 1
            assert await second.publish("same/topic", b"second") == 1
            assert (await blocking(sub_first.expect, p.Publish)).payload == b"first"
            assert (await blocking(sub_second.expect, p.Publish)).payload == b"second"
            await blocking(sub_first.nothing, 0.2)  # nothing crosses between the brokers
            await blocking(sub_second.nothing, 0.2)
        finally:
            sub_first.close()
            sub_second.close()


async def test_embedded_sqlite_broker_restores_retained_and_sessions(tmp_path: Path):  # [MQTT-3.1.2-23]
    settings: dict[str, Any] = {
        "port": 0,
        "ws_port": None,
        "storage": "sqlite",
        "data_dir": tmp_path,
        "sys_interval": 0,
    }
    async with wrenmq.Broker(**settings) as broker:
        sub = RawClient(broker.port, 5)
        ack = await blocking(lambda: sub.connect("keeper", properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60}))
        assert ack.reason_code == 0
        await blocking(sub.subscribe, "keep/#", 1)
        await blocking(sub.disconnect)
        await asyncio.sleep(0.05)  # let the broker read the DISCONNECT
        # Strict durability: publish() returns once what it stored is committed.
        assert await broker.publish("keep/queued", b"queued", qos=1) == 1
        await broker.publish("keep/retained", b"retained", qos=1, retain=True)

    async with wrenmq.Broker(**settings) as broker:
        sub = RawClient(broker.port, 5)
        try:
            ack = await blocking(
                lambda: sub.connect("keeper", clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60})
            )
            assert ack.session_present
            queued = await blocking(sub.expect, p.Publish)
            assert (queued.topic, queued.payload) == ("keep/queued", b"queued")
            sub.send(p.Puback(queued.packet_id))
        finally:
            sub.close()
        other = await blocking(subscriber, broker.port, "keep/retained", 1)
        try:
            kept = await blocking(other.expect, p.Publish)
            assert (kept.payload, kept.retain) == (b"retained", True)
        finally:
            other.close()
