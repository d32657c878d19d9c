"""One simulated device's state, sans-I/O: command messages and the time in, payloads out.

The device topic scheme (issue 8): a device ``{id}`` publishes its will on ``devices/{id}/lwt``,
announces itself on ``devices/discovery/announce``, keeps a retained ``devices/{id}/status``, beats on
``devices/{id}/heartbeat``, reports on ``devices/{id}/events`` and obeys commands from
``devices/{id}/commands/{cmd}`` and, once it has joined a session, ``sessions/{sid}/commands/{cmd}``.
A command's payload is ``{"command", "params", "timestamp", "commandId"}``; the command's name is the
topic's last level. Every payload is a JSON object with ISO-8601 UTC timestamps ending in ``Z``.

:class:`DeviceState` takes the time as an argument (Unix seconds, so ``positionMs`` advances with
the wall clock while playing), which keeps it testable without an event loop or a broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["COMMANDS", "DeviceState", "DeviceTopics", "Reaction", "timestamp"]

COMMANDS = ("play", "pause", "stop", "seek", "join", "leave")

JsonObject = dict[str, Any]
Filters = tuple[list[str], list[str]]  # (subscribe, unsubscribe)


def timestamp(now: float) -> str:
    """``2026-11-23T09:00:00.123Z`` for Unix time ``now``."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """The topics of one device under the configurable roots (``devices``, ``sessions``)."""

    device_id: str
    devices_root: str = "devices"
    sessions_root: str = "sessions"

    @property
    def lwt(self) -> str:
        return f"{self.devices_root}/{self.device_id}/lwt"

    @property
    def status(self) -> str:
        return f"{self.devices_root}/{self.device_id}/status"

    @property
    def heartbeat(self) -> str:
        return f"{self.devices_root}/{self.device_id}/heartbeat"

    @property
    def events(self) -> str:
        return f"{self.devices_root}/{self.device_id}/events"

    @property
    def commands(self) -> str:
        """The filter for commands addressed to this device."""
        return f"{self.devices_root}/{self.device_id}/commands/+"

    @property
    def announce(self) -> str:
        return f"{self.devices_root}/discovery/announce"

    def session_commands(self, session_id: str) -> str:
        """The filter for commands addressed to a session."""
        return f"{self.sessions_root}/{session_id}/commands/+"

    def command_name(self, topic: str, session_id: str | None) -> str | None:
        """The command a message on ``topic`` carries, or None if the topic is not one this device
        obeys now (e.g. a session it has left, whose commands may still be on their way)."""
        prefix, _, name = topic.rpartition("/")
        if prefix == self.commands[:-2]:
            return name
        if session_id is not None and prefix == self.session_commands(session_id)[:-2]:
            return name
        return None


@dataclass(slots=True)
class Reaction:
    """What a device does about one command message: the event to publish on its events topic, its
    new status (to publish retained) if the state changed, and filters to (un)subscribe."""

    command: str
    event: JsonObject
    status: JsonObject | None = None
    subscribe: list[str] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    warning: str | None = None  # for the log: a malformed payload, a command without what it needs

    @property
    def obeyed(self) -> bool:
        return self.event["event"] == "command"


class DeviceState:
    """A media device (a VR headset, say): idle, playing, paused or stopped, at a position, maybe in a
    session. :meth:`handle` applies one command message; :meth:`status` is the retained status payload."""

    def __init__(self, topics: DeviceTopics, device_type: str, name: str, started: float) -> None:
        self.topics = topics
        self.device_id = topics.device_id
        self.device_type = device_type
        self.name = name
        self.started = started
        self.state = "idle"
        self.session_id: str | None = None
        self._position_ms = 0  # at self._since while playing; the position itself otherwise
        self._since = started

    def position_ms(self, now: float) -> int:
        if self.state == "playing":
            return self._position_ms + max(0, round((now - self._since) * 1000))
        return self._position_ms

    # --- payloads -----------------------------------------------------------------------------------

    def status(self, now: float) -> JsonObject:
        return {
            "deviceId": self.device_id,
            "status": self.state,
            "positionMs": self.position_ms(now),
            "sessionId": self.session_id,
            "timestamp": timestamp(now),
        }

    def will(self, now: float) -> JsonObject:
        return {"deviceId": self.device_id, "status": "offline", "timestamp": timestamp(now)}

    def online(self, now: float) -> JsonObject:
        """What replaces the retained will on the lwt topic after each connect: JSON, like the will,
        since panels parse every message there as JSON (an empty retained message would fail them)."""
        return {"deviceId": self.device_id, "status": "online", "timestamp": timestamp(now)}

    def announce(self, now: float, version: str) -> JsonObject:
        return {
            "deviceId": self.device_id,
            "type": self.device_type,
            "name": self.name,
            "timestamp": timestamp(now),
            "version": version,
            "simulated": True,
        }

    def heartbeat(self, now: float) -> JsonObject:
        return {"deviceId": self.device_id, "timestamp": timestamp(now), "uptimeMs": round((now - self.started) * 1000)}

    def subscriptions(self) -> list[str]:
        """The filters to (re)subscribe after each connect."""
        filters = [self.topics.commands]
        if self.session_id is not None:
            filters.append(self.topics.session_commands(self.session_id))
        return filters

    # --- commands -----------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> Reaction | None:
        """Apply the command message ``payload`` that arrived on ``topic`` at ``now``. None if the topic
        is not one this device obeys (any more); otherwise the :class:`Reaction`. Unknown commands,
        malformed payloads and missing parameters change nothing and say so in the event."""
        name = self.topics.command_name(topic, self.session_id)
        if name is None:
            return None
        try:
            message = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            return self._refuse(name, None, now, "malformed-command", f"payload is not JSON: {exc}")
        if not isinstance(message, dict):
            return self._refuse(name, None, now, "malformed-command", "payload is not a JSON object")
        command_id = message.get("commandId")
        params = message.get("params") or {}
        if not isinstance(params, dict):
            return self._refuse(name, command_id, now, "malformed-command", "'params' is not a JSON object")
        if name not in COMMANDS:
            return self._refuse(name, command_id, now, "unknown-command", f"unknown command {name!r}")
        apply = getattr(self, f"_{name}")
        try:
            subscribe, unsubscribe = apply(params, now)
        except _InvalidParams as exc:
            return self._refuse(name, command_id, now, "invalid-command", str(exc))
        event = {
            "deviceId": self.device_id,
            "event": "command",
            "command": name,
            "commandId": command_id,
            "timestamp": timestamp(now),
        }
        return Reaction(name, event, self.status(now), subscribe, unsubscribe)

    def _refuse(self, name: str, command_id: Any, now: float, event: str, reason: str) -> Reaction:
        payload = {
            "deviceId": self.device_id,
            "event": event,
            "command": name,
            "commandId": command_id,
            "reason": reason,
            "timestamp": timestamp(now),
        }
        return Reaction(name, payload, warning=f"{self.device_id}: ignored command {name!r}: {reason}")

    def _play(self, params: JsonObject, now: float) -> Filters:
        position = _position_param(params, required=False)
        if position is not None:
            self._position_ms = position
        elif self.state == "playing":
            return [], []  # already playing: keep going
        elif self.state == "stopped":
            self._position_ms = 0
        self.state = "playing"
        self._since = now
        return [], []

    def _pause(self, params: JsonObject, now: float) -> Filters:
        self._position_ms = self.position_ms(now)
        if self.state == "playing":
            self.state = "paused"
        return [], []

    def _stop(self, params: JsonObject, now: float) -> Filters:
        self.state = "stopped"
        self._position_ms = 0
        return [], []

    def _seek(self, params: JsonObject, now: float) -> Filters:
        position = _position_param(params, required=True)
        assert position is not None
        self._position_ms = position
        self._since = now
        return [], []

    def _join(self, params: JsonObject, now: float) -> Filters:
        session_id = params.get("sessionId")
        if not isinstance(session_id, str) or not session_id or any(c in session_id for c in "/+#\0"):
            raise _InvalidParams("join needs params.sessionId: a non-empty string without '/', '+' or '#'")
        if session_id == self.session_id:
            return [], []
        unsubscribe = self._leave(params, now)[1]
        self.session_id = session_id
        return [self.topics.session_commands(session_id)], unsubscribe

    def _leave(self, params: JsonObject, now: float) -> Filters:
        if self.session_id is None:
            return [], []
        old, self.session_id = self.session_id, None
        return [], [self.topics.session_commands(old)]


class _InvalidParams(Exception):
    """A known command without the parameters it needs."""


def _position_param(params: JsonObject, required: bool) -> int | None:
    position = params.get("positionMs")
    if position is None and not required:
        return None
    if isinstance(position, bool) or not isinstance(position, (int, float)) or position < 0:
        raise _InvalidParams("params.positionMs must be a number of milliseconds >= 0")
    return int(position)
