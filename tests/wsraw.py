"""A blocking raw WebSocket client on wsproto, for frame-exact MQTT-over-WebSocket tests.

Like ``mqttraw.RawClient`` it sends exactly what a test builds: MQTT bytes split or joined across
frames and messages however the test likes, text frames, pings, Close frames, or hand-made frames.
What the broker sends comes back as wsproto events, and the bytes of its binary messages feed an
MQTT parser, so a test can check frames and packets alike.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from mqttraw import ConnectionClosed
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode

__all__ = ["WsRawClient", "masked_frame"]


def masked_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One client frame built by hand (RFC 6455 5.2), e.g. an unmasked one wsproto will not make."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WsRawClient:
    """A WebSocket client on a plain (or TLS) socket; ``handshake()`` first, then frames and packets.

    ``rcvbuf`` makes a small receive buffer, for a subscriber that stops reading.
    """

    def __init__(
        self,
        port: int,
        path: str = "/mqtt",
        subprotocols: Sequence[str] = ("mqtt",),
        version: int = 4,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        rcvbuf: int | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.subprotocols = list(subprotocols)
        self.version = version
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the TCP window stays small (a slow reader)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = ssl_context.wrap_socket(sock, server_hostname=host) if ssl_context else sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()  # received, not yet taken by next_event()
        self.history: list[Event] = []  # every event received
        self.parser = Parser(protocol_level=version)
        self.packets: list[p.AnyPacket] = []
        self.received = bytearray()  # the bytes of every binary message, in order
        self.eof = False

    # -- the opening handshake ------------------------------------------------------------

    def handshake(self) -> AcceptConnection | RejectConnection:
        """Send the upgrade request; returns the broker's answer (a RejectConnection's body lands in
        ``self.reject_body``)."""
        request = Request(host=f"{self.host}:{self.port}", target=self.path, subprotocols=self.subprotocols)
        self.sock.sendall(self.ws.send(request))
        event = self.next_event()
        if isinstance(event, RejectConnection):
            body = b""
            while event.has_body:
                data = self.next_event()
                assert isinstance(data, RejectData)
                body += data.data
                if data.body_finished:
                    break
            self.reject_body = body
            return event
        assert isinstance(event, AcceptConnection), event
        return event

    # -- frames ---------------------------------------------------------------------------

    def send_binary(self, data: bytes, message_finished: bool = True) -> None:
        """One binary frame; ``message_finished=False`` leaves the message open for more frames."""
        self.sock.sendall(self.ws.send(BytesMessage(data=data, message_finished=message_finished)))

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def ping(self, payload: bytes) -> None:
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def send_close(self, code: int = 1000) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(code=code)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self, timeout: float | None = None) -> Event:
        """The next WebSocket event from the broker; ConnectionClosed at EOF, TimeoutError on silence."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.events:
            if self.eof:
                raise ConnectionClosed("connection closed by the broker")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("nothing from the broker")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("nothing from the broker") from None
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.eof = True
                self.ws.receive_data(None)
            else:
                self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self.received += event.data
                    self.packets.extend(self.parser.feed(bytes(event.data)))
                self.events.append(event)
                self.history.append(event)
        return self.events.popleft()

    def events_until_closed(self, timeout: float = 5.0) -> list[Event]:
        """Every event up to the end of the connection (the 1006 wsproto reports at EOF included)."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.next_event(max(0.01, deadline - time.monotonic())))
            except ConnectionClosed:
                return seen
            except TimeoutError:
                raise AssertionError(f"connection still open; broker sent {seen!r}") from None

    def drain(self, idle: float = 0.5) -> list[Event]:
        """Every event until the broker has been silent for ``idle`` seconds."""
        seen: list[Event] = []
        while True:
            try:
                seen.append(self.next_event(idle))
            except TimeoutError:
                return seen

    # -- MQTT -----------------------------------------------------------------------------

    def send(self, packet: p.AnyPacket) -> None:
        """One MQTT packet in one binary message."""
        self.send_binary(encode(packet, self.version))

    def recv(self, timeout: float | None = None) -> p.AnyPacket:
        """The next MQTT packet from the broker, whatever frames carried it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.packets:
            self.next_event(max(0.01, deadline - time.monotonic()))
        return self.packets.pop(0)

    def recv_bytes(self, count: int, timeout: float | None = None) -> bytes:
        """The first ``count`` bytes of binary message data the broker has sent (and consumes them)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.received) < count:
            self.next_event(max(0.01, deadline - time.monotonic()))
        data = bytes(self.received[:count])
        del self.received[:count]
        self.packets.clear()  # a test reading bytes reads them all that way
        return data

    def connect(self, client_id: str = "", **kwargs: object) -> p.Connack:
        self.send(p.Connect(client_id, self.version, **kwargs))  # type: ignore[arg-type]
        packet = self.recv()
        assert isinstance(packet, p.Connack), packet
        return packet

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> WsRawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
