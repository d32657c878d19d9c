"""Broker URLs: ``mqtt://[user[:password]@]host[:port][/path]`` and its secure and WebSocket kin.

=================== ========= ===== ============
scheme              transport TLS   default port
=================== ========= ===== ============
mqtt, tcp           tcp       no    1883
mqtts, ssl, tls     tcp       yes   8883
ws                  ws        no    80
wss                 ws        yes   443
=================== ========= ===== ============

For ws and wss the path is the WebSocket path (``/mqtt`` when empty); for the others it is free
for the caller (``wrenmq pub/sub -L`` reads the topic from it, as mosquitto_pub/sub do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["SCHEMES", "BrokerURL", "parse_url"]

SCHEMES: dict[str, tuple[Literal["tcp", "ws"], bool, int]] = {
    "mqtt": ("tcp", False, 1883),
    "tcp": ("tcp", False, 1883),
    "mqtts": ("tcp", True, 8883),
    "ssl": ("tcp", True, 8883),
    "tls": ("tcp", True, 8883),
    "ws": ("ws", False, 80),
    "wss": ("ws", True, 443),
}


@dataclass(frozen=True, slots=True)
class BrokerURL:
    scheme: str
    host: str
    port: int
    transport: Literal["tcp", "ws"]
    tls: bool
    username: str | None = None
    password: str | None = None
    path: str = ""  # percent-decoded, with its leading "/"


def parse_url(url: str) -> BrokerURL:
    """Parse a broker URL; ``ValueError`` says what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise ValueError(f"unsupported URL scheme in {url!r}: use one of {known}")
    transport, tls, default_port = SCHEMES[scheme]
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    return BrokerURL(
        scheme,
        parts.hostname,
        port if port is not None else default_port,
        transport,
        tls,
        unquote(parts.username) if parts.username is not None else None,
        unquote(parts.password) if parts.password is not None else None,
        unquote(parts.path),
    )
