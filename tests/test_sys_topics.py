"""``$SYS/broker/...``: broker statistics published as retained messages every ``sys_interval`` seconds.

$SYS is a convention (MQTT 5.0 section 4.7.2, non-normative) except for one rule: a Topic Filter
starting with a wildcard never matches a ``$`` topic [MQTT-4.7.2-1].
"""

from __future__ import annotations

import time
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest

import wrenmq
from mqttraw import RawClient
from wrenmq.mqtt import packets as p

INTERVAL = 0.2


@pytest.fixture
def sys_broker(wrenmq_server_factory):  # type: ignore[no-untyped-def]
    return wrenmq_server_factory(sys_interval=INTERVAL)


@pytest.fixture
def client(sys_broker) -> Callable[..., RawClient]:  # type: ignore[no-untyped-def]
    clients: list[RawClient] = []

    def make(client_id: str, version: int = 4) -> RawClient:
        c = RawClient(sys_broker.port, version)
        clients.append(c)
        assert c.connect(client_id).reason_code == 0
        return c

    yield make
    for c in clients:
        c.close()


def next_value(c: RawClient, topic: str, timeout: float = 3.0) -> tuple[str, bool]:
    """The next value published on ``topic`` (other $SYS topics are skipped), with its RETAIN flag."""
    deadline = time.monotonic() + timeout
    while True:
        packet = c.recv(max(0.01, deadline - time.monotonic()))
        if isinstance(packet, p.Publish) and packet.topic == topic:
            return packet.payload.decode(), packet.retain


