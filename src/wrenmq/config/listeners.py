"""Listener tables (``[[listeners]]``) and connections to other brokers (``[[brokers]]``)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..bridge_lines import BRIDGE_SYNTAX, Bridge, parse_bridge
from .types import OptionalPath, Port, TlsVersion, is_loopback

__all__ = ["ExternalBrokerConfig", "ListenerConfig", "split_address"]


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


def _check_topic_name(topic: str | None) -> str | None:
    if topic is not None and (not topic or "+" in topic or "#" in topic or "\x00" in topic):
        raise ValueError(f"{topic!r} is not a topic name (not empty, no wildcards) [MQTT-3.3.2-2]")
    return topic


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6 address]:port`` as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or (":" in host and not host.startswith("[")):
        host, port = address, str(default_port)  # no port, or a bare IPv6 address
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in address or "@" in address:
        raise ValueError(f"{address!r} is not host[:port]")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _check_ip(address: str | None) -> str | None:
    if address is not None:
        ipaddress.ip_address(address)  # ValueError: "... does not appear to be an IPv4 or IPv6 address"
    return address


def _check_address(address: str) -> str:
    split_address(address, 1883)
    return address


def _check_broker_url(url: str) -> str:
    from ..client.url import parse_url  # the client's URL rules: mqtt, mqtts, ws, wss

    parse_url(url)
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
    addresses: Annotated[
        list[Annotated[str, AfterValidator(_check_address)]],
        Field(
            description="More host[:port] addresses of the remote (port: the url's), tried in turn when an"
            " attempt fails; a lost connection starts again from the url's (Mosquitto's address list)."
        ),
    ] = []
    round_robin: Annotated[
        bool, Field(description="After a lost connection, try the next address rather than the url's first.")
    ] = False
    bind_address: Annotated[
        str | None,
        AfterValidator(_check_ip),
        Field(description="Local IP address to connect from (Mosquitto's bridge_bind_address)."),
    ] = None
    reconnect_min: Annotated[
        float, Field(gt=0, description="First wait before reconnecting, in seconds (the backoff starts there).")
    ] = 0.5
    reconnect: Annotated[
        bool, Field(description="Reconnect after the connection fails (false: Mosquitto's start_type once).")
    ] = True
    max_packet_size: Annotated[
        int,
        Field(
            ge=0,
            le=268435460,
            description="Largest PUBLISH sent to the remote, in bytes (0: no limit); a larger bridged"
            " message is dropped.",
        ),
    ] = 0
    unsubscribe_out: Annotated[
        bool,
        Field(
            description="On each connect, UNSUBSCRIBE at the remote from the out-only bridges' remote filters"
            " (Mosquitto's bridge_attempt_unsubscribe: a kept session stops sending what is no longer brought in)."
        ),
    ] = False
    tls_version: Annotated[
        Literal["TLSv1.2", "TLSv1.3"] | None,
        Field(description="Lowest TLS version to the remote (default: the system's, at least TLS 1.2)."),
    ] = None
    alpn: Annotated[str | None, Field(min_length=1, description="TLS ALPN protocol to ask the remote for.")] = None
    notifications: Annotated[
        bool,
        Field(
            description="Publish the connection's state, retained: 1 up, 0 down (the remote's copy as"
            " its will), here and on the remote (Mosquitto's bridge notifications)."
        ),
    ] = False
    notifications_local_only: Annotated[
        bool, Field(description="Publish the state notifications on this broker only, not on the remote.")
    ] = False
    notification_topic: Annotated[
        str | None,
        AfterValidator(_check_topic_name),
        Field(description="Topic of the state notifications (default: $SYS/broker/connection/<client id>/state)."),
    ] = None

    @model_validator(mode="after")
    def _check_name(self) -> ExternalBrokerConfig:
        if self.name == "internal":
            raise ValueError("the name 'internal' means this broker; choose another")
        tls = self.url.lower().startswith(("mqtts:", "wss:", "ssl:", "tls:"))
        for key in ("cafile", "certfile", "keyfile", "tls_insecure", "tls_version", "alpn"):
            if getattr(self, key) and not tls:
                raise ValueError(f"{key} needs a TLS url (mqtts:// or wss://)")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together (the client certificate and its key)")
        from ..client.url import parse_url

        url = parse_url(self.url)
        has_password = self.password is not None or url.password is not None
        if self.version == 4 and has_password and self.username is None and url.username is None:
            raise ValueError("MQTT 3.1.1 sends a password only with a username [MQTT-3.1.2-22]")
        return self

    def parsed_bridges(self) -> list[Bridge]:
        return [parse_bridge(line) for line in self.bridges]
