"""What one idle connection holds (issue 19: RSS per idle connection; BENCHMARKS.md "Where the
bytes of one connection go"). Structural, not timed: an idle session shares its empty queue,
resend list and inbound QoS 2 id set instead of allocating its own, and holds its one
subscription without a dict; each trie node holds a dict only for the kinds of entries it has, and
keeps its level as a shared string; the protocol is its own parser and keeps no output list
between flushes; the per-connection classes have no instance ``__dict__`` and, compiled, their
flags packed. And the shared stand-ins are never written to: containers are made on first use and
handed back once empty, with the QoS flows behaving as before.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Any

import pytest

from mqttraw import RawClient
from wrenmq.broker import connection as connection_module
from wrenmq.broker.router import Router, Subscriber
from wrenmq.broker.session import NO_DELIVERIES, NO_INFLIGHT, Session
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import _NO_CHUNKS, Parser
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.server import NO_IDS
from wrenmq.mqtt.topics import topic_matches
from wrenmq.pytest_plugin import WrenmqServer

_EXPIRY = {PropertyId.SESSION_EXPIRY_INTERVAL: 300}


def _nodes(server: WrenmqServer, topic_filter: str) -> list[tuple[Any, Any, Any, Any]]:
    """(children, subs, shared, local) of each trie node on ``topic_filter``'s path, read on the loop."""

    async def read() -> list[tuple[Any, Any, Any, Any]]:
        found = []
        node: Any = server.broker.router._root
        for level in topic_filter.split("/"):
            node = node.get(level)
            if node is None:
                break
            found.append((node.children, node.subs, node.shared, node.local))
        return found

    return server.call(read())


def _inspect(server: WrenmqServer, client_id: str) -> dict[str, Any]:
    """The session's containers, read on the broker's loop."""

    async def read() -> dict[str, Any]:
        broker = server.broker
        session = broker.sessions[client_id]
        conn = session.connection
        return {
            "queue": session.queue,
            "queued": list(session.queue),
            "resend": session.resend,
            "qos2": session.inbound_qos2,
            "qos2_ids": set(session.inbound_qos2),
            "inflight": session.inflight_out,
            "chunks": conn.protocol._chunks if conn is not None else None,
            "protocol_qos2": conn.protocol.inbound_qos2 if conn is not None else None,
            "root_children": broker.router._root.children,
        }

    nodes = _nodes(server, f"dev/{client_id}/cmd")
    return {**server.call(read()), "nodes": nodes}


def _subscriber(server: WrenmqServer, client_id: str) -> RawClient:
    client = RawClient(server.port, 5)
    assert client.connect(client_id, clean=False, properties=_EXPIRY).reason_code == 0
    assert client.subscribe(f"dev/{client_id}/cmd", 1).reason_codes == [1]
    return client


def test_memory_idle_connection_holds_no_empty_container_of_its_own(broker: WrenmqServer) -> None:
    client = _subscriber(broker, "m1")
    try:
        seen = _inspect(broker, "m1")
        assert seen["queue"] is NO_DELIVERIES
        assert seen["resend"] is NO_DELIVERIES
        assert seen["qos2"] is NO_IDS
        assert seen["protocol_qos2"] is NO_IDS
        assert seen["inflight"] is NO_INFLIGHT
        assert seen["chunks"] is _NO_CHUNKS  # between packets the parser holds no chunk list
    finally:
        client.close()


def test_memory_trie_holds_a_lone_child_and_a_lone_subscriber_without_a_dict(broker: WrenmqServer) -> None:
    client = _subscriber(broker, "m2")
    try:
        dev, middle, leaf = _inspect(broker, "m2")["nodes"]
        # Each node of "dev/m2/cmd" has one entry: held directly, no dict anywhere on the path.
        assert dev[0] is not None and not isinstance(dev[0], dict)
        assert middle[0] is not None and not isinstance(middle[0], dict)
        assert (dev[1:], middle[1:]) == ((None, None, None), (None, None, None))
        children, subs, shared, local = leaf
        assert (children, shared, local) == (None, None, None)
        assert subs is not None and not isinstance(subs, dict) and subs.topic_filter == "dev/m2/cmd"
        client.send(p.Unsubscribe(client.pid(), ["dev/m2/cmd"]))
        client.expect(p.Unsuback)
        assert _inspect(broker, "m2")["root_children"] is None  # pruned: the root holds nothing
    finally:
        client.close()


