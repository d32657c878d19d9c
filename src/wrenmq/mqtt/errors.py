"""Protocol errors carry the reason code the spec prescribes and the rule that was broken."""

from __future__ import annotations

from .reason_codes import ReasonCode


class ProtocolError(Exception):
    """A violation of the MQTT specification by the peer.

    The connection turns it into a DISCONNECT with ``reason_code`` (MQTT 5) or a plain close
    (MQTT 3.1.1), so the message should name the normative statement, e.g.
    ``ProtocolError(ReasonCode.MALFORMED_PACKET, "[MQTT-2.2.2-2] reserved flags set")``.
    """

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code

    def __str__(self) -> str:
        return f"{self.args[0]} (reason 0x{self.reason_code:02X})"


def malformed(message: str) -> ProtocolError:
    return ProtocolError(ReasonCode.MALFORMED_PACKET, message)


def protocol_error(message: str) -> ProtocolError:
    return ProtocolError(ReasonCode.PROTOCOL_ERROR, message)
