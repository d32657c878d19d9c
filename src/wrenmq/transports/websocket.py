"""MQTT over WebSocket (RFC 6455) for the ws and wss listeners, on wsproto.

``WebSocketAdapter`` is the socket's ``asyncio.Protocol``: it answers the HTTP upgrade, then feeds
the bytes of each binary message to the broker ``Connection`` as they arrive (packets may be split
across frames or share one [MQTT-6.0.0-2]). The Connection never knows it is on a WebSocket: it is
handed a ``WebSocketTransport`` on which every ``write``/``writelines`` becomes one binary message,
and whose buffer size, limits and flow control are the socket's own.

Outbound data frames are framed here rather than by wsproto, which copies every payload twice: no
extension is ever negotiated, so a server's binary frame is exactly a 2-10 byte header followed by
the payload [RFC 6455 5.2], and the Connection's buffers go to the socket untouched behind it. The
handshake, inbound frames (unmasking, fragments, UTF-8 checks), control frames and the close
handshake are wsproto's.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import struct
from collections.abc import Iterable
from typing import Any, cast

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .linger import linger
from .served import ServedConnection, TransportCounters, TransportLimits

__all__ = [
    "MAX_REQUEST_SIZE",
    "SUBPROTOCOLS",
    "ServedConnection",
    "TransportCounters",
    "TransportLimits",
    "WebSocketAdapter",
    "WebSocketTransport",
    "upgrade_problem",
]

log = logging.getLogger("wrenmq.websocket")

SUBPROTOCOLS = ("mqtt", "mqttv3.1")  # "mqtt" is MQTT's [MQTT-6.0.0-4]; "mqttv3.1" is what 3.1 clients offer


MAX_REQUEST_SIZE = 16 * 1024  # bytes of HTTP upgrade request before the connection is refused (431)
_MESSAGE_SLACK = 64 * 1024  # a message may carry a largest packet plus the small ones sent with it

# Close codes (RFC 6455 7.4.1).
_NORMAL = 1000
_UNSUPPORTED_DATA = 1003
_MESSAGE_TOO_BIG = 1009

_END_OF_HEADERS = re.compile(rb"\n\r?\n")  # the blank line that ends a request, as h11 finds it
_BINARY_FIN = 0x82
_SHORT_HEADERS = [bytes((_BINARY_FIN, size)) for size in range(126)]
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def frame_header(size: int) -> bytes:
    """The header of an unmasked, final binary frame carrying ``size`` bytes [RFC 6455 5.2]."""
    if size < 126:
        return _SHORT_HEADERS[size]
    if size < 65536:
        return _HEADER_16.pack(_BINARY_FIN, 126, size)
    return _HEADER_64.pack(_BINARY_FIN, 127, size)


def upgrade_problem(head: bytes, request: Request) -> str | None:
    """What makes an upgrade request that wsproto accepted unfit for a WebSocket, or None.

    wsproto checks the method, Upgrade, Connection, Host and Sec-WebSocket-Version; RFC 6455 4.2.1
    also asks for HTTP/1.1 or later and for one Sec-WebSocket-Key that is the base64 encoding of 16
    bytes, and a server that finds the handshake wrong must answer with an error such as 400
    (4.2.2). A body is refused too: the bytes after the headers are WebSocket frames, not a body.
    ``head`` is the request line and headers as received.
    """
    version = head.split(b"\n", 1)[0].rstrip(b"\r").rpartition(b" ")[2]  # h11 checked "HTTP/d.d"
    if version[5:] < b"1.1":
        return f"a WebSocket upgrade needs HTTP/1.1 or later, not {version.decode('ascii', 'replace')} [RFC 6455 4.1]"
    headers = request.extra_headers
    keys = [value for name, value in headers if name == b"sec-websocket-key"]
    if len(keys) != 1:
        return "a WebSocket upgrade needs exactly one Sec-WebSocket-Key header [RFC 6455 11.3.1]"
    try:
        nonce = base64.b64decode(keys[0], validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII byte
        nonce = b""
    if len(nonce) != 16:
        return "Sec-WebSocket-Key must be 16 bytes in base64 [RFC 6455 4.2.1]"
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return "a WebSocket upgrade request has no body"
    return None


class WebSocketAdapter(asyncio.Protocol):
    """One WebSocket connection: the HTTP upgrade, then MQTT bytes to and from ``connection``.

    The Connection is made only once the upgrade succeeds, so its CONNECT timeout starts then; a
    socket that never completes the upgrade is closed after the same ``connect_timeout``.
    """

    def __init__(self, connection: ServedConnection, path: str) -> None:
        self.connection = connection
        self.paths = {path, "/"}
        self.subprotocol: str | None = None  # the one agreed in the upgrade
        self.upgraded = False
        self.closing = False  # a Close frame was sent, or the socket is closing: no more data frames
        self._ws = WSConnection(ConnectionType.SERVER)
        self._transport: asyncio.Transport | None = None
        self._request = bytearray()  # the upgrade request so far, for what a client sends right after it
        self._message_size = 0  # bytes of the binary message being received, so far
        self._max_message = connection.limits.max_packet_size + _MESSAGE_SLACK
        self._upgrade_timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._pending_pong: bytes | None = None  # the last Ping's payload, held while the socket is full

    # -- asyncio.Protocol (the socket) ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._upgrade_timer = self.connection.loop.call_later(
            self.connection.limits.connect_timeout, self._upgrade_timed_out
        )

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            if self.upgraded:
                self._ws.receive_data(data)
                self._handle_events()
            else:
                self._handshake(data)
        except Exception:  # nothing may escape into the event loop: drop this one connection
            self.connection.counters.internal_errors += 1
            log.exception("internal error on WebSocket connection from %s", self._peer())
            self.closing = True
            if self._transport is not None:
                self._transport.abort()

    def eof_received(self) -> bool | None:
        return None  # no half-closed state: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_upgrade_timer()
        if self.upgraded:
            self.connection.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.upgraded:
            self.connection.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._pending_pong is not None:
            payload, self._pending_pong = self._pending_pong, None
            self._send_control(Pong(payload=payload))
        if self.upgraded:
            self.connection.resume_writing()

    # -- the opening handshake ------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        request = self._request
        request += data
        end = _END_OF_HEADERS.search(request)
        if (len(request) if end is None else end.end()) > MAX_REQUEST_SIZE:
            self._reject(431, f"upgrade request larger than {MAX_REQUEST_SIZE} bytes")
            return
        try:
            self._ws.receive_data(data)
        except RemoteProtocolError as exc:  # not a WebSocket upgrade: answer as wsproto suggests (400, 426)
            hint = exc.event_hint
            if isinstance(hint, RejectConnection):
                self._reject(hint.status_code, str(exc), list(hint.headers))
            else:
                self._reject(400, str(exc))
            return
        except UnicodeError as exc:  # wsproto decodes Host, Connection and Sec-WebSocket-* as ASCII/IDNA
            self._reject(400, f"a WebSocket header is not ASCII: {exc}")
            return
        for event in self._ws.events():
            if isinstance(event, Request):
                assert end is not None  # h11 has seen the whole request
                problem = upgrade_problem(bytes(request[: end.end()]), event)
                if problem is not None:
                    self._reject(400, problem)
                    return
                self._upgrade(event)
                self._request = bytearray()
                if self.upgraded and end.end() < len(request):
                    # Frames sent on the heels of the request (without waiting for our 101, as RFC
                    # 6455 4.1 asks) stay in wsproto's HTTP parser: hand them to the WebSocket.
                    self._ws.receive_data(bytes(request[end.end() :]))
                    self._handle_events()
                return

    def _upgrade(self, request: Request) -> None:
        path = request.target.partition("?")[0]
        if path not in self.paths:
            self._reject(404, f"no MQTT WebSocket endpoint at {path[:200]}; use {' or '.join(sorted(self.paths))}")
            return
        subprotocol = None
        if request.subprotocols:
            # The first the client offers that we speak; a client that offers none asked for
            # something else, and is told so rather than handed MQTT it did not ask for.
            subprotocol = next((name for name in request.subprotocols if name in SUBPROTOCOLS), None)
            if subprotocol is None:
                offered = ", ".join(request.subprotocols)
                self._reject(400, f"unsupported WebSocket subprotocol {offered}; MQTT clients offer mqtt")
                return
        transport = self._transport
        assert transport is not None
        transport.write(self._ws.send(AcceptConnection(subprotocol=subprotocol)))
        self.subprotocol = subprotocol
        self.upgraded = True
        self._cancel_upgrade_timer()
        self.connection.connection_made(WebSocketTransport(self, transport))

    def _reject(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer the upgrade request with an HTTP error and close; counted, logged at debug only
        (anyone can send a bad request: the log is not theirs to fill)."""
        self.connection.counters.websocket_upgrades_refused += 1
        log.debug("WebSocket upgrade from %s refused (%d): %s", self._peer(), status, reason)
        body = reason.encode("utf-8", "replace") + b"\n"
        headers = [
            *(headers or ()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.closing = True
        self._cancel_upgrade_timer()
        transport = self._transport
        if transport is None:
            return
        try:
            response = self._ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
            response += self._ws.send(RejectData(data=body))
        except LocalProtocolError:  # the HTTP state machine cannot answer any more: just close
            response = b""
        if response:
            transport.write(response)
        # The rest of a refused request may be unread: linger, or the reset would lose the answer.
        linger(transport, self.connection.lingering, self.connection.loop)

    def _upgrade_timed_out(self) -> None:
        self._upgrade_timer = None
        if not self.upgraded and not self.closing:
            log.debug("WebSocket upgrade from %s not completed within the connect timeout", self._peer())
            self.closing = True
            if self._transport is not None:
                self._transport.close()

    def _cancel_upgrade_timer(self) -> None:
        if self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
            self._upgrade_timer = None

    # -- after the upgrade ----------------------------------------------------------------------

    def _handle_events(self) -> None:
        connection = self.connection
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                data = event.data
                size = self._message_size + len(data)
                if size > self._max_message:
                    why = f"WebSocket message over {self._max_message} bytes"
                    self._close(_MESSAGE_TOO_BIG, "message too big", why)
                    return
                self._message_size = 0 if event.message_finished else size
                if data:
                    connection.data_received(data if type(data) is bytes else bytes(data))
                if self.closing:  # the MQTT side closed the connection
                    return
            elif isinstance(event, Ping):
                if self._writing_paused:
                    # A client that pings but does not read must not grow our buffer: answer only the
                    # latest Ping once the socket drains, as RFC 6455 5.5.3 allows.
                    self._pending_pong = bytes(event.payload)
                else:
                    self._send_control(event.response())
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    why = f"WebSocket closed by the client ({event.code})"
                else:  # a framing error wsproto found (bad opcode, unmasked frame, ...)
                    why = f"WebSocket protocol error: {event.reason}"
                self._close(event.code, event.reason, why)
                return
            elif isinstance(event, TextMessage):
                # MQTT travels in binary frames only; anything else closes the connection [MQTT-6.0.0-1].
                self._close(_UNSUPPORTED_DATA, "MQTT needs binary frames", "WebSocket text frame [MQTT-6.0.0-1]")
                return
            # Pong: nothing to do (we send no pings: MQTT has its own keep alive).

    def _send_control(self, event: Any) -> None:
        transport = self._transport
        if transport is not None and not self.closing:
            transport.write(self._ws.send(event))

    def _close(self, code: int, reason: str | None, why: str) -> None:
        """Close the WebSocket (Close frame, then the socket) and, as a network close, the MQTT
        connection, whose will is published as for any lost connection."""
        if self.closing:
            return
        self.closing = True
        transport = self._transport
        if transport is None:
            return
        try:
            frame = self._ws.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:  # a Close was already exchanged
            frame = b""
        if frame:
            transport.write(frame)
        connection = self.connection
        if self.upgraded:
            connection.close(why)  # its output is dropped: no data may follow a Close frame
        # The Close frame must arrive even if the client sent more than it read (see linger.py); the
        # socket is the linger's from now on, so the connection hears of its end from here.
        linger(transport, connection.lingering, connection.loop)
        if self.upgraded:
            connection.loop.call_soon(connection.connection_lost, None)

    def _send_close(self) -> asyncio.Transport | None:
        """Write our normal Close frame once; the transport to close then, or None if the adapter
        was closing already or has no socket."""
        if self.closing:
            return None
        self.closing = True
        transport = self._transport
        if transport is None:
            return None
        try:
            transport.write(self._ws.send(CloseConnection(code=_NORMAL)))
        except LocalProtocolError:
            pass
        return transport

    def close_from_mqtt(self) -> None:
        """The MQTT side closes: a normal Close frame, then the socket (after what is buffered)."""
        transport = self._send_close()
        if transport is not None:
            transport.close()

    def close_gracefully(self, lingering: set[Any], loop: asyncio.AbstractEventLoop) -> None:
        """The MQTT side closes with a reason: a normal Close frame after what is buffered, then
        the socket is closed as ``transports.linger`` closes one, so a client that sent more than
        it read still gets the last packet and the Close frame. The adapter is done at once: the
        socket's further input is the linger's (a client's Close frame included: we answered first)."""
        transport = self._send_close()
        if transport is not None:
            linger(transport, lingering, loop)

    def _peer(self) -> str:
        address = self._transport.get_extra_info("peername") if self._transport is not None else None
        return f"{address[0]}:{address[1]}" if address else "?"


class WebSocketTransport(asyncio.Transport):
    """What the MQTT ``Connection`` writes to: each ``write``/``writelines`` is one binary message.

    The Connection coalesces its output into one ``writelines`` per event-loop turn, so a
    WebSocket client costs one frame header per turn. Buffer sizes, limits, reading and the extra
    info (peername, sockname, peercert, ssl_object) are the socket's; ``get_extra_info("subprotocol")``
    is the WebSocket subprotocol agreed ("mqtt", "mqttv3.1" or None).
    """

    def __init__(self, adapter: WebSocketAdapter, transport: asyncio.Transport) -> None:
        super().__init__()
        self._adapter = adapter
        self._transport = transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._adapter.closing or not data:
            return
        self._transport.write(frame_header(len(data)) + data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._adapter.closing:
            return
        chunks = list_of_data if isinstance(list_of_data, list) else list(list_of_data)
        size = 0
        for chunk in chunks:
            size += len(chunk)
        if size:
            self._transport.writelines([frame_header(size), *chunks])

    def close(self) -> None:
        self._adapter.close_from_mqtt()

    def close_gracefully(self, lingering: set[Any], loop: asyncio.AbstractEventLoop) -> None:
        """See ``transports.linger``: called instead of ``close`` when the connection ends with a reason."""
        self._adapter.close_gracefully(lingering, loop)

    def abort(self) -> None:
        self._adapter.closing = True
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._adapter.closing or self._transport.is_closing()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "subprotocol":
            return self._adapter.subprotocol
        return self._transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self._adapter.connection)  # (a ServedConnection is one)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("the MQTT connection of a WebSocket cannot be replaced")