def wait_for_value(c: RawClient, topic: str, accept: Callable[[str], bool], timeout: float = 3.0) -> str:
    """Read updates of ``topic`` until one satisfies ``accept``."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            value, _ = next_value(c, topic, deadline - time.monotonic())
        except TimeoutError:
            break
        if accept(value):
            return value
        seen.append(value)
    raise AssertionError(f"{topic}: no acceptable value; saw {seen}")


def test_version_is_published_retained(client):  # [MQTT-3.3.1-9]: retained, sent to a new subscriber
    c = client("v")
    c.subscribe("$SYS/broker/version")
    value, retain = next_value(c, "$SYS/broker/version")
    assert retain is True
    assert value == f"wrenmq {wrenmq.__version__}"


def test_uptime_is_retained_and_advances(client):  # [MQTT-3.3.1-9]
    c = client("up")
    c.subscribe("$SYS/broker/uptime")
    first, retain = next_value(c, "$SYS/broker/uptime")
    assert retain and first.endswith(" seconds")
    later = wait_for_value(c, "$SYS/broker/uptime", lambda v: int(v.split()[0]) > int(first.split()[0]))
    assert later.endswith(" seconds")


def test_clients_connected_follows_connections(client, sys_broker):  # [MQTT-4.7.2-1] ($SYS/# matches)
    watcher = client("watcher")
    watcher.subscribe("$SYS/broker/clients/connected")
    topic = "$SYS/broker/clients/connected"
    wait_for_value(watcher, topic, lambda v: v == "1")
    other = client("other")
    wait_for_value(watcher, topic, lambda v: v == "2")
    other.disconnect()
    wait_for_value(watcher, topic, lambda v: v == "1")


def test_messages_and_bytes_received_count_up(client):  # statistics; [MQTT-4.7.2-1] ($SYS/# matches)
    watcher = client("watcher")
    watcher.subscribe("$SYS/broker/messages/received")
    before = int(next_value(watcher, "$SYS/broker/messages/received")[0])
    watcher.subscribe("$SYS/broker/bytes/received")
    bytes_before = int(next_value(watcher, "$SYS/broker/bytes/received")[0])
    pub = client("pub")
    for _ in range(5):
        pub.publish("counted/x", b"x" * 100, qos=1)
    wait_for_value(watcher, "$SYS/broker/messages/received", lambda v: int(v) >= before + 5)
    wait_for_value(watcher, "$SYS/broker/bytes/received", lambda v: int(v) >= bytes_before + 5 * 100)


def test_subscription_count_follows_subscribes(client):  # statistics
    watcher = client("watcher")
    watcher.subscribe("$SYS/broker/subscriptions/count")
    topic = "$SYS/broker/subscriptions/count"
    base = int(wait_for_value(watcher, topic, lambda v: int(v) >= 1))
    other = client("other")
    other.subscribe("a/+")
    other.subscribe("b/#")
    wait_for_value(watcher, topic, lambda v: int(v) == base + 2)
    other.send(p.Unsubscribe(other.pid(), ["a/+"]))
    other.expect(p.Unsuback)
    wait_for_value(watcher, topic, lambda v: int(v) == base + 1)


def test_retained_message_count_follows_the_retain_store(client):  # [MQTT-3.3.1-5], [MQTT-3.3.1-6]
    # $SYS values are retained messages themselves, so the count settles once the first round is stored.
    time.sleep(2 * INTERVAL)
    watcher = client("watcher")
    topic = "$SYS/broker/retained messages/count"
    watcher.subscribe(topic)
    base = int(next_value(watcher, topic)[0])
    pub = client("pub")
    pub.publish("kept/1", b"one", qos=1, retain=True)
    pub.publish("kept/2", b"two", qos=1, retain=True)
    wait_for_value(watcher, topic, lambda v: int(v) == base + 2)
    pub.publish("kept/1", b"", qos=1, retain=True)  # cleared
    wait_for_value(watcher, topic, lambda v: int(v) == base + 1)


@pytest.mark.parametrize("version", [4, 5])
def test_hash_does_not_match_sys_but_sys_hash_does(client, version):  # [MQTT-4.7.2-1]
    everything = client("everything", version)
    everything.subscribe("#")
    plus = client("plus", version)
    plus.subscribe("+/broker/#")
    sys_all = client("sys-all", version)
    sys_all.subscribe("$SYS/#")
    # The retained values arrive at once for $SYS/#; the wildcard subscribers get none of them.
    assert next_value(sys_all, "$SYS/broker/version")[1] is True
    client("newcomer")  # changes clients/connected: a live $SYS update follows
    wait_for_value(sys_all, "$SYS/broker/clients/connected", lambda v: v == "4")
    everything.nothing(timeout=2 * INTERVAL)
    plus.nothing(timeout=0.05)
    # ...while ordinary topics still reach "#".
    sys_all.publish("plain/topic", b"x")
    packet = everything.expect(p.Publish)
    assert packet.topic == "plain/topic"


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5], ids=["3.1.1", "5.0"])
def test_paho_reads_sys_topics(sys_broker, protocol):  # [MQTT-4.7.2-1]
    import queue

    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=protocol)
    c.on_connect = lambda cl, u, f, rc, props: cl.subscribe([("#", 0), ("$SYS/broker/version", 0)])
    c.on_message = lambda cl, u, msg: got.put(msg)
    c.connect("127.0.0.1", sys_broker.port, keepalive=30)
    c.loop_start()
    try:
        msg = got.get(timeout=3)
        assert msg.topic == "$SYS/broker/version" and msg.retain
        assert msg.payload == f"wrenmq {wrenmq.__version__}".encode()
        time.sleep(2 * INTERVAL)
        topics = set()
        while not got.empty():
            topics.add(got.get().topic)
        assert topics <= {"$SYS/broker/version"}  # nothing else of $SYS came through "#"
    finally:
        c.disconnect()
        c.loop_stop()


# Published by wrenmq and not by Mosquitto (Mosquitto 2.0 has no such counters).
WRENMQ_ONLY = {"messages/dropped", "sessions/owner conflicts"}


def sys_names(port: int, until: Callable[[set[str]], bool] | None = None, timeout: float = 10.0) -> dict[str, str]:
    """The $SYS/broker/... names (and latest values) a broker publishes: the retained ones it sends
    on subscribe (up to a sentinel published after the SUBACK), then more until ``until`` holds."""
    found: dict[str, str] = {}
    with RawClient(port, 4) as c:
        assert c.connect("sys-names").reason_code == 0
        c.send(p.Subscribe(1, [p.Subscription("$SYS/#", 0), p.Subscription("sys-names/end", 0)]))
        c.expect(p.Suback)
        c.publish("sys-names/end", b"")
        deadline = time.monotonic() + timeout
        sentinel = False
        while not (sentinel and (until is None or until(set(found)))):
            assert time.monotonic() < deadline, f"$SYS so far: {sorted(found)}"
            packet = c.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(packet, p.Publish):
                if packet.topic == "sys-names/end":
                    sentinel = True
                else:
                    found[packet.topic.removeprefix("$SYS/broker/")] = packet.payload.decode()
    return found


def test_sys_names_are_mosquittos(sys_broker, mosquitto_factory):  # $SYS convention (MQTT 5.0 section 4.7.2)
    """Every $SYS topic wrenmq publishes (but two of its own) is one a real Mosquitto 2 publishes."""
    ours = sys_names(sys_broker.port)
    mosquitto = mosquitto_factory()
    mosquitto.config.write_text(mosquitto.config.read_text() + "sys_interval 1\n")
    mosquitto.restart()
    wanted = set(ours) - WRENMQ_ONLY
    theirs = sys_names(mosquitto.port, lambda names: wanted <= names)
    assert wanted <= set(theirs)
    assert set(theirs) <= set(ours), f"Mosquitto's, missing here: {sorted(set(theirs) - set(ours))}"
    for name in ("publish/bytes/received", "publish/bytes/sent", "load/sockets/1min",
                 "clients/maximum", "clients/expired", "heap/current", "heap/maximum", "store/messages/count",
                 "store/messages/bytes", "shared_subscriptions/count",
                 "messages/stored", "publish/messages/dropped", "load/messages/received/5min",
                 "load/bytes/sent/15min", "load/publish/received/1min"):  # fmt: skip
        assert name in ours, name


def test_sys_load_averages_follow_traffic(client):  # statistics, as Mosquitto's calc_load
    watcher = client("watcher")
    topic = "$SYS/broker/load/messages/received/1min"
    watcher.subscribe(topic)
    assert next_value(watcher, topic)[0] == "0.00"
    pub = client("pub")
    for _ in range(20):
        pub.publish("load/x", b"-", qos=1)
    value = wait_for_value(watcher, topic, lambda v: float(v) > 0)
    assert value == f"{float(value):.2f}"  # two decimals, as Mosquitto prints them
    watcher.subscribe("$SYS/broker/heap/current")
    assert int(next_value(watcher, "$SYS/broker/heap/current")[0]) > 1_000_000  # resident bytes


def test_sys_clients_maximum_and_expired(client, sys_broker):  # [MQTT-3.1.2-23]: the session expires
    watcher = client("watcher")
    watcher.send(p.Subscribe(1, [p.Subscription(f"$SYS/broker/clients/{name}", 0) for name in ("maximum", "expired")]))
    watcher.expect(p.Suback)
    assert next_value(watcher, "$SYS/broker/clients/expired")[0] == "0"
    brief = RawClient(sys_broker.port, 5)
    props = {0x11: 1}  # Session Expiry Interval: 1 second
    assert brief.connect("brief", clean=True, properties=props).reason_code == 0
    wait_for_value(watcher, "$SYS/broker/clients/maximum", lambda v: v == "2")
    brief.disconnect()
    wait_for_value(watcher, "$SYS/broker/clients/expired", lambda v: v == "1", timeout=5.0)


def test_sys_store_bytes_and_shared_subscriptions(client):  # [MQTT-3.3.1-5], [MQTT-4.8.2-1] statistics
    time.sleep(2 * INTERVAL)  # $SYS values are retained messages too: let the first round be stored
    watcher = client("watcher", 5)
    names = ("store/messages/bytes", "shared_subscriptions/count")
    watcher.send(p.Subscribe(1, [p.Subscription(f"$SYS/broker/{name}", 0) for name in names]))
    watcher.expect(p.Suback)
    values = {name: next_value(watcher, f"$SYS/broker/{name}")[0] for name in names}
    pub = client("pub", 5)
    pub.publish("kept/store", b"x" * 1000, qos=1, retain=True)
    low = int(values["store/messages/bytes"]) + 900  # "kept/store" and 1000 bytes; $SYS values vary a little
    wait_for_value(watcher, "$SYS/broker/store/messages/bytes", lambda v: int(v) >= low)
    pub.subscribe("$share/g/jobs/#", 1)
    wait_for_value(watcher, "$SYS/broker/shared_subscriptions/count", lambda v: v == "1")
    pub.send(p.Unsubscribe(pub.pid(), ["$share/g/jobs/#"]))
    pub.expect(p.Unsuback)
    wait_for_value(watcher, "$SYS/broker/shared_subscriptions/count", lambda v: v == "0")


def test_sys_publish_bytes_count_payloads_only(client):  # statistics: Mosquitto's publish/bytes/*
    watcher = client("watcher")
    names = ("publish/bytes/received", "publish/bytes/sent", "bytes/received")
    watcher.send(p.Subscribe(1, [p.Subscription(f"$SYS/broker/{name}", 0) for name in names]))
    watcher.expect(p.Suback)
    before = {name: int(next_value(watcher, f"$SYS/broker/{name}")[0]) for name in names}
    reader = client("reader")
    reader.subscribe("payload/+")
    pub = client("pub")
    for n in range(5):
        pub.publish(f"payload/{n}", b"x" * 100, qos=1)
    for _ in range(5):
        reader.expect(p.Publish)
    # The payloads alone, in and out, where bytes/received counts every byte of every packet.
    wait_for_value(watcher, "$SYS/broker/publish/bytes/received", lambda v: int(v) == before[names[0]] + 500)
    wait_for_value(watcher, "$SYS/broker/publish/bytes/sent", lambda v: int(v) >= before[names[1]] + 500)
    wait_for_value(watcher, "$SYS/broker/bytes/received", lambda v: int(v) > before[names[2]] + 500 + 5 * 10)


def test_sys_load_sockets_counts_sockets_without_connect(client, sys_broker):  # statistics: load/sockets
    """``load/sockets`` counts every accepted socket, ``load/connections`` only CONNECTs: five sockets
    that never send CONNECT raise the one by about five and leave the other."""
    import socket

    watcher = client("watcher")
    names = ("load/connections/1min", "load/sockets/1min")
    watcher.send(p.Subscribe(1, [p.Subscription(f"$SYS/broker/{name}", 0) for name in names]))
    watcher.expect(p.Suback)
    bare = [socket.create_connection(("127.0.0.1", sys_broker.port)) for _ in range(5)]
    try:
        latest: dict[str, float] = {}
        deadline = time.monotonic() + 5.0
        while not (len(latest) == 2 and latest[names[1]] - latest[names[0]] >= 4.0):
            assert time.monotonic() < deadline, latest
            packet = watcher.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(packet, p.Publish):
                latest[packet.topic.removeprefix("$SYS/broker/")] = float(packet.payload)
    finally:
        for sock in bare:
            sock.close()


def test_sys_messages_count_every_packet_publish_messages_only_publishes(client):  # statistics: Mosquitto's sys_tree.c
    """Mosquitto counts every control packet read or written in ``messages/received|sent``
    (packet_mosq.c) and PUBLISHes alone in ``publish/messages/received|sent``: a client that
    connects and pings ten times adds 11 packets each way (CONNECT + PINGREQs; CONNACK +
    PINGRESPs) and no PUBLISH. The watcher sends nothing after its SUBSCRIBE; what it is sent
    is $SYS PUBLISHes, so sent minus publish-sent moves by the pinger's 11 alone."""
    watcher = client("watcher")
    names = ("messages/received", "messages/sent", "publish/messages/received", "publish/messages/sent")
    watcher.send(p.Subscribe(1, [p.Subscription(f"$SYS/broker/{name}", 0) for name in names]))
    watcher.expect(p.Suback)
    latest: dict[str, int] = {}

    # A value is published when it changed. publish/messages/sent comes last in a round and
    # changes every round here (the watcher is sent $SYS PUBLISHes): when it arrives (live, not
    # the retained copy sent on SUBSCRIBE), the other three are that round's values.
    def next_round(timeout: float = 3.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            packet = watcher.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(packet, p.Publish):  # (a retained value is the last one published)
                latest[packet.topic.removeprefix("$SYS/broker/")] = int(packet.payload)
                if packet.topic.endswith("publish/messages/sent") and not packet.retain and len(latest) == 4:
                    return dict(latest)

    before = next_round()
    pinger = client("pinger")
    for _ in range(10):
        pinger.send(p.Pingreq())
        pinger.expect(p.Pingresp)
    deadline = time.monotonic() + 5.0
    while True:
        now = next_round()
        received = now["messages/received"] - before["messages/received"]
        control_sent = (now["messages/sent"] - now["publish/messages/sent"]) - (
            before["messages/sent"] - before["publish/messages/sent"]
        )
        if (received, control_sent) == (11, 11) or time.monotonic() > deadline:
            break
    assert (received, control_sent) == (11, 11)
    assert now["publish/messages/received"] == before["publish/messages/received"]
