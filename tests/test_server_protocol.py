"""The server protocol in memory (mqtt/server.py): bytes in, events out, bytes to send, time as an
argument. No sockets, no event loop, no sleeps: the clock is a number passed in, as aioquic's
tests/test_connection.py drives QuicConnection. The socket-level suites (test_connect.py,
test_publish_qos*.py, test_topic_alias_out.py, test_keepalive.py, ...) check the same rules
through a real broker."""

from __future__ import annotations

from typing import Any

import pytest

from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, UnsupportedProtocolVersion, encode
from wrenmq.mqtt.errors import ProtocolError
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode
from wrenmq.mqtt.server import ServerProtocol, ServerSettings, Timeout

T0 = 1000.0  # the clock at which each test's connection opens


def settings(**values: Any) -> ServerSettings:
    found = ServerSettings()
    for name, value in values.items():
        assert hasattr(found, name), name
        setattr(found, name, value)
    return found


class Client:
    """One end of an in-memory connection: encodes what a client sends, decodes what it gets."""

    def __init__(self, server: ServerProtocol, version: int) -> None:
        self.server = server
        self.version = version
        self.parser = Parser(protocol_level=version)

    def send(self, *packets: p.AnyPacket, now: float = T0) -> list[Any]:
        """Feed ``packets`` to the server in one read; the events it hands out."""
        self.server.receive_data(b"".join(encode(packet, self.version) for packet in packets), now)
        return events(self.server)

    def received(self) -> list[p.AnyPacket]:
        """What the server sent since the last call, decoded."""
        return self.parser.feed(b"".join(self.server.data_to_send()))


def events(server: ServerProtocol) -> list[Any]:
    found = []
    while (event := server.next_event()) is not None:
        found.append(event)
    return found


def connected(
    version: int = 5, keep_alive: int = 60, properties: dict[int, Any] | None = None, **grants: Any
) -> tuple[ServerProtocol, Client]:
    """A server protocol with an accepted client (session not present, nothing held)."""
    server = ServerProtocol(settings(**grants), T0)
    client = Client(server, version)
    connect = p.Connect("c1", version, keep_alive=keep_alive, properties=properties)
    (event,) = client.send(connect)
    assert isinstance(event, p.Connect)
    server.accept(event, False, keep_alive, {} if version == 5 else None, set(), False)
    (connack,) = client.received()
    assert isinstance(connack, p.Connack) and connack.reason_code == 0
    return server, client


def publish(topic: str, qos: int = 0, pid: int | None = None, **kw: Any) -> p.Publish:
    return p.Publish(topic, b"x", qos, packet_id=pid, **kw)


def violation(found: list[Any]) -> ProtocolError:
    assert found and isinstance(found[-1], ProtocolError), found
    return found[-1]


# -- CONNECT -----------------------------------------------------------------------------------


def test_server_protocol_first_packet_must_be_connect():  # [MQTT-3.1.0-1]
    server = ServerProtocol(settings(), T0)
    client = Client(server, 4)
    error = violation(client.send(p.Pingreq()))
    assert error.reason_code == ReasonCode.PROTOCOL_ERROR
    assert "[MQTT-3.1.0-1]" in str(error)
    assert server.next_event() is None  # nothing more after a violation


def test_server_protocol_publish_before_connect_is_refused():  # [MQTT-3.1.0-1]
    server = ServerProtocol(settings(), T0)
    client = Client(server, 4)
    assert "[MQTT-3.1.0-1]" in str(violation(client.send(publish("a"))))


def test_server_protocol_second_connect_is_a_protocol_error():  # [MQTT-3.1.0-2]
    server, client = connected(5)
    error = violation(client.send(p.Connect("c1", 5)))
    assert error.reason_code == ReasonCode.PROTOCOL_ERROR and "[MQTT-3.1.0-2]" in str(error)
    server.disconnect(error.reason_code, "second CONNECT")
    (disconnect,) = client.received()
    assert isinstance(disconnect, p.Disconnect) and disconnect.reason_code == ReasonCode.PROTOCOL_ERROR
    assert disconnect.properties[PropertyId.REASON_STRING] == "second CONNECT"


