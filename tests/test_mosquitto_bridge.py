"""Mosquitto bridges (issue 17, interoperability; Mosquitto's bridge protocol is not in the MQTT
specification): a Mosquitto bridge connects at protocol level 0x84 (3.1.1 plus the bridge bit) and
publishes its connection state on ``$SYS/broker/connection/<client id>/state``; wrenmq takes both
as Mosquitto does, so a ``topic ... both`` bridge delivers each message once on each side and keeps
retained messages retained. wrenmq's own bridges set the bit when they connect at 3.1.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mosquitto_fixture import MOSQUITTO, MosquittoBroker
from mqttraw import RawClient
from paho_sync import MQTTv311, PahoClient
from wrenmq.client import Client
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, UnsupportedProtocolVersion, encode
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0


def connect_bytes(name: bytes, level: int) -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes((level, 0x02, 0, 60)) + b"\x00\x02id"
    return bytes((0x10, len(body))) + body


def test_codec_takes_the_bridge_bit() -> None:  # [MQTT-3.1.2-2] for every other level
    for name, level, version in ((b"MQTT", 0x84, 4), (b"MQIsdp", 0x83, 3)):
        (packet,) = Parser().feed(connect_bytes(name, level))
        assert isinstance(packet, p.Connect)
        assert (packet.protocol_level, packet.bridge, packet.client_id) == (version, True, "id")
        assert encode(packet, version) == connect_bytes(name, level)  # round trip: the bit is sent again
    (plain,) = Parser().feed(connect_bytes(b"MQTT", 4))
    assert isinstance(plain, p.Connect) and not plain.bridge
    for name, level in ((b"MQTT", 0x85), (b"MQTT", 0x83), (b"MQIsdp", 0x84), (b"MQTT", 0x80)):
        with pytest.raises(UnsupportedProtocolVersion):
            list(Parser().feed(connect_bytes(name, level)))


def test_bridge_connection_gets_no_local_and_retain_as_published(wrenmq_server: WrenmqServer) -> None:
    """At 3.1.1 with the bridge bit: what the client publishes is not sent back to it, and a retained
    message reaches it with RETAIN set [MQTT-3.3.1-9 does not apply: Mosquitto's bridge rule]."""
    bridge = RawClient(wrenmq_server.port, 4)
    bridge.sock.sendall(connect_bytes(b"MQTT", 0x84))
    connack = bridge.recv()
    assert isinstance(connack, p.Connack) and connack.reason_code == 0
    plain = RawClient(wrenmq_server.port, 4)
    plain.connect("plain")
    for client in (bridge, plain):
        client.subscribe("b/#", qos=0)
    bridge.publish("b/mine", b"from the bridge", qos=1)  # its own copy would come before the PUBACK
    plain.publish("b/kept", b"retained", retain=True)  # routed after b/mine, which was acknowledged
    got = bridge.recv()
    assert isinstance(got, p.Publish) and (got.topic, got.retain) == ("b/kept", True)
    assert [(m.topic, m.retain) for m in (plain.recv(), plain.recv())] == [("b/mine", False), ("b/kept", False)]
    bridge.close()
    plain.close()


# --- a real Mosquitto bridge into wrenmq -----------------------------------------------------------


@pytest.fixture(params=["true", "false"], ids=["notifications", "no-notifications"])
def mosquitto_bridge(
    request: pytest.FixtureRequest, tmp_path: Path, wrenmq_server: WrenmqServer
) -> Iterator[MosquittoBroker]:
    """A Mosquitto with ``connection wren``/``topic test/# both 1`` to the wrenmq broker (defaults:
    try_private true, 3.1.1; with and without its state notifications), connected once this yields."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    mosquitto = MosquittoBroker(tmp_path)
    bridge = f"connection wren\naddress 127.0.0.1:{wrenmq_server.port}\ntopic test/# both 1\nrestart_timeout 1\n"
    bridge += f"notifications {request.param}\n"
    mosquitto.config.write_text(mosquitto.config.read_text() + bridge)
    mosquitto.start()
    try:
        here = PahoClient(wrenmq_server.port, MQTTv311)
        here.subscribe("test/ready", 1)
        there = PahoClient(mosquitto.port, MQTTv311)
        deadline = time.monotonic() + TIMEOUT
        while here.messages.empty():  # the bridge connects in the background
            assert time.monotonic() < deadline, mosquitto.log.read_text(errors="replace")
            there.publish("test/ready", b"?", qos=1)
            time.sleep(0.2)
        here.close()
        there.close()
        yield mosquitto
    finally:
        mosquitto.stop()


def until(client: PahoClient, topic: str) -> list[tuple[str, bytes]]:
    """Every message ``client`` receives up to and including the one on ``topic`` (the sentinel)."""
    found = []
    while True:
        message = client.messages.get(timeout=TIMEOUT)
        found.append((message.topic, message.payload))
        if message.topic == topic:
            return found


def test_mosquitto_both_bridge_delivers_each_message_once(
    mosquitto_bridge: MosquittoBroker, wrenmq_server: WrenmqServer
) -> None:
    here = PahoClient(wrenmq_server.port, MQTTv311, "here")
    there = PahoClient(mosquitto_bridge.port, MQTTv311, "there")
    here.subscribe("test/#", 1)
    there.subscribe("test/#", 1)

    there.publish("test/a", b"from mosquitto", qos=1)
    assert until(here, "test/a") == [("test/a", b"from mosquitto")]
    # An echo of test/a would leave wrenmq over the bridge ahead of this sentinel.
    here.publish("test/sentinel-1", b"", qos=1)
    assert until(there, "test/sentinel-1") == [("test/a", b"from mosquitto"), ("test/sentinel-1", b"")]
    assert until(here, "test/sentinel-1") == [("test/sentinel-1", b"")]

    here.publish("test/b", b"from wrenmq", qos=1)
    assert until(there, "test/b") == [("test/b", b"from wrenmq")]
    there.publish("test/sentinel-2", b"", qos=1)
    assert until(here, "test/sentinel-2") == [("test/b", b"from wrenmq"), ("test/sentinel-2", b"")]

    # Retained as published: Mosquitto keeps what was retained on wrenmq, for its next subscriber.
    here.publish("test/kept", b"retained here", qos=1, retain=True)
    assert until(there, "test/kept") == [("test/sentinel-2", b""), ("test/kept", b"retained here")]
    late = PahoClient(mosquitto_bridge.port, MQTTv311, "late")
    late.subscribe("test/kept", 1)
    (kept,) = late.receive(1)
    assert (kept.topic, kept.payload, kept.retain) == ("test/kept", b"retained here", True)
    for client in (here, there, late):
        client.close()


def test_mosquitto_bridge_state_notification_is_published(
    mosquitto_bridge: MosquittoBroker, wrenmq_server: WrenmqServer
) -> None:
    """Mosquitto's bridge publishes 1 (and, as its will, 0) retained on its own state topic; that
    one $SYS topic is open to a bridge, as on Mosquitto, and to no one else."""
    if "notifications true" not in mosquitto_bridge.config.read_text():
        pytest.skip("this Mosquitto sends no notifications")
    retained = list(wrenmq_server.broker.retained.match("$SYS/broker/connection/+/state"))
    assert [(m.topic.endswith(".wren/state"), m.payload, m.retain) for m in retained] == [(True, b"1", True)]
    topic = retained[0].topic
    with RawClient(wrenmq_server.port, 4) as other:
        other.connect("other")
        other.publish(topic, b"0", qos=1, retain=True)  # 3.1.1 cannot refuse: acknowledged, dropped
    assert [m.payload for m in wrenmq_server.broker.retained.match(topic)] == [b"1"]
    with RawClient(wrenmq_server.port, 4) as bridged:
        bridged.send(connect_bytes(b"MQTT", 0x84))  # client id "id"
        assert bridged.expect(p.Connack).reason_code == 0
        bridged.publish("$SYS/broker/connection/id/state", b"1", qos=1, retain=True)  # its own
        bridged.publish("$SYS/broker/connection/other/state", b"1", qos=1, retain=True)  # not its own
        bridged.publish("$SYS/broker/uptime", b"0", qos=1, retain=True)
    found = wrenmq_server.broker.retained.match("$SYS/#")
    assert sorted(m.topic for m in found) == sorted([topic, "$SYS/broker/connection/id/state"])


# --- wrenmq's bridges set the bit ----------------------------------------------------------------


async def test_client_bridge_bit_falls_back_when_refused() -> None:
    """A broker that refuses level 0x84 (CONNACK return code 1) is asked again at once at level 4."""
    levels: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(2)
        body = await reader.readexactly(head[1])
        levels.append(body[6])
        writer.write(b"\x20\x02\x00" + (b"\x01" if body[6] & 0x80 else b"\x00"))
        await writer.drain()
        if body[6] & 0x80:
            writer.close()
        else:
            await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client("127.0.0.1", port, version=4, bridge=True, reconnect=False)
    await client.connect()
    assert levels == [0x84, 0x04] and not client.bridge
    await client.disconnect()
    server.close()


def test_wrenmq_bridge_to_mosquitto_uses_the_bridge_bit(
    mosquitto_factory: Callable[..., MosquittoBroker], wrenmq_server_factory: Callable[..., WrenmqServer]
) -> None:
    """wrenmq's 3.1.1 bridge connects to Mosquitto as a bridge: no echo comes back, so a message from
    the remote that equals one just sent out is delivered, not taken for the echo."""
    mosquitto = mosquitto_factory()
    broker = {"name": "plant", "url": f"mqtt://127.0.0.1:{mosquitto.port}", "version": 4,
              "bridges": ["topic echo/# both 1"]}  # fmt: skip
    server = wrenmq_server_factory(brokers=[broker])
    here = PahoClient(server.port, MQTTv311, "here")
    there = PahoClient(mosquitto.port, MQTTv311, "there")
    here.subscribe("echo/#", 1)
    there.subscribe("echo/#", 1)
    deadline = time.monotonic() + TIMEOUT
    while there.messages.empty():  # the bridge connects, and subscribes, in the background
        assert time.monotonic() < deadline
        here.publish("echo/ready", b"?", qos=1)
        time.sleep(0.2)
    assert "New bridge connected" in mosquitto.log.read_text(errors="replace")
    here.publish("echo/same", b"x", qos=1)
    assert until(there, "echo/same")[-1] == ("echo/same", b"x")
    there.publish("echo/same", b"x", qos=1)  # the same topic and payload, really from the remote
    assert until(here, "echo/same")[-1] == ("echo/same", b"x")  # here's own copy first
    assert until(here, "echo/same") == [("echo/same", b"x")]
    here.close()
    there.close()
