"""Password files: one ``user:$argon2id$...`` line per user, laid out as ``mosquitto_passwd`` does.

Blank lines and ``#`` comments are allowed and kept when the file is rewritten. Hashes are argon2id
(argon2-cffi) with OWASP's recommended minimum parameters (19 MiB, 2 passes, 1 lane): each login
costs a worker thread that much, and argon2-cffi's default profile (64 MiB, 3 passes, 4 lanes) costs
about five times as long per login. Hashes made with other argon2id parameters verify as well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import PasswordFileError

__all__ = ["PasswordFile", "PasswordFileError", "check_username", "hasher"]

ARGON2ID_PREFIX = "$argon2id$"


@functools.cache
def hasher() -> argon2.PasswordHasher:
    """The hasher new passwords are stored with (see the module docstring for the parameters)."""
    return argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


_dummies: dict[tuple[object, ...] | None, str] = {}


def _dummy_hash(parameters: argon2.Parameters | None) -> str:
    """A hash of a random secret with these parameters (None: ours), to verify unknown users against;
    made once per set of parameters."""
    key = None if parameters is None else dataclasses.astuple(parameters)
    found = _dummies.get(key)
    if found is None:
        made = hasher() if parameters is None else argon2.PasswordHasher.from_parameters(parameters)
        found = _dummies[key] = made.hash(secrets.token_bytes(16))
    return found


def check_username(username: str) -> str | None:
    """Why ``username`` cannot be stored in a password file, or None if it can."""
    if not username:
        return "the user name is empty"
    if username != username.strip():
        return f"user name {username!r} starts or ends with white space"
    if ":" in username:
        return f"user name {username!r} contains ':'"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in username):
        return f"user name {username!r} contains a control character"
    if username.startswith("#"):
        return f"user name {username!r} would read as a comment"
    if len(username.encode()) > 65535:
        return "the user name is longer than MQTT allows (65535 bytes)"
    return None


_CACHE_KEY = secrets.token_bytes(32)  # per process: the cache's digests are useless elsewhere


class PasswordFile:
    """The users of one password file and their argon2id hashes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hashes: dict[str, str] = {}
        # The file's lines in order: a user name (its hash is in ``hashes``) or a comment/blank line.
        self._lines: list[tuple[str | None, str]] = []
        # user -> keyed BLAKE2b of the password that last verified. argon2 costs ~20-30 ms of a worker
        # thread per check; devices reconnect with the same credentials, so a repeat costs microseconds.
        # Only successes are remembered (one entry per user); a changed file is a new PasswordFile.
        self._verified: dict[str, bytes] = {}

    @classmethod
    def load(cls, path: Path) -> PasswordFile:
        """Read ``path``; raises PasswordFileError naming the file (and line) for anything wrong."""
        found = cls(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PasswordFileError(path, f"cannot read: {exc.strerror or exc}") from None
        seen: dict[str, int] = {}
        for number, raw in enumerate(data.splitlines(), 1):
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                raise PasswordFileError(path, "not UTF-8", number) from None
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                found._lines.append((None, line))
                continue
            username, sep, hashed = line.partition(":")
            hashed = hashed.strip()
            if not sep or not hashed:
                raise PasswordFileError(path, "expected user:hash (create entries with wrenmq passwd add)", number)
            problem = check_username(username)
            if problem:
                raise PasswordFileError(path, problem, number)
            if username in seen:
                raise PasswordFileError(path, f"user {username!r} already appears on line {seen[username]}", number)
            _check_hash(path, number, hashed)
            seen[username] = number
            found.hashes[username] = hashed
            found._lines.append((username, ""))
        return found

    # -- checking ---------------------------------------------------------------------------------

    def remembered(self, username: str, password: bytes | str) -> bool:
        """True if ``password`` is the one that last verified for ``username``: microseconds, no
        hash, so the broker answers it on the event loop. False says only "not known": ``verify``."""
        remembered = self._verified.get(username)
        if remembered is None or username not in self.hashes:
            return False
        secret = password.encode() if isinstance(password, str) else password
        return hmac.compare_digest(remembered, hashlib.blake2b(secret, key=_CACHE_KEY).digest())

    def verify(self, username: str, password: bytes | str) -> bool:
        """True if ``password`` is ``username``'s. An unknown user costs one verify against a dummy
        hash with the file's parameters, so the time taken does not tell which users exist.
        Thread-safe: the broker runs it on a worker thread (argon2 releases the GIL)."""
        secret = password.encode() if isinstance(password, str) else password
        digest = hashlib.blake2b(secret, key=_CACHE_KEY).digest()
        remembered = self._verified.get(username)
        if remembered is not None and username in self.hashes and hmac.compare_digest(remembered, digest):
            return True
        stored = self.hashes.get(username)
        if stored is None:
            stored = _dummy_hash(self._parameters())
        try:
            ok = hasher().verify(stored, secret) and username in self.hashes
        except (VerificationError, InvalidHashError):  # a mismatch (VerifyMismatchError) or a bad hash
            return False
        if ok:
            self._verified[username] = digest
        return ok

    def _parameters(self) -> argon2.Parameters | None:
        for stored in self.hashes.values():
            return argon2.extract_parameters(stored)
        return None

    def usernames(self) -> list[str]:
        return list(self.hashes)

    # -- editing ----------------------------------------------------------------------------------

    def set_password(self, username: str, password: str) -> bool:
        """Add ``username`` or replace its password; True if the user is new."""
        problem = check_username(username)
        if problem:
            raise ValueError(problem)
        if not password:
            raise ValueError("the password is empty")
        new = username not in self.hashes
        self.hashes[username] = hasher().hash(password)
        self._verified.pop(username, None)
        if new:
            self._lines.append((username, ""))
        return new

    def delete(self, username: str) -> bool:
        """Remove ``username``; False if it was not there."""
        if self.hashes.pop(username, None) is None:
            return False
        self._verified.pop(username, None)
        self._lines = [entry for entry in self._lines if entry[0] != username]
        return True

    def dumps(self) -> str:
        lines = [text if user is None else f"{user}:{self.hashes[user]}" for user, text in self._lines]
        return "".join(line + "\n" for line in lines)

    def save(self) -> None:
        """Write atomically (a temporary file in the same directory, then rename) with mode 0600."""
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(self.dumps())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable, where the OS allows it
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _check_hash(path: Path, line: int, hashed: str) -> None:
    if not hashed.startswith(ARGON2ID_PREFIX):
        scheme = hashed.split("$")[1] if hashed.startswith("$") and hashed.count("$") > 1 else ""
        kind = {"6": "SHA-512 (Mosquitto)", "7": "PBKDF2-SHA512 (Mosquitto)"}.get(scheme, repr(hashed[:12]))
        raise PasswordFileError(
            path, f"unsupported password hash {kind}: wrenmq stores argon2id; set it again with wrenmq passwd", line
        )
    try:
        argon2.extract_parameters(hashed)
    except InvalidHashError:
        raise PasswordFileError(path, "malformed argon2id hash", line) from None