def test_server_protocol_packets_after_connect_wait_for_the_decision():
    """A broker that checks a login off the loop stops pulling events: the PUBLISH that came in the
    same read as CONNECT is judged once the CONNECT is accepted, not before (then it would break
    [MQTT-3.1.0-1])."""
    server = ServerProtocol(settings(), T0)
    client = Client(server, 4)
    server.receive_data(encode(p.Connect("c1", 4), 4) + encode(publish("a/b", 1, 3), 4), T0)
    connect = server.next_event()
    assert isinstance(connect, p.Connect)
    server.accept(connect, False, 60, None, set(), False)
    event = server.next_event()
    assert isinstance(event, p.Publish) and event.topic == "a/b"
    assert [type(packet) for packet in client.received()] == [p.Connack]


def test_server_protocol_accept_takes_what_the_client_asked_for():  # [MQTT-3.3.4-9], [MQTT-3.1.2-26]
    props = {PropertyId.RECEIVE_MAXIMUM: 3, PropertyId.MAXIMUM_PACKET_SIZE: 500, PropertyId.TOPIC_ALIAS_MAXIMUM: 9}
    server, _ = connected(5, properties=props, max_inflight_messages=100, topic_alias_out_maximum=4)
    assert server.send_quota == 3  # the server sends no more unacknowledged QoS 1/2 than that
    assert server.max_packet_out == 500
    assert not server.fits(501) and server.fits(500)
    assert server.topic_alias_out_max == 4  # the client's maximum, capped by ours


def test_server_protocol_refuse_answers_in_the_clients_version():  # [MQTT-3.2.2-6], [MQTT-3.1.4-5]
    server = ServerProtocol(settings(), T0)
    client = Client(server, 4)
    client.send(p.Connect("c1", 4))
    server.refuse(ReasonCode.NOT_AUTHORIZED)
    (connack,) = client.received()
    assert connack.reason_code == 0x05  # 3.1.1: Not authorized
    assert server.next_event() is None


def test_server_protocol_unsupported_version_gets_its_connack():  # [MQTT-3.1.2-2]
    server = ServerProtocol(settings(), T0)
    client = Client(server, 4)
    bad = bytearray(encode(p.Connect("c1", 4), 4))
    bad[8] = 6  # protocol level 6
    server.receive_data(bytes(bad), T0)
    (event,) = events(server)
    assert isinstance(event, UnsupportedProtocolVersion) and event.level == 6
    server.refuse_version(event.level)
    (connack,) = client.received()
    assert connack.reason_code == 0x01  # unacceptable protocol version


# -- keep alive and the other clocks --------------------------------------------------------------


def test_server_protocol_keep_alive_is_one_and_a_half_times():  # [MQTT-3.1.2-24]
    server, client = connected(4, keep_alive=10)
    assert server.next_timer() == T0 + 15
    assert server.handle_timer(T0 + 14.9) is None
    client.send(p.Pingreq(), now=T0 + 10)  # a complete control packet resets the clock
    assert server.next_timer() == T0 + 25
    assert server.handle_timer(T0 + 24.9) is None
    expired = server.handle_timer(T0 + 25)
    assert isinstance(expired, Timeout) and expired.code == ReasonCode.KEEP_ALIVE_TIMEOUT


def test_server_protocol_trickled_bytes_do_not_keep_a_client_alive():  # [MQTT-3.1.2-24]
    server, _client = connected(4, keep_alive=10, packet_read_timeout=0.0)
    ping = encode(p.Pingreq(), 4)
    server.receive_data(ping[:1], T0 + 14)  # half a packet is no control packet
    assert events(server) == []
    expired = server.handle_timer(T0 + 15)
    assert isinstance(expired, Timeout) and expired.reason == "keep alive timeout"


def test_server_protocol_keep_alive_zero_means_no_limit():  # [MQTT-3.1.2-23 context]
    server, _ = connected(4, keep_alive=0)
    assert server.next_timer() == 0.0
    assert server.handle_timer(T0 + 1e6) is None


