"""Test hooks that record who logged in and what was dropped, and a way to add hooks to a broker
running in its thread."""

from __future__ import annotations

import queue
from collections import Counter
from typing import Any

from wrenmq.hooks import Hook
from wrenmq.pytest_plugin import WrenmqServer


class RecordUsernames(Hook):
    """Records the username of every client that connects (after the authentication hooks ran)."""

    name = "record-usernames"

    def __init__(self) -> None:
        self.usernames: queue.Queue[str | None] = queue.Queue()

    def on_connect(self, client: Any, packet: Any) -> None:
        self.usernames.put(client.username)


class CountDrops(Hook):
    """Counts what ``on_dropped`` is told, by (client id, reason), and keeps the first ``keep``
    drops as (client id, reason, topic, payload or None)."""

    name = "count-drops"

    def __init__(self, keep: int = 100) -> None:
        self.counts: Counter[tuple[str | None, str]] = Counter()
        self.seen: list[tuple[str | None, str, str | None, bytes | None]] = []
        self.keep = keep

    def on_dropped(self, client_id: str | None, topic: str | None, reason: str, detail: str, message: Any) -> None:
        self.counts[client_id, reason] += 1
        if len(self.seen) < self.keep:
            self.seen.append((client_id, reason, topic, None if message is None else message.payload))


def add_hook(server: WrenmqServer, hook: Hook) -> None:
    """Register ``hook`` on the running broker, from its own event loop."""

    async def add() -> None:
        server.broker.hooks.add(hook)

    server.call(add())
