"""Errors of the files auth reads: each names the file and, where it can, the line."""

from __future__ import annotations

from pathlib import Path


class AuthFileError(ValueError):
    """A file cannot be read or a line in it is malformed."""

    kind = "file"

    def __init__(self, path: Path, problem: str, line: int | None = None) -> None:
        where = f"{self.kind} {path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line


class PasswordFileError(AuthFileError):
    kind = "password file"


class AclFileError(AuthFileError):
    kind = "ACL file"
