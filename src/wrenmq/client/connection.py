"""One network connection to the broker: an ``asyncio.Protocol`` that turns bytes into packets.

The codec does the parsing; this class adds what belongs to a single connection: waiting for the
CONNACK, Keep Alive (a PINGREQ whenever nothing has been sent or received for the keep-alive
interval [MQTT-3.1.2-23], and a dead connection declared when the PINGREQ gets no answer within
another interval), and read/write flow control. Every other packet goes to the client's
``packet_received``, which owns the QoS state machine. When the connection ends, :attr:`closed`
resolves with the reason, a :class:`~wrenmq.client.errors.ClientError`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from ..mqtt import packets as p
from ..mqtt.codec import Parser, encode
from ..mqtt.errors import ProtocolError as MqttProtocolError
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from .errors import ClientError, ConnectError, Disconnected, ProtocolError, describe_reason

__all__ = ["Connection", "PacketHandler"]

log = logging.getLogger("wrenmq.client")

_CLOSE_GRACE = 2.0  # seconds a closing connection may take to flush before it is aborted


class PacketHandler(Protocol):
    def packet_received(self, connection: Connection, packet: p.AnyPacket) -> None: ...

    def connection_closed(self, connection: Connection, reason: ClientError) -> None: ...


class Connection(asyncio.Protocol):
    """The client's end of one MQTT network connection (TCP, TLS or WebSocket)."""

    def __init__(self, handler: PacketHandler, version: int, max_packet_size: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.handler = handler
        self.version = version
        self.parser = Parser(max_packet_size, version)
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[p.Connack] = self._loop.create_future()
        self.closed: asyncio.Future[ClientError] = self._loop.create_future()
        self._reason: ClientError | None = None
        self._keepalive = 0.0
        self._last_sent = self._last_received = self._loop.time()
        self._ping_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []

    @property
    def reason(self) -> ClientError | None:
        """Why the connection is closing or closed, once it is."""
        return self._reason

    @property
    def accepted(self) -> bool:
        """A CONNACK has arrived (the client decides whether it accepts it)."""
        return self.connack.done() and not self.connack.cancelled() and self.connack.exception() is None

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_received = self._loop.time()
        self._ping_deadline = None  # any bytes show the broker is alive
        try:
            packets = self.parser.feed(data)
        except MqttProtocolError as exc:
            self.fail(ProtocolError(exc.reason_code, f"malformed data from the broker: {exc.args[0]}"))
            return
        debug = log.isEnabledFor(logging.DEBUG)
        for packet in packets:
            if not self.is_open:
                return
            if debug:
                log.debug("received %r", packet)
            try:
                if not self.connack.done():
                    if packet.type != p.CONNACK:  # [MQTT-3.2.0-1]
                        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"[MQTT-3.2.0-1] {_name(packet)} before CONNACK")
                    self.connack.set_result(cast(p.Connack, packet))
                elif packet.type == p.DISCONNECT:
                    self._disconnect_received(cast(p.Disconnect, packet))
                elif packet.type == p.PINGRESP:
                    pass
                else:
                    self.handler.packet_received(self, packet)
            except ProtocolError as exc:
                self.fail(exc)
                return
            except Exception:  # a bug on our side: drop this connection, not the event loop's
                log.exception("internal error handling %s from the broker", _name(packet))
                self.fail(Disconnected(f"internal error handling {_name(packet)}; see the log"))
                return
        error = self.parser.error
        if error is not None and self.is_open:  # the packets before the bad one were handled
            self.fail(ProtocolError(error.reason_code, f"malformed data from the broker: {error.args[0]}"))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reason = self._reason
        if reason is None:
            if exc is not None:
                reason = Disconnected(f"connection lost: {exc}")
                reason.__cause__ = exc
            else:
                reason = Disconnected("the broker closed the connection")
        if not self.connack.done():
            error = ConnectError(f"connection closed before CONNACK: {reason}")
            error.__cause__ = reason
            self.connack.set_exception(error)
            self.connack.exception()  # retrieved: whoever awaits it still gets it
        self._wake_writers(reason)
        if not self.closed.done():
            self.closed.set_result(reason)
            if self.accepted:
                self.handler.connection_closed(self, reason)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers(None)

    # --- used by the client ---------------------------------------------------------------------

    def send(self, packet: p.AnyPacket) -> None:
        """Write ``packet``; silently nothing once the connection is closing (the session resends)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sending %r", packet)
        transport.write(encode(packet, self.version))
        self._last_sent = self._loop.time()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self._writing_paused and self.is_open:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def start_keepalive(self, seconds: float) -> None:
        """Keep the connection alive at ``seconds`` (the server's Keep Alive, if it sent one); 0: off."""
        self._keepalive = seconds
        if seconds and self._timer is None and self.is_open:
            self._timer = self._loop.call_at(min(self._last_sent, self._last_received) + seconds, self._tick)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.is_open:
            assert self.transport is not None
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.is_open:
                assert self.transport is not None
                self.transport.resume_reading()

    def fail(self, reason: ClientError) -> None:
        """Close the connection because of ``reason`` (telling an MQTT 5 broker why, if it was us)."""
        if self._reason is None:
            self._reason = reason
        if isinstance(reason, ProtocolError) and self.version == 5 and self.accepted and self.is_open:
            self.send(p.Disconnect(reason.reason_code, {PropertyId.REASON_STRING: str(reason.args[0])[:200]}))
            self.close()  # flushes the DISCONNECT; abort() would discard it
            self._loop.call_later(_CLOSE_GRACE, self.abort)  # in case the broker does not read it
        else:
            self.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- internals ------------------------------------------------------------------------------

    def _disconnect_received(self, packet: p.Disconnect) -> None:
        if self.version != 5:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "DISCONNECT from the server before MQTT 5")
        message = f"the broker disconnected: {describe_reason(packet.reason_code)}"
        self.fail(Disconnected(message, packet.reason_code, packet.properties.get(PropertyId.REASON_STRING)))

    def _tick(self) -> None:
        """Send PINGREQ when idle for a keep-alive interval; fail when a PINGREQ goes unanswered."""
        self._timer = None
        if not self.is_open or not self._keepalive:
            return
        now = self._loop.time()
        keepalive = self._keepalive
        if self._ping_deadline is not None:
            if now >= self._ping_deadline - 0.001:
                if self.reading_paused:  # we are not reading, so no answer could arrive: not its fault
                    self._ping_deadline = now + keepalive
                else:
                    self.fail(Disconnected(f"keep-alive timeout: no answer to PINGREQ within {keepalive:g}s"))
                    return
            when = self._ping_deadline
        else:
            idle_since = min(self._last_sent, self._last_received)
            if now - idle_since >= keepalive - 0.001:
                self.send(p.Pingreq())
                self._ping_deadline = when = now + keepalive
            else:
                when = idle_since + keepalive
        self._timer = self._loop.call_at(when, self._tick)

    def _wake_writers(self, error: ClientError | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
                    waiter.exception()


def _name(packet: p.AnyPacket) -> str:
    return p.PACKET_NAMES.get(packet.type, str(packet.type))
