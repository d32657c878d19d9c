"""Session state (section 4.1), Clean Session / Clean Start, Session Expiry Interval, the offline
queue and message redelivery (section 4.4) in MQTT 3.1.1 and 5.0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttraw import RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode

_P = PropertyId


def persistent(version: int, expiry: int = 60) -> dict[str, Any]:
    """CONNECT arguments for a session that outlives its connection, in either protocol version."""
    if version == 5:
        return {"clean": False, "properties": {_P.SESSION_EXPIRY_INTERVAL: expiry}}
    return {"clean": False}


def receive_all(client: RawClient, count: int, timeout: float = 3.0) -> list[p.Publish]:
    """Receive ``count`` PUBLISH packets, completing each QoS flow, then check nothing else comes.

    The broker may pipeline: PUBRELs for earlier QoS 2 messages can arrive between later PUBLISHes.
    """
    got: list[p.Publish] = []
    awaiting_pubrel: set[int] = set()
    while len(got) < count or awaiting_pubrel:
        packet = client.recv(timeout)
        if isinstance(packet, p.Pubrel):
            assert packet.packet_id in awaiting_pubrel, packet
            awaiting_pubrel.discard(packet.packet_id)
            client.send(p.Pubcomp(packet.packet_id))
            continue
        assert isinstance(packet, p.Publish), packet
        got.append(packet)
        if packet.qos == 1:
            client.send(p.Puback(packet.packet_id))
        elif packet.qos == 2:
            awaiting_pubrel.add(packet.packet_id)  # type: ignore[arg-type]
            client.send(p.Pubrec(packet.packet_id))
    client.nothing(0.2)
    return got


def offline_subscriber(
    make: Callable[[], RawClient], client_id: str, topic: str, qos: int = 2, expiry: int = 60
) -> None:
    """Create a persistent session subscribed to ``topic`` and leave it offline."""
    client = make()
    ack = client.connect(client_id, **persistent(client.version, expiry))
    assert ack.reason_code == 0
    assert client.subscribe(topic, qos).reason_codes == [qos]
    client.disconnect()


def reconnect(make: Callable[[], RawClient], client_id: str, expiry: int = 60) -> tuple[RawClient, bool]:
    client = make()
    ack = client.connect(client_id, **persistent(client.version, expiry))
    assert ack.reason_code == 0
    return client, ack.session_present


# -- Clean Session / Clean Start ----------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_clean_session_discards_previous_state(raw, broker, version):  # 3.1.1 [MQTT-3.1.2-6], 5.0 [MQTT-3.1.2-4]
    offline_subscriber(lambda: raw(version), "cleaner", "clean/t", qos=1)
    broker.publish("clean/t", b"queued", qos=1)
    client = raw(version)
    ack = client.connect("cleaner", clean=True)
    assert ack.session_present is False
    client.nothing(0.3)  # the queued message went with the old session
    broker.publish("clean/t", b"after", qos=1)
    client.nothing(0.3)  # and so did the subscription


def test_v311_clean_session_ends_with_connection(raw, broker):  # [MQTT-3.1.2-6] (3.1.1)
    client = raw(4)
    client.connect("ephemeral", clean=True)
    client.subscribe("eph/t", 1)
    client.disconnect()
    again, present = reconnect(lambda: raw(4), "ephemeral")
    assert present is False
    broker.publish("eph/t", b"x", qos=1)
    again.nothing(0.3)


def test_v5_zero_session_expiry_ends_with_connection(raw, broker):  # [MQTT-3.1.2-23] only if expiry > 0
    client = raw(5)
    client.connect("zero-expiry", clean=False)  # no Session Expiry Interval: 0
    client.subscribe("zero/t", 1)
    client.disconnect()
    again, present = reconnect(lambda: raw(5), "zero-expiry")
    assert present is False
    broker.publish("zero/t", b"x", qos=1)
    again.nothing(0.3)


# -- persistent sessions ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_persistent_session_queues_qos1_and_qos2_in_order(raw, broker, version):
    # 3.1.1 [MQTT-3.1.2-4], [MQTT-3.1.2-5]; 5.0 [MQTT-3.1.2-23]; order kept [MQTT-4.6.0-6].
    offline_subscriber(lambda: raw(version), "keeper", "keep/#", qos=2)
    sent = [("keep/a", b"1", 1), ("keep/a", b"2", 2), ("keep/a", b"3", 1), ("keep/b", b"4", 2), ("keep/a", b"5", 1)]
    pub = raw(5)
    pub.connect("pub")
    for topic, payload, qos in sent:
        pub.publish(topic, payload, qos)
    client, present = reconnect(lambda: raw(version), "keeper")
    assert present is True
    got = receive_all(client, len(sent))
    assert [(m.topic, m.payload, m.qos) for m in got] == sent
    assert not any(m.dup for m in got)  # first delivery, not a retransmission
    # The subscription is still there for live messages too.
    pub.publish("keep/a", b"live", 1)
    assert receive_all(client, 1)[0].payload == b"live"


@pytest.mark.parametrize("version", [4, 5])
def test_qos0_not_queued_while_offline(raw, broker, version):  # [MQTT-3.1.2-5] storing QoS 0 is a MAY; we do not
    offline_subscriber(lambda: raw(version), "q0", "q0/t", qos=2)
    broker.publish("q0/t", b"zero", qos=0)
    broker.publish("q0/t", b"one", qos=1)
    client, present = reconnect(lambda: raw(version), "q0")
    assert present
    assert [m.payload for m in receive_all(client, 1)] == [b"one"]


@pytest.mark.parametrize("version", [4, 5])
def test_unacknowledged_qos1_redelivered_with_dup(raw, broker, version):  # [MQTT-4.4.0-1], [MQTT-3.3.1-1]
    client = raw(version)
    client.connect("forgetful", **persistent(version))
    client.subscribe("redo/t", 1)
    broker.publish("redo/t", b"first", qos=1)
    broker.publish("redo/t", b"second", qos=1)
    a, b = client.expect(p.Publish), client.expect(p.Publish)
    assert (a.dup, b.dup) == (False, False)
    client.send(p.Puback(a.packet_id))  # only the first is acknowledged
    time.sleep(0.1)
    client.close()
    again, present = reconnect(lambda: raw(version), "forgetful")
    assert present is True
    msg = again.expect(p.Publish)
    assert (msg.payload, msg.packet_id, msg.qos, msg.dup) == (b"second", b.packet_id, 1, True)
    again.send(p.Puback(msg.packet_id))
    again.nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_unacknowledged_qos2_publish_redelivered_with_dup(raw, broker, version):  # [MQTT-4.4.0-1]
    client = raw(version)
    client.connect("q2-forgetful", **persistent(version))
    client.subscribe("redo2/t", 2)
    broker.publish("redo2/t", b"exactly once", qos=2)
    first = client.expect(p.Publish)
    client.close()  # no PUBREC
    again, _ = reconnect(lambda: raw(version), "q2-forgetful")
    msg = again.expect(p.Publish)
    assert (msg.payload, msg.packet_id, msg.qos, msg.dup) == (b"exactly once", first.packet_id, 2, True)
    again.send(p.Pubrec(msg.packet_id))
    again.expect(p.Pubrel)
    again.send(p.Pubcomp(msg.packet_id))
    again.nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_pubrecd_qos2_resumes_with_pubrel(raw, broker, version):  # [MQTT-4.4.0-1], [MQTT-4.3.3-?] PUBREL resent
    client = raw(version)
    client.connect("half-done", **persistent(version))
    client.subscribe("half/t", 2)
    broker.publish("half/t", b"payload", qos=2)
    msg = client.expect(p.Publish)
    client.send(p.Pubrec(msg.packet_id))
    client.expect(p.Pubrel)
    client.close()  # no PUBCOMP
    again, present = reconnect(lambda: raw(version), "half-done")
    assert present is True
    rel = again.expect(p.Pubrel)  # not the PUBLISH again: the message was already received
    assert rel.packet_id == msg.packet_id
    again.send(p.Pubcomp(rel.packet_id))
    again.nothing(0.3)


def test_inflight_resent_before_queue_in_order(wrenmq_server_factory, clients):  # [MQTT-4.6.0-6], [MQTT-4.4.0-1]
    # With Receive Maximum 2, two messages go out and three wait; after a reconnect the two are
    # resent first (DUP) and the queue follows, all in publication order.
    server = wrenmq_server_factory()
    connect_props = {_P.SESSION_EXPIRY_INTERVAL: 60, _P.RECEIVE_MAXIMUM: 2}
    client = clients(server)
    client.connect("windowed", clean=False, properties=connect_props)
    client.subscribe("win/t", 1)
    for i in range(5):
        server.publish("win/t", str(i).encode(), qos=1)
    assert [client.expect(p.Publish).payload for _ in range(2)] == [b"0", b"1"]
    client.nothing(0.2)  # the window is full
    client.close()
    again = clients(server)
    assert again.connect("windowed", clean=False, properties=connect_props).session_present
    got = []
    for _ in range(5):
        msg = again.expect(p.Publish)
        got.append((msg.payload, msg.dup))
        again.send(p.Puback(msg.packet_id))
    assert got == [(b"0", True), (b"1", True), (b"2", False), (b"3", False), (b"4", False)]


# -- Session Expiry Interval (5.0) -------------------------------------------------------------


def test_session_kept_until_expiry_then_gone(raw, broker):  # [MQTT-3.1.2-23], [MQTT-3.2.2-3]
    offline_subscriber(lambda: raw(5), "short", "short/t", qos=1, expiry=1)
    time.sleep(0.3)
    early, present = reconnect(lambda: raw(5), "short", expiry=1)
    assert present is True  # still within its 1 s
    early.disconnect()
    time.sleep(1.4)
    late, present = reconnect(lambda: raw(5), "short", expiry=1)
    assert present is False  # expired: a new session, without the subscription
    broker.publish("short/t", b"x", qos=1)
    late.nothing(0.3)


def test_session_expiry_capped_by_server(wrenmq_server_factory, clients):  # [MQTT-3.2.2-3], 3.2.2.3.2
    server = wrenmq_server_factory(max_session_expiry_interval=1)
    client = clients(server)
    ack = client.connect("capped", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 3600})
    assert ack.properties[_P.SESSION_EXPIRY_INTERVAL] == 1
    client.disconnect()
    time.sleep(1.4)
    again = clients(server)
    assert again.connect("capped", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 3600}).session_present is False


def test_disconnect_sets_session_expiry_to_zero(raw):  # 3.14.2.2.2 (5.0): DISCONNECT may change the interval
    client = raw(5)
    client.connect("ender", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 60})
    client.disconnect(properties={_P.SESSION_EXPIRY_INTERVAL: 0})
    _, present = reconnect(lambda: raw(5), "ender")
    assert present is False


def test_disconnect_extends_session_expiry(raw):  # 3.14.2.2.2 (5.0): DISCONNECT may change the interval
    client = raw(5)
    client.connect("extender", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 1})
    client.disconnect(properties={_P.SESSION_EXPIRY_INTERVAL: 60})
    time.sleep(1.4)
    _, present = reconnect(lambda: raw(5), "extender")
    assert present is True


def test_disconnect_shortens_session_expiry(raw):  # 3.14.2.2.2 (5.0): DISCONNECT may change the interval
    client = raw(5)
    client.connect("shortener", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 60})
    client.disconnect(properties={_P.SESSION_EXPIRY_INTERVAL: 1})
    time.sleep(1.4)
    _, present = reconnect(lambda: raw(5), "shortener")
    assert present is False


def test_disconnect_cannot_make_session_persistent(raw):  # [MQTT-3.14.2-2]
    client = raw(5)
    client.connect("sneaky", clean=False)  # Session Expiry Interval 0
    client.send(p.Disconnect(0, {_P.SESSION_EXPIRY_INTERVAL: 60}))
    sent = client.expect_closed()
    assert [(type(x), x.reason_code) for x in sent] == [(p.Disconnect, ReasonCode.PROTOCOL_ERROR)]
    _, present = reconnect(lambda: raw(5), "sneaky")
    assert present is False  # the session ended with the connection, as its CONNECT asked


# -- the bounded offline queue ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "survivors"), [("drop_new", [b"0", b"1", b"2"]), ("drop_oldest", [b"2", b"3", b"4"])]
)
def test_bounded_queue_drop_policy(wrenmq_server_factory, clients, policy, survivors):  # config: max_queued_messages
    # Not normative: the spec leaves queue limits to the implementation (section 4.1 non-normative).
    server = wrenmq_server_factory(max_queued_messages=3, queue_drop_policy=policy)
    offline_subscriber(lambda: clients(server), "bounded", "bound/t", qos=1)
    for i in range(5):
        server.publish("bound/t", str(i).encode(), qos=1)
    again, present = reconnect(lambda: clients(server), "bounded")
    assert present
    assert [m.payload for m in receive_all(again, 3)] == survivors


# -- Message Expiry while queued (5.0) ----------------------------------------------------------


def test_expired_message_not_delivered_and_interval_decremented(raw):  # [MQTT-3.3.2-5], [MQTT-3.3.2-6]
    offline_subscriber(lambda: raw(5), "patient", "ttl/t", qos=1)
    pub = raw(5)
    pub.connect("ttl-pub")
    pub.publish("ttl/t", b"short-lived", 1, properties={_P.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("ttl/t", b"long-lived", 1, properties={_P.MESSAGE_EXPIRY_INTERVAL: 30})
    pub.publish("ttl/t", b"immortal", 1)
    time.sleep(2.0)
    client, _ = reconnect(lambda: raw(5), "patient")
    got = receive_all(client, 2)
    assert [m.payload for m in got] == [b"long-lived", b"immortal"]
    # 30 s less the ~2 s it waited: the receiver learns how long it has left.
    assert 27 <= got[0].properties[_P.MESSAGE_EXPIRY_INTERVAL] <= 28
    assert _P.MESSAGE_EXPIRY_INTERVAL not in got[1].properties


# -- paho round trips -------------------------------------------------------------------------


class PahoSubscriber:
    """A paho client with its network loop in a thread, recording what it receives."""

    def __init__(self, port: int, client_id: str, protocol: int) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=False if protocol == mqtt.MQTTv311 else None,
        )
        self.protocol = protocol
        self.port = port
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.messages: list[tuple[str, bytes, int]] = []
        self.received = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason_code: Any, _props: Any) -> None:
        assert reason_code == 0
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.received:
            self.messages.append((msg.topic, msg.payload, msg.qos))
            self.received.notify_all()

    def connect(self) -> PahoSubscriber:
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 60
            self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.connected.wait(5), "paho got no CONNACK"
        return self

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes, int]]:
        with self.received:
            assert self.received.wait_for(lambda: len(self.messages) >= count, timeout), self.messages
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_paho_persistent_session_round_trip(broker, protocol):  # [MQTT-3.1.2-4] / 5.0 [MQTT-3.1.2-23], [MQTT-4.6.0-6]
    client_id = f"paho-persist-{protocol}"
    first = PahoSubscriber(broker.port, client_id, protocol).connect()
    try:
        assert first.session_present is False
        done = threading.Event()
        first.client.on_subscribe = lambda *_a: done.set()
        first.client.subscribe("paho/persist/#", qos=2)
        assert done.wait(5)
    finally:
        first.stop()
    sent = [("paho/persist/a", b"1", 1), ("paho/persist/b", b"2", 2), ("paho/persist/a", b"3", 1)]
    for topic, payload, qos in sent:
        broker.publish(topic, payload, qos=qos)
    broker.publish("paho/persist/a", b"not kept", qos=0)
    second = PahoSubscriber(broker.port, client_id, protocol).connect()
    try:
        assert second.session_present is True
        got = second.wait_for(3)
        # paho hands a QoS 2 message to the application at PUBREL, so only compare order per QoS.
        assert sorted(got) == sorted(sent)
        assert [m for m in got if m[2] == 1] == [m for m in sent if m[2] == 1]
        time.sleep(0.2)
        assert len(second.messages) == 3
    finally:
        second.stop()
