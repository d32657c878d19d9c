"""FastAPI dependencies for the API key check: ``Depends(require_key)`` on reads,
``Depends(require_write)`` on anything that changes the broker."""

from __future__ import annotations

from fastapi import HTTPException, Request

from .keys import ApiKey, ApiKeyStore

__all__ = ["require_key", "require_write"]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_key(request: Request) -> ApiKey:
    """FastAPI dependency: a valid API key (Authorization: Bearer <key>), else 401."""
    store: ApiKeyStore = request.app.state.api_keys
    token = _bearer(request)
    key = store.verify(token) if token else None
    if key is None:
        raise HTTPException(
            401,
            "a valid API key is required (Authorization: Bearer <key>; create one with `wrenmq apikey create NAME`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


def require_write(request: Request) -> ApiKey:
    """FastAPI dependency: a valid API key that may change things, else 401 / 403."""
    key = require_key(request)
    if key.read_only:
        raise HTTPException(403, f"API key {key.name!r} is read-only")
    return key
