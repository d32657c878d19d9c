"""Persistence across restarts: the broker runs as a real ``wrenmq serve`` subprocess on SQLite and is
stopped with SIGTERM or killed with SIGKILL between the two halves of each test.

What survives a restart is the server's own promise (MQTT 5.0 section 4.1.1 leaves storage to the
implementation): with ``durability = "strict"`` everything the broker acknowledged before a ``kill -9`` is
there afterwards. The normative statements named are the ones whose behaviour must hold across the restart.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttraw import RawClient
from serveproc import BrokerProcess
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.properties import PropertyId

_P = PropertyId


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Factory for broker subprocesses; each is killed at teardown and its log shown on failure."""
    started: list[BrokerProcess] = []

    def make(*args: str, env: dict[str, str] | None = None) -> BrokerProcess:
        broker = BrokerProcess(tmp_path, *args, env=env)
        started.append(broker)
        return broker.start()

    yield make
    for broker in started:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.kill()
        print(broker.log())


def settle(port: int) -> None:
    """Let the broker commit what a client did that it does not acknowledge (a SUBSCRIBE's session row,
    a DISCONNECT, a PUBREC it received).

    Under strict durability a QoS 1 PUBLISH that had to be stored (here: a retained message, then its
    removal) is acknowledged only after a commit, and commits go in order; so after a short pause for
    the other connection's packets to be read, its PUBACK is a commit barrier.
    """
    time.sleep(0.1)
    with RawClient(port) as probe:
        probe.connect("settle-probe")
        probe.publish("settle/probe", b"x", qos=1, retain=True)
        probe.publish("settle/probe", b"", qos=1, retain=True)


def persistent_raw(port: int, client_id: str, version: int, clean: bool = True, expiry: int = 300) -> RawClient:
    """A raw client with a session that outlives its connection (Clean Session 0 / Session Expiry)."""
    client = RawClient(port, version)
    if version == 5:
        ack = client.connect(client_id, clean=clean, properties={_P.SESSION_EXPIRY_INTERVAL: expiry})
    else:
        ack = client.connect(client_id, clean=False)
    assert ack.reason_code == 0
    return client


def receive_all(client: RawClient, count: int, timeout: float = 5.0) -> list[p.Publish]:
    """Receive ``count`` PUBLISHes, completing each QoS 1/2 flow as a subscriber."""
    got: list[p.Publish] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        packet = client.recv(max(0.05, deadline - time.monotonic()))
        if isinstance(packet, p.Publish):
            got.append(packet)
            if packet.qos == 1:
                client.send(p.Puback(packet.packet_id))
            elif packet.qos == 2:
                client.send(p.Pubrec(packet.packet_id))
        elif isinstance(packet, p.Pubrel):
            client.send(p.Pubcomp(packet.packet_id))
        else:
            raise AssertionError(f"unexpected {packet!r}")
    return got


def drain(client: RawClient, timeout: float = 0.2) -> list[p.Publish]:
    """Answer the broker until it has been silent for ``timeout``; returns any further PUBLISHes."""
    extra: list[p.Publish] = []
    while True:
        try:
            packet = client.recv(timeout)
        except TimeoutError:
            return extra
        if isinstance(packet, p.Publish):
            extra.append(packet)
            if packet.qos == 1:
                client.send(p.Puback(packet.packet_id))
            elif packet.qos == 2:
                client.send(p.Pubrec(packet.packet_id))
        elif isinstance(packet, p.Pubrel):
            client.send(p.Pubcomp(packet.packet_id))


