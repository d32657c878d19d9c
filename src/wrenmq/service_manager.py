"""Telling a service manager how ``wrenmq serve`` is doing: systemd's ``sd_notify`` protocol.

Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` to a Unix datagram socket and waits for
``READY=1`` before it counts the service as started (so units ordered after wrenmq start once its
listeners are bound, not when the process was forked). The protocol is one datagram per state
change; it needs no library. Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ...) to the service manager;
    False when there is none to tell or it cannot be reached (logged: the service keeps running)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract-namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True
