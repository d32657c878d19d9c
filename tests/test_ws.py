"""MQTT over WebSocket (section 6 of MQTT 3.1.1 and 5.0) on the ws and wss listeners.

paho-mqtt over websockets at 3.1.1 and 5.0 for interop; a raw wsproto client (tests/wsraw.py) for
frame-exact checks: packets split across frames or sharing one, subprotocols, paths, ping/pong,
Close frames, text frames and the limits on the upgrade and on messages.
"""

from __future__ import annotations

import queue
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Pong, RejectConnection

from certs import CA, make_ca, make_cert
from mqttraw import RawClient
from paho_sync import PROTOCOLS, PahoClient
from wrenmq.broker import Broker
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.pytest_plugin import WrenmqServer
from wrenmq.transports.websocket import WebSocketTransport
from wsraw import WsRawClient, masked_frame

KiB = 1024
CONNACK_311 = b"\x20\x02\x00\x00"


class PahoWs(PahoClient):
    """A paho client over websockets (or wss with ``ca``/client certificate), as ``PahoClient`` otherwise."""

    def __init__(
        self,
        port: int,
        protocol: MQTTProtocolVersion,
        client_id: str = "",
        path: str = "/mqtt",
        ca: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
    ) -> None:
        self.protocol = protocol
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport="websockets"
        )
        self.client.ws_set_options(path=path)
        if ca is not None:
            self.client.tls_set(
                ca_certs=str(ca),
                certfile=str(certfile) if certfile else None,
                keyfile=str(keyfile) if keyfile else None,
            )
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._acks.put(("connack", rc))
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self._acks.put(("suback", rcs))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        kind, rc = self._acks.get(timeout=5)
        assert kind == "connack" and not rc.is_failure, f"paho could not connect over websockets: {rc}"


