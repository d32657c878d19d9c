"""API keys: bearer tokens for the management API, stored hashed.

A key is ``wmq_`` plus 32 random bytes (URL-safe base64), shown once by ``wrenmq apikey create``.
The file keeps each key's name, SHA-256 and whether it is read-only: a key has 256 bits of entropy,
so a fast hash is enough (no password stretching needed), and a stolen file reveals no key. The
file is re-read when it changes on disk, so keys created while the broker runs work at once.

The API reaches the store through its coroutines (``lookup``, ``lookup_session``, ``sign_in``,
``sign_out``, ``keys``, ``add``, ``revoke``): here they answer from the file and memory; in a
cluster ``cluster_keys.ClusterKeyStore`` answers them from Redis, so every node sees the same keys
and sessions. The plain methods stay for the ``wrenmq apikey`` command and the request limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..storage.private import make_private_dir

__all__ = ["PREFIX", "SESSION_PREFIX", "ApiKey", "ApiKeyStore", "ConsoleSession", "check_name", "describe"]

PREFIX = "wmq_"
SESSION_PREFIX = "wms_"  # a console sign-in by user name and password (POST /api/v1/session)


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    read_only: bool
    created: float


@dataclass(frozen=True)
class ConsoleSession:
    """A user signed in with a password: ``key`` is named after the user."""

    key: ApiKey
    expires: float
    auth: Any


class ApiKeyStore:
    """The keys in one JSON file (``Config.api_keys_path``), re-read when its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._sessions: dict[str, ConsoleSession] = {}  # SHA-256 of the token -> the session

    # -- sessions: short-lived keys for users who signed in; in memory only ----------------------

    def open_session(self, name: str, read_only: bool, seconds: float, auth: Any = None) -> str:
        """A token that signs in as user ``name`` for ``seconds`` (until the process ends);
        ``auth`` is what the authentication hook answered (a JWT's ACL claims live there)."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        self._sessions = {d: s for d, s in self._sessions.items() if s.expires > now}  # drop expired ones
        self._sessions[digest] = ConsoleSession(ApiKey(name, digest, read_only, now), now + seconds, auth)
        return token

    def session(self, token: str) -> ConsoleSession | None:
        """The console session ``token`` opened, unless it ended."""
        found = self._sessions.get(hashlib.sha256(token.encode()).hexdigest())
        return found if found is not None and found.expires > time.time() else None

    def close_session(self, token: str) -> bool:
        return self._sessions.pop(hashlib.sha256(token.encode()).hexdigest(), None) is not None

    # -- what the API awaits (a cluster's store answers from Redis) -------------------------------

    async def lookup(self, token: str) -> ApiKey | None:
        """The key (or console session's key) ``token`` signs in, or None."""
        return self.verify(token)

    async def lookup_session(self, token: str) -> ConsoleSession | None:
        return self.session(token)

    async def sign_in(self, name: str, read_only: bool, seconds: float, auth: Any = None) -> str:
        return self.open_session(name, read_only, seconds, auth)

    async def sign_out(self, token: str) -> bool:
        return self.close_session(token)

    async def keys(self) -> list[ApiKey]:
        return self.all()

    async def add(self, name: str, read_only: bool = False) -> str:
        return self.create(name, read_only)

    async def revoke(self, name: str) -> bool:
        return self.delete(name)

    # -- reading ------------------------------------------------------------------------------

    def all(self) -> list[ApiKey]:
        self._refresh()
        return sorted(self._keys.values(), key=lambda key: key.name)

    def verify(self, token: str) -> ApiKey | None:
        """The key ``token`` belongs to, or None (compared in constant time)."""
        if token.startswith(SESSION_PREFIX):
            session = self.session(token)
            return session.key if session is not None else None
        digest = hashlib.sha256(token.encode()).hexdigest()
        self._refresh()
        found = None
        for key in self._keys.values():
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self.path.read_text())
            keys = {item["name"]: ApiKey(**item) for item in raw.get("keys", [])}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"API keys file {self.path}: cannot read: {exc}") from None
        self._keys, self._stamp = keys, stamp

    # -- editing ------------------------------------------------------------------------------

    def create(self, name: str, read_only: bool = False) -> str:
        """Add a key named ``name``; returns the token (the only time it exists in clear)."""
        check_name(name)
        self._refresh()
        if name in self._keys:
            raise ValueError(f"an API key named {name!r} exists; delete it first")
        token = PREFIX + secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        self._keys[name] = ApiKey(name, digest, read_only, time.time())
        self._save()
        return token

    def delete(self, name: str) -> bool:
        self._refresh()
        if self._keys.pop(name, None) is None:
            return False
        self._save()
        return True

    def _save(self) -> None:
        make_private_dir(self.path.parent)  # the data dir (0700) by default
        data = json.dumps({"keys": [asdict(key) for key in self._keys.values()]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".api_keys.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._stamp = None  # re-read (and re-stamp) on next use


def check_name(name: str) -> None:
    """``ValueError`` unless ``name`` can name a key."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError("a key name is 1-64 letters, digits, '-', '_' or '.'")


def describe(key: ApiKey) -> dict[str, Any]:
    return {"name": key.name, "read_only": key.read_only, "created": key.created}
