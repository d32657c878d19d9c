"""How a realtime request is refused: one exception that every face (Socket.IO, polling, the
console's sign-in) maps to its HTTP status."""

from __future__ import annotations

__all__ = ["Denied"]


class Denied(Exception):
    """A realtime request refused: ``status`` is the HTTP status it maps to (401, 403, 422)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
