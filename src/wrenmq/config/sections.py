"""The sections of the configuration (``[api]``, ``[limits]``, ...), each a small frozen model.

Every setting of a section also has a flat name, the one it had before sections existed and the one
its environment variable and ``wrenmq serve`` flag are named after: ``[api] port`` is ``api_port``
(``WRENMQ_API_PORT``, ``--api-port``). A section's flat names are its prefix and the field's name,
but for the few that ``flat_names`` lists (``[limits]`` keeps Mosquitto's names, unprefixed).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .types import (
    JWT_MIN_SECRET_BYTES,
    METRICS_HISTORY_MAX_SAMPLES,
    CrossFieldError,
    JwtAlgorithm,
    KiB,
    LogDest,
    MiB,
    OptionalPath,
    OptionalPort,
    SyslogFacility,
    comma_list,
    split_words,
)

__all__ = [
    "SECTIONS",
    "ApiConfig",
    "ClusterConfig",
    "ConsoleConfig",
    "EventsConfig",
    "JwtConfig",
    "LimitsConfig",
    "LogConfig",
    "MetricsConfig",
    "PresenceConfig",
    "RealtimeConfig",
    "Section",
]


class Section(BaseModel):
    """A ``[name]`` table of the config file; its settings' flat names are ``flat_prefix`` + field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flat_prefix: ClassVar[str] = ""
    flat_names: ClassVar[dict[str, str]] = {}  # field -> flat name, where not flat_prefix + field

    @classmethod
    def flat_name(cls, field: str) -> str:
        return cls.flat_names.get(field, cls.flat_prefix + field)


class LogConfig(Section):
    """Logging: level, line format and where lines go."""

    flat_prefix: ClassVar[str] = "log_"
    flat_names: ClassVar[dict[str, str]] = {"syslog_address": "syslog_address", "syslog_facility": "syslog_facility"}
    level: Annotated[Literal["debug", "info", "warning", "error"], Field(description="Logging threshold.")] = "info"
    format: Annotated[Literal["text", "json"], Field(description="Log lines: text, or one JSON object per line.")] = (
        "text"
    )
    dest: Annotated[
        list[LogDest],
        BeforeValidator(split_words),
        Field(
            description="Where log lines go: stderr, stdout, file (log_file), syslog; a list (comma-separated "
            'in the environment and flags); [] or "none": nowhere.'
        ),
    ] = Field(default_factory=lambda: list[LogDest](["stderr"]))
    file: Annotated[
        OptionalPath, Field(description="The file for log_dest file; reopened when logrotate moves it.")
    ] = None
    syslog_address: Annotated[
        str, Field(description="For log_dest syslog: a Unix socket path, or host:port for UDP.")
    ] = "/dev/log"
    syslog_facility: Annotated[
        SyslogFacility, Field(description="For log_dest syslog: the facility (daemon, user, local0 to local7).")
    ] = "daemon"

    @model_validator(mode="after")
    def _check_dest(self) -> LogConfig:
        if "file" in self.dest and self.file is None:
            raise CrossFieldError(("dest", "file"), "log_dest file needs log_file (the path to write)")
        return self