def test_memory_trie_second_entry_makes_a_dict_and_one_left_is_held_directly(broker: WrenmqServer) -> None:
    """A second subscriber of a filter and a second child of a level share a dict; when one is
    left it is held directly again. Every subscriber gets what it subscribed to, once."""
    names = ["t1", "t2", "t3"]
    clients = {n: RawClient(broker.port, 5) for n in names}
    try:
        for n, c in clients.items():
            assert c.connect(n).reason_code == 0
            assert c.subscribe("dev/all/cmd", 0).reason_codes == [0]  # one filter, three subscribers
            assert c.subscribe(f"dev/{n}/+", 0).reason_codes == [0]  # three siblings under "dev"
        dev, _all, cmd = _nodes(broker, "dev/all/cmd")
        assert isinstance(dev[0], dict) and sorted(dev[0]) == ["all", "t1", "t2", "t3"]
        assert isinstance(cmd[1], dict) and sorted(cmd[1]) == names
        for n in names:
            broker.publish(f"dev/{n}/cmd", n)
        broker.publish("dev/all/cmd", "all")
        for n, c in clients.items():
            got = [(m.topic, m.payload) for m in (c.expect(p.Publish), c.expect(p.Publish))]
            assert got == [(f"dev/{n}/cmd", n.encode()), ("dev/all/cmd", b"all")]
        for n in ("t1", "t2"):
            c = clients[n]
            c.send(p.Unsubscribe(c.pid(), ["dev/all/cmd", f"dev/{n}/+"]))
            c.expect(p.Unsuback)
            assert c.subscribe("sentinel", 0).reason_codes == [0]
        c = clients["t3"]
        c.send(p.Unsubscribe(c.pid(), ["dev/t3/+"]))
        c.expect(p.Unsuback)
        dev, _all, cmd = _nodes(broker, "dev/all/cmd")
        assert dev[0] is not None and not isinstance(dev[0], dict)  # "all" alone under "dev"
        assert cmd[1] is not None and not isinstance(cmd[1], dict)  # t3 alone on the filter
        broker.publish("dev/t1/cmd", "gone")  # no subscriber left for it
        broker.publish("dev/all/cmd", "again")
        broker.publish("sentinel", "s")
        assert clients["t3"].expect(p.Publish).payload == b"again"
        for n in ("t1", "t2"):
            assert clients[n].expect(p.Publish).topic == "sentinel"  # neither "gone" nor "again" came
    finally:
        for c in clients.values():
            c.close()


def test_memory_queue_made_on_first_use_and_given_back_once_caught_up(broker: WrenmqServer) -> None:
    _subscriber(broker, "m3").disconnect()
    for i in range(3):
        broker.publish("dev/m3/cmd", f"q{i}", qos=1)
    seen = _inspect(broker, "m3")
    assert seen["queue"] is not NO_DELIVERIES
    assert [d.message.payload for d in seen["queued"]] == [b"q0", b"q1", b"q2"]
    assert len(NO_DELIVERIES) == 0
    client = RawClient(broker.port, 5)
    try:
        assert client.connect("m3", clean=False, properties=_EXPIRY).session_present
        got = [client.expect(p.Publish) for _ in range(3)]
        assert [m.payload for m in got] == [b"q0", b"q1", b"q2"]  # in order [MQTT-4.6.0-5]
        for m in got:
            client.send(p.Puback(m.packet_id))
        client.send(p.Pingreq())  # a sentinel: the acks above were handled before its answer
        client.expect(p.Pingresp)
        seen = _inspect(broker, "m3")
        assert seen["queue"] is NO_DELIVERIES
        assert seen["inflight"] is not NO_INFLIGHT and len(seen["inflight"]) == 0
        assert (len(NO_DELIVERIES), len(NO_INFLIGHT), len(_NO_CHUNKS)) == (0, 0, 0)
    finally:
        client.close()


