"""Authentication and authorisation, all reached through hooks (``wrenmq.hooks``).

``install(config, add)`` registers the hooks the configuration asks for (``add`` is the broker's
``hooks.add``), before the listeners open: JWT passwords (``jwt.py``), then password files and ACL
files (``files.py``), so a token is checked before a password file is consulted. Each is an
ordinary ``Hook``; an application can register its own beside them or instead of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from ..hooks import Hook

__all__ = ["install"]


def install(config: Config, add: Callable[[Hook], None]) -> None:
    listeners = config.effective_listeners()
    if config.jwt.configured:
        from .jwt import JwtAuthHook

        add(JwtAuthHook(config))  # reads its key files now: a bad one stops start-up
    if (
        config.password_file is not None
        or config.acl_file is not None
        or any(found.password_file is not None or found.acl_file is not None for found in listeners)
    ):
        from .files import FileAuthHook

        add(FileAuthHook(config))
