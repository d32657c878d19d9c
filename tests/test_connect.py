"""CONNECT and CONNACK (sections 3.1 and 3.2 of MQTT 3.1.1 and 5.0).

Packet-exact checks with the raw client, plus paho-mqtt at 3.1.1 and 5.0 for interop.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqttraw import ConnectionClosed, RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode

MiB = 1024 * 1024


def assert_alive(client: RawClient) -> None:
    """The connection is open and served: PINGREQ gets PINGRESP."""
    client.send(p.Pingreq())
    client.expect(p.Pingresp)


def paho_connect(port: int, protocol: int, client_id: str = "", **connect_kw: Any) -> tuple[mqtt.Client, dict]:
    """Connect a paho client (network loop in a thread) and return it with its on_connect arguments."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        result.update(flags=flags, reason_code=reason_code, properties=properties)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=30, **connect_kw)
    client.loop_start()
    assert done.wait(5), "paho got no CONNACK"
    return client, result


def paho_stop(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


# -- protocol levels --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_protocol_levels_accepted(raw, version):  # [MQTT-3.1.2-2] levels 3 (MQIsdp), 4 and 5 are supported
    client = raw(version)
    ack = client.connect("level-client")
    assert ack.reason_code == 0
    assert ack.session_present is False
    assert_alive(client)


@pytest.mark.parametrize("level", [2, 6, 0x85, 0x83])  # 0x84: a Mosquitto bridge (test_mosquitto_bridge.py)
def test_unsupported_protocol_level_refused(raw, level):  # [MQTT-3.1.2-2]
    client = raw(4)
    client.send(encode(p.Connect("c", level), 4))
    # 3.1.1 answers 0x01 in its own CONNACK form and closes; the raw bytes say exactly that.
    data = client.sock.recv(16)
    assert data == b"\x20\x02\x00\x01"
    client.expect_closed()


def test_connack_v311_exact_bytes(broker):  # [MQTT-3.2.2-1] 3.1.1 CONNACK: flags 0, return code 0, no properties
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(encode(p.Connect("exact", 4, True, 30), 4))
        assert sock.recv(16) == b"\x20\x02\x00\x00"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_paho_connects(broker, protocol):  # [MQTT-3.2.0-1] the server answers CONNECT with CONNACK
    client, result = paho_connect(broker.port, protocol, "paho-" + str(protocol))
    try:
        assert result["reason_code"] == 0
        assert result["flags"].session_present is False
        assert client.is_connected()
    finally:
        paho_stop(client)


# -- client identifiers -------------------------------------------------------------------------


def test_v311_empty_client_id_with_clean_session_accepted(raw):  # [MQTT-3.1.3-6], [MQTT-3.1.3-7]
    first, second = raw(4), raw(4)
    assert first.connect("", clean=True).reason_code == 0
    assert second.connect("", clean=True).reason_code == 0
    # Each got its own unique identifier: the second did not take over the first.
    assert_alive(first)
    assert_alive(second)


def test_v311_empty_client_id_with_persistent_session_rejected(raw):  # [MQTT-3.1.3-8]
    client = raw(4)
    ack = client.connect("", clean=False)
    assert ack.reason_code == ConnackReturnCode.IDENTIFIER_REJECTED
    assert ack.session_present is False  # [MQTT-3.2.2-4]
    client.expect_closed()  # [MQTT-3.2.2-5]


def test_v31_empty_client_id_rejected(raw):  # MQTT 3.1: the client identifier is 1 to 23 characters
    client = raw(3)
    ack = client.connect("", clean=True)
    assert ack.reason_code == ConnackReturnCode.IDENTIFIER_REJECTED
    client.expect_closed()


def test_v5_empty_client_id_gets_assigned_identifier(raw):  # [MQTT-3.2.2-16]
    first, second = raw(5), raw(5)
    ack1 = first.connect("", clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60})
    ack2 = second.connect("")
    assert ack1.reason_code == ack2.reason_code == 0
    assigned1 = ack1.properties[PropertyId.ASSIGNED_CLIENT_IDENTIFIER]
    assigned2 = ack2.properties[PropertyId.ASSIGNED_CLIENT_IDENTIFIER]
    assert assigned1 and assigned2 and assigned1 != assigned2  # unique [MQTT-3.1.3-6]
    assert_alive(first)
    assert_alive(second)
    # The assigned identifier names a real session: reconnecting with it resumes that session.
    first.subscribe("assigned/t", 1)
    first.disconnect()
    again = raw(5)
    ack = again.connect(assigned1, clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 60})
    assert ack.session_present is True
    assert PropertyId.ASSIGNED_CLIENT_IDENTIFIER not in ack.properties


