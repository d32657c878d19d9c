"""``wrenmq.events.ChangePublisher`` (wrenmq feature, issue 7): resource change events from an
application to any broker, checked with paho-mqtt subscribed to the events' topics, against wrenmq
and a real Mosquitto; configuration from MQTT_* variables; disabled mode; a broker that is down
(an MqttProxy refusing connections in front of the broker): events queued and delivered in order
once it is up, the oldest dropped past the bound, or all dropped with offline="drop".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mosquitto_fixture import MosquittoBroker
from mqttproxy import MqttProxy
from paho_sync import MQTTv5, MQTTv311, PahoClient
from wrenmq.events import ChangePublisher
from wrenmq.pytest_plugin import WrenmqServer

FAST = {"backoff": (0.05, 0.2), "connect_timeout": 2.0}


async def receive(sub: PahoClient, count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` messages (paho waits in a thread: the publisher's loop keeps running)."""
    messages = await asyncio.to_thread(sub.receive, count)
    return [(m.topic, json.loads(m.payload)) for m in messages]


async def nothing(sub: PahoClient, seconds: float = 0.4) -> None:
    await asyncio.to_thread(sub.nothing, seconds)


def subscriber(port: int, topic: str = "events/#", protocol: Any = MQTTv5) -> PahoClient:
    sub = PahoClient(port, protocol, f"sub-{uuid.uuid4().hex[:8]}")
    sub.subscribe(topic, 1)
    return sub


@pytest.fixture
async def proxy(wrenmq_server: WrenmqServer) -> AsyncIterator[MqttProxy]:
    """A proxy in front of wrenmq that refuses connections (the broker is "down") until told."""
    async with MqttProxy(wrenmq_server.port) as running:
        running.refuse = True
        yield running


async def check_flow(publisher: ChangePublisher, sub: PahoClient, prefix: str) -> None:
    """created, updated (and a no-op update), deleted: each on <prefix>/all and <prefix>/<kind>/<id>."""
    created = await publisher.created("flow", "f1", {"label": "a", "src": {"port": 1}})
    unchanged = await publisher.updated("flow", "f1", {"label": "a"}, previous={"label": "a"})
    updated = await publisher.updated("flow", "f1", {"label": "b", "src": {"port": 2}}, previous=created["flow"])
    deleted = await publisher.deleted("flow", "f1", updated["flow"])
    other = await publisher.created("device", "d1", {})
    assert unchanged is None  # a change that changes nothing publishes nothing
    assert await publisher.flush(5)
    received = await receive(sub, 8)
    await nothing(sub)
    for event in (created, updated, deleted):
        assert (f"{prefix}/all", event) in received and (f"{prefix}/flow/f1", event) in received
    assert (f"{prefix}/device/d1", other) in received
    assert [e["seq"] for t, e in received if t == f"{prefix}/flow/f1"] == [1, 2, 3]
    assert other["seq"] == 1  # per kind
    assert created["event"] == "created" and created["flow_id"] == "f1"
    assert created["diff"] == {"label": {"old": None, "new": "a"}, "src": {"old": None, "new": {"port": 1}}}
    assert updated["diff"] == {"label": {"old": "a", "new": "b"}, "src.port": {"old": 1, "new": 2}}
    assert deleted["event"] == "deleted" and deleted["diff"]["label"] == {"old": "b", "new": None}
    assert set(created) == {"event", "flow_id", "flow", "diff", "timestamp", "seq", "id"}
    assert publisher.published == 8 and publisher.dropped == 0


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["3.1.1", "5.0"])
async def test_events_reach_wrenmq_subscribers(wrenmq_server: WrenmqServer, protocol: Any) -> None:
    sub = subscriber(wrenmq_server.port, protocol=protocol)
    try:
        env = {"MQTT_BROKER_URL": f"tcp://127.0.0.1:{wrenmq_server.port}"}
        async with ChangePublisher(env=env) as publisher:
            await check_flow(publisher, sub, "events")
    finally:
        sub.close()


async def test_events_reach_mosquitto_subscribers(mosquitto: MosquittoBroker) -> None:
    """Another broker entirely, configured from the environment: URL, prefix, MQTT 3.1.1 client."""
    sub = subscriber(mosquitto.port, "app/changes/#")
    try:
        env = {"MQTT_BROKER_URL": f"mqtt://127.0.0.1:{mosquitto.port}", "MQTT_TOPIC_PREFIX": "app/changes"}
        async with ChangePublisher(env=env, version=4) as publisher:
            await check_flow(publisher, sub, "app/changes")
    finally:
        sub.close()


