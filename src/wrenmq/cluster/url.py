"""How a cluster URL names its Redis: directly (``redis://``, ``rediss://``, ``unix://``, as
redis-py reads them) or through Redis Sentinel, in the form python-socketio's Redis manager reads
too, so the Socket.IO bridge can be given the same URL:
``redis+sentinel://[[user]:password@]host:port[,host:port...]/db/master``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["connect", "parse_sentinel_url", "safe_url"]


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """(sentinels, master name, connection options) of a ``redis+sentinel://`` URL;
    ``ValueError`` naming what is missing."""
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        raise ValueError("not a redis+sentinel:// URL")
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = []
    for host_port in hosts.split(","):
        host, sep, port = host_port.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"sentinel {host_port!r}: expected host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if len(path) != 2 or not path[0].isdigit():
        raise ValueError("expected /<db>/<master name> after the sentinels, e.g. /0/mymaster")
    options: dict[str, Any] = {"db": int(path[0])}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    return sentinels, path[1], options


def connect(url: str) -> Any:
    """A redis.asyncio client for ``url`` (replies as bytes); through Sentinel, the master's,
    which follows a failover."""
    import redis.asyncio as aioredis

    if not url.startswith("redis+sentinel://"):
        return aioredis.from_url(url, decode_responses=False, health_check_interval=10)
    from redis.asyncio.sentinel import Sentinel

    sentinels, master, options = parse_sentinel_url(url)
    password = options.get("password")
    sentinel = Sentinel(sentinels, sentinel_kwargs={"password": password} if password else None)
    return sentinel.master_for(master, decode_responses=False, health_check_interval=10, **options)


def safe_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