@pytest.fixture
def ws_server(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    """A broker with a tcp listener and a ws listener (path /mqtt), both on free ports."""
    return wrenmq_server_factory(ws_port=0)


@pytest.fixture
def broker(ws_server: WrenmqServer) -> WrenmqServer:
    """conftest's ``paho`` fixture connects to ``broker``: make that the ws_server (over TCP)."""
    return ws_server


@pytest.fixture
def ws_paho() -> Iterator[Callable[..., PahoWs]]:
    made: list[PahoClient] = []

    def make(server: WrenmqServer, protocol: MQTTProtocolVersion, client_id: str = "", **kw: Any) -> PahoWs:
        port = server.wss_port if "ca" in kw else server.ws_port
        client = PahoWs(port, protocol, client_id, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def ws_client() -> Iterator[Callable[..., WsRawClient]]:
    """Raw WebSocket clients for a server's ws listener (not yet upgraded); closed after the test."""
    made: list[WsRawClient] = []

    def make(server: WrenmqServer, **kw: Any) -> WsRawClient:
        client = WsRawClient(server.ws_port, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def upgraded(make: Callable[..., WsRawClient], server: WrenmqServer, **kw: Any) -> WsRawClient:
    client = make(server, **kw)
    assert isinstance(client.handshake(), AcceptConnection)
    return client


def watcher(clients: Callable[..., RawClient], server: WrenmqServer, topic: str) -> RawClient:
    """A TCP client subscribed to ``topic`` at QoS 1."""
    watch = clients(server, 5)
    assert watch.connect(f"watch-{topic}").reason_code == 0
    assert watch.subscribe(topic, 1).reason_codes == [1]
    return watch


def close_codes(events: list[Any]) -> list[int]:
    """The codes of the Close frames among ``events`` (without the 1006 wsproto adds at EOF)."""
    return [e.code for e in events if isinstance(e, CloseConnection) and e.code != 1006]


async def _publish_many(broker: Broker, topic: str, count: int, size: int) -> None:
    for _ in range(count):
        await broker.publish(topic, b"x" * size)


async def _connection_state(broker: Broker, client_id: str) -> dict[str, Any]:
    for conn in broker.connections:
        if conn.client_id == client_id and conn.transport is not None:
            assert isinstance(conn.transport, WebSocketTransport)
            return {
                "buffer": conn.transport.get_write_buffer_size(),
                "writing_paused": conn.writing_paused,
                "dropped": broker.stats.messages_dropped,
            }
    return {"connected": False}


# -- paho-mqtt over websockets ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_over_websocket_qos_0_1_2(ws_server, ws_paho, protocol):  # [MQTT-6.0.0-1] binary frames both ways
    sub = ws_paho(ws_server, protocol, "ws-sub")
    assert sub.subscribe("ws/qos", 2) == [2]
    pub = ws_paho(ws_server, protocol, "ws-pub")
    for qos in (0, 1, 2):
        pub.publish("ws/qos", b"qos %d" % qos, qos)
    received = sub.receive(3)
    assert sorted((m.payload, m.qos) for m in received) == [(b"qos 0", 0), (b"qos 1", 1), (b"qos 2", 2)]
    sub.nothing()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_retained_message_over_websocket(ws_server, ws_paho, protocol):  # [MQTT-3.3.1-6]
    pub = ws_paho(ws_server, protocol, "ws-retainer")
    pub.publish("ws/retained", b"kept", 1, retain=True)
    sub = ws_paho(ws_server, protocol, "ws-late")
    assert sub.subscribe("ws/retained", 1) == [1]
    (message,) = sub.receive(1)
    assert (message.payload, message.retain) == (b"kept", True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_websocket_and_tcp_clients_exchange_messages(ws_server, ws_paho, paho, protocol):  # section 6: same MQTT
    ws = ws_paho(ws_server, protocol, "ws-side")
    tcp = paho(protocol, "tcp-side")
    assert ws.subscribe("to/ws", 1) == [1]
    assert tcp.subscribe("to/tcp", 1) == [1]
    tcp.publish("to/ws", b"from tcp", 1)
    ws.publish("to/tcp", b"from ws", 1)
    assert [m.payload for m in ws.receive(1)] == [b"from tcp"]
    assert [m.payload for m in tcp.receive(1)] == [b"from ws"]


def test_paho_on_root_path(ws_server, ws_paho):  # wrenmq: "/" is accepted beside the configured path
    client = ws_paho(ws_server, mqtt.MQTTv311, "ws-root", path="/")
    assert client.subscribe("root/t", 0) == [0]


@pytest.mark.parametrize("payload_size", [10, 200, 70 * KiB])
def test_large_and_small_messages_framed(ws_server, ws_client, clients, payload_size):
    """wrenmq frames its own output (RFC 6455 5.2): 7-bit, 16-bit and 64-bit payload lengths all decode."""
    ws = upgraded(ws_client, ws_server)
    assert ws.connect("framing").reason_code == 0
    ws.send(p.Subscribe(1, [p.Subscription("frame/t", 0)]))
    assert isinstance(ws.recv(), p.Suback)
    tcp = clients(ws_server, 4)
    tcp.connect("framing-pub")
    payload = bytes(range(256)) * (payload_size // 256) + b"x" * (payload_size % 256)
    tcp.publish("frame/t", payload)
    message = ws.recv()
    assert isinstance(message, p.Publish) and message.payload == payload


# -- wills ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_will_published_when_websocket_connection_drops(ws_server, ws_client, clients, version):  # [MQTT-3.1.2-8]
    watch = watcher(clients, ws_server, "will/ws")
    ws = upgraded(ws_client, ws_server, version=version)
    assert ws.connect("dropper", will=p.Will("will/ws", b"gone", 1)).reason_code == 0
    ws.close()  # the TCP connection ends: no DISCONNECT, no Close frame
    message = watch.expect(p.Publish)
    assert (message.topic, message.payload) == ("will/ws", b"gone")


def test_paho_will_over_websocket(ws_server, clients):  # [MQTT-3.1.2-8]
    watch = watcher(clients, ws_server, "will/paho")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-will", transport="websockets")
    client.ws_set_options(path="/mqtt")
    client.will_set("will/paho", b"paho gone", 1)
    connected = queue.Queue[Any]()
    client.on_connect = lambda *args: connected.put(args[3])
    client.connect("127.0.0.1", ws_server.ws_port, keepalive=30)
    client.loop_start()
    try:
        assert not connected.get(timeout=5).is_failure
        client.loop_stop()
        client.socket().close()  # paho's socket goes away without DISCONNECT
        message = watch.expect(p.Publish)
        assert (message.topic, message.payload) == ("will/paho", b"paho gone")
    finally:
        client.loop_stop()


def test_close_frame_without_disconnect_is_a_network_close(ws_server, ws_client, clients):  # [MQTT-3.1.2-8]
    """A WebSocket Close frame from the client is answered with a Close frame (RFC 6455 5.5.1) and ends
    the MQTT connection as a lost network connection would: the will is published."""
    watch = watcher(clients, ws_server, "will/close")
    ws = upgraded(ws_client, ws_server)
    assert ws.connect("closer", will=p.Will("will/close", b"closed", 1)).reason_code == 0
    ws.send_close(1000)
    assert close_codes(ws.events_until_closed()) == [1000]
    assert watch.expect(p.Publish).payload == b"closed"


def test_disconnect_closes_websocket_normally_without_will(ws_server, ws_client, clients):  # [MQTT-3.1.2-10]
    watch = watcher(clients, ws_server, "will/normal")
    ws = upgraded(ws_client, ws_server)
    assert ws.connect("leaver", will=p.Will("will/normal", b"never", 1)).reason_code == 0
    ws.send(p.Disconnect())
    assert close_codes(ws.events_until_closed()) == [1000]  # the broker closes with a Close frame, then TCP
    watch.nothing(0.5)


def test_mqtt_error_sends_disconnect_before_close_frame(ws_server, ws_client):  # [MQTT-3.1.0-2], [MQTT-4.13.2-1]
    ws = upgraded(ws_client, ws_server, version=5)
    assert ws.connect("twice").reason_code == 0
    ws.send(p.Connect("twice", 5))
    events = ws.events_until_closed()
    data = [i for i, e in enumerate(events) if isinstance(e, BytesMessage)]
    closes = [i for i, e in enumerate(events) if isinstance(e, CloseConnection) and e.code == 1000]
    assert data and closes and data[-1] < closes[0]  # the DISCONNECT travels before the Close frame
    (disconnect,) = ws.packets
    assert isinstance(disconnect, p.Disconnect) and disconnect.reason_code == 0x82  # Protocol Error


# -- packets and frames -----------------------------------------------------------------------


def test_two_packets_in_one_frame(ws_server, ws_client):  # [MQTT-6.0.0-2], [MQTT-6.0.0-1]
    ws = upgraded(ws_client, ws_server)
    connect = encode(p.Connect("two-in-one", 4, True, 30), 4)
    subscribe = encode(p.Subscribe(1, [p.Subscription("a/b", 1)]), 4)
    ws.send_binary(connect + subscribe)
    assert ws.recv_bytes(4 + 5) == CONNACK_311 + b"\x90\x03\x00\x01\x01"
    data_events = [e for e in ws.history if not isinstance(e, AcceptConnection)]
    assert data_events and all(isinstance(e, BytesMessage) for e in data_events)  # binary frames only


def test_packet_split_across_three_frames(ws_server, ws_client):  # [MQTT-6.0.0-2]
    ws = upgraded(ws_client, ws_server)
    connect = encode(p.Connect("split", 4, True, 30), 4)
    # One message in three frames (a fragmented message: BINARY, CONTINUATION, CONTINUATION+FIN).
    for part, last in ((connect[:3], False), (connect[3:10], False), (connect[10:], True)):
        ws.send_binary(part, message_finished=last)
        time.sleep(0.02)  # each arrives in a read of its own
    assert ws.recv_bytes(4) == CONNACK_311
    # One packet in three messages.
    publish = encode(p.Publish("split/t", b"payload", 1, False, 7), 4)
    for part in (publish[:1], publish[1:5], publish[5:]):
        ws.send_binary(part)
        time.sleep(0.02)
    assert ws.recv_bytes(4) == b"\x40\x02\x00\x07"
    # One frame arriving in three TCP reads, cut inside its header.
    frame = masked_frame(0x2, encode(p.Subscribe(2, [p.Subscription("x/y", 2)]), 4))
    for part in (frame[:1], frame[1:4], frame[4:]):
        ws.send_raw(part)
        time.sleep(0.02)
    assert ws.recv_bytes(5) == b"\x90\x03\x00\x02\x02"


def test_frames_sent_with_the_upgrade_request_are_not_lost(ws_server):  # [MQTT-6.0.0-2]
    """A client that sends its first frames right behind the upgrade request, without waiting for
    the 101 (RFC 6455 4.1 says it should wait), is still served: wrenmq keeps those bytes."""
    request = (
        b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    connect = masked_frame(0x2, encode(p.Connect("eager", 4, True, 30), 4) + encode(p.Pingreq(), 4))
    with socket.create_connection(("127.0.0.1", ws_server.ws_port), timeout=5) as sock:
        sock.sendall(request + connect)
        expected = b"\r\n\r\n\x82\x04" + CONNACK_311  # CONNACK, then PINGRESP in one message or two
        received = b""
        while not received.endswith(b"\xd0\x00"):
            data = sock.recv(4096)
            assert data, received
            received += data
    assert received.startswith(b"HTTP/1.1 101 ") and expected in received


# -- the opening handshake --------------------------------------------------------------------


@pytest.mark.parametrize(
    "offered, chosen",
    [(["mqtt"], "mqtt"), (["mqttv3.1"], "mqttv3.1"), (["chat", "mqttv3.1", "mqtt"], "mqttv3.1"), ([], None)],
)
def test_subprotocol_negotiation(ws_server, ws_client, offered, chosen):  # [MQTT-6.0.0-3], [MQTT-6.0.0-4]
    # The server picks the first subprotocol offered that it speaks; a client offering none (MQTT
    # requires "mqtt", but some minimal clients send no header) is served without one.
    version = 3 if chosen == "mqttv3.1" else 4
    ws = ws_client(ws_server, subprotocols=offered, version=version)
    accept = ws.handshake()
    assert isinstance(accept, AcceptConnection) and accept.subprotocol == chosen
    assert ws.connect(f"sub-{chosen}").reason_code == 0


def test_unsupported_subprotocol_refused(ws_server, ws_client):  # [MQTT-6.0.0-3]: the client must offer mqtt
    ws = ws_client(ws_server, subprotocols=["chat", "superchat"])
    reject = ws.handshake()
    assert isinstance(reject, RejectConnection) and reject.status_code == 400
    assert b"mqtt" in ws.reject_body
    ws.events_until_closed()


@pytest.mark.parametrize("path, status", [("/other", 404), ("/mqtt/x", 404), ("/", 101), ("/mqtt?token=abc", 101)])
def test_paths(ws_server, ws_client, path, status):
    """wrenmq serves the configured ws_path and "/" (a query string is ignored); anything else is 404."""
    response = ws_client(ws_server, path=path).handshake()
    if status == 101:
        assert isinstance(response, AcceptConnection)
    else:
        assert isinstance(response, RejectConnection) and response.status_code == status


def test_configured_path(wrenmq_server_factory, ws_client):
    """wrenmq: ``ws_path`` moves the endpoint; the default /mqtt is then a 404."""
    server = wrenmq_server_factory(ws_port=0, ws_path="/broker")
    assert isinstance(ws_client(server, path="/broker").handshake(), AcceptConnection)
    reject = ws_client(server, path="/mqtt").handshake()
    assert isinstance(reject, RejectConnection) and reject.status_code == 404


def _http(port: int, request: bytes) -> bytes:
    """Send ``request`` on a plain socket; everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
        return received


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),  # plain HTTP, no upgrade
        (b"POST /mqtt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"400"),
        (
            b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"426",
        ),
        (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00", b"400"),  # MQTT sent to the ws port
    ],
)
def test_not_a_websocket_upgrade_refused(ws_server, request_bytes, status):  # RFC 6455 4.2.1, 4.2.2
    """wrenmq answers a request that is not a WebSocket upgrade with an HTTP error, then closes."""
    response = _http(ws_server.ws_port, request_bytes)
    assert response.startswith(b"HTTP/1.1 " + status)


def test_oversized_upgrade_request_refused(ws_server):
    """wrenmq reads at most 16 KiB of upgrade request (431 Request Header Fields Too Large)."""
    request = b"GET /mqtt HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * (17 * KiB) + b"\r\n\r\n"
    assert _http(ws_server.ws_port, request).startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize("partial", [b"", b"GET /mqtt HTTP/1.1\r\nHost: x\r\n"])
def test_upgrade_not_completed_within_connect_timeout(wrenmq_server_factory, partial):  # 3.1.4 (5.0) non-normative
    # The connect timeout covers the upgrade too: a socket that never becomes a WebSocket is closed.
    server = wrenmq_server_factory(ws_port=0, connect_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=5) as sock:
        sock.sendall(partial)
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert 0.3 <= time.monotonic() - started < 2.5


def test_no_connect_after_upgrade_within_connect_timeout(wrenmq_server_factory, ws_client):  # 3.1.4 (5.0) non-normative
    server = wrenmq_server_factory(ws_port=0, connect_timeout=0.5)
    ws = upgraded(ws_client, server)
    started = time.monotonic()
    assert close_codes(ws.events_until_closed()) == [1000]
    assert 0.3 <= time.monotonic() - started < 2.5


# -- control frames and bad frames ------------------------------------------------------------


def test_ping_answered_with_pong(ws_server, ws_client):
    """RFC 6455 5.5.2/5.5.3: a Ping is answered with a Pong carrying its payload; MQTT carries on."""
    ws = upgraded(ws_client, ws_server)
    assert ws.connect("pinger").reason_code == 0
    ws.ping(b"are you there")
    event = ws.next_event()
    assert isinstance(event, Pong) and event.payload == b"are you there"
    ws.send(p.Pingreq())
    assert isinstance(ws.recv(), p.Pingresp)


def test_pings_from_a_client_that_does_not_read_are_bounded(wrenmq_server_factory, ws_client):
    """RFC 6455 5.5.3 lets an endpoint answer only the latest of several Pings: while the socket is
    full wrenmq holds one Pong back, so pinging without reading cannot grow the broker's buffer."""
    limits = {"write_buffer_high": 16 * KiB, "write_buffer_low": 4 * KiB, "max_write_buffer": 64 * KiB}
    server = wrenmq_server_factory(ws_port=0, **limits)
    ws = upgraded(ws_client, server, rcvbuf=4 * KiB)
    assert ws.connect("ping-flood").reason_code == 0
    before = server.broker.stats.bytes_received
    count = 50_000  # 6 MB of Pongs owed: more than the kernel buffers
    for start in range(0, count, 1000):
        ws.send_raw(b"".join(masked_frame(0x9, b"%08d" % i + b"p" * 117) for i in range(start, start + 1000)))
    ws.send(p.Pingreq())  # read after every Ping: once the broker has it, it has seen them all
    deadline = time.monotonic() + 10
    while server.broker.stats.bytes_received < before + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    state = server.call(_connection_state(server.broker, "ping-flood"))
    assert state.get("writing_paused") is True, state
    assert state["buffer"] <= limits["max_write_buffer"], state
    pongs = [e for e in ws.drain() if isinstance(e, Pong)]
    assert 0 < len(pongs) < count
    assert pongs[-1].payload == b"%08d" % (count - 1) + b"p" * 117  # the latest Ping is answered
    assert server.call(_connection_state(server.broker, "ping-flood"))["writing_paused"] is False


def test_text_frame_closes_connection(ws_server, ws_client, clients):  # [MQTT-6.0.0-1]
    watch = watcher(clients, ws_server, "will/text")
    ws = upgraded(ws_client, ws_server)
    assert ws.connect("texter", will=p.Will("will/text", b"text", 1)).reason_code == 0
    ws.send_text("\x10\x0c")
    assert close_codes(ws.events_until_closed()) == [1003]  # Unsupported Data
    assert watch.expect(p.Publish).payload == b"text"  # a network close: the will is published


def test_unmasked_frame_is_a_protocol_error(ws_server, ws_client):
    """RFC 6455 5.1: a server closes the connection (1002) on a frame the client did not mask."""
    ws = upgraded(ws_client, ws_server)
    assert ws.connect("unmasked").reason_code == 0
    ws.send_raw(masked_frame(0x2, encode(p.Pingreq(), 4), mask=False))
    assert close_codes(ws.events_until_closed()) == [1002]


def test_message_larger_than_max_packet_size_closes(wrenmq_server_factory, ws_client):
    """wrenmq bounds one WebSocket message to max_packet_size plus 64 KiB: past it, Close 1009."""
    server = wrenmq_server_factory(ws_port=0, max_packet_size=1024)
    ws = upgraded(ws_client, server)
    assert ws.connect("big").reason_code == 0
    ws.send_binary(encode(p.Pingreq(), 4) * 40_000)  # 80,000 bytes of valid packets in one message
    assert close_codes(ws.events_until_closed(timeout=10)) == [1009]


# -- flow control -----------------------------------------------------------------------------


def test_slow_websocket_subscriber_flow_control(wrenmq_server_factory, ws_client):  # section 4.3.1
    """The socket's pause_writing/resume_writing reach the MQTT connection through the adapter, so a
    WebSocket subscriber that stops reading has a bounded buffer and loses QoS 0 messages (counted),
    as a TCP one does (tests/test_flow_control.py)."""
    limits = {"write_buffer_high": 16 * KiB, "write_buffer_low": 4 * KiB, "max_write_buffer": 64 * KiB}
    server = wrenmq_server_factory(ws_port=0, **limits)
    slow = upgraded(ws_client, server, rcvbuf=4 * KiB)
    assert slow.connect("ws-slow").reason_code == 0
    slow.send(p.Subscribe(1, [p.Subscription("flow/t", 0)]))
    assert isinstance(slow.recv(), p.Suback)
    server.call(_publish_many(server.broker, "flow/t", 4000, KiB))
    state = server.call(_connection_state(server.broker, "ws-slow"))
    assert state.get("writing_paused") is True, state
    assert state["buffer"] <= limits["max_write_buffer"] + 20 * KiB
    assert state["dropped"] > 0
    received = 0
    while True:  # drain: the socket resumes writing
        try:
            packet = slow.recv(0.5)
        except TimeoutError:
            break
        assert isinstance(packet, p.Publish)
        received += 1
    assert 0 < received < 4000
    assert server.call(_connection_state(server.broker, "ws-slow"))["writing_paused"] is False


# -- wss --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca: CA = make_ca(directory)
    server_cert, server_key = make_cert(ca, directory, "localhost", server=True)
    client_cert, client_key = make_cert(ca, directory, "sensor-7", server=False)
    return {"ca": ca.cert, "cert": server_cert, "key": server_key, "client_cert": client_cert, "client_key": client_key}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_paho_over_wss(wrenmq_server_factory, ws_paho, pki, protocol):  # section 6 over TLS
    server = wrenmq_server_factory(wss_port=0, certfile=pki["cert"], keyfile=pki["key"])
    sub = ws_paho(server, protocol, "wss-sub", ca=pki["ca"])
    assert sub.subscribe("wss/t", 1) == [1]
    pub = ws_paho(server, protocol, "wss-pub", ca=pki["ca"])
    pub.publish("wss/t", b"secret", 1)
    assert [m.payload for m in sub.receive(1)] == [b"secret"]


def test_wss_raw_client_checks_server_certificate(wrenmq_server_factory, pki):
    """The wss listener serves the configured certificate, verifiable with the test CA."""
    server = wrenmq_server_factory(wss_port=0, certfile=pki["cert"], keyfile=pki["key"])
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    with WsRawClient(server.wss_port, host="localhost", ssl_context=context) as ws:
        assert isinstance(ws.handshake(), AcceptConnection)
        assert ws.connect("wss-raw").reason_code == 0
    untrusted = ssl.create_default_context()  # the system CAs do not know the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        WsRawClient(server.wss_port, host="localhost", ssl_context=untrusted)


async def _usernames(broker: Broker) -> dict[str, str | None]:
    return {conn.client_id: conn.username for conn in broker.connections}


def test_wss_client_certificate_identity_as_username(wrenmq_server_factory, ws_paho, pki):
    """The MQTT connection on a WebSocket still sees the TLS peer certificate: with
    use_identity_as_username its CN is the username."""
    server = wrenmq_server_factory(
        wss_port=0,
        certfile=pki["cert"],
        keyfile=pki["key"],
        cafile=pki["ca"],
        require_certificate=True,
        use_identity_as_username=True,
    )
    ws_paho(server, mqtt.MQTTv311, "cert-client", ca=pki["ca"], certfile=pki["client_cert"], keyfile=pki["client_key"])
    assert server.call(_usernames(server.broker))["cert-client"] == "sensor-7"
