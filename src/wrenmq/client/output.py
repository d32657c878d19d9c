"""How ``wrenmq sub`` prints a message: payload only, ``-v`` (topic and payload), or ``-F FORMAT``.

``-F`` follows mosquitto_sub's output format. Supported sequences:

- ``%%`` a literal %; ``%t`` topic; ``%p`` payload; ``%q`` QoS; ``%r`` retain flag (0/1);
  ``%l`` payload length; ``%m`` packet identifier (0 for QoS 0); ``%x`` / ``%X`` payload in lower /
  upper case hex;
- ``%j`` a JSON object: ``{"tst", "topic", "qos", "retain", "payloadlen", "properties"
  (MQTT 5, when present), "payload"}``; ``%J`` the same with the payload inserted as JSON (it must
  be valid JSON; otherwise an error on stderr, as mosquitto_sub does);
- ``%I`` ISO 8601 time; ``%U`` Unix time with nanoseconds;
- MQTT 5 properties: ``%C`` content type, ``%D`` correlation data, ``%E`` message expiry interval,
  ``%F`` payload format indicator, ``%R`` response topic, ``%S`` subscription identifier(s),
  ``%P`` user properties as ``key:value`` separated by spaces, ``%A`` topic alias (always empty:
  the client allows none);
- field width, ``-`` (left-align) and ``0`` (zero-pad) flags and ``.max`` width, e.g. ``%-20t``,
  ``%010l``, ``%.10t``, on the parameters mosquitto_sub allows them on (and, as mosquitto_sub, a
  width on ``%p``/``%x``/``%X`` also cuts the payload to that many characters);
- ``@X`` strftime's ``%X`` (e.g. ``@Y-@m-@d``), ``@N`` nanoseconds of the current second, ``@@``;
- ``\\\\ \\0 \\a \\e \\n \\r \\t \\v`` escapes.

``pretty=True`` (``--pretty``) indents the ``%j``/``%J`` objects and, beyond mosquitto_sub, also a
JSON payload printed without ``-F`` (plain or ``-v``).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..mqtt.properties import PropertyId
from .message import Message

__all__ = ["FormatError", "Formatter"]

_P = PropertyId
_WIDTH_OK = frozenset("ACEFIlmpRStxX")  # parameters that take a field width (mosquitto_sub(1))
_MAX_OK = frozenset("CIRt")  # parameters that take a maximum width
_ZERO_OK = frozenset("AEFlmSXx")  # parameters the 0 flag applies to
_TOKEN = re.compile(r"%(?P<flags>[-0]*)(?P<width>\d*)(?:\.(?P<max>\d+))?(?P<spec>.)|@(?P<time>.)|\\(?P<esc>.)", re.S)
_ESCAPES = {"\\": b"\\", "0": b"\0", "a": b"\a", "e": b"\x1b", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v"}
_JSON_NAMES: dict[int, str] = {
    _P.PAYLOAD_FORMAT_INDICATOR: "payload-format-indicator",
    _P.MESSAGE_EXPIRY_INTERVAL: "message-expiry-interval",
    _P.CONTENT_TYPE: "content-type",
    _P.RESPONSE_TOPIC: "response-topic",
    _P.CORRELATION_DATA: "correlation-data",
    _P.SUBSCRIPTION_IDENTIFIER: "subscription-identifier",
    _P.TOPIC_ALIAS: "topic-alias",
}

Part = Callable[[Message, float], bytes]


class FormatError(ValueError):
    """A -F format string that cannot be used; the message names the sequence."""


class Formatter:
    """Turns a received message into the bytes ``wrenmq sub`` prints (without the newline)."""

    def __init__(self, fmt: str | None = None, verbose: bool = False, pretty: bool = False) -> None:
        self.pretty = pretty
        self.verbose = verbose
        self._parts: list[Part] | None = None if fmt is None else self._compile(fmt)

    def __call__(self, message: Message, now: float | None = None) -> bytes:
        if now is None:
            now = time.time()
        if self._parts is None:
            payload = self._pretty_payload(message.payload) if self.pretty else message.payload
            return message.topic.encode() + b" " + payload if self.verbose else payload
        return b"".join(part(message, now) for part in self._parts)

    # --- compiling the format -------------------------------------------------------------------

    def _compile(self, fmt: str) -> list[Part]:
        parts: list[Part] = []
        pos = 0
        for match in _TOKEN.finditer(fmt):
            if match.start() > pos:
                parts.append(_literal(fmt[pos : match.start()].encode()))
            pos = match.end()
            if match.group("esc") is not None:
                esc = match.group("esc")
                if esc not in _ESCAPES:
                    raise FormatError(f"unknown escape \\{esc} in the format")
                parts.append(_literal(_ESCAPES[esc]))
            elif match.group("time") is not None:
                parts.append(_time_part(match.group("time")))
            else:
                parts.append(self._parameter(match))
        if pos < len(fmt):
            tail = fmt[pos:]
            if tail in ("%", "@", "\\"):
                raise FormatError(f"the format ends in an incomplete sequence {tail!r}")
            parts.append(_literal(tail.encode()))
        return parts

    def _parameter(self, match: re.Match[str]) -> Part:
        spec = match.group("spec")
        value = self._value(spec)
        flags, width, maximum = match.group("flags"), match.group("width"), match.group("max")
        if not width and maximum is None:
            return value
        size = int(width) if width and spec in _WIDTH_OK else 0
        cut = int(maximum) if maximum is not None and spec in _MAX_OK else None
        if size and spec in "pxX":  # as mosquitto_sub: a width also cuts the payload (x: to whole bytes)
            cut = size if spec == "p" else size // 2 * 2
        left = "-" in flags
        zero = "0" in flags and not left and spec in _ZERO_OK

        def padded(message: Message, now: float) -> bytes:
            text = value(message, now)
            if cut is not None:
                text = text[:cut]
            if len(text) < size:
                fill = (b"0" if zero else b" ") * (size - len(text))
                text = text + fill if left else fill + text
            return text

        return padded

    def _value(self, spec: str) -> Part:
        simple: dict[str, Part] = {
            "%": lambda m, now: b"%",
            "t": lambda m, now: m.topic.encode(),
            "p": lambda m, now: m.payload,
            "q": lambda m, now: str(m.qos).encode(),
            "r": lambda m, now: b"1" if m.retain else b"0",
            "l": lambda m, now: str(len(m.payload)).encode(),
            "m": lambda m, now: str(m.packet_id or 0).encode(),
            "x": lambda m, now: m.payload.hex().encode(),
            "X": lambda m, now: m.payload.hex().upper().encode(),
            "I": lambda m, now: _local(now).strftime("%Y-%m-%dT%H:%M:%S%z").encode(),
            "U": lambda m, now: f"{int(now)}.{int(now * 1e9) % 1_000_000_000:09d}".encode(),
            "j": lambda m, now: self._json(m, now, raw_payload=False),
            "J": lambda m, now: self._json(m, now, raw_payload=True),
            "C": _property(_P.CONTENT_TYPE),
            "D": _property(_P.CORRELATION_DATA),
            "E": _property(_P.MESSAGE_EXPIRY_INTERVAL),
            "F": _property(_P.PAYLOAD_FORMAT_INDICATOR),
            "R": _property(_P.RESPONSE_TOPIC),
            "S": _property(_P.SUBSCRIPTION_IDENTIFIER),
            "A": _property(_P.TOPIC_ALIAS),
            "P": lambda m, now: " ".join(f"{k}:{v}" for k, v in m.properties.get(_P.USER_PROPERTY, [])).encode(),
        }
        part = simple.get(spec)
        if part is None:
            raise FormatError(f"unknown format parameter %{spec} (see 'wrenmq sub --help')")
        return part

    # --- JSON -----------------------------------------------------------------------------------

    def _json(self, message: Message, now: float, raw_payload: bool) -> bytes:
        document: dict[str, Any] = {
            "tst": _local(now).isoformat(timespec="microseconds"),
            "topic": message.topic,
            "qos": message.qos,
            "retain": int(message.retain),
            "payloadlen": len(message.payload),
        }
        properties = _json_properties(message.properties)
        if properties:
            document["properties"] = properties
        if raw_payload:
            try:
                document["payload"] = json.loads(message.payload)
            except ValueError:
                print(f"Error: Message payload is not valid JSON on topic {message.topic}.", file=sys.stderr)
                return b""
        else:
            document["payload"] = message.payload.decode("utf-8", "replace")
        return self._dump(document)

    def _dump(self, document: Any) -> bytes:
        if self.pretty:
            return json.dumps(document, indent=2, ensure_ascii=False).encode()
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()

    def _pretty_payload(self, payload: bytes) -> bytes:
        try:
            return self._dump(json.loads(payload))
        except ValueError:
            return payload


def _literal(data: bytes) -> Part:
    return lambda message, now: data


def _local(now: float) -> datetime:
    return datetime.fromtimestamp(now).astimezone()


def _time_part(char: str) -> Part:
    if char == "@":
        return _literal(b"@")
    if char == "N":
        return lambda message, now: f"{int(now * 1e9) % 1_000_000_000:09d}".encode()
    directive = "%" + char
    return lambda message, now: _local(now).strftime(directive).encode()


def _property(pid: int) -> Part:
    def value(message: Message, now: float) -> bytes:
        found = message.properties.get(pid)
        if found is None:
            return b""
        if isinstance(found, bytes):
            return found
        if isinstance(found, list):
            return " ".join(str(v) for v in found).encode()
        return str(found).encode()

    return value


def _json_properties(properties: dict[int, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pid, value in properties.items():
        if pid == _P.USER_PROPERTY:
            out["user-properties"] = dict(value)
        elif pid in _JSON_NAMES:
            out[_JSON_NAMES[pid]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out