def test_memory_inbound_qos2_ids_made_on_first_and_kept_across_reconnect(broker: WrenmqServer) -> None:
    client = _subscriber(broker, "m4")
    client.send(p.Publish("other/topic", b"x", 2, False, 7))
    assert client.expect(p.Pubrec).packet_id == 7
    seen = _inspect(broker, "m4")
    assert seen["qos2"] is seen["protocol_qos2"]  # the session keeps the set its protocol made
    assert seen["qos2_ids"] == {7}
    assert len(NO_IDS) == 0
    client.close()
    # The id outlives the connection: a resent PUBLISH is acknowledged, not delivered twice
    # [MQTT-4.3.3-9], and its PUBREL is completed [MQTT-4.3.3-11].
    watcher = RawClient(broker.port, 5)
    again = RawClient(broker.port, 5)
    try:
        assert watcher.connect("m4-watcher").reason_code == 0
        watcher.subscribe("other/#", 0)
        assert again.connect("m4", clean=False, properties=_EXPIRY).session_present
        again.send(p.Publish("other/topic", b"x", 2, False, 7, dup=True))
        assert again.expect(p.Pubrec).packet_id == 7
        again.send(p.Pubrel(7))
        assert again.expect(p.Pubcomp).reason_code == 0
        again.publish("other/sentinel", b"s", 0)
        assert watcher.expect(p.Publish).topic == "other/sentinel"  # the duplicate never arrived
        assert _inspect(broker, "m4")["qos2_ids"] == set()
    finally:
        watcher.close()
        again.close()


def test_memory_per_connection_objects_have_no_instance_dict(broker: WrenmqServer) -> None:
    """Slotted (pure Python) or compiled: either way one connection's objects carry no ``__dict__``."""
    client = _subscriber(broker, "m5")
    try:

        async def read() -> list[tuple[str, bool]]:
            session = broker.broker.sessions["m5"]
            conn = session.connection
            assert conn is not None
            objects = [conn, conn.protocol, session, session.subscription("dev/m5/cmd")]
            return [(type(o).__name__, hasattr(o, "__dict__")) for o in objects]

        assert [name for name, has_dict in broker.call(read()) if has_dict] == []
    finally:
        client.close()


async def test_memory_compact_trie_matches_like_the_reference_matcher(wrenmq_broker: Any) -> None:
    """Random subscribes and unsubscribes (fixed seed) through every shape a node takes (a lone
    child or subscriber held directly, dicts of several, back again): after each step every
    topic matches exactly the subscriptions ``topic_matches`` says [MQTT-4.7.1-2],
    [MQTT-4.7.1-3], [MQTT-4.7.2-1]."""
    rng = random.Random(19)
    sessions = [Session(wrenmq_broker, f"c{i}", 5, 0) for i in range(4)]
    filters = ["a", "a/b", "a/+", "a/#", "#", "+", "+/b", "a/b/c", "$s/x", "$s/#", "+/+/c", "a/c"]
    topics = ["a", "a/b", "a/c", "b/b", "a/b/c", "x/y/c", "$s/x", "$s/y", "a/b/d"]
    router = Router()
    held: set[tuple[str, str]] = set()
    for _ in range(400):
        session = rng.choice(sessions)
        topic_filter = rng.choice(filters)
        key = (session.client_id, topic_filter)
        if key in held and rng.random() < 0.6:
            assert router.unsubscribe(session.client_id, topic_filter)
            held.discard(key)
        else:
            assert router.subscribe(Subscriber(session, topic_filter, 0)) == (key in held)
            held.add(key)
        assert router.count == len(held)
        for topic in topics:
            got = sorted((s.session.client_id, s.topic_filter) for s in router.match(topic).subs)
            assert got == sorted(k for k in held if topic_matches(k[1], topic)), topic
    for client_id, topic_filter in sorted(held):
        assert router.unsubscribe(client_id, topic_filter)
    assert router._root.children is None  # everything pruned