def test_v5_client_id_given_no_assigned_identifier(raw):  # [MQTT-3.2.2-16] only when the client sent none
    client = raw(5)
    ack = client.connect("named")
    assert PropertyId.ASSIGNED_CLIENT_IDENTIFIER not in ack.properties


def test_paho_v5_reads_assigned_identifier(broker):  # [MQTT-3.2.2-16]
    client, result = paho_connect(broker.port, mqtt.MQTTv5, "")
    try:
        assert result["reason_code"] == 0
        assigned = result["properties"].AssignedClientIdentifier
        assert assigned
    finally:
        paho_stop(client)


# -- session takeover ---------------------------------------------------------------------------


def test_v5_session_takeover_disconnects_first_with_0x8e(raw):  # [MQTT-3.1.4-3]
    first = raw(5)
    first.connect("twin")
    second = raw(5)
    assert second.connect("twin").reason_code == 0
    sent = first.expect_closed()
    assert len(sent) == 1 and isinstance(sent[0], p.Disconnect)
    assert sent[0].reason_code == ReasonCode.SESSION_TAKEN_OVER
    assert_alive(second)


def test_v311_session_takeover_closes_first(raw):  # [MQTT-3.1.4-2] (3.1.1 numbering)
    first = raw(4)
    first.connect("twin311")
    second = raw(4)
    assert second.connect("twin311").reason_code == 0
    assert first.expect_closed() == []  # 3.1.1 has no server DISCONNECT: the socket is just closed
    assert_alive(second)


@pytest.mark.parametrize("version", [4, 5])
def test_takeover_keeps_persistent_session(raw, version):  # [MQTT-3.1.4-3], [MQTT-3.2.2-3]
    props = {PropertyId.SESSION_EXPIRY_INTERVAL: 60} if version == 5 else {}
    first = raw(version)
    first.connect("keeper", clean=False, properties=props)
    first.subscribe("keep/t", 1)
    second = raw(version)
    ack = second.connect("keeper", clean=False, properties=props)
    assert ack.session_present is True
    first.expect_closed()
    pub = raw(5)
    pub.connect("pub")
    pub.publish("keep/t", b"still subscribed", 1)
    msg = second.expect(p.Publish)
    assert msg.payload == b"still subscribed"


def test_paho_takeover_v5(broker):  # [MQTT-3.1.4-3]
    first = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-twin", protocol=mqtt.MQTTv5)
    gone = threading.Event()
    reasons: list[Any] = []

    def on_disconnect(_c: Any, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        reasons.append(reason_code)
        gone.set()

    first.on_disconnect = on_disconnect
    first.connect("127.0.0.1", broker.port)
    first.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not first.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        second, result = paho_connect(broker.port, mqtt.MQTTv5, "paho-twin")
        try:
            assert result["reason_code"] == 0
            assert gone.wait(5)
            assert reasons[0] == ReasonCode.SESSION_TAKEN_OVER
        finally:
            paho_stop(second)
    finally:
        first.loop_stop()


# -- CONNACK properties (5.0) -----------------------------------------------------------------


def test_v5_connack_properties_defaults(raw):  # [MQTT-3.2.2-15], [MQTT-3.2.2-17], [MQTT-3.3.4-7]
    ack = raw(5).connect("props")
    props = ack.properties
    assert props[PropertyId.RECEIVE_MAXIMUM] == 1024
    assert props[PropertyId.MAXIMUM_PACKET_SIZE] == 16 * MiB
    assert props[PropertyId.TOPIC_ALIAS_MAXIMUM] == 64
    assert PropertyId.SERVER_KEEP_ALIVE not in props
    assert PropertyId.SESSION_EXPIRY_INTERVAL not in props


def test_v5_connack_properties_follow_config(wrenmq_server_factory, clients):  # [MQTT-3.2.2-15], [MQTT-3.2.2-17]
    server = wrenmq_server_factory(receive_maximum=7, max_packet_size=2000, topic_alias_maximum=3)
    props = clients(server).connect("props").properties
    assert props[PropertyId.RECEIVE_MAXIMUM] == 7
    assert props[PropertyId.MAXIMUM_PACKET_SIZE] == 2000
    assert props[PropertyId.TOPIC_ALIAS_MAXIMUM] == 3


def test_v5_topic_alias_maximum_zero_not_announced(wrenmq_server_factory, clients):  # [MQTT-3.2.2-18]
    server = wrenmq_server_factory(topic_alias_maximum=0)
    props = clients(server).connect("noalias").properties
    assert props.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0) == 0