def test_server_protocol_paused_reading_is_not_idleness():
    server, _ = connected(4, keep_alive=10)
    server.reading_paused(T0 + 14)  # the server stopped reading, not the client
    assert server.handle_timer(T0 + 20) is None


def test_server_protocol_connect_timeout():
    server = ServerProtocol(settings(connect_timeout=5.0), T0)
    assert server.next_timer() == T0 + 5
    assert server.handle_timer(T0 + 4.9) is None
    expired = server.handle_timer(T0 + 5)
    assert isinstance(expired, Timeout) and expired.code == 0  # just closed: no CONNACK to refuse with


def test_server_protocol_packet_read_timeout():
    server, _ = connected(5, keep_alive=0, packet_read_timeout=3.0)
    server.receive_data(encode(publish("a/b"), 5)[:4], T0 + 1)
    assert server.next_timer() == T0 + 4
    expired = server.handle_timer(T0 + 4)
    assert isinstance(expired, Timeout) and "packet not completed" in expired.reason


def test_server_protocol_login_expiry():
    server, _ = connected(5, keep_alive=0)
    server.login_expires_at = T0 + 30
    assert server.next_timer() == T0 + 30
    expired = server.handle_timer(T0 + 30)
    assert isinstance(expired, Timeout) and expired.code == ReasonCode.MAXIMUM_CONNECT_TIME


# -- PUBLISH in ------------------------------------------------------------------------------------


def test_server_protocol_qos_above_maximum():  # [MQTT-3.2.2-11]
    _, client = connected(5, maximum_qos=1)
    assert violation(client.send(publish("a", 2, 1))).reason_code == ReasonCode.QOS_NOT_SUPPORTED


def test_server_protocol_retain_not_available():  # [MQTT-3.2.2-14]
    _, client = connected(5, retain_available=False)
    assert violation(client.send(publish("a", retain=True))).reason_code == ReasonCode.RETAIN_NOT_SUPPORTED


def test_server_protocol_subscription_identifier_from_a_client():  # [MQTT-3.3.4-6]
    _, client = connected(5)
    found = client.send(publish("a", properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [1]}))
    assert "[MQTT-3.3.4-6]" in str(violation(found))


def test_server_protocol_packet_id_zero():  # [MQTT-2.3.1-1]
    _, client = connected(4)
    data = bytearray(encode(publish("a", 1, 1), 4))
    data[5:7] = b"\x00\x00"
    client.server.receive_data(bytes(data), T0)
    assert "[MQTT-2.3.1-1]" in str(violation(events(client.server)))


def test_server_protocol_topic_alias_sets_and_resolves():  # [MQTT-3.3.2-10], [MQTT-3.3.2-12]
    _, client = connected(5, topic_alias_maximum=5)
    first, second = client.send(
        publish("a/b", properties={PropertyId.TOPIC_ALIAS: 2}),
        publish("", properties={PropertyId.TOPIC_ALIAS: 2, PropertyId.CONTENT_TYPE: "t"}),
    )
    assert (first.topic, second.topic) == ("a/b", "a/b")
    assert second.properties == {PropertyId.CONTENT_TYPE: "t"}  # the alias is per hop: not passed on


@pytest.mark.parametrize("alias", [0, 6])
def test_server_protocol_topic_alias_out_of_range(alias):  # [MQTT-3.3.2-9]
    _, client = connected(5, topic_alias_maximum=5)
    error = violation(client.send(publish("a/b", properties={PropertyId.TOPIC_ALIAS: alias})))
    assert error.reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_server_protocol_topic_alias_not_granted():  # [MQTT-3.3.2-9]: Topic Alias Maximum 0
    _, client = connected(5, topic_alias_maximum=0)
    error = violation(client.send(publish("a/b", properties={PropertyId.TOPIC_ALIAS: 1})))
    assert error.reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_server_protocol_unknown_topic_alias():  # [MQTT-3.3.2-7]: aliases do not outlive the connection
    _, client = connected(5, topic_alias_maximum=5)
    client.send(publish("a/b", properties={PropertyId.TOPIC_ALIAS: 1}))
    _, fresh = connected(5, topic_alias_maximum=5)
    error = violation(fresh.send(publish("", properties={PropertyId.TOPIC_ALIAS: 1})))
    assert error.reason_code == ReasonCode.PROTOCOL_ERROR


