"""Typed broker settings, read once at start-up from a TOML file, the environment and flags.

Precedence is flags > environment > file > defaults. Every error names the key, where it came from
and what is wrong, so a bad deployment fails at start-up with a message a person can act on.
TOML values must already have the right type (``port = "1883"`` is an error); environment
variables are strings and are parsed leniently (``WRENMQ_ALLOW_ANONYMOUS=false``).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from .bridge_lines import BRIDGE_SYNTAX, Bridge, parse_bridge

__all__ = [
    "CONFIG_ENV",
    "ENV_NOT_SETTINGS",
    "ENV_PREFIX",
    "Bridge",
    "Config",
    "ConfigError",
    "ExternalBrokerConfig",
    "ListenerConfig",
    "env_var",
    "load_config",
    "parse_bridge",
    "read_config_file",
]

ENV_PREFIX = "WRENMQ_"
CONFIG_ENV = "WRENMQ_CONFIG"  # the config file of `wrenmq serve` (and of the commands that read it)
# ``WRENMQ_`` variables that are not settings; any other unknown one is an error, as an unknown key in
# the file is, so a typo (WRENMQ_ALLOW_ANONYMUS=false) cannot leave a setting at its default unseen.
ENV_NOT_SETTINGS = frozenset(
    {
        "WRENMQ_CONFIG",  # the config file, for `wrenmq serve`
        "WRENMQ_KEY",  # the API token in the README's examples (export WRENMQ_KEY=$(wrenmq apikey create ...))
        "WRENMQ_PURE_PYTHON",  # a build switch: install without compiling the hot path
    }
)
KiB = 1024
MiB = 1024 * KiB


class ConfigError(Exception):
    """A setting is missing, unknown or invalid; the message names the key and its source."""


def _expand_path(value: Any) -> Any:
    """Accept strings (TOML and env have no Path type) and expand ``~`` the way a shell would."""
    if isinstance(value, str | Path):
        return Path(value).expanduser()
    raise ValueError("expected a path string")


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("wrenmq"))


def _optional_port(value: Any) -> Any:
    """``false``, ``"off"`` or ``"none"`` switch a listener off (TOML has no null)."""
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none", "false", "")):
        return None
    return value


Port = Annotated[int, Field(ge=0, le=65535)]
OptionalPort = Annotated[Port | None, BeforeValidator(_optional_port)]
OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: None if v is None else _expand_path(v))]
TlsVersion = Literal["TLSv1.2", "TLSv1.3"]
LogDest = Literal["stderr", "stdout", "file", "syslog"]
SyslogFacility = Literal[
    "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"
]


def _split_words(value: Any) -> Any:
    """``log_dest`` from the environment or a flag: "stderr,file" or "stderr file"; "none": []."""
    if isinstance(value, str):
        words = value.replace(",", " ").split()
        return [] if words == ["none"] else words
    return value


JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
JWT_MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key at least as long as the hash
METRICS_HISTORY_MAX_SAMPLES = 100_000  # per field, 8 bytes each: under 9 MB for the 11 columns


def _comma_list(value: Any) -> Any:
    """``"RS256,ES256"`` (an environment variable) as a list; TOML lists pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def is_loopback(host: str) -> bool:
    """A loopback address (127.0.0.0/8, ::1, localhost); "" and 0.0.0.0 (every interface) are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


class ListenerConfig(BaseModel):
    """One listener: a transport on an address, with its own TLS and auth settings.

    Unset auth settings (None) inherit the top-level ones, as Mosquitto's per-listener settings do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[
        Literal["tcp", "tls", "ws", "wss", "unix"], Field(description="Transport (unix: MQTT on a Unix socket).")
    ] = "tcp"
    host: Annotated[str, Field(description="Address to bind.")] = "127.0.0.1"
    port: Annotated[Port, Field(description="Port; 0 picks a free port.")] = 1883
    name: Annotated[str, Field(description="Name in logs and the API (default: type:port).")] = ""
    path: Annotated[str, Field(description='WebSocket path ("/" is accepted too).')] = "/mqtt"
    certfile: Annotated[OptionalPath, Field(description="TLS certificate chain (PEM).")] = None
    keyfile: Annotated[OptionalPath, Field(description="TLS private key (PEM).")] = None
    cafile: Annotated[OptionalPath, Field(description="CA bundle that client certificates must chain to.")] = None
    require_certificate: Annotated[bool, Field(description="Refuse TLS clients without a valid certificate.")] = False
    use_identity_as_username: Annotated[bool, Field(description="Use the client certificate's CN as the username.")] = (
        False
    )
    tls_version: Annotated[TlsVersion, Field(description="Lowest TLS version accepted.")] = "TLSv1.2"
    ciphers: Annotated[str | None, Field(description="OpenSSL cipher list for TLS 1.2.")] = None
    allow_anonymous: Annotated[bool | None, Field(description="Override the top-level allow_anonymous.")] = None
    password_file: Annotated[OptionalPath, Field(description="Override the top-level password_file.")] = None
    acl_file: Annotated[OptionalPath, Field(description="Override the top-level acl_file.")] = None
    max_connections: Annotated[int, Field(ge=0, description="Connections at once on this listener; 0: no limit.")] = 0
    socket: Annotated[OptionalPath, Field(description="For type unix: the socket's path (created mode 0600).")] = None
    socket_group: Annotated[
        str | None, Field(description="For type unix: a group whose members may connect too (mode 0660).")
    ] = None

    @property
    def label(self) -> str:
        return self.name or (f"unix:{self.socket}" if self.type == "unix" else f"{self.type}:{self.port}")

    @property
    def secure(self) -> bool:
        return self.type in ("tls", "wss")

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address only (127.0.0.0/8, ::1, localhost); "" and 0.0.0.0 are not. A
        Unix socket is: only processes on this host (allowed by its file mode) can connect."""
        return self.type == "unix" or is_loopback(self.host)

    @model_validator(mode="after")
    def _check_tls(self) -> ListenerConfig:
        if (self.type == "unix") != (self.socket is not None):
            raise ValueError("a unix listener needs socket (its path), and socket is for unix listeners only")
        if self.socket_group is not None and self.type != "unix":
            raise ValueError("socket_group is for unix listeners only")
        if self.secure and (self.certfile is None or self.keyfile is None):
            raise ValueError(f"a {self.type} listener needs certfile and keyfile")
        if self.require_certificate and self.cafile is None:
            raise ValueError("require_certificate needs cafile (the CA client certificates chain to)")
        if self.use_identity_as_username and not self.require_certificate:
            raise ValueError("use_identity_as_username needs require_certificate = true")
        return self


def _check_bridge(line: str) -> str:
    parse_bridge(line)
    return line


def _check_broker_url(url: str) -> str:
    from .client.url import parse_url  # the client's URL rules: mqtt, mqtts, ws, wss

    parse_url(url)
    return url


def _check_cluster_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a Redis URL: redis://host:6379/0, rediss://... or unix:///path")
    return url


class ExternalBrokerConfig(BaseModel):
    """A named connection to another MQTT broker (``[[brokers]]``), with its bridges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
            description="The connection's name in the API and in POST /publish ('internal' is this broker).",
        ),
    ]
    url: Annotated[
        str,
        AfterValidator(_check_broker_url),
        Field(description="mqtt://, mqtts://, ws:// or wss://host[:port][/path]; may carry user:password@."),
    ]
    username: Annotated[str | None, Field(description="Username (overrides the URL's).")] = None
    password: Annotated[str | None, Field(description="Password (overrides the URL's).")] = None
    client_id: Annotated[
        str | None, Field(min_length=1, description="Client identifier at the remote (default: <hostname>.<name>).")
    ] = None
    version: Annotated[Literal[4, 5], Field(description="MQTT version: 5, or 4 (3.1.1).")] = 5
    cafile: Annotated[OptionalPath, Field(description="CA bundle the remote's certificate must chain to.")] = None
    queue_size: Annotated[
        int, Field(ge=1, description="Messages kept (durably) for the remote while it is down; more are refused.")
    ] = 10_000
    reconnect_max: Annotated[
        float, Field(gt=0, description="Longest wait between reconnection attempts, in seconds (backoff grows to it).")
    ] = 30.0
    bridges: Annotated[
        list[Annotated[str, AfterValidator(_check_bridge)]],
        Field(description=f"Bridge lines: {BRIDGE_SYNTAX}."),
    ] = []
    certfile: Annotated[OptionalPath, Field(description="Client certificate (PEM) for a TLS url.")] = None
    keyfile: Annotated[OptionalPath, Field(description="The client certificate's private key (PEM).")] = None
    tls_insecure: Annotated[
        bool, Field(description="Do not check the remote's certificate names its host (the chain still is).")
    ] = False
    keepalive: Annotated[int, Field(ge=0, le=65535, description="Keep Alive sent in CONNECT, in seconds.")] = 60
    clean_start: Annotated[
        bool, Field(description="Start a new session at the remote on every connect (nothing queued while away).")
    ] = False
    bridge_bit: Annotated[
        bool, Field(description="At MQTT 3.1.1, connect with Mosquitto's bridge bit (try_private).")
    ] = True
    outgoing_retain: Annotated[
        bool, Field(description="Send the RETAIN flag of bridged-out messages (false: never retained there).")
    ] = True

    @model_validator(mode="after")
    def _check_name(self) -> ExternalBrokerConfig:
        if self.name == "internal":
            raise ValueError("the name 'internal' means this broker; choose another")
        tls = self.url.lower().startswith(("mqtts:", "wss:", "ssl:", "tls:"))
        for key in ("cafile", "certfile", "keyfile", "tls_insecure"):
            if getattr(self, key) and not tls:
                raise ValueError(f"{key} needs a TLS url (mqtts:// or wss://)")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together (the client certificate and its key)")
        from .client.url import parse_url

        url = parse_url(self.url)
        has_password = self.password is not None or url.password is not None
        if self.version == 4 and has_password and self.username is None and url.username is None:
            raise ValueError("MQTT 3.1.1 sends a password only with a username [MQTT-3.1.2-22]")
        return self

    def parsed_bridges(self) -> list[Bridge]:
        return [parse_bridge(line) for line in self.bridges]


