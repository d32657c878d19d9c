"""Packet objects of MQTT 3.1, 3.1.1 and 5.0.

Plain ``__slots__`` classes rather than dataclasses: they are built on the hot path, once per
packet, and slot classes with positional ``__init__`` are the cheapest Python objects that still
read well. Properties are a ``dict`` keyed by :class:`~wrenmq.mqtt.properties.PropertyId`; the
repeatable ones (User Property, Subscription Identifier) hold lists.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

Properties = dict[int, Any]

# Control packet types (section 2.1.2). Final: compiled code inlines them, no module lookup per use.
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14
AUTH: Final = 15

PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# Protocol levels (section 3.1.2.2).
MQTT_3_1: Final = 3
MQTT_3_1_1: Final = 4
MQTT_5: Final = 5


class Packet:
    __slots__ = ()
    type: ClassVar[int] = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _slots(self))
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _slots(self))

    __hash__ = None  # type: ignore[assignment]


def _slots(obj: object) -> tuple[str, ...]:
    return tuple(getattr(obj, "__slots__", ()))


class Will:
    """The Will Message carried in CONNECT (section 3.1.3.2-3.1.3.4)."""

    __slots__ = ("payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties if properties is not None else {}

    __repr__ = Packet.__repr__
    __eq__ = Packet.__eq__
    __hash__ = None  # type: ignore[assignment]


class Connect(Packet):
    __slots__ = (
        "bridge",
        "clean_start",
        "client_id",
        "keep_alive",
        "password",
        "properties",
        "protocol_level",
        "protocol_name",
        "username",
        "will",
    )
    type = CONNECT

    def __init__(
        self,
        client_id: str = "",
        protocol_level: int = MQTT_3_1_1,
        clean_start: bool = True,
        keep_alive: int = 60,
        will: Will | None = None,
        username: str | None = None,
        password: bytes | None = None,
        properties: Properties | None = None,
        protocol_name: str | None = None,
        bridge: bool = False,
    ) -> None:
        self.client_id = client_id
        # Mosquitto's bridge bit: protocol level 0x83/0x84 on the wire (3.1/3.1.1 + 0x80). Its
        # subscriptions get No Local and Retain As Published, which 3.1.x cannot ask for.
        self.bridge = bridge
        self.protocol_level = protocol_level
        self.clean_start = clean_start
        self.keep_alive = keep_alive
        self.will = will
        self.username = username
        self.password = password
        self.properties = properties if properties is not None else {}
        if protocol_name is None:
            protocol_name = "MQIsdp" if protocol_level == MQTT_3_1 else "MQTT"
        self.protocol_name = protocol_name


class Connack(Packet):
    __slots__ = ("properties", "reason_code", "session_present")
    type = CONNACK

    def __init__(
        self, session_present: bool = False, reason_code: int = 0, properties: Properties | None = None
    ) -> None:
        self.session_present = session_present
        self.reason_code = reason_code  # a 3.1.1 return code when sent to a 3.x client
        self.properties = properties if properties is not None else {}


class Publish(Packet):
    __slots__ = ("dup", "packet_id", "payload", "properties", "qos", "retain", "topic")
    type = PUBLISH

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        packet_id: int | None = None,
        dup: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.packet_id = packet_id
        self.dup = dup
        self.properties = properties if properties is not None else {}


class _Ack(Packet):
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one shape (sections 3.4-3.7)."""

    __slots__ = ("packet_id", "properties", "reason_code")

    def __init__(self, packet_id: int, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties if properties is not None else {}


class Puback(_Ack):
    __slots__ = ()
    type = PUBACK


class Pubrec(_Ack):
    __slots__ = ()
    type = PUBREC


class Pubrel(_Ack):
    __slots__ = ()
    type = PUBREL


class Pubcomp(_Ack):
    __slots__ = ()
    type = PUBCOMP


class Subscription:
    """One topic filter of a SUBSCRIBE with its options (section 3.8.3.1)."""

    __slots__ = ("no_local", "qos", "retain_as_published", "retain_handling", "topic_filter")

    def __init__(
        self,
        topic_filter: str,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
    ) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling

    __repr__ = Packet.__repr__
    __eq__ = Packet.__eq__
    __hash__ = None  # type: ignore[assignment]


class Subscribe(Packet):
    __slots__ = ("packet_id", "properties", "subscriptions")
    type = SUBSCRIBE

    def __init__(self, packet_id: int, subscriptions: list[Subscription], properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = properties if properties is not None else {}


class Suback(Packet):
    __slots__ = ("packet_id", "properties", "reason_codes")
    type = SUBACK

    def __init__(self, packet_id: int, reason_codes: list[int], properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties = properties if properties is not None else {}


class Unsubscribe(Packet):
    __slots__ = ("packet_id", "properties", "topic_filters")
    type = UNSUBSCRIBE

    def __init__(self, packet_id: int, topic_filters: list[str], properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.topic_filters = topic_filters
        self.properties = properties if properties is not None else {}


class Unsuback(Packet):
    __slots__ = ("packet_id", "properties", "reason_codes")
    type = UNSUBACK

    def __init__(self, packet_id: int, reason_codes: list[int], properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes  # empty for MQTT 3.x
        self.properties = properties if properties is not None else {}


class Pingreq(Packet):
    __slots__ = ()
    type = PINGREQ


class Pingresp(Packet):
    __slots__ = ()
    type = PINGRESP


class Disconnect(Packet):
    __slots__ = ("properties", "reason_code")
    type = DISCONNECT

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties = properties if properties is not None else {}


class Auth(Packet):
    __slots__ = ("properties", "reason_code")
    type = AUTH

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties = properties if properties is not None else {}


AnyPacket = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
