"""Files only the broker's user may read: the data directory (0700) and every file wrenmq creates
in it (0600), whatever the umask.

Queued and retained payloads, device registries, bridge outboxes and API key hashes live there.
What wrenmq creates is created private; what exists already is left as its operator made it, with
a start-up warning naming the path and its mode when group or others may read it (as Mosquitto
warns about a world-readable password file).

SQLite creates a database's ``-wal``, ``-shm`` and ``-journal`` files itself, with the database
file's permission bits (``robust_open`` in os_unix.c fchmods them to the database's mode, so the
umask cannot widen them). Creating the database file 0600 before SQLite first opens it is therefore
enough for all of them, and the process umask, which other threads share, is never touched.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "connect_sqlite", "make_private_dir", "prepare_database", "warn_if_open"]

log = logging.getLogger("wrenmq.storage")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def make_private_dir(path: Path) -> None:
    """Create the directory ``path`` with mode 0700 if it is missing (missing parents get the usual
    mode, as ``mkdir -p`` gives them); an existing one is left alone."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:  # made meanwhile by someone else: theirs, not ours to change
        return
    os.chmod(path, PRIVATE_DIR)  # exactly 0700: the umask may only have narrowed it


def create_private_file(path: Path) -> bool:
    """Create the empty file ``path`` with mode 0600 unless it exists; True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return True


def warn_if_open(path: Path, what: str) -> bool:
    """Log a warning if group or others have any permission on ``path``; True if they have."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if not mode & 0o077:
        return False
    wanted = PRIVATE_DIR if path.is_dir() else PRIVATE_FILE
    log.warning(
        "%s %s has mode %04o: other users on this host can read it; run chmod %o %s", what, path, mode, wanted, path
    )
    return True


def prepare_database(path: Path) -> None:
    """Make the database ``path`` (and so its -wal/-shm) private before SQLite opens or attaches it:
    created 0600 in a 0700 directory if new, a warning for each of them that is more open if not."""
    make_private_dir(path.parent)
    if not create_private_file(path):
        for found in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
            warn_if_open(found, "database file")


def connect_sqlite(path: Path, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path)`` with the database private (see ``prepare_database``). The one place
    wrenmq opens SQLite: ``SqliteStorage`` attaches its other files to this connection."""
    prepare_database(path)
    import sqlite3  # here: a broker on memory storage without the API never loads SQLite (1.2 MiB)

    return sqlite3.connect(path, **kwargs)
