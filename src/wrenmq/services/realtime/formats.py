"""What realtime clients are sent: a message as JSON (the API's streams, Socket.IO and polling
alike) and the timestamps of presence messages."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from ...mqtt.properties import PropertyId

if TYPE_CHECKING:
    from ...broker.message import Message

__all__ = ["iso_time", "message_json"]

_P = PropertyId


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"


def message_json(
    seq: int, timestamp: float, message: Message, qos: int | None = None, message_id: str | None = None
) -> dict[str, Any]:
    """A message as the API's streams, Socket.IO and polling send it. ``id`` is the sender's
    sequence number (0 for a retained message sent on subscribe); ``message_id`` (Socket.IO and
    polling) is ``Broker.message_id``, the same whichever way the message reaches a client."""
    payload = message.payload
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    data: dict[str, Any] = {
        "id": seq,
        "topic": message.topic,
        "qos": message.qos if qos is None else qos,
        "retain": message.retain,
        "payload": text,
        "encoding": encoding,
        "timestamp": round(timestamp, 6),
    }
    if message_id is not None:
        data["message_id"] = message_id
    props = message.properties
    if props:
        found: dict[str, Any] = {}
        for pid, name in _PROPERTIES:
            value = props.get(pid)
            if value is None:
                continue
            if pid == _P.CORRELATION_DATA:
                value = base64.b64encode(value).decode("ascii")
            elif pid == _P.USER_PROPERTY:
                value = [[k, v] for k, v in value]
            found[name] = value
        if found:
            data["properties"] = found
    return data


_PROPERTIES = (
    (_P.PAYLOAD_FORMAT_INDICATOR, "payload_format_indicator"),
    (_P.MESSAGE_EXPIRY_INTERVAL, "message_expiry_interval"),
    (_P.CONTENT_TYPE, "content_type"),
    (_P.RESPONSE_TOPIC, "response_topic"),
    (_P.CORRELATION_DATA, "correlation_data"),
    (_P.USER_PROPERTY, "user_properties"),
)
