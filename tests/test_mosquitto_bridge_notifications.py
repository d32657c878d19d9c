"""Mosquitto's bridge state notifications (mosquitto.conf(5) ``notifications``, on by default;
``notifications_local_only``, ``notification_topic``) for a ``connection`` block wrenmq reads: the
state, retained, ``1`` up and ``0`` down, on ``$SYS/broker/connection/<remote client id>/state``
here and on the remote, where the ``0`` is the connection's will (issue 17; checked against a real
Mosquitto as the remote). A negative check reads the remote's retained states up to a sentinel."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from mosquitto_fixture import MosquittoBroker, free_port
from wrenmq.config import load_config
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0
STATE = "$SYS/broker/connection/edge-bridge/state"
Seen = queue.Queue[tuple[str, bytes, bool]]


@pytest.fixture
def from_conf(tmp_path: Path) -> Iterator[Callable[[str], WrenmqServer]]:
    """Start wrenmq from a mosquitto.conf text (a TCP listener on a free port is added)."""
    servers: list[WrenmqServer] = []

    def start(text: str) -> WrenmqServer:
        conf = tmp_path / f"wrenmq-{len(servers)}.conf"
        conf.write_text(f"listener {free_port()} 127.0.0.1\nallow_anonymous true\n{text}")
        config = load_config(conf, env={}, overrides={"api_port": "off", "data_dir": tmp_path / f"d{len(servers)}"})
        servers.append(WrenmqServer(config).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def watch() -> Iterator[Callable[[int, str], Seen]]:
    """Subscribe (QoS 1) at a broker's port; what arrives goes to the queue returned."""
    clients: list[paho.Client] = []

    def start(port: int, topic_filter: str) -> Seen:
        seen: Seen = queue.Queue()
        subscribed: queue.Queue[int] = queue.Queue()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        client.on_message = lambda c, u, msg: seen.put((msg.topic, msg.payload, bool(msg.retain)))
        client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(mid)
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
        client.subscribe(topic_filter, 1)
        subscribed.get(timeout=TIMEOUT)
        return seen

    yield start
    for client in clients:
        client.disconnect()
        client.loop_stop()


def next_state(seen: Seen, topic: str = STATE) -> bytes:
    deadline = time.monotonic() + TIMEOUT
    while True:
        found, payload, _ = seen.get(timeout=max(0.01, deadline - time.monotonic()))
        if found == topic:
            return payload


def retained_until_sentinel(
    port: int, watch: Callable[[int, str], Seen], server: WrenmqServer | None = None
) -> list[tuple[str, bytes]]:
    """Every retained state under ``$SYS/broker/connection/`` at ``port``, read up to a sentinel
    state published (and retained) last: by a client at Mosquitto, by ``server`` itself (no
    client may write $SYS on wrenmq)."""
    topic = "$SYS/broker/connection/zz-sentinel/state"
    if server is not None:
        server.publish(topic, b"s", qos=1, retain=True)
    else:
        sentinel = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        sentinel.connect("127.0.0.1", port)
        sentinel.loop_start()
        sentinel.publish(topic, b"s", qos=1, retain=True).wait_for_publish(TIMEOUT)
        sentinel.disconnect()
        sentinel.loop_stop()
    seen = watch(port, "$SYS/broker/connection/#")
    found = []
    while not found or found[-1][0] != "$SYS/broker/connection/zz-sentinel/state":
        topic, payload, _ = seen.get(timeout=TIMEOUT)
        found.append((topic, payload))
    return found[:-1]


def connection_of(server: WrenmqServer, name: str):  # type: ignore[no-untyped-def]
    assert server.connections is not None
    return server.connections.connections[name]


def test_bridge_notifications_default_on_both_sides_with_a_will(mosquitto: MosquittoBroker, from_conf, watch) -> None:  # type: ignore[no-untyped-def]
    """No ``notifications`` line: as Mosquitto, ``1`` retained on both brokers once connected; when
    the connection drops without DISCONNECT the remote publishes the will, ``0``, and the local
    side says ``0`` too; both go back to ``1`` on reconnecting. Stopped, the local side says ``0``."""
    remote = watch(mosquitto.port, STATE)
    server = from_conf(
        f"connection edge\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid edge-bridge\n"
        "restart_timeout 1\ntopic e/# out 1\n"
    )
    local = watch(server.port, STATE)
    assert next_state(remote) == b"1"
    payload = next_state(local)
    if payload == b"0":  # subscribed before the first connection: Mosquitto's initial "0" first
        payload = next_state(local)
    assert payload == b"1"

    async def drop() -> None:  # the network connection goes, with no DISCONNECT
        conn = connection_of(server, "edge").client._conn
        assert conn is not None
        conn.abort()

    server.call(drop())
    assert next_state(remote) == b"0"  # the will
    assert next_state(local) == b"0"
    assert next_state(remote) == b"1"
    assert next_state(local) == b"1"
    # Retained on both: a new subscriber reads the state.
    assert (STATE, b"1") in retained_until_sentinel(mosquitto.port, watch)
    assert next_state(watch(server.port, STATE)) == b"1"
    # Stopped (here: removed): "0" here; the remote keeps "1" (a clean DISCONNECT sends no will).
    assert server.connections is not None
    assert server.call(server.connections.remove("edge"))
    assert next_state(local) == b"0"


def test_bridge_notifications_false_publishes_nothing(mosquitto: MosquittoBroker, from_conf, watch) -> None:  # type: ignore[no-untyped-def]
    server = from_conf(
        f"connection edge\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid edge-bridge\n"
        "notifications false\ntopic e/# out 1\n"
    )
    deadline = time.monotonic() + TIMEOUT
    while not connection_of(server, "edge").connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert connection_of(server, "edge").client.will is None
    assert retained_until_sentinel(mosquitto.port, watch) == []
    assert retained_until_sentinel(server.port, watch, server) == []


def test_bridge_notifications_local_only_and_topic(mosquitto: MosquittoBroker, from_conf, watch) -> None:  # type: ignore[no-untyped-def]
    """``notifications_local_only true``: the state here only (and no will at the remote);
    ``notification_topic`` names the topic on both sides."""
    server = from_conf(
        f"connection edge\naddress 127.0.0.1:{mosquitto.port}\nremote_clientid edge-bridge\n"
        "notifications_local_only true\nnotification_topic bridges/edge/state\ntopic e/# out 1\n"
    )
    local = watch(server.port, "bridges/edge/state")
    payload = next_state(local, "bridges/edge/state")
    if payload == b"0":
        payload = next_state(local, "bridges/edge/state")
    assert payload == b"1"
    assert connection_of(server, "edge").client.will is None
    # Nothing on the remote: the custom topic, read up to a sentinel there.
    remote = watch(mosquitto.port, "bridges/#")
    sentinel = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    sentinel.connect("127.0.0.1", mosquitto.port)
    sentinel.loop_start()
    sentinel.publish("bridges/zz", b"s", qos=1).wait_for_publish(TIMEOUT)
    sentinel.disconnect()
    sentinel.loop_stop()
    assert remote.get(timeout=TIMEOUT)[0] == "bridges/zz"


def test_bridge_notification_topic_must_be_a_topic_name(tmp_path: Path) -> None:
    conf = tmp_path / "m.conf"
    conf.write_text("connection edge\naddress 127.0.0.1:1883\nnotification_topic bridges/+/state\ntopic e/# out\n")
    from wrenmq.config import ConfigError

    with pytest.raises(ConfigError, match="notification_topic"):
        load_config(conf, env={})