class LimitsConfig(Section):
    """What the broker grants and bounds per client: packet sizes, flow control, queues, timeouts.

    The broker reads these on the hot path through ``broker.limits.Limits``, built from this section."""

    flat_prefix: ClassVar[str] = ""
    max_packet_size: Annotated[
        int, Field(ge=64, le=268435460, description="Largest MQTT packet accepted or sent, in bytes.")
    ] = 16 * MiB
    receive_maximum: Annotated[
        int, Field(ge=1, le=65535, description="Receive Maximum: inbound QoS 1/2 in flight per client.")
    ] = 1024
    max_inflight_messages: Annotated[
        int, Field(ge=1, le=65535, description="Cap on outbound QoS 1/2 messages in flight per client.")
    ] = 1024
    max_queued_messages: Annotated[
        int, Field(ge=0, description="Bound on each session's queue of undelivered messages.")
    ] = 10_000
    max_queued_bytes: Annotated[
        int, Field(ge=0, description="Bound on the topic and payload bytes in each session's queue (0: none).")
    ] = 10 * MiB
    slow_consumer_timeout: Annotated[
        float,
        Field(ge=0, description="Seconds a connected client may stay at its output cap without draining (0: forever)."),
    ] = 10.0
    queue_drop_policy: Annotated[
        Literal["drop_new", "drop_oldest"], Field(description="Which message a full session queue drops.")
    ] = "drop_new"
    max_session_expiry_interval: Annotated[
        int, Field(ge=0, le=4294967295, description="Upper bound on a client's Session Expiry Interval.")
    ] = 4294967295
    connect_timeout: Annotated[float, Field(gt=0, description="Seconds a new connection has to send CONNECT.")] = 10.0
    packet_read_timeout: Annotated[
        float, Field(ge=0, description="Seconds a packet may take to arrive whole once begun (0: no limit).")
    ] = 60.0
    max_keepalive: Annotated[
        int, Field(ge=0, le=65535, description="Largest Keep Alive granted, enforced with Server Keep Alive.")
    ] = 65535
    max_connections: Annotated[int, Field(ge=0, description="Connections at once, all listeners; 0: no limit.")] = 0
    max_topic_length: Annotated[
        int, Field(ge=1, le=65535, description="Longest topic name or filter, in characters.")
    ] = 65535
    max_topic_levels: Annotated[int, Field(ge=1, description="Most levels in a topic name or filter.")] = 128
    max_subscriptions: Annotated[int, Field(ge=0, description="Subscriptions per client; 0: no limit.")] = 0
    max_publish_rate: Annotated[
        float, Field(ge=0, description="Messages per second a client may publish (token bucket); 0: no limit.")
    ] = 0.0
    retain_available: Annotated[bool, Field(description="Whether retained messages are supported.")] = True
    maximum_qos: Annotated[int, Field(ge=0, le=2, description="Highest QoS the server accepts.")] = 2
    topic_alias_maximum: Annotated[
        int, Field(ge=0, le=65535, description="Topic aliases a client may use towards the server.")
    ] = 64
    topic_alias_out_maximum: Annotated[
        int, Field(ge=0, le=65535, description="Topic aliases the server may use towards a client (0: none).")
    ] = 32
    max_write_buffer: Annotated[
        int, Field(ge=1, description="Write buffer from which QoS 0 is dropped, QoS 1/2 queued; twice: disconnected.")
    ] = 4 * MiB
    write_buffer_high: Annotated[
        int,
        Field(ge=1, description="Write buffer size past which a client is behind (slow_consumer_timeout runs)."),
    ] = 256 * KiB
    write_buffer_low: Annotated[
        int, Field(ge=0, description="Write buffer size below which a client is sent its queue again.")
    ] = 64 * KiB

    @model_validator(mode="after")
    def _check_write_buffer(self) -> LimitsConfig:
        """Flow control needs low < high <= cap, or reading would never resume or never pause."""
        if self.write_buffer_high <= self.write_buffer_low:
            raise CrossFieldError(
                ("write_buffer_high", "write_buffer_low"),
                f"write_buffer_high ({self.write_buffer_high}) must be greater than "
                f"write_buffer_low ({self.write_buffer_low})",
            )
        if self.write_buffer_high > self.max_write_buffer:
            raise CrossFieldError(
                ("write_buffer_high", "max_write_buffer"),
                f"write_buffer_high ({self.write_buffer_high}) must not exceed "
                f"max_write_buffer ({self.max_write_buffer})",
            )
        return self


