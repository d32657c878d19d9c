"""Password files for tests: written through wrenmq's own ``PasswordFile`` (argon2id)."""

from __future__ import annotations

from pathlib import Path

from wrenmq.auth.passwords import PasswordFile

__all__ = ["write_passwords"]


def write_passwords(path: Path, **users: str) -> Path:
    """Write ``users`` (name=password) to the password file at ``path``; returns ``path``."""
    passwords = PasswordFile(path)
    for username, password in users.items():
        passwords.set_password(username, password)
    passwords.save()
    return path
