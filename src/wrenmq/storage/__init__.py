"""Persistence of everything durable (retained messages, persistent sessions, device presence, resources
and their change events, bridge outboxes), behind one write-behind interface."""

from __future__ import annotations

from pathlib import Path

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
        return SqliteStorage(path, durability, commit_interval)
    raise ValueError(f"unknown storage kind {kind!r}; expected 'memory' or 'sqlite'")