class JwtConfig(Section):
    """JWT passwords: the keys that check them and the claims they must carry."""

    flat_prefix: ClassVar[str] = "jwt_"
    algorithms: Annotated[
        list[JwtAlgorithm],
        BeforeValidator(comma_list),
        Field(description="JWT signature algorithms accepted: HS256, RS256, ES256."),
    ] = ["HS256"]
    secret: Annotated[
        str | None, Field(description="HS256 shared secret (at least 32 bytes); JWT passwords are checked with it.")
    ] = None
    public_key_file: Annotated[OptionalPath, Field(description="PEM public key for RS256 or ES256 tokens.")] = None
    jwks_file: Annotated[OptionalPath, Field(description="JWKS file (JSON); a token's kid picks its key.")] = None
    username_claim: Annotated[str, Field(min_length=1, description="JWT claim that becomes the client's username.")] = (
        "sub"
    )
    audience: Annotated[
        str | None, Field(description="Required JWT aud claim (unset: tokens that name an audience are refused).")
    ] = None
    issuer: Annotated[str | None, Field(description="Required JWT iss claim (unset: not checked).")] = None
    acl_claims: Annotated[
        bool, Field(description="A token's publish/subscribe claims (topic filter lists) restrict its client.")
    ] = True

    @property
    def configured(self) -> bool:
        """JWT authentication is on once a key source is set."""
        return self.secret is not None or self.public_key_file is not None or self.jwks_file is not None

    @model_validator(mode="after")
    def _check_keys(self) -> JwtConfig:
        """Every accepted algorithm needs a key source, and every key source an algorithm that uses it."""
        if not self.configured:
            return self
        algorithms = set(self.algorithms)
        if not algorithms:
            raise CrossFieldError(("algorithms",), "jwt_algorithms must list at least one algorithm")
        if self.secret is not None:
            if "HS256" not in algorithms:
                raise CrossFieldError(
                    ("secret", "algorithms"), "jwt_secret is an HS256 key but jwt_algorithms has no HS256"
                )
            if len(self.secret.encode()) < JWT_MIN_SECRET_BYTES:
                raise CrossFieldError(
                    ("secret",), f"jwt_secret must be at least {JWT_MIN_SECRET_BYTES} bytes long (RFC 7518 3.2)"
                )
        if self.public_key_file is not None and not algorithms & {"RS256", "ES256"}:
            raise CrossFieldError(
                ("public_key_file", "algorithms"),
                "jwt_public_key_file is for RS256 or ES256 but jwt_algorithms lists neither",
            )
        for algorithm in sorted(algorithms):
            if self.jwks_file is not None:
                break  # which algorithms a JWKS serves is known once it is read (at start-up)
            if algorithm == "HS256" and self.secret is None:
                raise CrossFieldError(("algorithms", "secret"), "jwt_algorithms lists HS256 but jwt_secret is not set")
            if algorithm != "HS256" and self.public_key_file is None:
                raise CrossFieldError(
                    ("algorithms", "public_key_file"),
                    f"jwt_algorithms lists {algorithm} but neither jwt_public_key_file nor jwt_jwks_file is set",
                )
        return self


class ApiConfig(Section):
    """The HTTP management API: its listener, keys and request bounds."""

    flat_prefix: ClassVar[str] = "api_"
    flat_names: ClassVar[dict[str, str]] = {"stream_buffer": "stream_buffer"}
    host: Annotated[str, Field(description="Address the HTTP management API binds to.")] = "127.0.0.1"
    port: Annotated[OptionalPort, Field(description="HTTP management API port (off: no API).")] = 8080
    certfile: Annotated[OptionalPath, Field(description="TLS certificate for the API (unset: plain HTTP).")] = None
    keyfile: Annotated[OptionalPath, Field(description="TLS private key for the API (unset: in api_certfile).")] = None
    keys_file: Annotated[
        OptionalPath, Field(description="Hashed API keys (wrenmq apikey); default: <data_dir>/api_keys.json.")
    ] = None
    max_body_size: Annotated[
        int,
        Field(
            ge=1024,
            le=2**31,
            description="Largest API request body in bytes (publishes by a signed-in caller: max_packet_size).",
        ),
    ] = 64 * 1024
    max_unauthenticated_requests: Annotated[
        int, Field(ge=1, description="API requests with a body and no credentials served at once; beyond: 503.")
    ] = 64
    stream_buffer: Annotated[
        int, Field(ge=1, description="Messages an API stream may hold for a slow reader before it drops.")
    ] = 1000

    @model_validator(mode="after")
    def _check_tls(self) -> ApiConfig:
        if self.keyfile is not None and self.certfile is None:
            raise CrossFieldError(("keyfile", "certfile"), "api_keyfile needs api_certfile")
        return self


