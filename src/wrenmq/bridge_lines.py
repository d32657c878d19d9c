"""Bridge lines: Mosquitto's ``topic <pattern> [in|out|both [<qos> [<local-prefix> <remote-prefix>]]]``
grammar, shared by the TOML settings (``[[brokers]] bridges``) and the mosquitto.conf reader."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from .mqtt.topics import topic_matches, valid_topic_filter

__all__ = ["BRIDGE_SYNTAX", "Bridge", "parse_bridge"]

BRIDGE_SYNTAX = "topic <pattern> [in|out|both [<qos> [<local-prefix> <remote-prefix>]]]"


@dataclass(frozen=True, slots=True)
class Bridge:
    """One bridge line, Mosquitto's ``topic`` syntax: messages on ``local_prefix + pattern`` here
    go to ``remote_prefix + pattern`` there (``out``), the other way (``in``), or both. An empty
    pattern (``""``) makes the prefixes whole topic names, mapped onto each other."""

    pattern: str
    direction: Literal["in", "out", "both"]
    qos: int
    local_prefix: str
    remote_prefix: str

    @property
    def local_filter(self) -> str:
        return self.local_prefix + self.pattern

    @property
    def remote_filter(self) -> str:
        return self.remote_prefix + self.pattern

    def to_remote(self, topic: str) -> str | None:
        """The remote topic for local ``topic``, or None if this bridge does not send it out."""
        return _swap_prefix(topic, self.local_filter, self.local_prefix, self.remote_prefix)

    def to_local(self, topic: str) -> str | None:
        """The local topic for remote ``topic``, or None if this bridge does not bring it in."""
        return _swap_prefix(topic, self.remote_filter, self.remote_prefix, self.local_prefix)

    def __str__(self) -> str:
        quoted = [f'"{part}"' if not part or " " in part else part for part in (self.local_prefix, self.remote_prefix)]
        pattern = self.pattern or '""'
        return f"topic {pattern} {self.direction} {self.qos} {quoted[0]} {quoted[1]}"


def _swap_prefix(topic: str, topic_filter: str, old: str, new: str) -> str | None:
    # "a/#" matches "a" too: a topic outside the prefix is not this bridge's.
    if not topic.startswith(old) or not topic_matches(topic_filter, topic):
        return None
    swapped = new + topic[len(old) :]
    return swapped or None


def parse_bridge(line: str) -> Bridge:
    """Parse one bridge line; ``ValueError`` says what is wrong with it."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"{line!r}: {exc}") from None
    if not words or words[0] != "topic" or len(words) not in (2, 3, 4, 6):
        raise ValueError(f"{line!r}: expected {BRIDGE_SYNTAX}")
    pattern = words[1]
    direction = words[2] if len(words) > 2 else "out"
    if direction not in ("in", "out", "both"):
        raise ValueError(f"{line!r}: the direction must be in, out or both, not {direction!r}")
    qos_word = words[3] if len(words) > 3 else "0"
    if qos_word not in ("0", "1", "2"):
        raise ValueError(f"{line!r}: the QoS must be 0, 1 or 2, not {qos_word!r}")
    local_prefix, remote_prefix = (words[4], words[5]) if len(words) == 6 else ("", "")
    for what, prefix in (("local prefix", local_prefix), ("remote prefix", remote_prefix)):
        if "+" in prefix or "#" in prefix or "\x00" in prefix:
            raise ValueError(f"{line!r}: the {what} {prefix!r} must not contain wildcards")
    if not pattern:
        if not local_prefix or not remote_prefix:
            raise ValueError(f'{line!r}: an empty pattern ("") needs a local and a remote prefix (whole topics)')
    elif pattern.startswith("$share/") or not valid_topic_filter(local_prefix + pattern):
        raise ValueError(f"{line!r}: {pattern!r} is not a valid topic filter here")
    return Bridge(pattern, direction, int(qos_word), local_prefix, remote_prefix)  # type: ignore[arg-type]
