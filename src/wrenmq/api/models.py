"""Request and response bodies of the management API (pydantic), and the MQTT rules every request
is held to before it reaches the broker (topic names, MQTT strings, property ranges)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, JsonValue, PrivateAttr, field_validator, model_validator

from ..broker.message import Message
from ..mqtt.properties import PropertyId

T = TypeVar("T")

_P = PropertyId
MAX_STRING = 65535  # bytes in an MQTT UTF-8 string or binary data field [MQTT-1.5.4], [MQTT-1.5.6]
MAX_FOUR_BYTE = 4294967295


# -- MQTT rules --------------------------------------------------------------------------------


def string_problem(value: str) -> str | None:
    """Why ``value`` cannot be an MQTT UTF-8 string, or None."""
    if "\x00" in value:
        return "must not contain U+0000 [MQTT-1.5.4-2]"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "is not valid UTF-8 (it contains a lone surrogate) [MQTT-1.5.4-1]"
    if size > MAX_STRING:
        return f"is {size} bytes long; MQTT strings are at most {MAX_STRING} [MQTT-1.5.4]"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a topic name, or None."""
    if not topic:
        return "a topic name is at least one character long [MQTT-4.7.3-1]"
    if "+" in topic or "#" in topic:
        return f"{topic!r} contains a wildcard (+ or #), which topic names may not [MQTT-3.3.2-2]"
    problem = string_problem(topic)
    return f"the topic name {problem}" if problem else None


def publish_topic(topic: str) -> str:
    problem = topic_problem(topic)
    if problem:
        raise ValueError(problem)
    if topic.startswith("$"):
        raise ValueError(f"{topic!r} starts with '$': those topics are the broker's ($SYS) [MQTT-4.7.2-1]")
    return topic


def utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 (it contains a lone surrogate)") from None


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64 (RFC 4648, standard alphabet, padded)") from None


def json_bytes(value: JsonValue) -> bytes:
    return utf8(json.dumps(value, separators=(",", ":"), ensure_ascii=False), "the JSON payload")


# -- shared shapes -----------------------------------------------------------------------------


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="How many items match, over all pages.")
    limit: int
    offset: int


class UserProperty(BaseModel):
    name: str
    value: str

    @field_validator("name", "value")
    @classmethod
    def _mqtt_string(cls, value: str) -> str:
        problem = string_problem(value)
        if problem:
            raise ValueError(f"a user property {problem}")
        return value


class MessageProperties(BaseModel):
    """MQTT 5 message properties (section 3.3.2.3); MQTT 3.1.1 subscribers receive the message
    without them."""

    message_expiry_interval: int | None = Field(
        default=None, ge=0, le=MAX_FOUR_BYTE, description="Seconds the message lives; in responses, what is left."
    )
    content_type: str | None = Field(default=None, description="MIME type of the payload, e.g. application/json.")
    response_topic: str | None = Field(default=None, description="Topic name for a response (request/response).")
    correlation_data: str | None = Field(
        default=None, description="Base64 of the correlation data (binary, <= 64 KiB)."
    )
    user_properties: list[UserProperty] = Field(default_factory=list, description="Name/value pairs, in order.")
    payload_format_indicator: Literal[0, 1] | None = Field(
        default=None, description="1: the payload is UTF-8 text (checked); 0: unspecified bytes."
    )

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str | None) -> str | None:
        problem = None if value is None else string_problem(value)
        if problem:
            raise ValueError(f"the content type {problem}")
        return value

    @field_validator("response_topic")
    @classmethod
    def _response_topic(cls, value: str | None) -> str | None:
        problem = None if value is None else topic_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("correlation_data")
    @classmethod
    def _correlation_data(cls, value: str | None) -> str | None:
        if value is not None and len(decode_base64(value, "correlation_data")) > MAX_STRING:
            raise ValueError(f"correlation data is at most {MAX_STRING} bytes [MQTT-1.5.6]")
        return value

    def to_mqtt(self) -> dict[int, Any]:
        props: dict[int, Any] = {}
        if self.payload_format_indicator is not None:
            props[_P.PAYLOAD_FORMAT_INDICATOR] = self.payload_format_indicator
        if self.message_expiry_interval is not None:
            props[_P.MESSAGE_EXPIRY_INTERVAL] = self.message_expiry_interval
        if self.content_type is not None:
            props[_P.CONTENT_TYPE] = self.content_type
        if self.response_topic is not None:
            props[_P.RESPONSE_TOPIC] = self.response_topic
        if self.correlation_data is not None:
            props[_P.CORRELATION_DATA] = base64.b64decode(self.correlation_data)
        if self.user_properties:
            props[_P.USER_PROPERTY] = [(item.name, item.value) for item in self.user_properties]
        return props

    @classmethod
    def from_message(cls, message: Message, now: float) -> MessageProperties:
        props = message.properties
        correlation = props.get(_P.CORRELATION_DATA)
        expiry = None
        if message.expires_at is not None:
            expiry = max(0, int(message.expires_at - now + 0.999999))
        return cls(
            message_expiry_interval=expiry,
            content_type=props.get(_P.CONTENT_TYPE),
            response_topic=props.get(_P.RESPONSE_TOPIC),
            correlation_data=None if correlation is None else base64.b64encode(correlation).decode(),
            user_properties=[UserProperty(name=k, value=v) for k, v in props.get(_P.USER_PROPERTY, [])],
            payload_format_indicator=props.get(_P.PAYLOAD_FORMAT_INDICATOR),
        )


