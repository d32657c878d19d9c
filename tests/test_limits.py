"""Server limits (issue 5, "Limits and hostile input"): connections, topic length and levels,
subscriptions per client and publish rate. What the client is told follows the MQTT 5 reason codes
the spec gives for each case; a 3.1.1 client gets the nearest 3.1.1 answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from mqttraw import RawClient
from wrenmq.mqtt import encode
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode

VERSIONS = [4, 5]


def _client(clients: Callable[..., RawClient], server: Any, version: int, client_id: str) -> RawClient:
    client = clients(server, version)
    assert client.connect(client_id).reason_code == 0
    return client


@pytest.mark.parametrize("version", VERSIONS)
def test_connections_beyond_max_connections_get_server_busy(wrenmq_server_factory, clients, version):
    # [MQTT-3.2.2-6 context]: the server refuses with a CONNACK reason code and closes;
    # 0x89 Server busy in 5.0, 3 Server unavailable in 3.1.1.
    server = wrenmq_server_factory(max_connections=2)
    first = _client(clients, server, version, "one")
    _client(clients, server, version, "two")
    third = clients(server, version)
    ack = third.connect("three")
    expected = ReasonCode.SERVER_BUSY if version == 5 else ConnackReturnCode.SERVER_UNAVAILABLE
    assert ack.reason_code == expected
    third.expect_closed()
    first.disconnect()
    deadline = time.monotonic() + 5
    while True:  # the broker frees the slot once it has seen the socket close
        fourth = clients(server, version)
        if fourth.connect("four").reason_code == 0:
            break
        assert time.monotonic() < deadline, "the slot of a closed connection was not freed"
        time.sleep(0.05)


def test_per_listener_max_connections(wrenmq_server_factory, clients):
    """A listener's own max_connections counts only its own sockets."""
    server = wrenmq_server_factory(listeners=[{"type": "tcp", "port": 0, "name": "limited", "max_connections": 1}])
    limited = next(listener for listener in server.broker.listeners if listener.name == "limited")
    one = RawClient(limited.port, 5)
    two = RawClient(limited.port, 5)
    try:
        assert one.connect("l1").reason_code == 0
        assert two.connect("l2").reason_code == ReasonCode.SERVER_BUSY
        # The main listener is not affected.
        _client(clients, server, 5, "main")
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_beyond_max_topic_length_is_dropped(wrenmq_server_factory, clients, version):
    # [MQTT-3.3.4-? / 0x90]: "The Topic Name is not malformed, but is not accepted by this Server".
    server = wrenmq_server_factory(max_topic_length=16)
    sub = _client(clients, server, 5, "watcher")
    sub.subscribe("#", 1)
    pub = _client(clients, server, version, "long")
    ack = pub.publish("a/" + "x" * 20, b"too long", 1)
    assert ack.reason_code == (ReasonCode.TOPIC_NAME_INVALID if version == 5 else 0)
    pub.publish("a/" + "y" * 20, b"too long", 0)
    pub.publish("a/fits", b"ok", 1)
    assert sub.expect(p.Publish).topic == "a/fits"  # nothing before it
    sub.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_levels_beyond_max_topic_levels(wrenmq_server_factory, clients, version):
    server = wrenmq_server_factory(max_topic_levels=3)
    client = _client(clients, server, version, "levels")
    invalid = ReasonCode.TOPIC_FILTER_INVALID if version == 5 else 0x80
    assert client.subscribe("a/b/#", 1).reason_codes == [1]  # three levels
    assert client.subscribe("a/b/c/#", 1).reason_codes == [invalid]  # four
    ack = client.publish("a/b/c/d", b"four levels", 1)
    assert ack.reason_code == (ReasonCode.TOPIC_NAME_INVALID if version == 5 else 0)
    client.publish("a/b/c", b"three levels", 0)
    assert client.expect(p.Publish).topic == "a/b/c"
    client.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_subscriptions_beyond_max_subscriptions_get_quota_exceeded(wrenmq_server_factory, clients, version):
    # 0x97 Quota exceeded is a SUBACK reason code in 5.0 [MQTT-3.9.3]; 3.1.1 has only 0x80 Failure.
    server = wrenmq_server_factory(max_subscriptions=2)
    client = _client(clients, server, version, "greedy")
    assert client.subscribe("one", 0).reason_codes == [0]
    assert client.subscribe("two", 1).reason_codes == [1]
    refused = ReasonCode.QUOTA_EXCEEDED if version == 5 else 0x80
    assert client.subscribe("three", 0).reason_codes == [refused]
    assert client.subscribe("two", 0).reason_codes == [0]  # replacing one is not a new one [MQTT-3.8.4-3]
    client.send(p.Unsubscribe(client.pid(), ["one"]))
    client.expect(p.Unsuback)
    assert client.subscribe("three", 0).reason_codes == [0]


def test_publish_rate_limit_slows_a_client_down_and_loses_nothing(wrenmq_server_factory, clients):
    """max_publish_rate pauses the client's reads rather than dropping. At 20/s with a burst of 20,
    a read of 40 messages leaves the bucket 20 short: the next message waits about a second."""
    server = wrenmq_server_factory(max_publish_rate=20)
    sub = _client(clients, server, 5, "counter")
    sub.subscribe("rate/#", 0)
    pub = _client(clients, server, 5, "chatty")
    pub.sock.sendall(b"".join(encode(p.Publish(f"rate/{i}", b"x", 0), 5) for i in range(40)))
    got = [sub.expect(p.Publish, timeout=10).topic for _ in range(40)]
    assert got == [f"rate/{i}" for i in range(40)]  # in order [MQTT-4.6.0-5], none lost
    sent = time.monotonic()
    pub.send(p.Publish("rate/late", b"x", 0))
    assert sub.expect(p.Publish, timeout=10).topic == "rate/late"
    waited = time.monotonic() - sent
    assert waited >= 0.6, f"a client 20 messages over its rate was read again after {waited:.2f} s"
    pub.send(p.Pingreq())  # slowed, not cut off
    pub.expect(p.Pingresp)
