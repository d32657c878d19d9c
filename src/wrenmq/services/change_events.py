"""Resource change events, shared by the broker's change-event service (``services.changes``) and
the stand-alone library (``wrenmq.events``): the diff, the JSON merge patch, the event's shape,
its topics, and what a kind or an id may be.

An event::

    {"event": "updated", "flow_id": "f1", "flow": {...the resource now...},
     "diff": {"label": {"old": "a", "new": "b"}, "tags.site": {"old": null, "new": "x"}},
     "timestamp": "2026-11-23T09:00:00.123456Z", "seq": 7, "id": "<uuid4>"}

For ``created`` every field's ``old`` is null; for ``deleted`` the resource is its last state and
every ``new`` is null. Nested objects are diffed per field, as dotted paths; lists and other
values are compared whole. A field that is absent and a field that is null both read null.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "MAX_NAME_LENGTH",
    "EventType",
    "build_event",
    "diff",
    "encode_event",
    "kind_problem",
    "merge_patch",
    "name_problem",
    "topics",
]

EventType = Literal["created", "updated", "deleted"]
MAX_NAME_LENGTH = 128


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a kind or an id (each is one topic level), or None."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_NAME_LENGTH}"
    for bad in ("/", "+", "#", "\x00"):
        if bad in value:
            return f"must be a single topic level (no {bad!r})"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


RESERVED_KINDS = frozenset({"event", "diff", "timestamp", "seq", "id"})


def kind_problem(kind: str) -> str | None:
    """Why ``kind`` cannot be a kind, or None: a topic level, and not a name the event already uses
    (the event carries the resource under the kind's name)."""
    if kind in RESERVED_KINDS:
        return f"{kind!r} is reserved (the event has a field of that name)"
    return name_problem(kind)


def diff(old: dict[str, Any] | None, new: dict[str, Any] | None, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Per changed field (nested objects as dotted paths): ``{"path": {"old": ..., "new": ...}}``."""
    old = old or {}
    new = new or {}
    changes: dict[str, dict[str, Any]] = {}
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before == after and (key in old) == (key in new):
            continue
        path = prefix + key
        if isinstance(before, dict) and isinstance(after, dict):
            changes.update(diff(before, after, path + "."))
        elif before != after:
            changes[path] = {"old": before, "new": after}
    return changes


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge, null removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def build_event(
    event: EventType,
    kind: str,
    resource_id: str,
    resource: dict[str, Any],
    changes: dict[str, dict[str, Any]],
    seq: int,
    *,
    event_id: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    when = (timestamp or datetime.now(UTC)).astimezone(UTC)
    return {
        "event": event,
        f"{kind}_id": resource_id,
        kind: resource,
        "diff": changes,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "seq": seq,
        "id": event_id or str(uuid.uuid4()),
    }


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def topics(prefix: str, kind: str, resource_id: str) -> tuple[str, str]:
    """The two topics an event goes to: ``<prefix>/all`` and ``<prefix>/<kind>/<id>``."""
    return f"{prefix}/all", f"{prefix}/{kind}/{resource_id}"