# -- broker ------------------------------------------------------------------------------------


class ListenerInfo(BaseModel):
    name: str
    type: Literal["tcp", "tls", "ws", "wss", "unix"]
    url: str
    connections: int = Field(description="Network connections open now (including ones not yet CONNECTed).")
    connections_total: int = Field(description="Connections accepted since start.")
    listening: bool = Field(description="Accepting connections now.")


class BrokerCounts(BaseModel):
    connections: int = Field(description="Clients connected now (CONNECT accepted).")
    sessions: int = Field(description="Sessions, with or without a connection.")
    subscriptions: int
    retained: int = Field(description="Retained messages stored.")
    queued: int = Field(description="QoS 1 and 2 messages waiting in sessions' offline queues.")
    messages_received: int = Field(description="PUBLISH packets received from clients, and wills.")
    messages_sent: int = Field(description="PUBLISH packets sent to clients.")
    messages_dropped: int = Field(description="Messages dropped: queues full, slow consumers, denied, too large.")
    messages_expired: int = Field(description="Queued messages whose Message Expiry Interval ran out.")
    bytes_received: int
    bytes_sent: int
    clients_total: int = Field(description="CONNECTs accepted since start.")
    auth_failures: int
    acl_denied: int


class BrokerStatus(BaseModel):
    running: bool
    version: str
    started_at: float = Field(description="Unix time the broker started.")
    uptime: float = Field(description="Seconds since start.")
    hot_path: str = Field(description="Whether the per-message code runs compiled (mypyc) or as pure Python.")
    listeners: list[ListenerInfo]
    counts: BrokerCounts


# -- clients and subscriptions -----------------------------------------------------------------


class SubscriptionInfo(BaseModel):
    topic_filter: str = Field(description="As subscribed, with any $share/<group>/ prefix.")
    qos: int = Field(description="Maximum QoS granted.")
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    subscription_identifier: int | None
    share_group: str | None = Field(description="The shared subscription group, if any.")


class SubscriptionEntry(SubscriptionInfo):
    client_id: str
    connected: bool


class ClientSummary(BaseModel):
    client_id: str
    connected: bool
    username: str | None = Field(
        description="As logged in; null for anonymous clients and sessions without a connection."
    )
    address: str | None = Field(description="host:port of the connection; null without one.")
    protocol: str = Field(description="MQTT version: 3.1, 3.1.1 or 5.0.")
    listener: str | None = Field(description="Name of the listener the client connected to.")
    subscription_count: int
    inflight: int = Field(description="Outbound QoS 1/2 messages sent and not yet acknowledged.")
    queued: int = Field(description="Outbound QoS 1/2 messages waiting (offline, or past Receive Maximum).")


