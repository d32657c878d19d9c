"""Outbound Topic Alias (MQTT 5.0 section 3.3.2.3.4): the broker aliases the topics it sends to a
client whose CONNECT allows it (Topic Alias Maximum > 0), at most ``topic_alias_out_maximum``.

The first PUBLISH on a topic carries the Topic Name and a new alias, later ones an empty Topic Name
and the alias; when the client's aliases are all taken, the least recently used is re-mapped.
Checked as exact bytes with raw sockets, and with real clients: MQTT.js (which resolves aliases
itself) and paho-mqtt (which hands the alias to the application).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttraw import RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId

TOPIC_ALIAS_MAXIMUM = 0x22  # CONNECT property
TOPIC_ALIAS = 0x23  # PUBLISH property
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"


def read_exact(client: RawClient, size: int, timeout: float = 5.0) -> bytes:
    """The next ``size`` bytes the broker sends (any packets the raw client parsed already are none)."""
    client.sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = client.sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def connect_exact(port: int, client_id: str, clean: bool, properties: dict[int, Any]) -> tuple[RawClient, p.Connack]:
    """Connect reading exactly the CONNACK's bytes, so what the broker sends right after it (resent
    PUBLISHes) stays for ``read_exact`` rather than being parsed along with it."""
    client = RawClient(port, 5)
    client.send(p.Connect(client_id, 5, clean, properties=properties))
    header = read_exact(client, 2)
    length, data = header[1] & 0x7F, header
    shift = 7
    while data[-1] & 0x80:
        data += read_exact(client, 1)
        length |= (data[-1] & 0x7F) << shift
        shift += 7
    packets = client.parser.feed(data + read_exact(client, length))
    assert len(packets) == 1 and isinstance(packets[0], p.Connack), packets
    return client, packets[0]


def publish_v5(topic: str, payload: bytes, alias: int | None, qos: int = 0, pid: int = 0, dup: bool = False) -> bytes:
    """The exact bytes of a server PUBLISH with no properties but (optionally) a Topic Alias."""
    name = topic.encode()
    props = b"\x03\x23" + alias.to_bytes(2, "big") if alias is not None else b"\x00"
    body = len(name).to_bytes(2, "big") + name + (pid.to_bytes(2, "big") if qos else b"") + props + payload
    assert len(body) < 128
    return bytes((0x30 | (qos << 1) | (0x08 if dup else 0), len(body))) + body


def subscriber(server: Any, client_id: str, alias_max: int | None, qos: int = 0, **connect: Any) -> RawClient:
    client = RawClient(server.port, 5)
    props = dict(connect.pop("properties", {}))
    if alias_max is not None:
        props[TOPIC_ALIAS_MAXIMUM] = alias_max
    assert client.connect(client_id, properties=props, **connect).reason_code == 0
    client.subscribe("ta/#", qos)
    return client


def publisher(server: Any) -> RawClient:
    client = RawClient(server.port, 5)
    assert client.connect("").reason_code == 0
    return client


def test_aliases_assigned_and_reused_exact_bytes(broker):  # [MQTT-3.3.2-8], [MQTT-3.3.2-11], [MQTT-3.1.2-26]
    sub = subscriber(broker, "alias-sub", alias_max=2)
    pub = publisher(broker)
    try:
        for topic in ("ta/1", "ta/1", "ta/2", "ta/3", "ta/2", "ta/1"):
            pub.publish(topic, b"x")
        expected = [
            publish_v5("ta/1", b"x", 1),  # new topic: Topic Name and alias 1
            publish_v5("", b"x", 1),  # known: empty Topic Name, alias only
            publish_v5("ta/2", b"x", 2),
            publish_v5("ta/3", b"x", 1),  # both taken: the least recently used (ta/1's) is re-mapped
            publish_v5("", b"x", 2),
            publish_v5("ta/1", b"x", 1),  # ta/3's alias was least recently used now
        ]
        assert read_exact(sub, sum(map(len, expected))) == b"".join(expected)
    finally:
        sub.close()
        pub.close()


def test_no_aliases_without_topic_alias_maximum(broker):  # [MQTT-3.1.2-27]
    subs = [subscriber(broker, "no-alias", alias_max=None), subscriber(broker, "zero-alias", alias_max=0)]
    pub = publisher(broker)
    try:
        pub.publish("ta/1", b"x")
        pub.publish("ta/1", b"x")
        for sub in subs:
            assert read_exact(sub, 2 * len(publish_v5("ta/1", b"x", None))) == publish_v5("ta/1", b"x", None) * 2
    finally:
        for client in [*subs, pub]:
            client.close()


def test_server_setting_caps_and_turns_off_aliases(wrenmq_server_factory):  # [MQTT-3.1.2-26]
    capped = wrenmq_server_factory(topic_alias_out_maximum=1)
    sub = subscriber(capped, "capped", alias_max=100)
    pub = publisher(capped)
    try:
        for topic in ("ta/1", "ta/2", "ta/2"):
            pub.publish(topic, b"x")
        expected = [publish_v5("ta/1", b"x", 1), publish_v5("ta/2", b"x", 1), publish_v5("", b"x", 1)]
        assert read_exact(sub, sum(map(len, expected))) == b"".join(expected)
    finally:
        sub.close()
        pub.close()
    off = wrenmq_server_factory(topic_alias_out_maximum=0)
    sub = subscriber(off, "off", alias_max=100)
    pub = publisher(off)
    try:
        pub.publish("ta/1", b"x")
        pub.publish("ta/1", b"x")
        assert read_exact(sub, 2 * len(publish_v5("ta/1", b"x", None))) == publish_v5("ta/1", b"x", None) * 2
    finally:
        sub.close()
        pub.close()


def test_aliased_publish_keeps_properties_and_qos(broker):  # [MQTT-3.3.2-11], [MQTT-3.3.2-6]
    # Per-delivery properties (Message Expiry Interval, Subscription Identifier) and the message's
    # own (User Property) all travel beside the alias; QoS 1 and 2 carry their packet ids.
    sub = RawClient(broker.port, 5)
    assert sub.connect("props", properties={TOPIC_ALIAS_MAXIMUM: 4}).reason_code == 0
    sub.send(p.Subscribe(1, [p.Subscription("ta/#", 2)], {PropertyId.SUBSCRIPTION_IDENTIFIER: 7}))
    sub.expect(p.Suback)
    pub = publisher(broker)
    try:
        props = {PropertyId.USER_PROPERTY: [("k", "v")], PropertyId.MESSAGE_EXPIRY_INTERVAL: 60}
        for qos in (1, 2, 1):
            pub.publish("ta/p", f"q{qos}".encode(), qos=qos, properties=props)
        got = [sub.expect(p.Publish) for _ in range(3)]
        assert [(m.topic, m.qos, m.payload) for m in got] == [("ta/p", 1, b"q1"), ("", 2, b"q2"), ("", 1, b"q1")]
        for message in got:
            assert message.properties[TOPIC_ALIAS] == 1
            assert message.properties[PropertyId.USER_PROPERTY] == [("k", "v")]
            assert message.properties[PropertyId.SUBSCRIPTION_IDENTIFIER] == [7]
            assert 0 < message.properties[PropertyId.MESSAGE_EXPIRY_INTERVAL] <= 60
        assert len({m.packet_id for m in got}) == 3
    finally:
        sub.close()
        pub.close()


def test_aliases_start_afresh_on_each_connection_resends_included(broker):  # [MQTT-3.3.2-7], [MQTT-4.4.0-1]
    session = {PropertyId.SESSION_EXPIRY_INTERVAL: 300}
    sub = subscriber(broker, "resend", alias_max=5, qos=1, clean=True, properties=session)
    pub = publisher(broker)
    try:
        pub.publish("ta/r", b"1", qos=1)
        pub.publish("ta/r", b"2", qos=1)
        first = [sub.expect(p.Publish) for _ in range(2)]  # not acknowledged
        assert [(m.topic, m.properties.get(TOPIC_ALIAS)) for m in first] == [("ta/r", 1), ("", 1)]
        sub.close()
        # Back with aliases allowed: the resent PUBLISHes (DUP) map the alias again from scratch.
        again, ack = connect_exact(broker.port, "resend", False, {**session, TOPIC_ALIAS_MAXIMUM: 5})
        assert ack.session_present
        pid1, pid2 = first[0].packet_id, first[1].packet_id
        expected = [
            publish_v5("ta/r", b"1", 1, qos=1, pid=pid1, dup=True),
            publish_v5("", b"2", 1, qos=1, pid=pid2, dup=True),
        ]
        assert read_exact(again, sum(map(len, expected))) == b"".join(expected)
        again.close()
        # Back without: the same messages with their Topic Names and no alias.
        plain, ack = connect_exact(broker.port, "resend", False, session)
        assert ack.session_present
        expected = [
            publish_v5("ta/r", b"1", None, qos=1, pid=pid1, dup=True),
            publish_v5("ta/r", b"2", None, qos=1, pid=pid2, dup=True),
        ]
        assert read_exact(plain, sum(map(len, expected))) == b"".join(expected)
        plain.close()
    finally:
        sub.close()
        pub.close()


def test_maximum_packet_size_with_aliases(broker):  # [MQTT-3.1.2-25], [MQTT-3.3.2-11]
    plain = publish_v5("ta/m", b"y" * 20, None)
    sub = subscriber(broker, "small", alias_max=3, properties={PropertyId.MAXIMUM_PACKET_SIZE: len(plain)})
    pub = publisher(broker)
    try:
        # The alias would make it 3 bytes too large: it goes without one rather than not at all.
        pub.publish("ta/m", b"y" * 20)
        # Too large with or without an alias: discarded, and it takes no alias with it ...
        pub.publish("ta/big", b"z" * 100)
        # ... so the next topic still gets alias 1.
        pub.publish("ta/s", b"s")
        pub.publish("ta/s", b"s")
        expected = [plain, publish_v5("ta/s", b"s", 1), publish_v5("", b"s", 1)]
        assert read_exact(sub, sum(map(len, expected))) == b"".join(expected)
    finally:
        sub.close()
        pub.close()


def test_paho_v5_receives_aliased_publishes(broker):  # [MQTT-3.3.2-10] (the client side of -11)
    # paho-mqtt parses the alias and hands it over (it does not resolve aliases for the application).
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-alias", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_a: c.subscribe("ta/#", qos=1)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda _c, _u, message: received.put(message)
    connect = Properties(PacketTypes.CONNECT)
    connect.TopicAliasMaximum = 2
    client.connect("127.0.0.1", broker.port, properties=connect)
    client.loop_start()
    try:
        assert subscribed.wait(5)
        topics = ["ta/a", "ta/b", "ta/a", "ta/c", "ta/a", "ta/b"]
        for i, topic in enumerate(topics):
            broker.publish(topic, str(i), qos=1)
        aliases: dict[int, str] = {}
        resolved = []
        for _ in topics:
            message = received.get(timeout=5)
            alias = message.properties.TopicAlias
            if message.topic:
                aliases[alias] = message.topic
            resolved.append((aliases[alias], message.payload.decode()))
        assert resolved == [(topic, str(i)) for i, topic in enumerate(topics)]
        assert set(aliases) <= {1, 2}
    finally:
        client.disconnect()
        client.loop_stop()


NODE_SUBSCRIBER = r"""
const mqtt = require('mqtt')
const client = mqtt.connect(process.argv[1], {protocolVersion: 5, properties: {topicAliasMaximum: 2}})
client.on('connect', () => client.subscribe('ta/#', {qos: 1}, () => console.log(JSON.stringify({ready: true}))))
client.on('message', (topic, payload, packet) => {
  const alias = packet.properties && packet.properties.topicAlias
  console.log(JSON.stringify({topic, payload: payload.toString(), alias}))
})
client.on('error', (err) => { console.log(JSON.stringify({error: String(err)})); process.exit(1) })
"""


def test_mqtt_js_resolves_aliased_publishes(broker):  # [MQTT-3.3.2-10] with a client that maps aliases itself
    if shutil.which("node") is None or not (NODE_MODULES / "mqtt").exists():
        pytest.skip("node and the mqtt package are needed")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    node = subprocess.Popen(
        ["node", "-e", NODE_SUBSCRIBER, f"mqtt://127.0.0.1:{broker.port}"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert node.stdout is not None
        assert json.loads(node.stdout.readline()) == {"ready": True}
        topics = ["ta/a", "ta/b", "ta/a", "ta/c", "ta/a", "ta/b", "ta/b"]
        for i, topic in enumerate(topics):
            broker.publish(topic, str(i), qos=1)
        lines = [json.loads(node.stdout.readline()) for _ in topics]
        assert [(x["topic"], x["payload"]) for x in lines] == [(topic, str(i)) for i, topic in enumerate(topics)]
        assert {x["alias"] for x in lines} <= {1, 2}
    finally:
        node.kill()
        node.wait(5)
