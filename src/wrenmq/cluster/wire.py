"""How a message crosses from one node to another: the fields of one Redis stream entry.

A message is matched once on the node it arrives at; each node with matching subscribers gets
one entry in its inbox stream carrying the message as published (topic, payload, QoS, retain,
MQTT 5 properties, remaining expiry, the publisher's client id for No Local, its message id so
realtime clients recognise it whichever node delivers it) and the shared-subscription groups that
node is to serve with it (each group's message goes to one member cluster-wide).
"""

from __future__ import annotations

from typing import Any

from ..broker.message import Message
from ..mqtt.properties import WILL, decode_properties, encode_properties

__all__ = ["Hop", "decode_message", "encode_message", "event", "pack", "unpack"]


class Hop:
    """Where a routed message came from when another node forwarded it (``Message.hop``): the node,
    and the shared groups this node serves with it."""

    __slots__ = ("groups", "node")

    def __init__(self, node: str, groups: frozenset[str]) -> None:
        self.node = node
        self.groups = groups


def encode_message(
    message: Message, node: str, message_id: str, groups: list[str], now: float, retain_only: bool = False
) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {
        b"t": message.topic.encode(),
        b"p": bytes(message.payload),
        b"q": b"%d" % message.qos,
        b"r": b"1" if message.retain else b"0",
        b"n": node.encode(),
        b"i": message_id.encode(),
    }
    if message.properties:
        fields[b"x"] = encode_properties(message.properties)
    if message.expires_at is not None:
        fields[b"e"] = b"%.3f" % max(0.0, message.expires_at - now)
    if message.origin is not None:
        fields[b"o"] = message.origin.encode()
    if groups:
        fields[b"g"] = "\n".join(groups).encode()
    if retain_only:
        fields[b"k"] = b"1"  # only to keep as retained: no subscriber here matched it at the origin
    return fields


def decode_message(fields: dict[bytes, bytes], now: float) -> tuple[Message, bool]:
    """The message (with its ``hop``) and whether it is only to be retained here."""
    props: dict[int, Any] = {}
    raw = fields.get(b"x")
    if raw:
        props, _ = decode_properties(raw, 0, len(raw), WILL)
    expires_at = None
    remaining = fields.get(b"e")
    if remaining is not None:
        expires_at = now + float(remaining)
    origin = fields.get(b"o")
    message = Message(
        fields[b"t"].decode(),
        fields[b"p"],
        int(fields[b"q"]),
        fields.get(b"r") == b"1",
        props,
        expires_at,
        origin.decode() if origin is not None else None,
    )
    message.stored_id = fields[b"i"].decode()
    groups = fields.get(b"g")
    message.hop = Hop(fields[b"n"].decode(), frozenset(groups.decode().split("\n")) if groups else frozenset())
    return message, fields.get(b"k") == b"1"


def event(*parts: str) -> str:
    return "\x00".join(parts)


def pack(fields: dict[bytes, bytes]) -> bytes:
    """Stream fields as one value (a will or a retained message in a hash)."""
    out = bytearray()
    for name, value in fields.items():
        out += len(name).to_bytes(1, "big") + name + len(value).to_bytes(4, "big") + value
    return bytes(out)


def unpack(raw: bytes) -> dict[bytes, bytes]:
    fields = {}
    pos = 0
    while pos < len(raw):
        n = raw[pos]
        name = raw[pos + 1 : pos + 1 + n]
        pos += 1 + n
        size = int.from_bytes(raw[pos : pos + 4], "big")
        fields[name] = raw[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return fields