class ClientDetail(ClientSummary):
    keep_alive: int | None = Field(description="Seconds, as granted; null without a connection.")
    session_expiry_interval: int = Field(
        description="Seconds the session outlives its connection (4294967295: never ends)."
    )
    connected_since: float | None = Field(description="Unix time the network connection opened.")
    dropped: int = Field(description="Messages this session's full queue dropped.")
    subscriptions: list[SubscriptionInfo]


class TopicInfo(BaseModel):
    topic: str = Field(
        description="A subscribed topic filter (its shared-subscription prefix removed) or a retained topic."
    )
    wildcard: bool
    subscribers: int = Field(description="Sessions subscribed with exactly this filter, not through a $share group.")
    shared_subscribers: int = Field(description="Members of $share groups on exactly this filter.")
    retained: bool = Field(description="A retained message is stored on this topic.")


# -- retained messages -------------------------------------------------------------------------


class RetainedSummary(BaseModel):
    topic: str
    qos: int
    payload_size: int
    content_type: str | None
    message_expiry_interval: int | None = Field(description="Seconds left before it expires; null: never.")


class RetainedMessage(BaseModel):
    topic: str
    qos: int
    payload_size: int
    payload: str | None = Field(description="The payload as text, or null if it is not UTF-8.")
    payload_base64: str
    properties: MessageProperties

    @classmethod
    def from_message(cls, message: Message, now: float) -> RetainedMessage:
        try:
            text: str | None = message.payload.decode()
        except UnicodeDecodeError:
            text = None
        return cls(
            topic=message.topic,
            qos=message.qos,
            payload_size=len(message.payload),
            payload=text,
            payload_base64=base64.b64encode(message.payload).decode(),
            properties=MessageProperties.from_message(message, now),
        )


# -- publishing --------------------------------------------------------------------------------