def test_server_protocol_receive_maximum_exceeded():  # [MQTT-3.3.4-7]
    _, client = connected(5, receive_maximum=2)
    assert [type(event) for event in client.send(publish("a", 1, 1), publish("a", 2, 2))] == [p.Publish] * 2
    error = violation(client.send(publish("a", 1, 3)))
    assert error.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_server_protocol_receive_maximum_frees_on_ack():  # [MQTT-3.3.4-7]
    server, client = connected(5, receive_maximum=1)
    (first,) = client.send(publish("a", 1, 1))
    server.ack_publish(first, True, False)
    (second,) = client.send(publish("a", 1, 2))
    assert isinstance(second, p.Publish)
    server.ack_publish(second, True, False)
    assert [(type(a), a.packet_id) for a in client.received()] == [(p.Puback, 1), (p.Puback, 2)]


def test_server_protocol_held_puback_still_counts_against_receive_maximum():  # [MQTT-3.3.4-7]
    """A PUBACK waiting for a commit is not sent yet: the PUBLISH it answers still counts."""
    server, client = connected(5, receive_maximum=1)
    (first,) = client.send(publish("a", 1, 1))
    server.ack_publish(first, True, True)
    assert violation(client.send(publish("a", 1, 2))).reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_server_protocol_other_packets_flow_at_receive_maximum():  # [MQTT-3.3.4-8]
    _server, client = connected(5, receive_maximum=1)
    client.send(publish("a", 1, 1))
    assert client.send(p.Pingreq()) == []
    assert [type(packet) for packet in client.received()] == [p.Pingresp]


def test_server_protocol_puback_says_no_matching_subscribers():  # MQTT 5 reason 0x10
    server, client = connected(5)
    (message,) = client.send(publish("a", 1, 4))
    server.ack_publish(message, False, False)
    (ack,) = client.received()
    assert (ack.packet_id, ack.reason_code) == (4, ReasonCode.NO_MATCHING_SUBSCRIBERS)


@pytest.mark.parametrize("version", [4, 5])
def test_server_protocol_denied_publish_is_acknowledged(version):  # [MQTT-3.3.5-2 context]
    server, client = connected(version)
    (message,) = client.send(publish("a", 1, 4))
    server.deny_publish(message, ReasonCode.NOT_AUTHORIZED)
    (ack,) = client.received()
    assert ack.reason_code == (ReasonCode.NOT_AUTHORIZED if version == 5 else 0)  # 3.1.1 cannot say no


# -- QoS 2 in: exactly once ------------------------------------------------------------------------


def test_server_protocol_qos2_resend_is_not_delivered_twice():  # [MQTT-4.3.3-9]
    server, client = connected(5)
    (message,) = client.send(publish("a", 2, 7))
    server.ack_publish(message, True, False)
    assert client.send(publish("a", 2, 7, dup=True)) == []  # answered, not handed to the broker again
    assert [(type(a), a.packet_id) for a in client.received()] == [(p.Pubrec, 7), (p.Pubrec, 7)]


def test_server_protocol_qos2_pubrel_frees_the_packet_id():  # [MQTT-4.3.3-10], [MQTT-4.3.3-11]
    server, client = connected(5)
    (message,) = client.send(publish("a", 2, 7))
    server.ack_publish(message, True, False)
    (release,) = client.send(p.Pubrel(7))
    assert isinstance(release, p.Pubrel) and 7 not in server.inbound_qos2
    server.complete_pubrel(7, False)
    (again,) = client.send(publish("a", 2, 7))  # the id may be reused: a new message
    assert isinstance(again, p.Publish)
    assert [type(a) for a in client.received()] == [p.Pubrec, p.Pubcomp]


@pytest.mark.parametrize("version", [4, 5])
def test_server_protocol_pubrel_for_an_unknown_packet_id(version):  # [MQTT-4.3.3-11 context]
    _server, client = connected(version)
    assert client.send(p.Pubrel(9)) == []
    (comp,) = client.received()
    assert isinstance(comp, p.Pubcomp) and comp.packet_id == 9
    assert comp.reason_code == (ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if version == 5 else 0)