class PahoSession:
    """A paho client with a persistent session, collecting what it receives."""

    def __init__(self, port: int, client_id: str, protocol: int) -> None:
        self.port = port
        self.protocol = protocol
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[bool] = queue.Queue()
        self.subacks: queue.Queue[int] = queue.Queue()
        clean = None if protocol == paho.MQTTv5 else False
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=clean
        )
        self.client.on_connect = lambda c, u, flags, rc, props: self.connacks.put(flags.session_present)
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(mid)

    def connect(self) -> bool:
        """Connect without Clean Start; returns Session Present."""
        if self.protocol == paho.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 300
            self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=False, properties=props)
        else:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        return self.connacks.get(timeout=5)

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.client.subscribe(topic_filter, qos)
        self.subacks.get(timeout=5)

    def take(self, count: int, timeout: float = 5.0) -> list[paho.MQTTMessage]:
        deadline = time.monotonic() + timeout
        return [self.messages.get(timeout=max(0.05, deadline - time.monotonic())) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- retained messages ------------------------------------------------------------------------------


RETAINED_PROPS: dict[int, Any] = {
    _P.PAYLOAD_FORMAT_INDICATOR: 1,
    _P.CONTENT_TYPE: "text/plain",
    _P.RESPONSE_TOPIC: "reply/here",
    _P.CORRELATION_DATA: b"\x00\x01corr",
    _P.USER_PROPERTY: [("k", "v"), ("k", "w"), ("a", "b")],
}


def test_retained_v5_properties_survive_sigterm(server):  # [MQTT-3.3.1-5], [MQTT-3.3.2-4], [MQTT-3.3.2-15..20]
    broker = server()
    with persistent_raw(broker.port, "pub", 5) as pub:
        props = {**RETAINED_PROPS, _P.MESSAGE_EXPIRY_INTERVAL: 300}
        pub.publish("r/props", b"with properties", qos=1, retain=True, properties=props)
        pub.publish("r/plain", b"qos 0 too", qos=0, retain=True)
        time.sleep(0.1)  # QoS 0 has no acknowledgement; let the broker read it before SIGTERM
    broker.stop()
    broker.start()

    with broker.raw(5) as sub:
        sub.connect("sub")
        sub.subscribe("r/#", qos=1)
        got = {m.topic: m for m in receive_all(sub, 2)}
    assert set(got) == {"r/props", "r/plain"}
    kept = got["r/props"]
    assert kept.retain and kept.payload == b"with properties"
    expiry = kept.properties.pop(_P.MESSAGE_EXPIRY_INTERVAL)
    assert 0 < expiry <= 300  # what is left of it [MQTT-3.3.2-6]
    assert kept.properties == RETAINED_PROPS  # unaltered, user properties in order
    assert got["r/plain"].retain and got["r/plain"].payload == b"qos 0 too"


def test_retained_set_replace_clear_and_expiry_survive_kill_9(server):  # [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.2-5]
    broker = server()
    with broker.raw(5) as pub:
        pub.connect("pub")
        pub.publish("r/kept", b"kept", qos=1, retain=True)
        pub.publish("r/replaced", b"old", qos=1, retain=True)
        pub.publish("r/replaced", b"new", qos=1, retain=True)
        pub.publish("r/cleared", b"doomed", qos=1, retain=True)
        pub.publish("r/cleared", b"", qos=1, retain=True)  # a zero-byte retained PUBLISH removes it
        pub.publish("r/short", b"1s", qos=1, retain=True, properties={_P.MESSAGE_EXPIRY_INTERVAL: 1})
        short_published = time.monotonic()
        pub.publish("r/long", b"100s", qos=1, retain=True, properties={_P.MESSAGE_EXPIRY_INTERVAL: 100})
    broker.kill()
    time.sleep(max(0.0, short_published + 1.2 - time.monotonic()))  # "r/short" expires while down
    broker.start()

    with broker.raw(5) as sub:
        sub.connect("sub")
        sub.subscribe("r/#", qos=1)
        got = {m.topic: m for m in receive_all(sub, 3)}
        assert drain(sub) == []
    assert {t: m.payload for t, m in got.items()} == {"r/kept": b"kept", "r/replaced": b"new", "r/long": b"100s"}
    assert got["r/long"].properties[_P.MESSAGE_EXPIRY_INTERVAL] <= 99  # the downtime counted [MQTT-3.3.2-6]


# -- persistent sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["3.1.1", "5.0"])
def test_paho_session_survives_kill_9(server, protocol):  # [MQTT-3.1.2-5] (3.1.1), [MQTT-3.1.2-23], [MQTT-4.6.0-6]
    broker = server()
    paho_sub = PahoSession(broker.port, f"paho-{protocol}", protocol)
    assert paho_sub.connect() is False
    paho_sub.subscribe("q/#", qos=2)
    paho_sub.close()
    settle(broker.port)

    with broker.raw(4) as pub:
        pub.connect("pub")
        for i in range(10):
            pub.publish("q/x", f"m{i}".encode(), qos=1 + i % 2)  # acknowledged: stored for the session
    broker.kill()
    broker.start()

    paho_sub = PahoSession(broker.port, f"paho-{protocol}", protocol)
    try:
        assert paho_sub.connect() is True  # Session Present [MQTT-3.2.2-3]
        queued = paho_sub.take(10)
        # paho hands a QoS 2 message to the application at PUBREL, so order holds per QoS (as the
        # statement asks), not across QoS levels.
        for qos in (1, 2):
            in_order = [f"m{i}".encode() for i in range(10) if 1 + i % 2 == qos]
            assert [m.payload for m in queued if m.qos == qos] == in_order
        with broker.raw(4) as pub:  # the subscription itself came back: new messages reach it too
            pub.connect("pub")
            pub.publish("q/y", b"after restart", qos=1)
        [fresh] = paho_sub.take(1)
        assert fresh.topic == "q/y" and fresh.payload == b"after restart"
        assert paho_sub.messages.empty()
    finally:
        paho_sub.close()


def test_raw_v5_session_keeps_subscription_options_across_kill_9(server):  # [MQTT-3.1.2-23], [MQTT-3.3.4-3]
    broker = server()
    sub = persistent_raw(broker.port, "raw5", 5)
    sub.subscribe("s/#", qos=2, properties={_P.SUBSCRIPTION_IDENTIFIER: 7}, no_local=True)
    sub.subscribe("$share/group/shared/#", qos=1)
    sub.disconnect()
    settle(broker.port)
    with broker.raw(4) as pub:
        pub.connect("pub")
        pub.publish("s/1", b"one", qos=1)
        pub.publish("s/2", b"two", qos=2)
    broker.kill()
    broker.start()

    with persistent_raw(broker.port, "raw5", 5, clean=False) as sub:
        queued = receive_all(sub, 2)
        assert [(m.topic, m.qos) for m in queued] == [("s/1", 1), ("s/2", 2)]
        assert all(m.properties.get(_P.SUBSCRIPTION_IDENTIFIER) == [7] for m in queued)
        assert drain(sub) == []
        sub.publish("s/own", b"no local", qos=1)  # No Local survived: our own message is not sent back
        with broker.raw(4) as pub:
            pub.connect("pub")
            pub.publish("s/3", b"three", qos=1)
            pub.publish("shared/x", b"to the group", qos=1)
        fresh, shared = receive_all(sub, 2)
        assert fresh.topic == "s/3" and fresh.properties[_P.SUBSCRIPTION_IDENTIFIER] == [7]
        assert shared.topic == "shared/x" and shared.qos == 1  # the shared subscription came back too
        assert drain(sub) == []


def test_strict_durability_every_acknowledged_qos1_message_survives_kill_9(server):  # [MQTT-4.3.2-4], [MQTT-4.5.0-1]
    count = 200
    broker = server()
    sub = persistent_raw(broker.port, "durable", 4)
    sub.subscribe("d/#", qos=1)
    sub.disconnect()
    settle(broker.port)

    with broker.raw(4) as pub:
        pub.connect("pub")
        batch = b"".join(encode(p.Publish("d/x", str(i).encode(), 1, False, i + 1), 4) for i in range(count))
        pub.send(batch)  # pipelined: the acknowledgements may come in groups
        acked = {pub.expect(p.Puback).packet_id for _ in range(count)}
        assert acked == set(range(1, count + 1))
        broker.kill()  # at once: only what was committed before each PUBACK can be there
    broker.start()

    with persistent_raw(broker.port, "durable", 4, clean=False) as sub:
        got = receive_all(sub, count)
        assert [m.payload for m in got] == [str(i).encode() for i in range(count)]
        assert drain(sub) == []


def test_sigterm_keeps_a_connected_session_and_its_inflight_message(server):  # [MQTT-4.4.0-1], [MQTT-3.14.2-1]
    broker = server()
    sub = persistent_raw(broker.port, "stayer", 5)
    sub.subscribe("g/#", qos=1)
    with broker.raw(4) as pub:
        pub.connect("pub")
        pub.publish("g/1", b"unacked", qos=1)
    first = sub.expect(p.Publish)
    broker.stop()  # while the client is connected and the PUBLISH is unacknowledged
    [goodbye] = sub.expect_closed()
    assert isinstance(goodbye, p.Disconnect) and goodbye.reason_code == 0x8B  # Server shutting down
    broker.start()

    with persistent_raw(broker.port, "stayer", 5, clean=False) as sub:
        again = sub.expect(p.Publish)
        assert (again.topic, again.dup, again.packet_id) == ("g/1", True, first.packet_id)
        sub.send(p.Puback(again.packet_id))
        sub.nothing(0.2)


def test_qos2_exactly_once_across_kill_9(server):  # [MQTT-4.3.3-8], [MQTT-4.3.3-10], [MQTT-4.3.3-11], [MQTT-4.3.3-12]
    broker = server()
    sub = persistent_raw(broker.port, "once-sub", 4)
    sub.subscribe("x/#", qos=2)
    sub.disconnect()
    settle(broker.port)

    pub = persistent_raw(broker.port, "once-pub", 5)
    pub.send(p.Publish("x/a", b"a", 2, False, 7))
    assert pub.expect(p.Pubrec).packet_id == 7  # ownership taken: committed before PUBREC
    pub.send(p.Publish("x/b", b"b", 2, False, 8))
    assert pub.expect(p.Pubrec).packet_id == 8
    broker.kill()
    pub.close()
    broker.start()

    with persistent_raw(broker.port, "once-pub", 5, clean=False) as pub:
        pub.send(p.Publish("x/a", b"a", 2, False, 7, dup=True))  # as if the PUBREC had been lost
        rec = pub.expect(p.Pubrec)
        assert (rec.packet_id, rec.reason_code) == (7, 0)
        for pid in (7, 8):
            pub.send(p.Pubrel(pid))
            comp = pub.expect(p.Pubcomp)
            assert (comp.packet_id, comp.reason_code) == (pid, 0)  # not 0x92: the packet id was remembered
        pub.publish("x/c", b"c", qos=2)  # the packet ids are free again
        pub.send(p.Publish("x/a", b"a again", 2, False, 7))  # after PUBCOMP: a new message
        pub.expect(p.Pubrec)
        pub.send(p.Pubrel(7))
        pub.expect(p.Pubcomp)

    with persistent_raw(broker.port, "once-sub", 4, clean=False) as sub:
        got = receive_all(sub, 4)
        assert drain(sub) == []
    assert [(m.topic, m.payload) for m in got] == [("x/a", b"a"), ("x/b", b"b"), ("x/c", b"c"), ("x/a", b"a again")]


def test_qos2_packet_id_is_free_in_the_store_once_pubcomp_is_sent(server):  # [MQTT-4.3.3-11], [MQTT-4.3.3-2]
    """After PUBCOMP the publisher may reuse the packet id at once (clients that take the lowest free
    id do): PUBCOMP is sent only once the id's release is committed, so a kill -9 right after it
    cannot turn the next message on that id into a "resend" that is acknowledged and dropped."""
    broker = server()
    sub = persistent_raw(broker.port, "free-sub", 5)
    sub.subscribe("free/#", qos=2)
    sub.disconnect()
    pub = persistent_raw(broker.port, "free-pub", 5)
    rounds = 6
    for n in range(rounds):
        pub.send(p.Publish("free/x", f"first {n}".encode(), 2, False, 7))
        pub.expect(p.Pubrec)
        pub.send(p.Pubrel(7))
        pub.expect(p.Pubcomp)
        broker.kill()  # at once: only what was committed before PUBCOMP survives
        pub.close()
        broker.start()
        pub = persistent_raw(broker.port, "free-pub", 5, clean=False)
        pub.send(p.Publish("free/x", f"second {n}".encode(), 2, False, 7))  # a new message on id 7
        pub.expect(p.Pubrec)
        pub.send(p.Pubrel(7))
        assert pub.expect(p.Pubcomp).reason_code == 0
    pub.disconnect()
    with persistent_raw(broker.port, "free-sub", 5, clean=False) as sub:
        got = receive_all(sub, 2 * rounds)
        assert drain(sub) == []
    assert [m.payload.decode() for m in got] == [f"{w} {n}" for n in range(rounds) for w in ("first", "second")]


def test_packet_id_a_subscriber_holds_names_the_same_message_after_kill_9(server):  # [MQTT-4.3.3-9], [MQTT-4.4.0-1]
    """A QoS 2 receiver keeps a packet id from PUBLISH until PUBREL and drops any other PUBLISH on it
    meanwhile. So the broker sends a persistent session's PUBLISH only once the record of which
    message that id names is committed: after a kill -9 it resends the same message on the same id,
    instead of a different one that the client would drop as a duplicate."""
    broker = server()
    pub = broker.raw(5)
    pub.connect("held-pub")
    rounds = 5
    for n in range(rounds):
        sub = persistent_raw(broker.port, "held-sub", 5, clean=n == 0)
        if n == 0:
            sub.subscribe("held/#", qos=2)
        drain(sub)  # finish whatever the last round left in flight
        for k in range(3):  # complete a few flows, so the broker's next packet id is past 1
            pub.publish("held/done", f"{n}/{k}".encode(), qos=2)
            receive_all(sub, 1)
            drain(sub, 0.05)
        # A burst of retained writes keeps the storage writer busy, as load would.
        pub.send(b"".join(encode(p.Publish(f"burst/{i}", bytes(4096), 0, True), 5) for i in range(300)))
        pub.send(p.Publish("held/x", f"held {n}".encode(), 2, False, 100 + n))  # PUBREC not awaited
        held = sub.expect(p.Publish)  # not answered: the client now holds its packet id
        broker.kill()
        sub.close()
        pub.close()
        broker.start()
        pub = broker.raw(5)
        pub.connect("held-pub")
        with persistent_raw(broker.port, "held-sub", 5, clean=False) as sub:
            again = sub.expect(p.Publish)
            assert (again.packet_id, again.payload, again.dup) == (held.packet_id, held.payload, True)
            sub.send(p.Pubrec(again.packet_id))
            sub.expect(p.Pubrel)
            sub.send(p.Pubcomp(again.packet_id))


def test_session_discarded_by_clean_start_stays_gone_after_kill_9(server):  # [MQTT-3.1.2-4], [MQTT-3.2.2-2]
    """CONNACK to a Clean Start that discards a stored session is sent once the discard is committed:
    a kill -9 right after it must not bring the session back with Session Present 1."""
    broker = server()
    for n in range(4):
        with persistent_raw(broker.port, "gone", 5) as client:
            client.subscribe("gone/#", qos=1)
        # A burst of retained writes keeps the storage writer busy, as load would.
        with broker.raw(5) as loader:
            loader.connect("gone-loader")
            loader.send(b"".join(encode(p.Publish(f"burst/{i}", bytes(4096), 0, True), 5) for i in range(300)))
            loader.publish("gone/x", b"queued", qos=1)
        client = RawClient(broker.port, 5)
        ack = client.connect("gone", clean=True)  # discards the stored session
        assert (ack.reason_code, ack.session_present) == (0, False)
        broker.kill()
        client.close()
        broker.start()
        with RawClient(broker.port, 5) as client:
            ack = client.connect("gone", clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 300})
            assert (ack.reason_code, ack.session_present) == (0, False), f"round {n}: the session came back"
            client.disconnect()
        with RawClient(broker.port, 5) as client:
            client.connect("gone", clean=True)  # start the next round from nothing


