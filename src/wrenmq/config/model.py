"""``Config``: the broker's top-level settings (listeners, TLS, auth, storage) and its sections.

The top level holds what Mosquitto users find at the top level of mosquitto.conf; everything else is
a section (``config.api.port``, ``config.limits.max_packet_size``). ``SETTINGS`` maps every name a
setting may be written with (``api_port`` or ``api.port``) to its place, for the file, the
environment, flags and ``Config(api_port=...)`` alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

from .listeners import ExternalBrokerConfig, ListenerConfig
from .sections import (
    SECTIONS,
    ApiConfig,
    ClusterConfig,
    ConsoleConfig,
    EventsConfig,
    JwtConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    PresenceConfig,
    RealtimeConfig,
    Section,
)
from .types import (
    CrossFieldError,
    OptionalPath,
    OptionalPort,
    TlsVersion,
    default_data_dir,
    expand_path,
    is_loopback,
)

__all__ = ["SETTINGS", "Config", "Setting", "nest_settings", "unknown_name", "written_keys"]


class Config(BaseModel):
    """Every broker setting; frozen so the running broker can read attributes without re-checking.

    ``Config(api_port=0)`` (a flat name) is ``Config(api={"port": 0})``: see ``nest_settings``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Annotated[str, Field(description="Address the TCP listener binds to.")] = "127.0.0.1"
    port: Annotated[OptionalPort, Field(description="TCP port; 0 picks a free port (off: none).")] = 1883
    data_dir: Annotated[Path, BeforeValidator(expand_path), Field(description="Directory for the SQLite database.")] = (
        Field(default_factory=default_data_dir)
    )
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
    reuse_port: Annotated[
        bool,
        Field(
            description="Bind the MQTT listeners and the API with SO_REUSEPORT, so several processes share "
            "their ports (wrenmq serve --workers sets it)."
        ),
    ] = False
    brokers: Annotated[
        list[ExternalBrokerConfig],
        Field(description="Connections to other MQTT brokers ([[brokers]] tables), with their bridges."),
    ] = []
    password_file: Annotated[OptionalPath, Field(description="Password file (argon2id; wrenmq passwd).")] = None
    acl_file: Annotated[OptionalPath, Field(description="ACL rules file (Mosquitto acl_file syntax).")] = None
    sys_readers: Annotated[list[str], Field(description="Users who may subscribe to $SYS/# once ACLs are on.")] = []
    auth_failure_limit: Annotated[
        int, Field(ge=0, description="Failed logins per source address per minute before refusing it; 0: no limit.")
    ] = 10
    sys_interval: Annotated[float, Field(ge=0, description="Seconds between $SYS updates; 0 disables $SYS.")] = 10.0
    log: LogConfig = LogConfig()
    limits: LimitsConfig = LimitsConfig()
    jwt: JwtConfig = JwtConfig()
    api: ApiConfig = ApiConfig()
    metrics: MetricsConfig = MetricsConfig()
    events: EventsConfig = EventsConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    console: ConsoleConfig = ConsoleConfig()
    presence: PresenceConfig = PresenceConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        """Flat names (``api_port``) and dotted ones (``api.port``) into their sections."""
        if not isinstance(data, Mapping):
            return data
        return nest_settings(data)

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
        api_loopback = self.api.port is None or is_loopback(self.api.host)
        return api_loopback and all(found.loopback for found in self.effective_listeners())

    @model_validator(mode="after")
    def _check_listeners(self) -> Config:
        """TLS shorthand ports need a certificate; build the listener list once to surface errors."""
        needs_cert = [k for k in ("tls_port", "wss_port") if getattr(self, k) is not None]
        if needs_cert and (self.certfile is None or self.keyfile is None):
            raise CrossFieldError(
                (*needs_cert, "certfile", "keyfile"),
                f"{' and '.join(needs_cert)} {'needs' if len(needs_cert) == 1 else 'need'} certfile and keyfile",
            )
        if self.require_certificate and self.cafile is None:
            raise CrossFieldError(("require_certificate", "cafile"), "require_certificate needs cafile")
        if self.use_identity_as_username and not self.require_certificate:
            raise CrossFieldError(
                ("use_identity_as_username", "require_certificate"),
                "use_identity_as_username needs require_certificate = true",
            )
        return self

    @model_validator(mode="after")
    def _check_brokers(self) -> Config:
        names = [found.name for found in self.brokers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise CrossFieldError(("brokers",), f"two or more connections are named {', '.join(map(repr, twice))}")
        return self

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file used when ``storage == "sqlite"``."""
        return self.data_dir / "wrenmq.db"

    @property
    def api_keys_path(self) -> Path:
        """Where ``wrenmq apikey`` and the API keep the hashed API keys."""
        return self.api.keys_file or self.data_dir / "api_keys.json"

    def replace(self, **settings: Any) -> Config:
        """A copy with ``settings`` (flat or dotted names) replacing the current values, validated."""
        values = self.model_dump()
        for name, value in settings.items():
            setting = SETTINGS.get(name)
            if setting is None:
                raise ValueError(unknown_name(name))
            if setting.section is None:
                values[setting.field] = value
            else:
                values[setting.section][setting.field] = value
        return Config.model_validate(values)


class Setting:
    """Where one setting lives: ``section`` (None: the top level) and ``field``; its names."""

    __slots__ = ("field", "flat", "section")

    def __init__(self, section: str | None, field: str, flat: str) -> None:
        self.section = section
        self.field = field
        self.flat = flat

    @property
    def key(self) -> str:
        """The canonical (dotted) key: ``api.port``, or ``port`` at the top level."""
        return self.field if self.section is None else f"{self.section}.{self.field}"

    @property
    def info(self) -> FieldInfo:
        model: type[BaseModel] = Config if self.section is None else SECTIONS[self.section]
        return model.model_fields[self.field]

    def names(self) -> tuple[str, ...]:
        """Every name it may be written with: the dotted key first, then the flat name."""
        return (self.key,) if self.flat == self.key else (self.key, self.flat)


def _settings() -> Iterator[tuple[str, Setting]]:
    for field in Config.model_fields:
        if field not in SECTIONS:
            yield field, Setting(None, field, field)
    for name, section in SECTIONS.items():
        for field in section.model_fields:
            setting = Setting(name, field, section.flat_name(field))
            for written in setting.names():
                yield written, setting


SETTINGS: dict[str, Setting] = dict(_settings())


def unknown_name(name: str) -> str:
    """``unknown key 'api.prot' (did you mean 'api.port'?)``: a section's keys are suggested first."""
    section, dot, _ = name.partition(".")
    candidates = [key for key in SETTINGS if key.startswith(section + ".")] if dot else list(SETTINGS)
    hint = difflib.get_close_matches(name, candidates, n=1) or difflib.get_close_matches(name, list(SETTINGS), n=1)
    return f"unknown key {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def written_keys(values: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Each (key as written, value) of a config mapping: a section table's keys come out dotted
    (``[api] port`` as ``api.port``); ``realtime = false`` is the flat name of ``realtime.enabled``."""
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for field, inner in value.items():
                yield f"{key}.{field}", inner
        elif key in SECTIONS and isinstance(value, Section):
            for field in value.model_fields_set:
                yield f"{key}.{field}", getattr(value, field)
        else:
            yield key, value


def nest_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping with flat (``api_port``) or dotted (``api.port``) keys, or section tables,
    as the nested form ``Config`` is: ``{"api": {"port": 8080}}``. One setting written twice
    (``api_port`` and ``[api] port``) is an error naming both; so is an unknown key."""
    nested: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in written_keys(values):
        setting = SETTINGS.get(key)
        if setting is None:
            if key in SECTIONS:
                raise ValueError(f"{key!r} is a section: give it as a table ([{key}])")
            raise ValueError(unknown_name(key))
        if setting.key in written:
            raise ValueError(f"{written[setting.key]!r} and {key!r} both set {setting.key}: keep one")
        written[setting.key] = key
        if setting.section is None:
            nested[setting.field] = value
        else:
            nested.setdefault(setting.section, {})[setting.field] = value
    return nested