def test_server_protocol_qos2_ids_count_against_receive_maximum():  # [MQTT-3.3.4-7]
    server, client = connected(5, receive_maximum=1)
    (message,) = client.send(publish("a", 2, 1))
    server.ack_publish(message, True, False)  # PUBREC sent, PUBREL not yet received
    assert violation(client.send(publish("a", 2, 2))).reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


# -- malformed input, DISCONNECT, AUTH -------------------------------------------------------------


def test_server_protocol_malformed_packet_after_good_ones():  # [MQTT-2.2.2-2]
    """The packets before the bad one are handed out first, in order; then the violation, whose
    reason code goes on the DISCONNECT."""
    server, client = connected(5)
    bad = bytearray(encode(p.Subscribe(1, [p.Subscription("a")]), 5))
    bad[0] = 0x80  # SUBSCRIBE's reserved flags must be 0010
    server.receive_data(encode(p.Pingreq(), 5) + encode(publish("x"), 5) + bytes(bad), T0)
    found = events(server)
    assert isinstance(found[0], p.Publish)
    error = violation(found)
    assert error.reason_code == ReasonCode.MALFORMED_PACKET and "[MQTT-2.2.2-2]" in str(error)
    server.disconnect(error.reason_code, str(error.args[0]))
    pingresp, disconnect = client.received()
    assert isinstance(pingresp, p.Pingresp)
    assert isinstance(disconnect, p.Disconnect) and disconnect.reason_code == ReasonCode.MALFORMED_PACKET


def test_server_protocol_violation_before_connack_is_a_connack():  # [MQTT-4.13.1-1], [MQTT-3.1.2-3]
    server = ServerProtocol(settings(), T0)
    client = Client(server, 5)
    bad = bytearray(encode(p.Connect("c1", 5), 5))
    bad[9] |= 1  # the reserved CONNECT flag
    server.receive_data(bytes(bad), T0)
    error = violation(events(server))
    assert error.reason_code == ReasonCode.MALFORMED_PACKET and "[MQTT-3.1.2-3]" in str(error)
    server.disconnect(error.reason_code, "reserved flag")
    (connack,) = client.received()  # in the CONNECT's own protocol level, though it was refused
    assert isinstance(connack, p.Connack) and connack.reason_code == ReasonCode.MALFORMED_PACKET


def test_server_protocol_connect_too_large_is_closed_on():
    """Before the CONNECT's protocol level is read there is no version to answer in."""
    server = ServerProtocol(settings(max_packet_size=64), T0)
    client = Client(server, 5)
    error = violation(client.send(p.Connect("c" * 100, 5)))
    assert error.reason_code == ReasonCode.PACKET_TOO_LARGE
    server.disconnect(error.reason_code, "too large")
    assert client.received() == []


def test_server_protocol_3_1_1_violation_is_silent():  # [MQTT-4.8.0-1 context]: 3.1.1 just closes
    server, client = connected(4)
    error = violation(client.send(p.Connect("c1", 4)))
    server.disconnect(error.reason_code, "second CONNECT")
    assert client.received() == []


def test_server_protocol_disconnect_cannot_make_a_session_persistent():  # [MQTT-3.14.2-2]
    _, client = connected(5)
    found = client.send(p.Disconnect(0, {PropertyId.SESSION_EXPIRY_INTERVAL: 60}))
    assert "[MQTT-3.14.2-2]" in str(violation(found))


def test_server_protocol_disconnect_ends_the_events():
    _server, client = connected(5, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 10})
    found = client.send(p.Disconnect(0, {PropertyId.SESSION_EXPIRY_INTERVAL: 60}), p.Pingreq())
    assert [type(event) for event in found] == [p.Disconnect]


def test_server_protocol_auth_without_method():  # [MQTT-4.12.0-1]
    _, client = connected(5)
    assert "[MQTT-4.12.0-1]" in str(violation(client.send(p.Auth(0x18))))


