"""What a transport in front of an MQTT connection needs of it (``ServedConnection``): named in a
module of its own, without wsproto, so a broker with no ws/wss listener never imports the WebSocket
stack (``Listener`` imports ``websocket.py`` only to bind a ws or wss listener; issue 19's idle
footprint: wsproto and h11 are 0.9 MiB)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["ServedConnection", "TransportCounters", "TransportLimits"]


class TransportLimits(Protocol):
    """The limits the adapter applies before the connection sees a byte."""

    @property
    def max_packet_size(self) -> int: ...

    @property
    def connect_timeout(self) -> float: ...


class TransportCounters(Protocol):
    """Where the adapter counts what only it sees."""

    internal_errors: int
    websocket_upgrades_refused: int


class ServedConnection(Protocol):
    """What the adapter needs of the MQTT connection behind it (the broker's ``Connection``):
    the asyncio.Protocol calls, its loop and limits, the counters, and the set where sockets
    closing with a reason wait (``linger``). Named here, so that transports import nothing of
    the broker's."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def limits(self) -> TransportLimits: ...

    @property
    def counters(self) -> TransportCounters: ...

    @property
    def lingering(self) -> set[Any]: ...

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def close(self, reason: str) -> None: ...
