"""The hook for password files and ACL files, per listener, reloaded when they change.

Each listener uses its own ``password_file``/``acl_file`` or else the top-level ones (connections
without a listener, as in embedded tests, use the top-level ones). A bad file stops start-up with a
``ConfigError`` naming the file and line; once running, a file that turns bad is logged and the
version already loaded stays in force. Files are re-read on ``reload()`` (``wrenmq serve`` calls it
on SIGHUP) and when their size, mtime or inode changes (checked every ``POLL_INTERVAL`` seconds).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, ConfigError
from ..hooks import AuthResult, BrokerInfo, ClientInfo, Hook
from ..mqtt.reason_codes import ReasonCode
from .acl import AclFileError, AclRules
from .passwords import PasswordFile, PasswordFileError

if TYPE_CHECKING:
    from ..mqtt import packets as p

__all__ = ["CHECK_THREADS", "POLL_INTERVAL", "FileAuthHook"]

log = logging.getLogger("wrenmq.auth")

POLL_INTERVAL = 2.0  # seconds between checks for changed files
CHECK_THREADS = 2  # password hashes checked at once, off the event loop; more logins wait their turn

FileStamp = tuple[int, int, int] | None  # (st_ino, st_size, st_mtime_ns); None: could not stat


class FileAuthHook(Hook):
    """Password check on CONNECT and ACL check on publish/subscribe, from files in the config."""

    name = "files"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sys_readers = frozenset(config.sys_readers)
        self.passwords: dict[Path, PasswordFile] = {}
        self.acls: dict[Path, AclRules] = {}
        self._stamps: dict[Path, FileStamp] = {}
        self._by_listener: dict[Any, tuple[Path | None, Path | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None  # password checks (made on first use)
        password_paths = {config.password_file} | {found.password_file for found in config.effective_listeners()}
        acl_paths = {config.acl_file} | {found.acl_file for found in config.effective_listeners()}
        try:
            for path in sorted(found for found in password_paths if found is not None):
                self._stamps[path] = _stamp(path)
                self.passwords[path] = PasswordFile.load(path)
            for path in sorted(found for found in acl_paths if found is not None):
                self._stamps[path] = _stamp(path)
                self.acls[path] = AclRules.load(path)
        except (PasswordFileError, AclFileError) as exc:
            raise ConfigError(str(exc)) from None

    # -- which files apply ------------------------------------------------------------------------

    def _files(self, listener: Any) -> tuple[Path | None, Path | None]:
        """(password file, ACL file) of a listener, cached per listener object."""
        found = self._by_listener.get(listener)
        if found is None:
            config = self.config
            own = listener.config if listener is not None else None
            found = (
                (own.password_file if own is not None else None) or config.password_file,
                (own.acl_file if own is not None else None) or config.acl_file,
            )
            self._by_listener[listener] = found
        return found

    # -- events -----------------------------------------------------------------------------------

    def handles(self, event: str) -> bool:
        """Only the events some file is configured for: no ACL file, no call per publish."""
        if event == "on_acl_check":
            return bool(self.acls)
        if event == "on_connect_authenticate":
            return bool(self.passwords)
        return super().handles(event)

    def on_start(self, broker: BrokerInfo) -> None:
        self._loop = broker.loop
        self._timer = self._loop.call_later(POLL_INTERVAL, self._poll)

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def on_connect_authenticate(
        self, client: ClientInfo, packet: p.Connect
    ) -> AuthResult | Coroutine[Any, Any, AuthResult] | None:
        path = self._files(client.listener)[0]
        if path is None:
            return None
        listener = client.listener
        if listener is not None and listener.use_identity_as_username and client.cert_identity is not None:
            return AuthResult.allow()  # the certificate is the credential; the broker made its CN the username
        username = packet.username
        if username is None:
            return None  # anonymous: the listener's allow_anonymous decides
        passwords = self.passwords[path]
        password = packet.password or b""
        if passwords.remembered(username, password):
            return AuthResult.allow()  # the common case: a device back with the same credentials
        return self._check(passwords, username, password)

    async def _check(self, passwords: PasswordFile, username: str, password: bytes) -> AuthResult:
        """The argon2 check, on one of CHECK_THREADS worker threads: ~20 ms each, so a burst of logins
        (good or bad) never stalls the event loop, and at most CHECK_THREADS cores go to hashing;
        the rest wait their turn (a check whose client went away is cancelled before it starts)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="wrenmq-passwords")
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self._pool, passwords.verify, username, password):
            return AuthResult.allow()
        return AuthResult.deny(ReasonCode.BAD_USER_NAME_OR_PASSWORD, f"bad user name or password for {username!r}")

    def on_acl_check(self, client: ClientInfo, topic: str, access: int) -> bool | int | None:
        path = self._files(client.listener)[1]
        if path is None:
            return None
        username = client.username
        sys_reader = username is not None and username in self.sys_readers
        return self.acls[path].check(username, client.client_id, topic, access, sys_reader)

    # -- reloading --------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read every file; a file that fails to load is logged and its old version kept.
        True if all loaded."""
        return all([self._reload(path) for path in sorted(self._stamps)])

    def _poll(self) -> None:
        try:
            for path, stamp in list(self._stamps.items()):
                now = _stamp(path)
                if now != stamp:
                    if now is None:
                        log.warning("%s is gone; keeping the rules loaded before", path)
                        self._stamps[path] = None
                    else:
                        self._reload(path)
        finally:
            if self._loop is not None and self._timer is not None:
                self._timer = self._loop.call_later(POLL_INTERVAL, self._poll)

    def _reload(self, path: Path) -> bool:
        self._stamps[path] = _stamp(path)
        try:
            if path in self.passwords:
                passwords = PasswordFile.load(path)
                self.passwords[path] = passwords
                log.info("reloaded password file %s (%d users)", path, len(passwords.hashes))
            else:
                acl = AclRules.load(path)
                self.acls[path] = acl
                log.info("reloaded ACL file %s (%d rules)", path, len(acl))
        except (PasswordFileError, AclFileError) as exc:
            log.error("%s; keeping the version loaded before", exc)
            return False
        return True


def _stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