class MetricsConfig(Section):
    """Prometheus /metrics and the API's in-memory metrics history."""

    flat_prefix: ClassVar[str] = "metrics_"
    public: Annotated[
        bool, Field(description="Serve /metrics without an API key (for scrapers that find targets by annotation).")
    ] = False
    history_interval: Annotated[
        float, Field(ge=0.05, le=3600, description="Seconds between samples of the API's metrics history.")
    ] = 10.0
    history_retention: Annotated[
        float, Field(gt=0, le=31 * 86400, description="Seconds of metrics history kept in memory (24 h).")
    ] = 86400.0

    @model_validator(mode="after")
    def _check_history(self) -> MetricsConfig:
        if self.history_retention / self.history_interval > METRICS_HISTORY_MAX_SAMPLES:
            raise CrossFieldError(
                ("history_retention", "history_interval"),
                f"metrics_history_retention / metrics_history_interval is more than {METRICS_HISTORY_MAX_SAMPLES:,}"
                " samples: keep less, or sample less often",
            )
        return self


class EventsConfig(Section):
    """Resource change events published on MQTT."""

    flat_prefix: ClassVar[str] = "events_"
    prefix: Annotated[
        str,
        Field(
            min_length=1,
            pattern=r"^[^+#\x00]+$",
            description="Topic prefix of resource change events: <prefix>/all and <prefix>/<kind>/<id>.",
        ),
    ] = "events"
    qos: Annotated[int, Field(ge=0, le=2, description="QoS of resource change events.")] = 1
    retain: Annotated[bool, Field(description="Whether resource change events are published retained.")] = False


class RealtimeConfig(Section):
    """Socket.IO and HTTP long polling for browsers, on the API listener."""

    flat_prefix: ClassVar[str] = "realtime_"
    flat_names: ClassVar[dict[str, str]] = {"enabled": "realtime"}
    enabled: Annotated[
        bool, Field(description="Socket.IO and HTTP long polling for browsers, on the API listener.")
    ] = True
    cors_origins: Annotated[
        list[str], Field(description="Origins other than the API's own that may use Socket.IO and long polling.")
    ] = []
    journal_size: Annotated[
        int, Field(ge=0, description="Recent messages kept for realtime clients that resume (0: none).")
    ] = 10_000
    journal_bytes: Annotated[int, Field(ge=0, description="Payload bytes the realtime journal may hold.")] = 16 * MiB
    journal_seconds: Annotated[float, Field(gt=0, description="Seconds a message stays in the realtime journal.")] = (
        300.0
    )
    presence_prefix: Annotated[
        str,
        Field(
            min_length=1,
            pattern=r"^[^+#\x00]+$",
            description="Topic prefix of application users' presence: <prefix>/<id>, retained.",
        ),
    ] = "presence"
    presence_grace: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description="Seconds a user whose last Socket.IO connection was lost (not closed) stays online, "
            "time to come back over another transport (0: offline at once).",
        ),
    ] = 5.0
    poll_expiry: Annotated[float, Field(gt=0, description="Seconds a long-poll session lives without a poll.")] = 30.0
    ack_timeout: Annotated[
        float,
        Field(gt=0, description="Seconds to wait for a Socket.IO client's ack of a QoS 1 message before resending."),
    ] = 10.0


