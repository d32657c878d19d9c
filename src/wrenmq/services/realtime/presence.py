"""Which application users are present, over which connections (see the package docstring): the
first attachment announces a user online, the last one to go offline (after a grace for a
transport that was lost, not closed)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from ...hooks import ClientInfo
from .formats import iso_time

# How the board publishes an announcement: (topic, payload, qos, retain), from a hook (no await).
Publish = Callable[[str, bytes, int, bool], None]

__all__ = ["PresenceBoard", "mqtt_key"]


class PresenceBoard:
    """Which application users are present, over which connections (see the module docstring)."""

    def __init__(self, publish: Publish, prefix: str, grace: float = 0.0) -> None:
        self.publish = publish
        self.prefix = prefix
        self.grace = grace
        # Users whose last attachment was lost, not closed: offline when the grace ends, unless back.
        self.leaving: dict[str, asyncio.TimerHandle] = {}
        self.topic_prefix = prefix + "/"
        self.attachments: dict[str, dict[str, str]] = {}  # presence id -> {attachment key: transport}
        self.by_key: dict[str, str] = {}  # attachment key -> presence id
        self.meta: dict[str, dict[str, Any]] = {}
        # In a cluster, who is attached is decided cluster-wide (board_cluster.SharedAttachments):
        # this board then keeps only this node's attachments and asks it for every decision.
        self.shared: Any = None

    def topic(self, presence_id: str) -> str:
        return self.topic_prefix + presence_id

    def attach(self, presence_id: str, key: str, transport: str, meta: dict[str, Any] | None = None) -> None:
        if self.by_key.get(key) == presence_id:
            return
        self.detach(key)
        present = self.attachments.setdefault(presence_id, {})
        leaving = self.leaving.pop(presence_id, None)
        if leaving is not None:
            leaving.cancel()  # back within the grace: others never saw them go
        first = not present and leaving is None
        present[key] = transport
        self.by_key[key] = presence_id
        if meta:
            self.meta[presence_id] = {k: v for k, v in meta.items() if k not in ("id", "status", "timestamp")}
        if self.shared is not None:
            self.shared.attach(presence_id, key, transport)
            return
        if first and not key.startswith("mqtt:"):  # an MQTT client published its own online message
            self._announce(presence_id, "online", transport)

    def detach(self, key: str, goodbye: bool = True) -> None:
        """``key`` ended; ``goodbye``: closed on purpose, else lost (the user may be back over
        another transport within ``grace``, and is not announced offline before)."""
        presence_id = self.by_key.pop(key, None)
        if presence_id is None:
            return
        present = self.attachments.get(presence_id, {})
        transport = present.pop(key, "")
        if self.shared is not None:
            if not present:
                self.attachments.pop(presence_id, None)
            self.shared.detach(presence_id, key, transport, goodbye)
            return
        if present:
            if key.startswith("mqtt:"):  # its will may have said offline: say online again
                self._announce(presence_id, "online", next(iter(present.values())))
            return
        self.attachments.pop(presence_id, None)
        if key.startswith("mqtt:"):  # an MQTT client's will says offline for it
            self.meta.pop(presence_id, None)
        elif goodbye or not self.grace:
            self._left(presence_id, transport)
        else:
            loop = asyncio.get_running_loop()
            self.leaving[presence_id] = loop.call_later(self.grace, self._left, presence_id, transport)

    def flush_leaving(self) -> None:
        """Say offline now for everyone still in their grace (the service is stopping)."""
        for presence_id, handle in list(self.leaving.items()):
            handle.cancel()
            self._left(presence_id, "")

    def _left(self, presence_id: str, transport: str) -> None:
        self.leaving.pop(presence_id, None)
        if not self.attachments.get(presence_id):
            self._announce(presence_id, "offline", transport)
            self.meta.pop(presence_id, None)

    def present_elsewhere(self, presence_id: str) -> bool:
        """Whether the user is attached by something other than MQTT (which its will speaks for)."""
        if presence_id in self.leaving:
            return True
        here = sum(1 for key in self.attachments.get(presence_id, ()) if not key.startswith("mqtt:"))
        if here:
            return True
        return self.shared is not None and self.shared.present_elsewhere(presence_id, here)

    def announce(self, presence_id: str, status: str, transport: str) -> None:
        """Publish ``presence_id``'s status (the cluster's half decides when, in a cluster)."""
        if status == "offline" and self.attachments.get(presence_id):
            return  # (back here meanwhile)
        self._announce(presence_id, status, transport)
        if status == "offline":
            self.meta.pop(presence_id, None)

    def _announce(self, presence_id: str, status: str, transport: str) -> None:
        body = {**self.meta.get(presence_id, {}), "id": presence_id, "status": status, "transport": transport}
        body["timestamp"] = iso_time(time.time())
        self.publish(self.topic(presence_id), json.dumps(body).encode(), 1, True)


def mqtt_key(client: ClientInfo) -> str:
    """An MQTT connection's attachment: by connection, not only client id, so that the end of a
    connection taken over (reported after the new one attached) does not detach the new one."""
    return f"mqtt:{client.client_id}:{id(client):x}"
