"""A server-initiated DISCONNECT (or refusing CONNACK) must reach the client [MQTT-4.13.2-1].

Closing a socket whose receive buffer still holds unread bytes makes the kernel send a reset and
throw away what was queued to send, so a client that sent a lot without reading got ECONNRESET
instead of its reason code. The broker writes its last packet, shuts down writing, and reads and
discards for a short bounded time before it closes.

Each test leaves data unread in the broker's socket on purpose: a burst larger than one read.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from certs import make_ca, make_cert
from mqttraw import ConnectionClosed, RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode
from wrenmq.mqtt.reason_codes import ReasonCode
from wsraw import WsRawClient

BURST = 2 * 1024 * 1024  # well beyond one read of the broker (and its socket buffer)


def qos2_flood(count: int, payload: bytes = b"x" * 100) -> bytes:
    """``count`` QoS 2 PUBLISHes on packet ids 1..count, in one blob."""
    return b"".join(encode(p.Publish("flood/t", payload, 2, False, pid), 5) for pid in range(1, count + 1))


def qos0_filler(size: int) -> bytes:
    """About ``size`` bytes of valid QoS 0 PUBLISHes (no subscriber: the broker just reads them)."""
    one = encode(p.Publish("filler", b"f" * 1000, 0), 5)
    return one * (size // len(one) + 1)


def send_all(sock: socket.socket, data: bytes) -> OSError | None:
    """Send without reading; returns the error if the broker reset the connection meanwhile."""
    try:
        sock.sendall(data)
    except OSError as exc:
        return exc
    return None


def packets_until_closed(client: RawClient, timeout: float = 10.0) -> list[p.AnyPacket]:
    """Every packet the broker sent, read only now; a reset raises, unlike RawClient.expect_closed."""
    seen: list[p.AnyPacket] = []
    client.sock.settimeout(timeout)
    while True:
        data = client.sock.recv(1 << 16)  # ConnectionResetError here is the failure this file is about
        if not data:
            return seen
        seen.extend(client.parser.feed(data))


def test_receive_maximum_exceeded_disconnect_reaches_flooding_client(broker):  # [MQTT-3.3.4-9], [MQTT-4.13.2-1]
    client = RawClient(broker.port, 5)
    try:
        assert client.connect("flooder").reason_code == 0
        # 1,025 QoS 2 PUBLISHes exceed the Receive Maximum of 1,024; more data follows unread.
        error = send_all(client.sock, qos2_flood(1025) + qos0_filler(BURST))
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        seen = packets_until_closed(client)
        assert [type(x) for x in seen[:-1]] == [p.Pubrec] * 1024
        assert isinstance(seen[-1], p.Disconnect), seen[-1]
        assert seen[-1].reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
    finally:
        client.close()


def test_malformed_packet_disconnect_reaches_client_with_unread_data(broker):  # [MQTT-4.13.1-1], [MQTT-4.13.2-1]
    client = RawClient(broker.port, 5)
    try:
        assert client.connect("malformed").reason_code == 0
        bad = b"\x36\x03\x00\x01t"  # PUBLISH with QoS 3 [MQTT-3.3.1-4]
        error = send_all(client.sock, bad + qos0_filler(BURST))
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        seen = packets_until_closed(client)
        assert [type(x) for x in seen] == [p.Disconnect]
        assert seen[0].reason_code == ReasonCode.MALFORMED_PACKET
    finally:
        client.close()


def test_refusing_connack_reaches_client_with_unread_data(broker):  # [MQTT-3.2.2-6], [MQTT-4.13.1-1]
    client = RawClient(broker.port, 5)
    try:
        # An Authentication Method the server does not support is refused with CONNACK 0x8C.
        connect = encode(p.Connect("refused", 5, properties={0x15: "SCRAM-SHA-1"}), 5)
        error = send_all(client.sock, connect + qos0_filler(BURST))
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        seen = packets_until_closed(client)
        assert [type(x) for x in seen] == [p.Connack]
        assert seen[0].reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD
    finally:
        client.close()


def test_websocket_receive_maximum_disconnect_reaches_flooding_client(wrenmq_server_factory):  # [MQTT-4.13.2-1]
    server = wrenmq_server_factory(ws_port=0)
    with WsRawClient(server.ws_port, version=5) as client:
        client.handshake()
        assert client.connect("wsflooder").reason_code == 0
        blob = qos2_flood(1025) + qos0_filler(BURST)
        # One binary message per 64 KiB, as a client library would write them.
        data = b"".join(client.ws.send(BytesMessage(data=blob[i : i + 65536])) for i in range(0, len(blob), 65536))
        error = send_all(client.sock, data)
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        client.sock.settimeout(10.0)
        while True:  # read the socket itself: wsraw would report a reset as an ordinary end
            received = client.sock.recv(1 << 16)
            if not received:
                break
            client.ws.receive_data(received)
        packets: list[p.AnyPacket] = []
        for event in client.ws.events():
            if isinstance(event, BytesMessage):
                packets.extend(client.parser.feed(bytes(event.data)))
        assert [type(x) for x in packets[:-1]] == [p.Pubrec] * 1024
        assert isinstance(packets[-1], p.Disconnect), packets[-1]
        assert packets[-1].reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_hostile_client_cannot_hold_a_closing_socket_open(broker):
    """After its DISCONNECT the broker reads for a bounded time only: a client that keeps sending
    (and never closes) is cut off within about two seconds."""
    client = RawClient(broker.port, 5)
    stop = threading.Event()

    def keep_sending() -> None:
        chunk = b"\x00" * 4096
        while not stop.is_set():
            try:
                client.sock.sendall(chunk)
            except OSError:
                return
            time.sleep(0.01)

    try:
        assert client.connect("hostile").reason_code == 0
        client.send(b"\x36\x03\x00\x01t")  # malformed: the broker sends DISCONNECT 0x81 and closes
        started = time.monotonic()
        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        disconnect = client.expect(p.Disconnect)
        assert disconnect.reason_code == ReasonCode.MALFORMED_PACKET
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=6.0)  # EOF (the broker shut down writing) ...
        sender.join(6.0)  # ... and the socket itself goes away, so sending fails
        assert not sender.is_alive(), "the broker kept reading from a closed connection"
        assert time.monotonic() - started < 5.0
    finally:
        stop.set()
        client.close()


def test_tls_receive_maximum_disconnect_reaches_flooding_client(wrenmq_server_factory, tmp_path):  # [MQTT-4.13.2-1]
    ca = make_ca(tmp_path)
    certfile, keyfile = make_cert(ca, tmp_path, "broker", server=True)
    server = wrenmq_server_factory(tls_port=0, certfile=certfile, keyfile=keyfile)
    context = ssl.create_default_context(cafile=str(ca.cert))
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10.0)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        parser = Parser(protocol_level=5)
        sock.sendall(encode(p.Connect("tlsflooder", 5), 5))
        connack = parser.feed(sock.recv(1024))
        assert isinstance(connack[0], p.Connack) and connack[0].reason_code == 0
        error = send_all(sock, qos2_flood(1025) + qos0_filler(BURST))
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        packets: list[p.AnyPacket] = []
        while True:
            try:
                data = sock.recv(1 << 16)
            except ssl.SSLZeroReturnError:  # close_notify
                break
            if not data:
                break
            packets.extend(parser.feed(data))
        assert [type(x) for x in packets[:-1]] == [p.Pubrec] * 1024
        assert isinstance(packets[-1], p.Disconnect), packets[-1]
        assert packets[-1].reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def read_to_end(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the broker sends until it closes; a reset raises ConnectionResetError."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return data
        data += chunk


def test_websocket_close_frame_reaches_client_with_unread_data(wrenmq_server_factory):  # [MQTT-6.0.0-1]
    # A text frame closes the WebSocket with 1003; more data behind it must not cost the client that frame.
    server = wrenmq_server_factory(ws_port=0)
    with WsRawClient(server.ws_port, version=5) as client:
        client.handshake()
        assert client.connect("texter").reason_code == 0
        junk = client.ws.send(BytesMessage(data=qos0_filler(BURST)))
        error = send_all(client.sock, client.ws.send(TextMessage(data="not mqtt")) + junk)
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        client.ws.receive_data(read_to_end(client.sock))
        closes = [e for e in client.ws.events() if isinstance(e, CloseConnection)]
        assert [e.code for e in closes] == [1003]


def test_websocket_refused_upgrade_answer_reaches_client(wrenmq_server_factory):
    # An upgrade request over 16 KiB is answered 431; the rest of it, unread, must not reset the answer away.
    server = wrenmq_server_factory(ws_port=0)
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10.0) as sock:
        request = (
            b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + b"X-Filler: "
            + b"f" * BURST
            + b"\r\n\r\n"
        )
        error = send_all(sock, request)
        assert error is None, f"broker reset the connection while the client was sending: {error!r}"
        assert read_to_end(sock).startswith(b"HTTP/1.1 431 ")
