"""Opening the byte stream under the client's :class:`~wrenmq.client.connection.Connection`:
TCP and TLS are asyncio's own transports; WebSocket is :mod:`wrenmq.client.websocket` on top of them.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from .errors import ConnectError

__all__ = ["open_transport"]


async def open_transport(
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
    websocket: bool,
    ws_path: str,
    local_address: str | None = None,
) -> None:
    """Connect ``protocol`` to ``host:port`` (from ``local_address``, if given); returns once it may
    send MQTT (upgrade done, for ws)."""
    loop = asyncio.get_running_loop()
    extra: dict[str, Any] = {}
    if tls is not None:
        extra = {"ssl": tls, "server_hostname": server_hostname or host}
    if local_address is not None:
        extra["local_addr"] = (local_address, 0)
    try:
        if not websocket:
            await loop.create_connection(lambda: protocol, host, port, **extra)
            return
        from .websocket import WebSocketClient  # only WebSocket users pay for importing wsproto

        default_port = 443 if tls is not None else 80
        authority = _host_header(host, port, default_port)
        adapter = WebSocketClient(protocol, authority, ws_path)
        await loop.create_connection(lambda: adapter, host, port, **extra)
        await adapter.upgraded
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc


def _host_header(host: str, port: int, default_port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == default_port else f"{name}:{port}"