async def test_disabled_builds_events_and_sends_nothing(wrenmq_server: WrenmqServer) -> None:
    sub = subscriber(wrenmq_server.port)
    try:
        env = {"MQTT_ENABLED": "false", "MQTT_BROKER_URL": f"tcp://127.0.0.1:{wrenmq_server.port}"}
        async with ChangePublisher(env=env) as publisher:
            event = await publisher.created("flow", "f1", {"a": 1})
            assert event["seq"] == 1 and event["flow"] == {"a": 1}
            assert publisher.client is None
        await nothing(sub)
    finally:
        sub.close()


async def test_broker_down_events_are_queued_and_delivered_in_order_when_it_is_up(
    wrenmq_server: WrenmqServer, proxy: MqttProxy
) -> None:
    sub = subscriber(wrenmq_server.port)
    publisher = ChangePublisher(f"tcp://127.0.0.1:{proxy.port}", **FAST)
    try:
        await publisher.start()
        events = [await publisher.created("flow", f"f{i}", {"i": i}) for i in range(3)]  # does not wait
        await asyncio.sleep(0.3)
        assert not publisher.client or not publisher.client.connected
        assert publisher.queued == 6
        await nothing(sub, 0.2)
        proxy.refuse = False
        assert await publisher.flush(10)
        received = await receive(sub, 6)
        assert [e for t, e in received if t == "events/all"] == events
        assert publisher.published == 6 and publisher.dropped == 0
    finally:
        await publisher.close()
        sub.close()


async def test_broker_down_past_the_bound_the_oldest_are_dropped_with_a_warning(
    wrenmq_server: WrenmqServer, proxy: MqttProxy, caplog: pytest.LogCaptureFixture
) -> None:
    sub = subscriber(wrenmq_server.port)
    publisher = ChangePublisher(f"tcp://127.0.0.1:{proxy.port}", max_queued=2, **FAST)
    try:
        await publisher.start()
        with caplog.at_level(logging.WARNING, "wrenmq.events"):
            events = [await publisher.created("flow", f"f{i}", {"i": i}) for i in range(5)]
            await asyncio.sleep(0.2)
        assert publisher.dropped == 6 and publisher.queued == 4
        assert "event queue full" in caplog.text
        proxy.refuse = False
        assert await publisher.flush(10)
        received = await receive(sub, 4)
        await nothing(sub)
        assert [e for t, e in received if t == "events/all"] == events[3:]  # the newest kept
    finally:
        await publisher.close()
        sub.close()


async def test_offline_drop_policy_drops_while_down(
    wrenmq_server: WrenmqServer, proxy: MqttProxy, caplog: pytest.LogCaptureFixture
) -> None:
    sub = subscriber(wrenmq_server.port)
    env = {"MQTT_BROKER_URL": f"tcp://127.0.0.1:{proxy.port}", "MQTT_OFFLINE": "drop"}
    publisher = ChangePublisher(env=env, **FAST)
    try:
        await publisher.start()
        with caplog.at_level(logging.WARNING, "wrenmq.events"):
            dropped = await publisher.created("flow", "f1", {})
        assert dropped["seq"] == 1 and publisher.dropped == 2 and "unreachable" in caplog.text
        proxy.refuse = False
        assert publisher.client is not None
        await publisher.client.wait_connected(10)
        kept = await publisher.created("flow", "f2", {})
        assert await publisher.flush(5)
        assert [e for _, e in await receive(sub, 2)] == [kept, kept]
        await nothing(sub)
    finally:
        await publisher.close()
        sub.close()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MQTT_ENABLED": "maybe"}, "MQTT_ENABLED"),
        ({"MQTT_BROKER_URL": "http://broker:1883"}, "http://broker:1883"),
        ({"MQTT_QOS": "3"}, "MQTT_QOS"),
        ({"MQTT_OFFLINE": "keep"}, "MQTT_OFFLINE"),
        ({"MQTT_TOPIC_PREFIX": "a/#"}, "MQTT_TOPIC_PREFIX"),
        ({"MQTT_QUEUE_SIZE": "lots"}, "MQTT_QUEUE_SIZE"),
    ],
)
def test_bad_settings_are_refused_naming_them(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        ChangePublisher(env=env)


async def test_kind_and_id_must_be_single_topic_levels() -> None:
    publisher = ChangePublisher(enabled=False)
    for kind, resource_id in (("flow", "a/b"), ("fl#w", "a"), ("flow", ""), ("diff", "a")):
        with pytest.raises(ValueError, match=r"^(kind|id) "):
            await publisher.created(kind, resource_id, {})