def test_persistent_session_output_keeps_its_order(server):  # [MQTT-3.8.4-4], [MQTT-3.3.1-9]
    """Output held for a commit holds back what follows it: SUBACK first, then the retained messages."""
    broker = server()
    with broker.raw(5) as setter:
        setter.connect("order-setter")
        setter.publish("order/a", b"zero", qos=0, retain=True)
        setter.publish("order/b", b"one", qos=1, retain=True)
    with persistent_raw(broker.port, "order-sub", 5) as sub:
        sub.send(p.Subscribe(1, [p.Subscription("order/#", 1)]))
        first = sub.recv()
        assert isinstance(first, p.Suback), first
        got = receive_all(sub, 2)
        assert sorted(m.payload for m in got) == [b"one", b"zero"]


def test_qos2_packet_id_of_unrouted_message_survives_kill_9(server):  # [MQTT-4.3.3-10], [MQTT-4.3.3-11]
    # Nothing stores the message itself (no subscriber), but the packet id awaiting PUBREL is session
    # state: PUBREC must wait for it to be committed. A burst of retained writes keeps the writer busy
    # so that an early PUBREC would reach us before the commit.
    broker = server()
    pub = persistent_raw(broker.port, "lonely-pub", 5)
    settle(broker.port)
    with broker.raw(4) as flood:
        flood.connect("flood")
        big = b"x" * 10_000
        flood.send(b"".join(encode(p.Publish(f"flood/{i}", big, 0, True), 4) for i in range(2000)))
        flood.send(p.Pingreq())
        flood.expect(p.Pingresp)  # the burst has been routed and handed to the writer
        pub.send(p.Publish("nobody/listens", b"x", 2, False, 9))
        rec = pub.expect(p.Pubrec)
        broker.kill()
    assert (rec.packet_id, rec.reason_code) == (9, 0x10)  # No matching subscribers
    pub.close()
    broker.start()

    with persistent_raw(broker.port, "lonely-pub", 5, clean=False) as pub:
        pub.send(p.Pubrel(9))
        comp = pub.expect(p.Pubcomp)
        assert (comp.packet_id, comp.reason_code) == (9, 0)  # not 0x92 Packet Identifier not found


