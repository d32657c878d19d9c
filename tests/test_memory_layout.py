"""What one idle connection holds (issue 19: RSS per idle connection; BENCHMARKS.md "Where the
bytes of one connection go"). Structural, not timed: an idle session shares its empty queue,
resend list and inbound QoS 2 id set instead of allocating its own; each trie node holds a dict
only for the kinds of entries it has; the per-connection classes have no instance ``__dict__``.
And the shared stand-ins are never written to: containers are made on first use and handed back
once empty, with the QoS flows behaving as before.
"""

from __future__ import annotations

from typing import Any

from mqttraw import RawClient
from wrenmq.broker.session import NO_DELIVERIES
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.server import NO_IDS
from wrenmq.pytest_plugin import WrenmqServer

_EXPIRY = {PropertyId.SESSION_EXPIRY_INTERVAL: 300}


def _inspect(server: WrenmqServer, client_id: str) -> dict[str, Any]:
    """The session's containers and its subscription's trie nodes, read on the broker's loop."""

    async def read() -> dict[str, Any]:
        broker = server.broker
        session = broker.sessions[client_id]
        conn = session.connection
        nodes: list[Any] = []
        node: Any = broker.router._root
        for level in f"dev/{client_id}/cmd".split("/"):
            node = node.children[level] if node.children else None
            if node is None:
                break
            nodes.append(node)
        return {
            "session": session,
            "queue": session.queue,
            "queued": list(session.queue),
            "resend": session.resend,
            "qos2": session.inbound_qos2,
            "qos2_ids": set(session.inbound_qos2),
            "protocol_qos2": conn.protocol.inbound_qos2 if conn is not None else None,
            "nodes": [(n.children, n.subs, n.shared, n.local) for n in nodes],
            "root_children": broker.router._root.children,
        }

    return server.call(read())


def _subscriber(server: WrenmqServer, client_id: str) -> RawClient:
    client = RawClient(server.port, 5)
    assert client.connect(client_id, clean=False, properties=_EXPIRY).reason_code == 0
    assert client.subscribe(f"dev/{client_id}/cmd", 1).reason_codes == [1]
    return client


def test_memory_idle_session_holds_no_queue_resend_or_qos2_set_of_its_own(broker: WrenmqServer) -> None:
    client = _subscriber(broker, "m1")
    try:
        seen = _inspect(broker, "m1")
        assert seen["queue"] is NO_DELIVERIES
        assert seen["resend"] is NO_DELIVERIES
        assert seen["qos2"] is NO_IDS
        assert seen["protocol_qos2"] is NO_IDS
    finally:
        client.close()


def test_memory_trie_node_holds_one_dict_per_kind_it_uses(broker: WrenmqServer) -> None:
    client = _subscriber(broker, "m2")
    try:
        dev, middle, leaf = _inspect(broker, "m2")["nodes"]
        # "dev" and "m2" hold children only; the leaf holds its one subscriber only.
        for children, subs, shared, local in (dev, middle):
            assert (subs, shared, local) == (None, None, None)
            assert children is not None
        children, subs, shared, local = leaf
        assert (children, shared, local) == (None, None, None)
        assert list(subs) == ["m2"]
        client.send(p.Unsubscribe(client.pid(), ["dev/m2/cmd"]))
        client.expect(p.Unsuback)
        assert _inspect(broker, "m2")["root_children"] is None  # pruned: the root has no dict left
    finally:
        client.close()


def test_memory_queue_made_on_first_use_and_given_back_when_drained(broker: WrenmqServer) -> None:
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
        assert _inspect(broker, "m3")["queue"] is NO_DELIVERIES
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
            objects = [conn, conn.protocol, conn.protocol.parser, session, session.subscriptions["dev/m5/cmd"]]
            return [(type(o).__name__, hasattr(o, "__dict__")) for o in objects]

        assert [name for name, has_dict in broker.call(read()) if has_dict] == []
    finally:
        client.close()