def test_memory_connect_looks_up_no_peer_address_unless_asked(broker: WrenmqServer, caplog: Any) -> None:
    """Without INFO logging and with no failed login, a CONNECT asks nothing of the client's
    address: no getpeername() per connect, no "host:port" string kept per connection. The
    failed-login throttle still finds the address once there are failures to look it up in."""
    caplog.set_level(logging.WARNING, logger="wrenmq")
    client = _subscriber(broker, "m6")
    try:

        async def read() -> str | None:
            conn = broker.broker.sessions["m6"].connection
            assert conn is not None
            return conn._peer

        assert broker.call(read()) is None
        assert broker.broker.admission.failures == {}
    finally:
        client.close()


def test_memory_session_holds_one_subscription_without_a_dict(broker: WrenmqServer) -> None:
    """One subscription is held directly; a second makes a dict, which goes once one is left; the
    subscriptions seen from outside (read-only) and what is delivered stay the same throughout."""
    client = _subscriber(broker, "m7")
    try:

        async def held() -> tuple[Any, list[str]]:
            session = broker.broker.sessions["m7"]
            return session._subs, list(session.subscriptions)

        subs, filters = broker.call(held())
        assert isinstance(subs, Subscriber) and filters == ["dev/m7/cmd"]
        assert client.subscribe("dev/m7/extra", 0).reason_codes == [0]
        subs, filters = broker.call(held())
        assert isinstance(subs, dict) and filters == ["dev/m7/cmd", "dev/m7/extra"]
        assert client.subscribe("dev/m7/cmd", 0).reason_codes == [0]  # replaced in place [MQTT-3.8.4-3]
        subs, filters = broker.call(held())
        assert filters == ["dev/m7/cmd", "dev/m7/extra"] and subs["dev/m7/cmd"].qos == 0
        client.send(p.Unsubscribe(client.pid(), ["dev/m7/cmd"]))
        client.expect(p.Unsuback)
        subs, filters = broker.call(held())
        assert isinstance(subs, Subscriber) and filters == ["dev/m7/extra"]
        broker.publish("dev/m7/cmd", "gone")
        broker.publish("dev/m7/extra", "here")
        assert client.expect(p.Publish).payload == b"here"  # and not "gone" before it
        client.send(p.Unsubscribe(client.pid(), ["dev/m7/extra"]))
        client.expect(p.Unsuback)
        subs, filters = broker.call(held())
        assert subs is None and filters == []

        async def read_only() -> None:
            with pytest.raises(TypeError):
                broker.broker.sessions["m7"].subscriptions["x"] = None  # type: ignore[index]

        broker.call(read_only())
    finally:
        client.close()


def test_memory_protocol_is_its_own_parser_and_holds_no_output_list_while_idle(broker: WrenmqServer) -> None:
    client = _subscriber(broker, "m8")
    try:

        async def read() -> tuple[bool, bool, Any]:
            conn = broker.broker.sessions["m8"].connection
            assert conn is not None
            protocol = conn.protocol
            return isinstance(protocol, Parser), hasattr(protocol, "parser"), protocol._out

        assert broker.call(read()) == (True, False, None)
        client.send(p.Pingreq())  # output made and flushed: the list goes with it
        client.expect(p.Pingresp)
        assert broker.call(read()) == (True, False, None)
    finally:
        client.close()


