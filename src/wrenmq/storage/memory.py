"""No persistence: the broker's in-memory state is all there is, and it dies with the process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .base import LoadedState, Storage, StoredMessage, StoredSession, StoredSessionMessage


class MemoryStorage(Storage):
    """Accepts every write and keeps none, so that ``storage = "memory"`` costs nothing on the hot path."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> LoadedState:
        self._loop = loop
        return LoadedState(retained=[], sessions=[])

    def retain_set(self, msg: StoredMessage) -> None:
        pass

    def retain_delete(self, topic: str) -> None:
        pass

    def session_put(self, session: StoredSession) -> None:
        pass

    def session_delete(self, client_id: str) -> None:
        pass

    def message_add(self, client_id: str, msg: StoredSessionMessage) -> None:
        pass

    def message_update(self, client_id: str, seq: int, packet_id: int | None, state: int) -> None:
        pass

    def message_delete(self, client_id: str, seq: int) -> None:
        pass

    def inbound_add(self, client_id: str, packet_id: int) -> None:
        pass

    def inbound_delete(self, client_id: str, packet_id: int) -> None:
        pass

    @property
    def dirty(self) -> bool:
        return False

    def barrier(self, callback: Callable[[], None]) -> None:
        (self._loop or asyncio.get_running_loop()).call_soon(callback)

    async def close(self) -> None:
        pass
