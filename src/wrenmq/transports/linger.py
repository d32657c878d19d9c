"""Closing a socket so that the last packet written to it arrives.

Closing a TCP socket whose receive buffer holds bytes the application never read makes the
kernel answer with a reset, and a reset throws away whatever was still queued to send: a client
that sent a burst without reading (1,025 QoS 2 PUBLISHes past Receive Maximum, a malformed packet
followed by more data) got ECONNRESET instead of the DISCONNECT that said why. So a socket the
broker ends with a reason is handed to a :class:`Linger`: it sends what is buffered, then shuts
down writing (``write_eof``, a FIN; on TLS, whose transports cannot half-close, the close_notify
``close()`` sends), and reads and discards what the peer still sends until the peer closes, for
:data:`LINGER_SECONDS` and :data:`LINGER_BYTES` at most, so a hostile peer cannot hold the socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "Linger", "linger"]

LINGER_SECONDS = 2.0  # longest a closing socket is kept open for the peer to read and close
LINGER_BYTES = 4 * 1024 * 1024  # most a closing socket reads and discards before it is reset


class Linger(asyncio.Protocol):
    """The protocol of a socket the broker has finished with (see the module docstring).

    ``lingering`` is the set of sockets closing this way, so a stopping broker can wait for
    them; each removes itself once its socket is gone.
    """

    def __init__(self, transport: asyncio.Transport, lingering: set[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.lingering = lingering
        self.budget = LINGER_BYTES
        self.closing = False  # close() was called: the transport goes once its buffer is sent
        lingering.add(self)
        transport.set_protocol(self)
        self.timer = loop.call_later(LINGER_SECONDS, self.expire)
        try:
            transport.resume_reading()  # the connection may have paused it (backpressure, rate limit)
            if transport.can_write_eof():
                transport.write_eof()  # a FIN after the buffered data
            else:
                self._close()  # TLS: close_notify after the buffered data, then the peer's is awaited
        except (OSError, RuntimeError):  # the peer is gone already (asyncio: ENOTCONN on shutdown)
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.budget -= len(data)
        if self.budget < 0:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        self.closing = True
        return None  # the peer is done too: the transport closes once what we wrote has been sent

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.lingering.discard(self)

    def expire(self) -> None:
        """Time is up: close if everything was sent, else drop what the peer would not read."""
        if self.closing or self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self._close()

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()


def linger(transport: asyncio.Transport, lingering: set[Any], loop: asyncio.AbstractEventLoop) -> None:
    """Close ``transport`` so that what was written to it reaches the peer (see the module
    docstring); the caller's protocol gets no more calls from it, ``connection_lost`` included.

    A transport that frames its own messages (WebSocket) provides ``close_gracefully`` itself.
    """
    own = getattr(transport, "close_gracefully", None)
    if own is not None:
        own(lingering, loop)
    else:
        Linger(transport, lingering, loop)