class ConsoleConfig(Section):
    """Who may sign in to the web console, and for how long."""

    flat_prefix: ClassVar[str] = "console_"
    users: Annotated[list[str], Field(description="Broker users who may sign in to the web console, read-only.")] = []
    admins: Annotated[
        list[str], Field(description="Broker users who may sign in to the web console and change things.")
    ] = []
    session_hours: Annotated[
        float, Field(gt=0, le=24 * 30, description="Hours a console sign-in by user name and password lasts.")
    ] = 12.0


class PresenceConfig(Section):
    """Device presence: announce, status, heartbeats and wills (issue 8)."""

    flat_prefix: ClassVar[str] = "presence_"
    flat_names: ClassVar[dict[str, str]] = {"enabled": "presence"}
    enabled: Annotated[bool, Field(description="Track devices (announce, status, heartbeats, wills): issue 8.")] = True
    devices_root: Annotated[
        str, Field(pattern=r"^[^/+#\x00]+$", description="First topic level of device topics (one level).")
    ] = "devices"
    admin_root: Annotated[
        str, Field(pattern=r"^[^/+#\x00]+$", description="First topic level of the snapshot and its request.")
    ] = "admin"
    sessions_root: Annotated[
        str, Field(pattern=r"^[^/+#\x00]+$", description="First topic level of session commands.")
    ] = "sessions"
    heartbeat_interval: Annotated[
        float, Field(gt=0, le=86400, description="Seconds between a device's heartbeats.")
    ] = 15.0
    missed_heartbeats: Annotated[
        int, Field(ge=1, le=1000, description="Heartbeat intervals without a message before a device is offline.")
    ] = 3
    snapshot_debounce: Annotated[
        float, Field(ge=0, le=60, description="Seconds registry changes are gathered before the snapshot is published.")
    ] = 0.25
    events_kept: Annotated[
        int, Field(ge=0, le=100000, description="Recent events kept per device (devices/<id>/events).")
    ] = 50
    snapshot_format: Annotated[
        Literal["object", "array"],
        Field(
            description="Shape of admin/devices/snapshot: an object {devices, online, total, timestamp}, "
            "or the bare array of device entries (for panels written for backends that publish one)."
        ),
    ] = "object"


def _check_cluster_url(url: str | None) -> str | None:
    if url is None:
        return None
    if url.startswith("redis+sentinel://"):
        from ..cluster.url import parse_sentinel_url  # (plain parsing; imports no Redis client)

        parse_sentinel_url(url)  # ValueError says what is wrong
        return url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "expected a Redis URL: redis://host:6379/0, rediss://..., unix:///path or "
            "redis+sentinel://[:password@]host:26379[,host:26379...]/db/master"
        )
    return url


class ClusterConfig(Section):
    """This node's cluster on Redis (``url`` unset: one node)."""

    flat_prefix: ClassVar[str] = "cluster_"
    flat_names: ClassVar[dict[str, str]] = {"node_name": "node_name"}

    url: Annotated[
        str | None,
        AfterValidator(_check_cluster_url),
        Field(description="Redis URL (redis://, rediss://, unix://) of the cluster this node joins (unset: one node)."),
    ] = None
    node_name: Annotated[
        str, Field(description="This node's name in the cluster, unique among its nodes (default: host:port).")
    ] = ""
    name: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_.-]{1,64}$",
            description="Names the cluster's keys in Redis, so several clusters can share one Redis.",
        ),
    ] = "default"


SECTIONS: dict[str, type[Section]] = {
    "log": LogConfig,
    "limits": LimitsConfig,
    "jwt": JwtConfig,
    "api": ApiConfig,
    "metrics": MetricsConfig,
    "events": EventsConfig,
    "realtime": RealtimeConfig,
    "console": ConsoleConfig,
    "presence": PresenceConfig,
    "cluster": ClusterConfig,
}