@pytest.mark.parametrize("version", [4, 5])
def test_inflight_resent_with_dup_after_kill_9(server, version):  # [MQTT-4.4.0-1], [MQTT-3.3.1-1], [MQTT-4.6.0-6]
    broker = server()
    sub = persistent_raw(broker.port, "inflight", version)
    sub.subscribe("i/#", qos=2)
    with broker.raw(4) as pub:
        pub.connect("pub")
        pub.publish("i/1", b"qos1 unacked", qos=1)
        pub.publish("i/2", b"qos2 unreceived", qos=2)
        pub.publish("i/3", b"qos2 received", qos=2)
    first = [sub.expect(p.Publish) for _ in range(3)]
    assert [m.dup for m in first] == [False, False, False]
    sub.send(p.Pubrec(first[2].packet_id))  # only i/3 gets as far as PUBREC
    assert sub.expect(p.Pubrel).packet_id == first[2].packet_id
    settle(broker.port)
    broker.kill()
    sub.close()
    broker.start()

    with persistent_raw(broker.port, "inflight", version, clean=False) as sub:
        resent = [sub.recv() for _ in range(3)]
        one, two, rel = resent
        assert isinstance(one, p.Publish) and isinstance(two, p.Publish), resent
        assert (one.topic, one.qos, one.dup, one.packet_id) == ("i/1", 1, True, first[0].packet_id)
        assert (two.topic, two.qos, two.dup, two.packet_id) == ("i/2", 2, True, first[1].packet_id)
        assert two.payload == b"qos2 unreceived"
        assert isinstance(rel, p.Pubrel) and rel.packet_id == first[2].packet_id  # PUBREL, not the PUBLISH
        sub.send(p.Puback(one.packet_id))
        sub.send(p.Pubrec(two.packet_id))
        assert sub.expect(p.Pubrel).packet_id == two.packet_id
        sub.send(p.Pubcomp(two.packet_id))
        sub.send(p.Pubcomp(rel.packet_id))
        sub.nothing()

    with persistent_raw(broker.port, "inflight", version, clean=False) as sub:
        sub.nothing()  # every flow completed: nothing is resent a second time


