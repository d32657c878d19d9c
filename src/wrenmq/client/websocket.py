"""MQTT over WebSocket (section 6), the client side, on wsproto.

:class:`WebSocketClient` is the socket's protocol: it does the HTTP upgrade (offering the ``mqtt``
subprotocol [MQTT-6.0.0-3]), then hands the MQTT Connection a :class:`WebSocketTransport` on which
every write is one binary message [MQTT-6.0.0-1] and whose flow control is the socket's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .errors import ConnectError

__all__ = ["WebSocketClient", "WebSocketTransport"]

_NORMAL_CLOSURE = 1000
_UNSUPPORTED_DATA = 1003


class WebSocketClient(asyncio.Protocol):
    """The client side of MQTT over WebSocket, between the socket and an MQTT protocol object."""

    def __init__(self, inner: asyncio.Protocol, authority: str, path: str) -> None:
        self.inner = inner
        self.authority = authority
        self.path = path or "/"
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False
        self._ws: WSConnection = WSConnection(ConnectionType.CLIENT)
        self._transport: asyncio.Transport | None = None
        self._inner_connected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        request = Request(host=self.authority, target=self.path, subprotocols=["mqtt"])
        self._transport.write(self._ws.send(request))

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, BytesMessage):
                    if event.data:
                        self.inner.data_received(bytes(event.data))
                    if self.closing:
                        return
                elif isinstance(event, AcceptConnection):
                    self._inner_connected = True
                    self.inner.connection_made(WebSocketTransport(self, self._require_transport()))
                    if not self.upgraded.done():
                        self.upgraded.set_result(None)
                elif isinstance(event, RejectConnection):
                    self._fail_upgrade(f"WebSocket upgrade refused: HTTP {event.status_code}")
                    return
                elif isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        self._send(event.response())
                    self.close_socket()
                    return
                elif isinstance(event, TextMessage):  # [MQTT-6.0.0-1]
                    self.close(_UNSUPPORTED_DATA, "MQTT needs binary frames")
                    return
        except RemoteProtocolError as exc:
            if not self.upgraded.done():
                self._fail_upgrade(f"WebSocket upgrade failed: {exc}")
            else:
                self.abort()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if not self.upgraded.done():
            error = ConnectError(f"connection closed during the WebSocket upgrade{f': {exc}' if exc else ''}")
            self.upgraded.set_exception(error)
            self.upgraded.exception()
        if self._inner_connected:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner_connected:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner_connected:
            self.inner.resume_writing()

    # --- used by WebSocketTransport ---------------------------------------------------------------

    def send_message(self, data: bytes) -> None:
        if not self.closing:
            self._send(BytesMessage(data=data))

    def close(self, code: int = _NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a Close frame, then close the socket (we do not wait for the answering Close)."""
        if not self.closing and self._ws.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=reason))
        self.close_socket()

    def close_socket(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    def _send(self, event: Any) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._ws.send(event))

    def _fail_upgrade(self, message: str) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectError(message))
            self.upgraded.exception()
        self.close_socket()

    def _require_transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport


class WebSocketTransport(asyncio.Transport):
    """What the MQTT Connection writes to: each write one binary WebSocket message."""

    def __init__(self, adapter: WebSocketClient, socket: asyncio.Transport) -> None:
        super().__init__()
        self._adapter = adapter
        self._socket = socket

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._adapter.send_message(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        self._adapter.close()

    def abort(self) -> None:
        self._adapter.abort()

    def is_closing(self) -> bool:
        return self._adapter.closing or self._socket.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._socket.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._socket.pause_reading()

    def resume_reading(self) -> None:
        self._socket.resume_reading()

    def is_reading(self) -> bool:
        return self._socket.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._socket.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._socket.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False
