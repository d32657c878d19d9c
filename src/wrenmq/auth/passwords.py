"""Password files: one ``user:$argon2id$...`` line per user, laid out as ``mosquitto_passwd`` does.

Blank lines and ``#`` comments are allowed and kept when the file is rewritten. Hashes are argon2id
(argon2-cffi) with OWASP's recommended minimum parameters (19 MiB, 2 passes, 1 lane): each login
costs a worker thread that much, and argon2-cffi's default profile (64 MiB, 3 passes, 4 lanes) costs
about five times as long per login. Hashes made with other argon2id parameters verify as well.

Files made by ``mosquitto_passwd`` verify too, so users keep their passwords when a broker moves:
``$6$salt$hash`` (SHA-512 of password then salt, Mosquitto 1.x) and ``$7$iterations$salt$hash``
(PBKDF2-HMAC-SHA512, Mosquitto 2's default), checked with ``hashlib`` as Mosquitto checks them. Such a
hash stays as it is until ``wrenmq passwd`` next sets that user's password, which writes argon2id.
"""

from __future__ import annotations

import base64
import binascii
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
SHA512_PREFIX, PBKDF2_PREFIX = "$6$", "$7$"  # mosquitto_passwd's -H sha512 and -H sha512-pbkdf2
MOSQUITTO_DIGEST = 64  # bytes: both of Mosquitto's schemes store a SHA-512-sized digest


@dataclasses.dataclass(frozen=True, slots=True)
class MosquittoHash:
    """A parsed ``$6$`` or ``$7$`` hash; ``iterations`` 0 means ``$6$`` (one SHA-512, no PBKDF2)."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, hashed: str) -> MosquittoHash | None:
        """The hash's parts, or None if ``hashed`` is not a well-formed Mosquitto hash."""
        parts = hashed.split("$")
        try:
            if hashed.startswith(SHA512_PREFIX) and len(parts) == 4:
                iterations, salt, digest = 0, parts[2], parts[3]
            elif hashed.startswith(PBKDF2_PREFIX) and len(parts) == 5 and parts[2].isdigit():
                iterations, salt, digest = int(parts[2]), parts[3], parts[4]
                if iterations < 1:
                    return None
            else:
                return None
            found = cls(iterations, base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True))
        except (ValueError, binascii.Error):
            return None
        return found if found.salt and len(found.digest) == MOSQUITTO_DIGEST else None

    def compute(self, secret: bytes) -> bytes:
        if self.iterations == 0:
            return hashlib.sha512(secret + self.salt).digest()
        return hashlib.pbkdf2_hmac("sha512", secret, self.salt, self.iterations, MOSQUITTO_DIGEST)

    def verify(self, secret: bytes) -> bool:
        return hmac.compare_digest(self.compute(secret), self.digest)

    def dummy(self) -> MosquittoHash:
        """A hash of the same kind and cost, of a random secret (for unknown users)."""
        return MosquittoHash(self.iterations, secrets.token_bytes(12), secrets.token_bytes(MOSQUITTO_DIGEST))


def _verify_hash(stored: str | MosquittoHash, secret: bytes) -> bool:
    """Does ``secret`` match ``stored`` (argon2id text, or a parsed Mosquitto hash)?"""
    if isinstance(stored, MosquittoHash):
        return stored.verify(secret)
    try:
        return hasher().verify(stored, secret)
    except (VerificationError, InvalidHashError):  # a mismatch (VerifyMismatchError) or a bad hash
        return False


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
        self._mosquitto: dict[str, MosquittoHash] = {}  # users whose hash mosquitto_passwd made
        self.plain: dict[str, str] = {}  # with load(plain=True): users whose line holds a password, not a hash
        # The file's lines in order: a user name (its hash is in ``hashes``) or a comment/blank line.
        self._lines: list[tuple[str | None, str]] = []
        # user -> keyed BLAKE2b of the password that last verified. argon2 costs ~20-30 ms of a worker
        # thread per check; devices reconnect with the same credentials, so a repeat costs microseconds.
        # Only successes are remembered (one entry per user); a changed file is a new PasswordFile.
        self._verified: dict[str, bytes] = {}

    @classmethod
    def load(cls, path: Path, plain: bool = False) -> PasswordFile:
        """Read ``path``; raises PasswordFileError naming the file (and line) for anything wrong.
        With ``plain``, a line whose text is no hash wrenmq knows is a plain-text password
        (``mosquitto_passwd -U``'s input), kept in ``plain`` for ``hash_plain``."""
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
            seen[username] = number
            if plain and not _known_hash(hashed):
                found.plain[username] = line.partition(":")[2]
                hashed = ARGON2ID_PREFIX  # set by hash_plain
            else:
                _check_hash(path, number, hashed)
            found.hashes[username] = hashed
            mosquitto = MosquittoHash.parse(hashed)
            if mosquitto is not None:
                found._mosquitto[username] = mosquitto
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
        stored: str | MosquittoHash | None = self._mosquitto.get(username) or self.hashes.get(username)
        if stored is None:
            stored = self._dummy()
        ok = _verify_hash(stored, secret) and username in self.hashes
        if ok:
            self._verified[username] = digest
        return ok

    def _dummy(self) -> str | MosquittoHash:
        """Something to verify an unknown user against that costs what the file's first user costs."""
        for username, stored in self.hashes.items():
            mosquitto = self._mosquitto.get(username)
            if mosquitto is not None:
                return mosquitto.dummy()
            return _dummy_hash(argon2.extract_parameters(stored))
        return _dummy_hash(None)

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
        self._mosquitto.pop(username, None)  # a Mosquitto hash is replaced by argon2id here, and only here
        self._verified.pop(username, None)
        if new:
            self._lines.append((username, ""))
        return new

    def delete(self, username: str) -> bool:
        """Remove ``username``; False if it was not there."""
        if self.hashes.pop(username, None) is None:
            return False
        self._mosquitto.pop(username, None)
        self._verified.pop(username, None)
        self._lines = [entry for entry in self._lines if entry[0] != username]
        return True

    def hash_plain(self) -> list[str]:
        """Replace each plain-text password read with ``load(plain=True)`` by its argon2id hash
        (``mosquitto_passwd -U``); returns the users changed."""
        changed = list(self.plain)
        for username in changed:
            self.set_password(username, self.plain.pop(username))
        return changed

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


def _known_hash(hashed: str) -> bool:
    if MosquittoHash.parse(hashed) is not None:
        return True
    try:
        return hashed.startswith(ARGON2ID_PREFIX) and bool(argon2.extract_parameters(hashed))
    except InvalidHashError:
        return False


def _check_hash(path: Path, line: int, hashed: str) -> None:
    if hashed.startswith((SHA512_PREFIX, PBKDF2_PREFIX)):
        if MosquittoHash.parse(hashed) is None:
            raise PasswordFileError(path, f"malformed mosquitto_passwd hash ({hashed[:3]}...)", line)
        return
    if not hashed.startswith(ARGON2ID_PREFIX):
        raise PasswordFileError(
            path,
            f"unsupported password hash {hashed[:12]!r}: expected argon2id, or $6$/$7$ from mosquitto_passwd "
            "(a plain-text password? wrenmq passwd -U hashes them)",
            line,
        )
    try:
        argon2.extract_parameters(hashed)
    except InvalidHashError:
        raise PasswordFileError(path, "malformed argon2id hash", line) from None