@pytest.mark.parametrize(("asked", "told"), [(60, 10), (0, 10), (5, None), (10, None)])
def test_v5_server_keep_alive_when_lower(wrenmq_server_factory, clients, asked, told):  # [MQTT-3.2.2-21]
    server = wrenmq_server_factory(max_keepalive=10)
    ack = clients(server).connect("ka", keep_alive=asked)
    assert ack.reason_code == 0
    assert ack.properties.get(PropertyId.SERVER_KEEP_ALIVE) == told


def test_v5_session_expiry_capped_is_announced(wrenmq_server_factory, clients):  # [MQTT-3.2.2-3] 3.2.2.3.2
    # The server may grant a shorter Session Expiry Interval; it must then say so in CONNACK.
    server = wrenmq_server_factory(max_session_expiry_interval=30)
    ack = clients(server).connect("cap", clean=False, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 3600})
    assert ack.properties[PropertyId.SESSION_EXPIRY_INTERVAL] == 30


# -- connect timeout --------------------------------------------------------------------------


def _closed_within(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until EOF or ``timeout``; returns (closed, bytes received)."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1024)
        except TimeoutError:
            break
        except ConnectionResetError:
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


@pytest.mark.parametrize("partial", [b"", b"\x10\x20\x00\x04MQ"])
def test_no_connect_within_timeout_closes(wrenmq_server_factory, partial):  # 3.1.4 (5.0) / 3.1 (3.1.1) non-normative
    # "If the Server does not receive a CONNECT packet within a reasonable amount of time after the
    # Network Connection is established, the Server SHOULD close the Network Connection."
    server = wrenmq_server_factory(connect_timeout=0.5)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(partial)
        started = time.monotonic()
        closed, received = _closed_within(sock, 3.0)
        assert closed and received == b""
        assert 0.3 <= time.monotonic() - started < 2.5


def test_connect_in_time_cancels_connect_timeout(wrenmq_server_factory, clients):  # 3.1.4 (5.0) non-normative
    server = wrenmq_server_factory(connect_timeout=0.5)
    client = clients(server, 4)
    client.connect("in-time", keep_alive=0)
    client.nothing(1.0)  # raises ConnectionClosed if the connect timer still fired
    assert_alive(client)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "code"), [(5, ReasonCode.NOT_AUTHORIZED), (4, ConnackReturnCode.NOT_AUTHORIZED)])
def test_anonymous_refused(wrenmq_server_factory, clients, version, code):  # [MQTT-3.2.2-6], [MQTT-3.2.2-7]
    server = wrenmq_server_factory(allow_anonymous=False)
    client = clients(server, version)
    ack = client.connect("anon")
    assert ack.reason_code == code
    assert ack.session_present is False
    assert client.expect_closed() == []
    # A user name no authentication source vouches for is refused too (issue 14: test_login_rule.py).
    named = clients(server, version)
    assert named.connect("named", username="alice", password=b"pw").reason_code == code