class PublishRequest(BaseModel):
    """A message to publish. Give the payload in one of three ways (or none, for an empty one):
    ``payload`` (UTF-8 text), ``payload_base64`` (bytes) or ``payload_json`` (any JSON value but
    null, sent as compact JSON text)."""

    topic: str = Field(description="A topic name: no wildcards, not starting with '$'.")
    payload: str | None = Field(default=None, description="The payload as text (sent UTF-8 encoded).")
    payload_base64: str | None = Field(default=None, description="The payload as base64, for binary payloads.")
    payload_json: JsonValue = Field(default=None, description="The payload as a JSON value, sent as compact JSON text.")
    qos: Literal[0, 1, 2] = 0
    retain: bool = False
    properties: MessageProperties = Field(default_factory=lambda: MessageProperties())
    _payload: bytes | None = PrivateAttr(default=None)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return publish_topic(value)

    @field_validator("payload")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None:
            utf8(value, "the payload")
        return value

    @field_validator("payload_base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            decode_base64(value, "payload_base64")
        return value

    @field_validator("payload_json")
    @classmethod
    def _json(cls, value: JsonValue) -> JsonValue:
        if value is not None:
            json_bytes(value)
        return value

    @model_validator(mode="after")
    def _one_payload(self) -> PublishRequest:
        given = [name for name in ("payload", "payload_base64", "payload_json") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of payload, payload_base64 and payload_json (got {', '.join(given)})")
        if self.properties.payload_format_indicator == 1:
            try:
                self.payload_bytes().decode()
            except UnicodeDecodeError:
                raise ValueError("payload_format_indicator is 1 but the payload is not UTF-8 [MQTT-3.3.2-4]") from None
        return self

    def payload_bytes(self) -> bytes:
        """The payload as published (decoded once)."""
        if self._payload is None:
            if self.payload_base64 is not None:
                self._payload = decode_base64(self.payload_base64, "payload_base64")
            elif self.payload_json is not None:
                self._payload = json_bytes(self.payload_json)
            else:
                self._payload = utf8(self.payload or "", "the payload")
        return self._payload


class PublishResult(BaseModel):
    topic: str
    qos: int
    retain: bool
    payload_size: int
    matched: int = Field(description="Subscriptions the message matched (each shared group counts once).")


class PublishBatch(BaseModel):
    messages: list[PublishRequest] = Field(min_length=1, max_length=1000)


class BatchItemResult(BaseModel):
    index: int
    published: bool
    result: PublishResult | None = None
    problem: str | None = Field(default=None, description="Why a publish hook refused this message.")
    reason_code: int | None = None


class BatchResult(BaseModel):
    published: int
    rejected: int
    results: list[BatchItemResult]


class CompatPublishRequest(BaseModel):
    """The body existing integrations send to ``POST /publish``."""

    broker: str = Field(
        default="internal", description="'internal' (this broker) or the name of an external broker connection."
    )
    topic: str
    payload: JsonValue = Field(default=None, description="A string is sent as text, any other JSON value as JSON text.")
    qos: Literal[0, 1, 2] = 0
    retain: bool = False
    queue: bool = Field(
        default=False,
        description="External broker only: while it is unreachable, keep the message in its bounded durable "
        "queue (202) instead of answering 503.",
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return publish_topic(value)

    @field_validator("payload")
    @classmethod
    def _encodable(cls, value: JsonValue) -> JsonValue:
        if isinstance(value, str):
            utf8(value, "the payload")
        elif value is not None:
            json_bytes(value)
        return value

    def as_request(self) -> PublishRequest:
        payload = self.payload
        if payload is None or isinstance(payload, str):
            return PublishRequest(topic=self.topic, payload=payload, qos=self.qos, retain=self.retain)
        return PublishRequest(topic=self.topic, payload_json=payload, qos=self.qos, retain=self.retain)


class CompatPublishResult(PublishResult):
    broker: str
    matched: int | None = Field(  # type: ignore[assignment]
        description="Subscriptions the message matched here; null for an external broker (not known here)."
    )
    queued: bool = Field(default=False, description="External broker: the message waits in its queue (202).")
    reason_code: int | None = Field(default=None, description="External broker: the reason code of its PUBACK.")


# -- users and ACL rules -----------------------------------------------------------------------


class UserList(BaseModel):
    password_file: str
    users: list[str]


class UserCreate(BaseModel):
    username: str = Field(description="No ':', no leading '#', no control characters or surrounding spaces.")
    password: str = Field(min_length=1, description="Stored as an argon2id hash.")

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        if len(utf8(value, "the password")) > MAX_STRING:
            raise ValueError(f"an MQTT password is at most {MAX_STRING} bytes")
        return value


class UserResult(BaseModel):
    username: str
    created: bool = Field(description="True for a new user, false for a changed password.")


AccessWord = Literal["read", "write", "readwrite", "deny"]


class AclRuleCreate(BaseModel):
    kind: Literal["topic", "pattern"] = Field(
        default="topic", description="topic: applies to `user` (null: anonymous clients); pattern: to every client."
    )
    user: str | None = Field(
        default=None, description="The user whose section gets the rule; must be null for a pattern."
    )
    access: AccessWord = "readwrite"
    topic: str = Field(description="A topic filter; in a pattern, %c (client id) and %u (username) as whole levels.")

    @field_validator("user", "topic")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or value != value.strip():
            raise ValueError("must be non-empty, without leading or trailing white space")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ValueError("must not contain control characters (a rule is one line of the file)")
        problem = string_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _pattern_has_no_user(self) -> AclRuleCreate:
        if self.kind == "pattern" and self.user is not None:
            raise ValueError("a pattern applies to every client: leave user null")
        return self


class AclRule(BaseModel):
    id: str = Field(description="Stable for the rule's content: DELETE /api/v1/acl/{id}.")
    kind: Literal["topic", "pattern"]
    user: str | None
    access: AccessWord
    topic: str
    line: int = Field(description="Line in the ACL file.")


class AclList(BaseModel):
    acl_file: str
    rules: list[AclRule]