class Config(BaseModel):
    """Every broker setting; frozen so the running broker can read attributes without re-checking."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Annotated[str, Field(description="Address the TCP listener binds to.")] = "127.0.0.1"
    port: Annotated[OptionalPort, Field(description="TCP port; 0 picks a free port (off: none).")] = 1883
    data_dir: Annotated[
        Path, BeforeValidator(_expand_path), Field(description="Directory for the SQLite database.")
    ] = Field(default_factory=_default_data_dir)
    log_level: Annotated[Literal["debug", "info", "warning", "error"], Field(description="Logging threshold.")] = "info"
    log_format: Annotated[
        Literal["text", "json"], Field(description="Log lines: text, or one JSON object per line.")
    ] = "text"
    log_dest: Annotated[
        list[LogDest],
        BeforeValidator(_split_words),
        Field(
            description="Where log lines go: stderr, stdout, file (log_file), syslog; a list (comma-separated "
            'in the environment and flags); [] or "none": nowhere.'
        ),
    ] = Field(default_factory=lambda: list[LogDest](["stderr"]))
    log_file: Annotated[
        OptionalPath, Field(description="The file for log_dest file; reopened when logrotate moves it.")
    ] = None
    syslog_address: Annotated[
        str, Field(description="For log_dest syslog: a Unix socket path, or host:port for UDP.")
    ] = "/dev/log"
    syslog_facility: Annotated[
        SyslogFacility, Field(description="For log_dest syslog: the facility (daemon, user, local0 to local7).")
    ] = "daemon"
    storage: Annotated[
        Literal["sqlite", "memory"], Field(description="Where sessions, queued and retained messages live.")
    ] = "sqlite"
    durability: Annotated[
        Literal["strict", "relaxed"],
        Field(description="strict: acknowledge stored QoS 1/2 messages after commit; relaxed: at once."),
    ] = "strict"
    commit_interval: Annotated[
        float, Field(gt=0, description="Seconds a relaxed-mode write may wait before it is committed.")
    ] = 0.05
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
    allow_anonymous: Annotated[
        bool | None,
        Field(description="Accept clients that send no username (default: only while every listener is on loopback)."),
    ] = None
    ws_port: Annotated[OptionalPort, Field(description="WebSocket listener port on host (off: none).")] = 9001
    ws_path: Annotated[str, Field(description="WebSocket path of the ws/wss listeners.")] = "/mqtt"
    tls_port: Annotated[OptionalPort, Field(description="TLS listener port on host (needs certfile, keyfile).")] = None
    wss_port: Annotated[OptionalPort, Field(description="Secure WebSocket listener port on host.")] = None
    certfile: Annotated[OptionalPath, Field(description="TLS certificate chain (PEM) for tls/wss.")] = None
    keyfile: Annotated[OptionalPath, Field(description="TLS private key (PEM) for tls/wss.")] = None
    cafile: Annotated[OptionalPath, Field(description="CA bundle for client certificates.")] = None
    require_certificate: Annotated[bool, Field(description="tls/wss clients must present a certificate.")] = False
    use_identity_as_username: Annotated[bool, Field(description="Use a client certificate's CN as the username.")] = (
        False
    )
    tls_version: Annotated[TlsVersion, Field(description="Lowest TLS version accepted.")] = "TLSv1.2"
    ciphers: Annotated[str | None, Field(description="OpenSSL cipher list for TLS 1.2.")] = None
    listeners: Annotated[
        list[ListenerConfig], Field(description="More listeners ([[listeners]] tables), beside the ones above.")
    ] = []
    brokers: Annotated[
        list[ExternalBrokerConfig],
        Field(description="Connections to other MQTT brokers ([[brokers]] tables), with their bridges."),
    ] = []
    password_file: Annotated[OptionalPath, Field(description="Password file (argon2id; wrenmq passwd).")] = None
    acl_file: Annotated[OptionalPath, Field(description="ACL rules file (Mosquitto acl_file syntax).")] = None
    sys_readers: Annotated[list[str], Field(description="Users who may subscribe to $SYS/# once ACLs are on.")] = []
    jwt_algorithms: Annotated[
        list[JwtAlgorithm],
        BeforeValidator(_comma_list),
        Field(description="JWT signature algorithms accepted: HS256, RS256, ES256."),
    ] = ["HS256"]
    jwt_secret: Annotated[
        str | None, Field(description="HS256 shared secret (at least 32 bytes); JWT passwords are checked with it.")
    ] = None
    jwt_public_key_file: Annotated[OptionalPath, Field(description="PEM public key for RS256 or ES256 tokens.")] = None
    jwt_jwks_file: Annotated[OptionalPath, Field(description="JWKS file (JSON); a token's kid picks its key.")] = None
    jwt_username_claim: Annotated[
        str, Field(min_length=1, description="JWT claim that becomes the client's username.")
    ] = "sub"
    jwt_audience: Annotated[
        str | None, Field(description="Required JWT aud claim (unset: tokens that name an audience are refused).")
    ] = None
    jwt_issuer: Annotated[str | None, Field(description="Required JWT iss claim (unset: not checked).")] = None
    jwt_acl_claims: Annotated[
        bool, Field(description="A token's publish/subscribe claims (topic filter lists) restrict its client.")
    ] = True
    auth_failure_limit: Annotated[
        int, Field(ge=0, description="Failed logins per source address per minute before refusing it; 0: no limit.")
    ] = 10
    max_connections: Annotated[int, Field(ge=0, description="Connections at once, all listeners; 0: no limit.")] = 0
    max_topic_length: Annotated[
        int, Field(ge=1, le=65535, description="Longest topic name or filter, in characters.")
    ] = 65535
    max_topic_levels: Annotated[int, Field(ge=1, description="Most levels in a topic name or filter.")] = 128
    max_subscriptions: Annotated[int, Field(ge=0, description="Subscriptions per client; 0: no limit.")] = 0
    max_publish_rate: Annotated[
        float, Field(ge=0, description="Messages per second a client may publish (token bucket); 0: no limit.")
    ] = 0.0
    sys_interval: Annotated[float, Field(ge=0, description="Seconds between $SYS updates; 0 disables $SYS.")] = 10.0
    api_host: Annotated[str, Field(description="Address the HTTP management API binds to.")] = "127.0.0.1"
    api_port: Annotated[OptionalPort, Field(description="HTTP management API port (off: no API).")] = 8080
    api_certfile: Annotated[OptionalPath, Field(description="TLS certificate for the API (unset: plain HTTP).")] = None
    api_keyfile: Annotated[OptionalPath, Field(description="TLS private key for the API (unset: in api_certfile).")] = (
        None
    )
    api_keys_file: Annotated[
        OptionalPath, Field(description="Hashed API keys (wrenmq apikey); default: <data_dir>/api_keys.json.")
    ] = None
    metrics_public: Annotated[
        bool, Field(description="Serve /metrics without an API key (for scrapers that find targets by annotation).")
    ] = False
    stream_buffer: Annotated[
        int, Field(ge=1, description="Messages an API stream may hold for a slow reader before it drops.")
    ] = 1000
    metrics_history_interval: Annotated[
        float, Field(ge=0.05, le=3600, description="Seconds between samples of the API's metrics history.")
    ] = 10.0
    metrics_history_retention: Annotated[
        float, Field(gt=0, le=31 * 86400, description="Seconds of metrics history kept in memory (24 h).")
    ] = 86400.0
    api_max_body_size: Annotated[
        int,
        Field(
            ge=1024,
            le=2**31,
            description="Largest API request body in bytes (publishes by a signed-in caller: max_packet_size).",
        ),
    ] = 64 * 1024
    api_max_unauthenticated_requests: Annotated[
        int, Field(ge=1, description="API requests with a body and no credentials served at once; beyond: 503.")
    ] = 64
    events_prefix: Annotated[
        str,
        Field(
            min_length=1,
            pattern=r"^[^+#\x00]+$",
            description="Topic prefix of resource change events: <prefix>/all and <prefix>/<kind>/<id>.",
        ),
    ] = "events"
    events_qos: Annotated[int, Field(ge=0, le=2, description="QoS of resource change events.")] = 1
    events_retain: Annotated[bool, Field(description="Whether resource change events are published retained.")] = False
    realtime: Annotated[
        bool, Field(description="Socket.IO and HTTP long polling for browsers, on the API listener.")
    ] = True
    realtime_cors_origins: Annotated[
        list[str], Field(description="Origins other than the API's own that may use Socket.IO and long polling.")
    ] = []
    realtime_journal_size: Annotated[
        int, Field(ge=0, description="Recent messages kept for realtime clients that resume (0: none).")
    ] = 10_000
    realtime_journal_bytes: Annotated[int, Field(ge=0, description="Payload bytes the realtime journal may hold.")] = (
        16 * MiB
    )
    realtime_journal_seconds: Annotated[
        float, Field(gt=0, description="Seconds a message stays in the realtime journal.")
    ] = 300.0
    realtime_presence_prefix: Annotated[
        str,
        Field(
            min_length=1,
            pattern=r"^[^+#\x00]+$",
            description="Topic prefix of application users' presence: <prefix>/<id>, retained.",
        ),
    ] = "presence"
    realtime_presence_grace: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description="Seconds a user whose last Socket.IO connection was lost (not closed) stays online, "
            "time to come back over another transport (0: offline at once).",
        ),
    ] = 5.0
    realtime_poll_expiry: Annotated[
        float, Field(gt=0, description="Seconds a long-poll session lives without a poll.")
    ] = 30.0
    console_users: Annotated[
        list[str], Field(description="Broker users who may sign in to the web console, read-only.")
    ] = []
    console_admins: Annotated[
        list[str], Field(description="Broker users who may sign in to the web console and change things.")
    ] = []
    console_session_hours: Annotated[
        float, Field(gt=0, le=24 * 30, description="Hours a console sign-in by user name and password lasts.")
    ] = 12.0
    realtime_ack_timeout: Annotated[
        float,
        Field(gt=0, description="Seconds to wait for a Socket.IO client's ack of a QoS 1 message before resending."),
    ] = 10.0
    presence: Annotated[bool, Field(description="Track devices (announce, status, heartbeats, wills): issue 8.")] = True
    presence_devices_root: Annotated[
        str, Field(pattern=r"^[^/+#\x00]+$", description="First topic level of device topics (one level).")
    ] = "devices"
    presence_admin_root: Annotated[
        str, Field(pattern=r"^[^/+#\x00]+$", description="First topic level of the snapshot and its request.")
    ] = "admin"
    presence_sessions_root: Annotated[
        str, Field(pattern=r"^[^/+#\x00]+$", description="First topic level of session commands.")
    ] = "sessions"
    presence_heartbeat_interval: Annotated[
        float, Field(gt=0, le=86400, description="Seconds between a device's heartbeats.")
    ] = 15.0
    presence_missed_heartbeats: Annotated[
        int, Field(ge=1, le=1000, description="Heartbeat intervals without a message before a device is offline.")
    ] = 3
    presence_snapshot_debounce: Annotated[
        float, Field(ge=0, le=60, description="Seconds registry changes are gathered before the snapshot is published.")
    ] = 0.25
    presence_events_kept: Annotated[
        int, Field(ge=0, le=100000, description="Recent events kept per device (devices/<id>/events).")
    ] = 50
    presence_snapshot_format: Annotated[
        Literal["object", "array"],
        Field(
            description="Shape of admin/devices/snapshot: an object {devices, online, total, timestamp}, "
            "or the bare array of device entries (for panels written for backends that publish one)."
        ),
    ] = "object"
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
    cluster_url: Annotated[
        str | None,
        AfterValidator(_check_cluster_url),
        Field(description="Redis URL (redis://, rediss://, unix://) of the cluster this node joins (unset: one node)."),
    ] = None
    node_name: Annotated[
        str, Field(description="This node's name in the cluster, unique among its nodes (default: host:port).")
    ] = ""
    cluster_name: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_.-]{1,64}$",
            description="Names the cluster's keys in Redis, so several clusters can share one Redis.",
        ),
    ] = "default"

    @model_validator(mode="after")
    def _check_write_buffer(self) -> Config:
        """Flow control needs low < high <= cap, or reading would never resume or never pause."""
        if self.write_buffer_high <= self.write_buffer_low:
            raise _CrossFieldError(
                ("write_buffer_high", "write_buffer_low"),
                f"write_buffer_high ({self.write_buffer_high}) must be greater than "
                f"write_buffer_low ({self.write_buffer_low})",
            )
        if self.write_buffer_high > self.max_write_buffer:
            raise _CrossFieldError(
                ("write_buffer_high", "max_write_buffer"),
                f"write_buffer_high ({self.write_buffer_high}) must not exceed "
                f"max_write_buffer ({self.max_write_buffer})",
            )
        return self

    def effective_listeners(self) -> list[ListenerConfig]:
        """The shorthand listeners (port, ws_port, tls_port, wss_port on host) and then ``listeners``."""
        tls: dict[str, Any] = {
            "certfile": self.certfile,
            "keyfile": self.keyfile,
            "cafile": self.cafile,
            "require_certificate": self.require_certificate,
            "use_identity_as_username": self.use_identity_as_username,
            "tls_version": self.tls_version,
            "ciphers": self.ciphers,
        }
        found = [] if self.port is None else [ListenerConfig(type="tcp", host=self.host, port=self.port)]
        if self.ws_port is not None:
            found.append(ListenerConfig(type="ws", host=self.host, port=self.ws_port, path=self.ws_path))
        if self.tls_port is not None:
            found.append(ListenerConfig(type="tls", host=self.host, port=self.tls_port, **tls))
        if self.wss_port is not None:
            found.append(ListenerConfig(type="wss", host=self.host, port=self.wss_port, path=self.ws_path, **tls))
        return found + list(self.listeners)

    def anonymous_allowed(self, listener: ListenerConfig | None) -> bool:
        """Whether clients no authentication source vouches for may come in on ``listener`` (None:
        the HTTP API's sign-ins: console, Socket.IO, polling): the listener's ``allow_anonymous``,
        then the top-level one; unset everywhere, only while everything the broker listens on (every
        MQTT listener, and the API when it is on) is on loopback."""
        if listener is not None and listener.allow_anonymous is not None:
            return listener.allow_anonymous
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        api_loopback = self.api_port is None or is_loopback(self.api_host)
        return api_loopback and all(found.loopback for found in self.effective_listeners())

    @model_validator(mode="after")
    def _check_listeners(self) -> Config:
        """TLS shorthand ports need a certificate; build the listener list once to surface errors."""
        needs_cert = [k for k in ("tls_port", "wss_port") if getattr(self, k) is not None]
        if needs_cert and (self.certfile is None or self.keyfile is None):
            raise _CrossFieldError(
                (*needs_cert, "certfile", "keyfile"),
                f"{' and '.join(needs_cert)} {'needs' if len(needs_cert) == 1 else 'need'} certfile and keyfile",
            )
        if self.require_certificate and self.cafile is None:
            raise _CrossFieldError(("require_certificate", "cafile"), "require_certificate needs cafile")
        if self.use_identity_as_username and not self.require_certificate:
            raise _CrossFieldError(
                ("use_identity_as_username", "require_certificate"),
                "use_identity_as_username needs require_certificate = true",
            )
        return self

    @model_validator(mode="after")
    def _check_log_dest(self) -> Config:
        if "file" in self.log_dest and self.log_file is None:
            raise _CrossFieldError(("log_dest", "log_file"), "log_dest file needs log_file (the path to write)")
        return self

    @model_validator(mode="after")
    def _check_metrics_history(self) -> Config:
        if self.metrics_history_retention / self.metrics_history_interval > METRICS_HISTORY_MAX_SAMPLES:
            raise _CrossFieldError(
                ("metrics_history_retention", "metrics_history_interval"),
                f"metrics_history_retention / metrics_history_interval is more than {METRICS_HISTORY_MAX_SAMPLES:,}"
                " samples: keep less, or sample less often",
            )
        return self

    @model_validator(mode="after")
    def _check_api_tls(self) -> Config:
        if self.api_keyfile is not None and self.api_certfile is None:
            raise _CrossFieldError(("api_keyfile", "api_certfile"), "api_keyfile needs api_certfile")
        return self

    @model_validator(mode="after")
    def _check_brokers(self) -> Config:
        names = [found.name for found in self.brokers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise _CrossFieldError(("brokers",), f"two or more connections are named {', '.join(map(repr, twice))}")
        return self

    @property
    def jwt_configured(self) -> bool:
        """JWT authentication is on once a key source is set."""
        return self.jwt_secret is not None or self.jwt_public_key_file is not None or self.jwt_jwks_file is not None

    @model_validator(mode="after")
    def _check_jwt(self) -> Config:
        """Every accepted algorithm needs a key source, and every key source an algorithm that uses it."""
        if not self.jwt_configured:
            return self
        algorithms = set(self.jwt_algorithms)
        if not algorithms:
            raise _CrossFieldError(("jwt_algorithms",), "jwt_algorithms must list at least one algorithm")
        if self.jwt_secret is not None:
            if "HS256" not in algorithms:
                raise _CrossFieldError(
                    ("jwt_secret", "jwt_algorithms"), "jwt_secret is an HS256 key but jwt_algorithms has no HS256"
                )
            if len(self.jwt_secret.encode()) < JWT_MIN_SECRET_BYTES:
                raise _CrossFieldError(
                    ("jwt_secret",), f"jwt_secret must be at least {JWT_MIN_SECRET_BYTES} bytes long (RFC 7518 3.2)"
                )
        if self.jwt_public_key_file is not None and not algorithms & {"RS256", "ES256"}:
            raise _CrossFieldError(
                ("jwt_public_key_file", "jwt_algorithms"),
                "jwt_public_key_file is for RS256 or ES256 but jwt_algorithms lists neither",
            )
        for algorithm in sorted(algorithms):
            if self.jwt_jwks_file is not None:
                break  # which algorithms a JWKS serves is known once it is read (at start-up)
            if algorithm == "HS256" and self.jwt_secret is None:
                raise _CrossFieldError(
                    ("jwt_algorithms", "jwt_secret"), "jwt_algorithms lists HS256 but jwt_secret is not set"
                )
            if algorithm != "HS256" and self.jwt_public_key_file is None:
                raise _CrossFieldError(
                    ("jwt_algorithms", "jwt_public_key_file"),
                    f"jwt_algorithms lists {algorithm} but neither jwt_public_key_file nor jwt_jwks_file is set",
                )
        return self

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file used when ``storage == "sqlite"``."""
        return self.data_dir / "wrenmq.db"

    @property
    def api_keys_path(self) -> Path:
        """Where ``wrenmq apikey`` and the API keep the hashed API keys."""
        return self.api_keys_file or self.data_dir / "api_keys.json"


class _CrossFieldError(ValueError):
    """A rule over several keys; carries the keys so the error can name their sources."""

    def __init__(self, keys: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.keys = keys
        self.message = message


def env_var(key: str) -> str:
    """The environment variable that sets ``key``."""
    return ENV_PREFIX + key.upper()


def load_config(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Merge file, ``WRENMQ_*`` environment and overrides (CLI flags; None ignored) into a Config.

    The file is TOML, or Mosquitto's mosquitto.conf (see ``mosquitto_conf``); what is ignored in
    the latter is appended to ``warnings``, for the caller to log once logging is set up."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    errors: list[str] = []

    if config_file is not None:
        where = f"config file {config_file}"
        found, found_origins = read_config_file(config_file, warnings)
        for key, value in found.items():
            if _check_known(key, where, errors):
                values[key] = value
                origins[key] = found_origins.get(key, f"{where}: key {key!r}")
        origins.update({key: origin for key, origin in found_origins.items() if "[" in key})

    errors.extend(_unknown_env(env))
    for key in Config.model_fields:
        name = env_var(key)
        if name in env:
            try:
                values[key] = _field_adapter(key).validate_python(env[name])
                origins[key] = f"environment {name}"
            except ValidationError as exc:
                errors.extend(f"environment {name}: {_message(err)}" for err in exc.errors())

    for key, value in (overrides or {}).items():
        if value is not None and _check_known(key, "overrides", errors):
            values[key], origins[key] = value, f"option --{key.replace('_', '-')}"

    try:
        # Strict: TOML and flags carry real types; env strings were converted above.
        config = Config.model_validate(values, strict=True)
    except ValidationError as exc:
        errors.extend(_describe(err, origins) for err in exc.errors())
    else:
        if not errors:
            return config
    raise ConfigError("\n".join(errors))


def read_config_file(path: Path, warnings: list[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's settings and, for a mosquitto.conf, where each came from (key -> file and line)."""
    from .mosquitto_conf import MosquittoConfError, is_mosquitto_conf, read_mosquitto_conf

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    if not is_mosquitto_conf(path, data):
        return _read_toml(path, data), {}
    try:
        conversion = read_mosquitto_conf(path)
    except MosquittoConfError as exc:
        raise ConfigError(str(exc)) from None
    if warnings is not None:
        warnings.extend(conversion.warnings)
    return conversion.values, conversion.origins


def _read_toml(path: Path, data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8: {exc}") from None


def _check_known(key: str, where: str, errors: list[str]) -> bool:
    if key in Config.model_fields:
        return True
    hint = difflib.get_close_matches(key, Config.model_fields, n=1)
    errors.append(f"{where}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return False


def _unknown_env(env: Mapping[str, str]) -> list[str]:
    """An error for each ``WRENMQ_*`` variable that names no setting, with the closest one."""
    known = {env_var(key) for key in Config.model_fields}
    errors = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known and name not in ENV_NOT_SETTINGS:
            # Compared without the prefix, which every name shares and which would make all look alike.
            names = {found.removeprefix(ENV_PREFIX): found for found in known | ENV_NOT_SETTINGS}
            hint = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).upper(), sorted(names), n=1)
            suggestion = f" (did you mean {names[hint[0]]}?)" if hint else ""
            errors.append(f"environment {name}: unknown variable{suggestion}")
    return errors


@functools.cache
def _field_adapter(key: str) -> TypeAdapter[Any]:
    """A lenient validator for one field, with its constraints, for parsing environment strings."""
    info = Config.model_fields[key]
    annotation: Any = info.annotation
    if not info.metadata:
        return TypeAdapter(annotation)
    constrained: Any = Annotated[(annotation, *info.metadata)]
    return TypeAdapter(constrained)


def _message(err: ErrorDetails) -> str:
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, _CrossFieldError):
        return ctx_error.message
    return str(err["msg"]).removeprefix("Value error, ")


def _describe(err: ErrorDetails, origins: Mapping[str, str]) -> str:
    """Prefix a pydantic error with where its key(s) came from."""
    loc = err["loc"]
    if loc:
        key = str(loc[0])
        inner = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
        where = origins.get(f"{key}[{loc[1]}]" if len(loc) > 1 else key) or origins.get(key, f"key {key!r}")
        return f"{where}{' at ' + key + inner if inner else ''}: {_message(err)}"
    ctx_error = err.get("ctx", {}).get("error")
    keys = ctx_error.keys if isinstance(ctx_error, _CrossFieldError) else ()
    sources = [origins[k] for k in keys if k in origins] or ["configuration"]
    return f"{', '.join(sources)}: {_message(err)}"