def test_v5_authentication_method_refused(raw):  # [MQTT-4.12.0-1] unsupported method: CONNACK 0x8C, then close
    client = raw(5)
    ack = client.connect("auth", properties={PropertyId.AUTHENTICATION_METHOD: "SCRAM-SHA-1"})
    assert ack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD
    assert ack.session_present is False  # [MQTT-3.2.2-6]
    assert client.expect_closed() == []  # [MQTT-3.2.2-7]


def test_first_packet_must_be_connect(raw):  # [MQTT-3.1.0-1]
    client = raw(4)
    client.send(p.Pingreq())
    assert client.expect_closed() == []


@pytest.mark.parametrize("version", [4, 5])
def test_second_connect_is_protocol_error(raw, version):  # [MQTT-3.1.0-2]
    client = raw(version)
    client.connect("again")
    client.send(p.Connect("again", version))
    sent = client.expect_closed()
    if version == 5:
        assert [type(x) for x in sent] == [p.Disconnect]
        assert sent[0].reason_code == ReasonCode.PROTOCOL_ERROR
    else:
        assert sent == []


def _connect_bytes(flags: int, payload: bytes) -> bytes:
    """A 3.1.1 CONNECT with the given flags byte and payload, bypassing the codec's checks."""
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x00\x3c" + payload
    return bytes((0x10, len(body))) + body


@pytest.mark.parametrize(
    ("flags", "payload"),
    [
        pytest.param(0x03, b"\x00\x01c", id="reserved-flag"),  # [MQTT-3.1.2-3]
        pytest.param(0x22, b"\x00\x01c", id="will-retain-without-will"),  # [MQTT-3.1.2-15]
        pytest.param(0x0A, b"\x00\x01c", id="will-qos-without-will"),  # [MQTT-3.1.2-13]
        pytest.param(0x1E, b"\x00\x01c\x00\x01t\x00\x00", id="will-qos-3"),  # [MQTT-3.1.2-14]
        pytest.param(0x42, b"\x00\x01c\x00\x02pw", id="password-without-username"),  # [MQTT-3.1.2-22]
    ],
)
def test_malformed_connect_flags_close_without_connack(raw, flags, payload):  # [MQTT-3.1.4-1] (3.1.1)
    client = raw(4)
    client.send(_connect_bytes(flags, payload))
    assert client.expect_closed() == []


# -- Session Present --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_session_present_flag(raw, version):  # [MQTT-3.2.2-1], [MQTT-3.2.2-2], [MQTT-3.2.2-3]
    # 3.1.1: -1 clean → 0; -2 persistent with stored session → 1; -3 persistent without → 0.
    # 5.0:   -2 Clean Start 1 → 0; -3 Clean Start 0 → 1 if the server has the session, else 0.
    props = {PropertyId.SESSION_EXPIRY_INTERVAL: 60} if version == 5 else {}

    def connect(clean: bool) -> bool:
        client = raw(version)
        ack = client.connect("sp", clean=clean, properties=props)
        assert ack.reason_code == 0
        client.disconnect()
        return ack.session_present

    assert connect(clean=False) is False  # no session yet
    assert connect(clean=False) is True  # the session was kept
    assert connect(clean=True) is False  # clean: discarded
    # A 3.1.1 clean session ends with its connection; a 5.0 Clean Start session with expiry 60
    # survives it, so the next Clean Start 0 finds a session present.
    assert connect(clean=False) is (version == 5)


def test_session_present_zero_on_refusal(wrenmq_server_factory, clients):  # [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6]
    server = wrenmq_server_factory(allow_anonymous=False)
    stored = clients(server, 4)
    stored.connect("refused-sp", clean=False, username="u")
    stored.disconnect()
    again = clients(server, 4)
    ack = again.connect("refused-sp", clean=False)  # a session exists, but no user name
    assert ack.reason_code == ConnackReturnCode.NOT_AUTHORIZED
    assert ack.session_present is False


def test_server_closes_after_disconnect(raw):  # [MQTT-3.14.4-1] (5.0: [MQTT-3.14.4-2]) the connection ends
    client = raw(4)
    client.connect("eof", clean=True)
    client.send(p.Disconnect())
    with pytest.raises(ConnectionClosed):
        client.recv(2)
