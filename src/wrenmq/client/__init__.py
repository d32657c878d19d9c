"""``wrenmq.client``: an asyncio MQTT 3.1.1/5.0 client on wrenmq's own codec.

QoS 0, 1 and 2 both ways, wills, persistent sessions, TLS and WebSocket, automatic reconnection with
exponential backoff and jitter, resubscription, and a bounded offline publish queue; see
:class:`Client`. The names below are imported on first use, so that ``wrenmq --help`` (which
registers ``wrenmq pub``/``sub`` from :mod:`wrenmq.client.cli`) does not pay for the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..mqtt.packets import Subscription, Will
    from ..mqtt.properties import PropertyId
    from ..mqtt.reason_codes import ReasonCode
    from .client import Client, ClientStats, backoff_delay
    from .errors import (
        ClientError,
        ConnectError,
        Disconnected,
        MessageDropped,
        ProtocolError,
        PublishError,
        QueueFull,
    )
    from .message import Message, MessageStream
    from .url import BrokerURL, parse_url

__all__ = [
    "BrokerURL",
    "Client",
    "ClientError",
    "ClientStats",
    "ConnectError",
    "Disconnected",
    "Message",
    "MessageDropped",
    "MessageStream",
    "PropertyId",
    "ProtocolError",
    "PublishError",
    "QueueFull",
    "ReasonCode",
    "Subscription",
    "Will",
    "backoff_delay",
    "parse_url",
]

_HOMES = {
    "Client": ".client",
    "ClientStats": ".client",
    "backoff_delay": ".client",
    "ClientError": ".errors",
    "ConnectError": ".errors",
    "Disconnected": ".errors",
    "MessageDropped": ".errors",
    "ProtocolError": ".errors",
    "PublishError": ".errors",
    "QueueFull": ".errors",
    "Message": ".message",
    "MessageStream": ".message",
    "BrokerURL": ".url",
    "parse_url": ".url",
    "Subscription": "..mqtt.packets",
    "Will": "..mqtt.packets",
    "PropertyId": "..mqtt.properties",
    "ReasonCode": "..mqtt.reason_codes",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