def test_server_protocol_server_packets_from_a_client():
    _, client = connected(5)
    error = violation(client.send(p.Suback(1, [0])))
    assert error.reason_code == ReasonCode.PROTOCOL_ERROR and "SUBACK" in str(error)


# -- output: order and the commit barrier ------------------------------------------------------------


def test_server_protocol_held_ack_keeps_the_order_of_later_output():  # [MQTT-4.6.0-2]
    server, client = connected(5)
    (message,) = client.send(publish("a", 1, 1))
    server.ack_publish(message, True, True)  # waits for a commit
    assert server.wants_barrier
    client.send(p.Pingreq())
    assert client.received() == []  # the PINGRESP queues behind the held PUBACK
    assert server.cover_held() == 2
    server.release_held(2)
    assert [type(packet) for packet in client.received()] == [p.Puback, p.Pingresp]


def test_server_protocol_barrier_covers_only_what_was_held_before_it():
    server, client = connected(5)
    server.send(encode(p.Suback(1, [0]), 5), True)
    server.wants_barrier = False
    assert server.cover_held() == 1
    server.send(encode(p.Suback(2, [0]), 5))  # behind the held one, not covered yet
    assert server.wants_barrier  # a second barrier is needed for it
    assert server.cover_held() == 1
    server.release_held(1)
    assert [packet.packet_id for packet in client.received()] == [1]
    server.release_held(1)
    assert [packet.packet_id for packet in client.received()] == [2]


def test_server_protocol_disconnect_goes_ahead_of_held_output():  # [MQTT-4.13.2-1]
    server, client = connected(5)
    server.send(encode(p.Suback(1, [0]), 5), True)
    server.disconnect(ReasonCode.SERVER_SHUTTING_DOWN, "bye")
    (disconnect,) = client.received()
    assert disconnect.reason_code == ReasonCode.SERVER_SHUTTING_DOWN


# -- PUBLISH out -------------------------------------------------------------------------------------


def _wire(topic: str, qos: int) -> tuple[bytes, bytes]:
    """A PUBLISH encoded as the broker shares it between subscribers (broker.message.Message.wire)."""
    from wrenmq.broker.message import Message

    return Message(topic, b"payload", qos).wire(5, qos, False)


def test_server_protocol_outbound_topic_aliases():  # [MQTT-3.3.2-8], [MQTT-3.3.2-11]
    props = {PropertyId.TOPIC_ALIAS_MAXIMUM: 2}
    server, client = connected(5, properties=props, topic_alias_out_maximum=10)
    sent = [("a", 0), ("a", 1), ("b", 0), ("c", 1), ("a", 0)]
    for number, (topic, qos) in enumerate(sent, 1):
        head, tail = _wire(topic, qos)
        server.send_publish(head, number if qos else 0, tail, topic, b"payload", False)
    got = [(m.topic, m.properties[PropertyId.TOPIC_ALIAS], m.payload) for m in client.received()]
    assert got == [
        ("a", 1, b"payload"),  # new: topic and alias
        ("", 1, b"payload"),  # known: alias only
        ("b", 2, b"payload"),
        ("c", 1, b"payload"),  # all taken: the least recently used (a) is re-mapped
        ("a", 2, b"payload"),  # b was least recently used by then
    ]


def test_server_protocol_outbound_alias_that_does_not_fit_is_left_out():  # [MQTT-3.1.2-25]
    head, tail = _wire("a/b", 0)
    size = len(head)
    props = {PropertyId.TOPIC_ALIAS_MAXIMUM: 2, PropertyId.MAXIMUM_PACKET_SIZE: size + 1}
    server, client = connected(5, properties=props, topic_alias_out_maximum=10)
    server.send_publish(head, 0, tail, "a/b", b"payload", False)
    (message,) = client.received()
    assert message.topic == "a/b" and PropertyId.TOPIC_ALIAS not in message.properties


def test_server_protocol_data_to_send_empties():
    server, client = connected(4)
    client.send(p.Pingreq())
    assert server.out_size == 2
    assert server.data_to_send() == [b"\xd0\x00"]
    assert server.data_to_send() == [] and server.out_size == 0