def test_session_and_message_expiry_count_across_restart(server):  # [MQTT-4.1.0-2], [MQTT-3.3.2-5]
    broker = server()
    for client_id, expiry in (("short", 1), ("mid", 2), ("long", 60)):
        client = persistent_raw(broker.port, client_id, 5, expiry=expiry)
        client.subscribe("exp/#", qos=1)
        client.disconnect()
    disconnected = time.monotonic()
    settle(broker.port)
    with broker.raw(5) as pub:
        pub.connect("pub")
        pub.publish("exp/brief", b"brief", qos=1, properties={_P.MESSAGE_EXPIRY_INTERVAL: 1})
        pub.publish("exp/lasting", b"lasting", qos=1, properties={_P.MESSAGE_EXPIRY_INTERVAL: 100})
    broker.kill()
    time.sleep(1.0)  # "short" and "exp/brief" expire while the broker is down
    broker.start()

    assert session_present(broker.port, "short") is False
    with persistent_raw(broker.port, "long", 5, clean=False) as long_lived:
        [queued] = receive_all(long_lived, 1)
        assert drain(long_lived) == []
    assert queued.topic == "exp/lasting"
    assert queued.properties[_P.MESSAGE_EXPIRY_INTERVAL] <= 99  # the downtime counted [MQTT-3.3.2-6]
    # "mid" has 2 s from its disconnect, not from the restart: a clock restarted at start-up
    # would keep it until about 1.5 s from now.
    time.sleep(max(0.0, disconnected + 2.4 - time.monotonic()))
    assert session_present(broker.port, "mid") is False


