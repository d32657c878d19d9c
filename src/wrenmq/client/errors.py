"""The client's exceptions: one base class, and a subclass per way an operation can fail.

::

    ClientError
     ├── ConnectError      the connection could not be made (``reason_code``: the CONNACK's, if it came)
     ├── Disconnected      the connection is gone and the operation cannot complete
     ├── ProtocolError     the broker broke the protocol (``reason_code``: the one the client sent)
     ├── PublishError      PUBACK / PUBREC / PUBCOMP carried a failure reason code
     ├── QueueFull         the offline queue is at its bound (``queue_full="raise"``)
     └── MessageDropped    a queued message was pushed out by a newer one (``queue_full="drop_oldest"``)
"""

from __future__ import annotations

from ..mqtt.reason_codes import ConnackReturnCode, ReasonCode

__all__ = [
    "ClientError",
    "ConnectError",
    "Disconnected",
    "MessageDropped",
    "ProtocolError",
    "PublishError",
    "QueueFull",
    "describe_reason",
]


def describe_reason(code: int, version: int = 5, connack: bool = False) -> str:
    """``0x87 Not authorized``: a reason code (or a 3.1.1 CONNACK return code) with its spec name."""
    try:
        name = ConnackReturnCode(code).name if connack and version < 5 else ReasonCode(code).name
    except ValueError:
        name = "unknown reason code"
    return f"0x{code:02X} {name.replace('_', ' ').capitalize()}"


class ClientError(Exception):
    """Base class of every error :class:`wrenmq.client.Client` raises."""


class _WithReason(ClientError):
    """An error that may carry an MQTT reason code and the peer's Reason String."""

    def __init__(self, message: str, reason_code: int | None = None, reason_string: str | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.reason_string = reason_string

    def __str__(self) -> str:
        text = str(self.args[0])
        if self.reason_string:
            text += f" ({self.reason_string})"
        return text


class ConnectError(_WithReason):
    """Connecting failed. ``reason_code`` is the CONNACK's (a 3.1.1 return code at 3.1.1) when the
    broker refused; None when the network, TLS or WebSocket upgrade failed (see ``__cause__``)."""


class Disconnected(_WithReason):
    """The connection ended; ``reason_code`` is that of the broker's DISCONNECT (MQTT 5), if it sent one."""


class ProtocolError(ClientError):
    """The broker sent something the specification forbids; the client closed the connection.

    Not a subclass of :class:`wrenmq.mqtt.ProtocolError`: that one is compiled (mypyc) with the
    codec, and compiled classes cannot be subclassed from Python code.
    """

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class PublishError(_WithReason):
    """The broker acknowledged a QoS 1/2 PUBLISH with a failure reason code (0x80 or above)."""

    reason_code: int

    def __init__(self, reason_code: int, reason_string: str | None = None, topic: str = "") -> None:
        super().__init__(f"publish to {topic!r} failed: {describe_reason(reason_code)}", reason_code, reason_string)
        self.topic = topic


class QueueFull(ClientError):
    """The offline publish queue holds ``max_queued`` messages already."""


class MessageDropped(ClientError):
    """A message waiting in the offline queue was dropped to make room for a newer one."""
