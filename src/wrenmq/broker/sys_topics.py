"""``$SYS/broker/...`` topics: broker statistics published periodically as retained messages."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .. import __version__
from .message import Message

if TYPE_CHECKING:
    from .broker import Broker


class SysTopics:
    def __init__(self, broker: Broker, interval: float) -> None:
        self.broker = broker
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._last: dict[str, bytes] = {}

    def start(self) -> None:
        self.publish_now()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def values(self) -> dict[str, str]:
        broker = self.broker
        stats = broker.stats
        return {
            "version": f"wrenmq {__version__}",
            "uptime": f"{int(time.time() - broker.started_at)} seconds",
            "clients/connected": str(sum(1 for c in broker.connections if c.connected)),
            "clients/total": str(len(broker.sessions)),
            "clients/disconnected": str(sum(1 for s in broker.sessions.values() if s.connection is None)),
            "messages/received": str(stats.messages_received),
            "messages/sent": str(stats.messages_sent),
            "messages/dropped": str(stats.messages_dropped),
            "bytes/received": str(stats.bytes_received),
            "bytes/sent": str(stats.bytes_sent),
            "subscriptions/count": str(broker.router.count),
            "retained messages/count": str(len(broker.retained)),
            "sessions/owner conflicts": str(stats.session_owner_conflicts),
        }

    def publish_now(self) -> None:
        """Publish every value that changed since the last round, retained, then re-arm."""
        broker = self.broker
        for key, value in self.values().items():
            payload = value.encode()
            if self._last.get(key) == payload:
                continue
            self._last[key] = payload
            broker.route(Message(f"$SYS/broker/{key}", payload, 0, True))
        self._handle = broker.loop.call_later(self.interval, self.publish_now)