def session_present(port: int, client_id: str) -> bool:
    with RawClient(port, 5) as client:
        ack = client.connect(client_id, clean=False, properties={_P.SESSION_EXPIRY_INTERVAL: 300})
        assert ack.reason_code == 0
        return ack.session_present


def test_delayed_wills_fire_after_restart(server):  # [MQTT-3.1.2-8], [MQTT-3.1.3-9]
    broker = server()
    owners = []
    # "owner": the delay runs out after the restart. "brief": its session (1 s) ends around the restart,
    # and a session's end publishes its will at once, long before the 30 s delay.
    for client_id, delay, expiry, retain in (("owner", 2, 60, False), ("brief", 30, 1, True)):
        owner = RawClient(broker.port, 5)
        will = p.Will(f"will/{client_id}", b"gone", 1, retain, properties={_P.WILL_DELAY_INTERVAL: delay})
        assert owner.connect(client_id, will=will, properties={_P.SESSION_EXPIRY_INTERVAL: expiry}).reason_code == 0
        owners.append(owner)
    for owner in owners:
        owner.close()  # no DISCONNECT: the wills are due, after their delays
    dropped = time.monotonic()
    settle(broker.port)
    broker.kill()
    time.sleep(0.5)
    broker.start()

    with broker.raw(4) as sub:
        sub.connect("watcher")
        sub.subscribe("will/#", qos=1)
        first, second = receive_all(sub, 2, timeout=15.0)
        arrived = time.monotonic()
        assert drain(sub) == []  # each exactly once
    assert (first.topic, first.payload) == ("will/brief", b"gone")  # (retained, in case it fired before we subscribed)
    assert (second.topic, second.payload) == ("will/owner", b"gone")
    assert arrived - dropped >= 1.7  # the delay still applied after the restart
    assert session_present(broker.port, "owner") is True  # the will fired; the session lives on
    assert session_present(broker.port, "brief") is False