def test_memory_trie_levels_are_shared_strings(broker: WrenmqServer) -> None:
    """A level that is the subscriber's client id is the session's own string; a short level
    ("cmd") is one string for every node that has it, not a copy per subscription."""
    a, b = _subscriber(broker, "m9a"), _subscriber(broker, "m9b")
    try:

        async def read() -> tuple[bool, bool, bool]:
            sessions = broker.broker.sessions
            root: Any = broker.broker.router._root
            mid_a, mid_b = root.get("dev").get("m9a"), root.get("dev").get("m9b")
            return (
                mid_a.level is sessions["m9a"].client_id,
                mid_b.level is sessions["m9b"].client_id,
                mid_a.get("cmd").level is mid_b.get("cmd").level,
            )

        assert broker.call(read()) == (True, True, True)
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(not connection_module.__file__.endswith(".so"), reason="object sizes of the compiled build")
def test_memory_compiled_objects_of_one_idle_connection_stay_small(broker: WrenmqServer) -> None:
    """The compiled sizes BENCHMARKS.md's table is made of (``sys.getsizeof``, GC header included):
    a field more, or the flags no longer packed together, shows here first."""
    client = _subscriber(broker, "m10")
    try:

        async def sizes() -> dict[str, int]:
            session = broker.broker.sessions["m10"]
            conn = session.connection
            assert conn is not None
            sub = session.subscription("dev/m10/cmd")
            return {
                "Connection": sys.getsizeof(conn),
                "ServerProtocol": sys.getsizeof(conn.protocol),
                "Session": sys.getsizeof(session),
                "Subscriber": sys.getsizeof(sub),
            }

        assert broker.call(sizes()) == {"Connection": 192, "ServerProtocol": 240, "Session": 192, "Subscriber": 96}
    finally:
        client.close()


def test_memory_narrow_fields_hold_every_value_the_protocol_allows(broker: WrenmqServer) -> None:
    """The compiled protocol keeps small numbers as 4-byte fields: every value a client may send
    still fits. The largest Keep Alive, Receive Maximum and Topic Alias Maximum [MQTT-3.1.2-10],
    [MQTT-3.3.4-7], and a Maximum Packet Size of 2**32 - 1 (four bytes on the wire), are accepted;
    QoS 1 flows in both directions and the server keeps the client's limit [MQTT-3.1.2-24]."""
    client = RawClient(broker.port, 5)
    try:
        props = {
            PropertyId.RECEIVE_MAXIMUM: 65535,
            PropertyId.MAXIMUM_PACKET_SIZE: 2**32 - 1,
            PropertyId.TOPIC_ALIAS_MAXIMUM: 65535,
            PropertyId.SESSION_EXPIRY_INTERVAL: 0xFFFFFFFF,
        }
        assert client.connect("m11", clean=True, keep_alive=65535, properties=props).reason_code == 0
        assert client.subscribe("narrow/#", 1).reason_codes == [1]
        client.send(p.Publish("narrow/t", b"x" * 100, 1, False, 7))
        first, second = client.recv(), client.recv()  # its copy and its PUBACK, in either order
        got = first if isinstance(first, p.Publish) else second
        ack = second if got is first else first
        assert isinstance(ack, p.Puback) and ack.packet_id == 7 and ack.reason_code == 0
        assert isinstance(got, p.Publish) and (got.topic, got.payload, got.qos) == ("narrow/t", b"x" * 100, 1)
        client.send(p.Puback(got.packet_id))

        async def read() -> tuple[int, int, int]:
            conn = broker.broker.sessions["m11"].connection
            assert conn is not None
            return conn.protocol.max_packet_out, conn.keep_alive, conn.send_quota

        assert broker.call(read()) == (2**32 - 1, 65535, min(65535, broker.broker.limits.max_inflight_messages))
    finally:
        client.close()
    # A parser (the client's, the bench's) may be given a limit above any MQTT packet's length.
    parser = Parser(2**32 - 1, 5)
    assert parser.feed(b"\xd0\x00")[0].type == p.PINGRESP
