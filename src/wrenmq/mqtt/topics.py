"""Topic names and topic filters (section 4.7) and shared subscription names (section 4.8.2)."""

from __future__ import annotations

from .errors import ProtocolError
from .reason_codes import ReasonCode

SHARE_PREFIX = "$share/"


def valid_topic_filter(topic_filter: str) -> bool:
    """True if ``topic_filter`` obeys the wildcard rules [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.1-3]."""
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def client_may_publish(topic: str) -> bool:
    """False for the broker's own topics: ``$SYS...`` (its statistics; as Mosquitto, any topic
    starting "$SYS") and ``$share...`` (a subscription form, never a topic). Topics starting with
    ``$`` are the server's [MQTT-4.7.2-1 context]; no ACL can open these two to a client."""
    return not (topic.startswith("$SYS") or topic.startswith("$share"))


def is_bridge_state(topic: str, client_id: str) -> bool:
    """The one ``$SYS`` topic a Mosquitto bridge (the bridge bit in CONNECT) may publish to, as on
    Mosquitto: its connection state, ``$SYS/broker/connection/<its client id>/state`` (1 up, 0 down:
    its will)."""
    return topic == "$SYS/broker/connection/" + client_id + "/state"


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into (group, filter); (None, filter) for a plain filter.

    Raises ProtocolError(TOPIC_FILTER_INVALID) for a malformed share name [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(SHARE_PREFIX) :]
    group, sep, inner = rest.partition("/")
    if not sep or not group or "+" in group or "#" in group or not inner:
        raise ProtocolError(
            ReasonCode.TOPIC_FILTER_INVALID, f"[MQTT-4.8.2-2] invalid shared subscription {topic_filter!r}"
        )
    return group, inner


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Does ``topic`` match ``topic_filter``? ``$``-topics never match a leading wildcard [MQTT-4.7.2-1]."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
