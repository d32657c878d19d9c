"""Persistence of everything durable (retained messages, persistent sessions, device presence, resources
and their change events, bridge outboxes), behind one write-behind interface."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    NEVER_EXPIRES,
    QUEUED,
    RELEASED,
    SENT,
    Json,
    LoadedSession,
    LoadedState,
    OutboxRecord,
    ResourceConflict,
    Storage,
    StoredMessage,
    StoredSession,
    StoredSessionMessage,
    StoredSubscription,
)
from .memory import MemoryStorage

if TYPE_CHECKING:
    from .sqlite import SqliteStorage

__all__ = [
    "NEVER_EXPIRES",
    "QUEUED",
    "RELEASED",
    "SENT",
    "Json",
    "LoadedSession",
    "LoadedState",
    "MemoryStorage",
    "OutboxRecord",
    "ResourceConflict",
    "SqliteStorage",
    "Storage",
    "StoredMessage",
    "StoredSession",
    "StoredSessionMessage",
    "StoredSubscription",
    "open_storage",
]


def open_storage(kind: str, path: Path, durability: str, commit_interval: float) -> Storage:
    """The backend named by the ``storage`` setting; ``path`` is the SQLite database file."""
    if kind == "memory":
        return MemoryStorage()
    if kind == "sqlite":
        from .sqlite import SqliteStorage

        return SqliteStorage(path, durability, commit_interval)
    raise ValueError(f"unknown storage kind {kind!r}; expected 'memory' or 'sqlite'")


def __getattr__(name: str) -> Any:
    # SqliteStorage (and with it sqlite3, 1.2 MiB) is imported when first used, not by every broker.
    if name == "SqliteStorage":
        from .sqlite import SqliteStorage

        return SqliteStorage
    raise AttributeError(name)
