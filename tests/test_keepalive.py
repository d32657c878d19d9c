"""Keep Alive (section 3.1.2.10), PINGREQ/PINGRESP (3.12, 3.13) and Server Keep Alive (3.2.2.3.14).

Keep-alive values are 1 s so each timeout shows within about 1.5 s; every test stays under ~3 s.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqttraw import RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode


def closed_after(client: RawClient, timeout: float = 3.0) -> tuple[float, list[p.AnyPacket]]:
    """Wait for the broker to close ``client``; returns (seconds waited, packets sent before the close)."""
    started = time.monotonic()
    sent = client.expect_closed(timeout)
    return time.monotonic() - started, sent


def test_silent_client_disconnected_after_one_and_a_half_keep_alive(raw):
    # [MQTT-3.1.2-24] (3.1.1), [MQTT-3.1.2-22] (5.0): no packet within 1.5 x Keep Alive → disconnect.
    v4, v5 = raw(4), raw(5)  # both versions at once, to keep the file fast
    v4.connect("silent4", keep_alive=1)
    v5.connect("silent5", keep_alive=1)
    v4.nothing(1.1)  # not before the Keep Alive period itself (raises if closed already)
    v5.nothing(0.01)
    waited, sent4 = closed_after(v4)
    assert 1.1 + waited < 2.6, "closed much later than 1.5 x Keep Alive"
    assert sent4 == []  # 3.1.1: "as if the network had failed"
    _, sent5 = closed_after(v5, 0.5)
    # The server tells a 5.0 client why [MQTT-4.13.2-1]: Keep Alive timeout.
    assert [type(x) for x in sent5] == [p.Disconnect]
    assert sent5[0].reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT


def test_pingreq_keeps_connection_alive(raw):  # [MQTT-3.12.4-1], [MQTT-3.1.2-23]
    clients = [raw(4), raw(5)]
    for i, client in enumerate(clients):
        client.connect(f"pinger{i}", keep_alive=1)
    for _ in range(5):  # 2.5 s, well past the 1.5 s limit
        time.sleep(0.5)
        for client in clients:
            client.send(p.Pingreq())
            client.expect(p.Pingresp, timeout=1.0)
    for client in clients:
        client.nothing(0.05)


def test_pingresp_exact_bytes(raw):  # [MQTT-3.12.4-1] PINGRESP is 0xD0 0x00
    client = raw(4)
    client.connect("bytes", keep_alive=10)
    client.send(b"\xc0\x00")
    assert client.sock.recv(16) == b"\xd0\x00"


def test_any_control_packet_resets_keep_alive(raw):  # [MQTT-3.1.2-24] / [MQTT-3.1.2-22]
    # The timer counts from the last Control Packet received, whatever its type.
    clients = [raw(4), raw(5)]
    for i, client in enumerate(clients):
        client.connect(f"chatty{i}", keep_alive=1)
    for i in range(5):
        time.sleep(0.5)
        for client in clients:
            client.publish("ka/chatter", str(i).encode(), qos=0)
    for client in clients:
        client.send(p.Pingreq())
        client.expect(p.Pingresp)


def test_keep_alive_zero_means_no_timeout(raw):  # 3.1.2.10: "A Keep Alive value of 0 has the effect of turning off"
    clients = [raw(4), raw(5)]
    for i, client in enumerate(clients):
        client.connect(f"forever{i}", keep_alive=0)
    clients[0].nothing(1.6)  # longer than 1.5 x a 1 s keep alive; raises if the broker closes
    for client in clients:
        client.nothing(0.01)
        client.send(p.Pingreq())
        client.expect(p.Pingresp)


def test_server_keep_alive_announced_and_enforced(wrenmq_server_factory, clients):  # [MQTT-3.2.2-21]
    # The client asked for 60 s; the server imposes 1 s, says so, and holds the client to it.
    server = wrenmq_server_factory(max_keepalive=1)
    client = clients(server, 5)
    ack = client.connect("imposed", keep_alive=60)
    assert ack.properties[PropertyId.SERVER_KEEP_ALIVE] == 1
    waited, sent = closed_after(client)
    assert waited < 2.6
    assert [x.reason_code for x in sent if isinstance(x, p.Disconnect)] == [ReasonCode.KEEP_ALIVE_TIMEOUT]


def test_server_keep_alive_replaces_zero(wrenmq_server_factory, clients):  # [MQTT-3.2.2-21]
    # Keep Alive 0 would mean "never"; a server with a maximum announces and enforces it instead.
    server = wrenmq_server_factory(max_keepalive=1)
    client = clients(server, 5)
    ack = client.connect("zero", keep_alive=0)
    assert ack.properties[PropertyId.SERVER_KEEP_ALIVE] == 1
    waited, sent = closed_after(client)
    assert waited < 2.6
    assert [x.reason_code for x in sent if isinstance(x, p.Disconnect)] == [ReasonCode.KEEP_ALIVE_TIMEOUT]


def test_server_keep_alive_honoured_by_pinging(wrenmq_server_factory, clients):  # [MQTT-3.2.2-21]
    server = wrenmq_server_factory(max_keepalive=1)
    client = clients(server, 5)
    client.connect("obedient", keep_alive=60)
    for _ in range(4):
        time.sleep(0.5)
        client.send(p.Pingreq())
        client.expect(p.Pingresp, timeout=1.0)


def test_keep_alive_below_maximum_not_overridden(wrenmq_server_factory, clients):  # [MQTT-3.2.2-21]
    server = wrenmq_server_factory(max_keepalive=30)
    client = clients(server, 5)
    ack = client.connect("within", keep_alive=1)
    assert PropertyId.SERVER_KEEP_ALIVE not in ack.properties
    waited, _ = closed_after(client)  # and its own 1 s is enforced, not the server's 30 s
    assert waited < 2.6


def test_paho_keep_alive_round_trip(broker):  # [MQTT-3.12.4-1] paho pings at 3.1.1 and 5.0, the broker answers
    connected, dropped = threading.Semaphore(0), threading.Event()
    pahos = []
    for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-ka-{protocol}", protocol=protocol)
        client.on_connect = lambda *_a: connected.release()
        client.on_disconnect = lambda *_a: dropped.set()
        client.connect("127.0.0.1", broker.port, keepalive=1)
        client.loop_start()
        pahos.append(client)
    try:
        assert connected.acquire(timeout=5) and connected.acquire(timeout=5)
        # paho sends PINGREQ each second and drops the link itself if PINGRESP does not come.
        assert not dropped.wait(2.2)
        assert all(client.is_connected() for client in pahos)
    finally:
        for client in pahos:
            client.disconnect()
            client.loop_stop()


@pytest.mark.parametrize("version", [3, 4])
def test_v3_keep_alive_above_maximum_refused(wrenmq_server_factory, clients, version):  # [MQTT-3.1.2-24]
    # A 3.1.x client cannot be told a Server Keep Alive; holding it to a shorter period would disconnect
    # it while it follows its own, so the broker refuses it (CONNACK 0x02, as Mosquitto does).
    server = wrenmq_server_factory(max_keepalive=10)
    for asked in (60, 0):
        client = clients(server, version)
        ack = client.connect(f"long{asked}", keep_alive=asked)
        assert ack.reason_code == 2
        client.expect_closed()
    within = clients(server, version)
    assert within.connect("short", keep_alive=10).reason_code == 0