def test_relaxed_durability_acks_at_once_and_persists_on_sigterm(server):  # [MQTT-3.1.2-23], [MQTT-4.3.2-4]
    # A long commit window: a relaxed broker must not hold acknowledgements back for it.
    broker = server("--durability", "relaxed", env={"WRENMQ_COMMIT_INTERVAL": "30"})
    sub = persistent_raw(broker.port, "relaxed", 4)
    sub.subscribe("rx/#", qos=1)
    sub.disconnect()
    with broker.raw(4) as pub:
        pub.connect("pub")
        started = time.monotonic()
        for i in range(20):
            pub.publish("rx/q", str(i).encode(), qos=1)
        pub.publish("rx/retained", b"kept", qos=1, retain=True)
        assert time.monotonic() - started < 2.0
    broker.stop()  # a graceful stop commits what the window still held
    broker.start()

    with persistent_raw(broker.port, "relaxed", 4, clean=False) as sub:
        got = receive_all(sub, 21)
        assert drain(sub) == []
    assert [m.payload for m in got] == [str(i).encode() for i in range(20)] + [b"kept"]


def test_memory_storage_forgets_everything_on_restart(server):  # control: [MQTT-3.1.2-23] needs a store
    broker = server("--storage", "memory")
    sub = persistent_raw(broker.port, "forgetful", 5)
    sub.subscribe("m/#", qos=1)
    sub.disconnect()
    with broker.raw(4) as pub:
        pub.connect("pub")
        pub.publish("m/queued", b"queued", qos=1)
        pub.publish("m/retained", b"retained", qos=1, retain=True)
    broker.stop()
    broker.start()

    assert session_present(broker.port, "forgetful") is False
    with broker.raw(4) as probe:
        probe.connect("probe")
        probe.subscribe("m/#", qos=1)
        probe.nothing()
