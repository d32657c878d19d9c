"""The MQTT client an external broker connection (``[[brokers]]``) connects with, made from its
settings: client id, session, backoff and addresses, TLS, and the will that carries Mosquitto's
bridge state notification."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from ..config import ExternalBrokerConfig, split_address

if TYPE_CHECKING:
    import ssl

    from ..client import Client

__all__ = ["check_connection", "local_address", "make_client", "notification_topic", "tls_context"]

SESSION_EXPIRY = 86_400  # MQTT 5: the remote keeps our session (and what it queued for us) a day
WINDOW = 100  # messages handed to the client at once (in flight or waiting in its own queue)


def check_connection(config: ExternalBrokerConfig) -> str | None:
    """What would stop the connection ``config`` from starting (its cafile does not load), or None."""
    try:
        make_client(config)
    except (ValueError, OSError) as exc:
        return f"broker {config.name!r}: {exc}"
    return None


def notification_topic(config: ExternalBrokerConfig, client_id: str) -> str | None:
    """Where the connection publishes its state (None: notifications off); Mosquitto's default
    names the client id the connection has at the remote."""
    if not config.notifications:
        return None
    return config.notification_topic or f"$SYS/broker/connection/{client_id}/state"


def make_client(config: ExternalBrokerConfig, prefix: str | None = None) -> Client:
    from ..client import Client
    from ..mqtt.packets import Will

    # (unset: <host>.<name>; in a cluster <wrenmq.cluster>.<name>, the same on whichever node runs it)
    client_id = config.client_id or f"{prefix or socket.gethostname()}.{config.name}"
    settings: dict[str, Any] = {
        "client_id": client_id,
        "version": config.version,
        # Keep the session at the remote (what it queues for us while we are away), unless asked not to.
        "clean_start": config.clean_start,
        "session_expiry": SESSION_EXPIRY if config.version == 5 and not config.clean_start else 0,
        "keepalive": config.keepalive,
        "backoff": (min(config.reconnect_min, config.reconnect_max), config.reconnect_max),
        "reconnect": config.reconnect,
        "max_queued": WINDOW,
        # Mosquitto's try_private: the remote then sends no echoes.
        "bridge": config.version < 5 and config.bridge_bit,
    }
    if config.addresses:
        from ..client.url import parse_url

        default_port = parse_url(config.url).port
        settings["fallbacks"] = [split_address(address, default_port) for address in config.addresses]
        settings["round_robin"] = config.round_robin
    if config.bind_address is not None:
        settings["local_address"] = config.bind_address
    topic = notification_topic(config, client_id)
    if topic is not None and not config.notifications_local_only:
        settings["will"] = Will(topic, b"0", 1, True)  # the remote says "0" when the connection drops
    if config.username is not None:
        settings["username"] = config.username
    if config.password is not None:
        settings["password"] = config.password
    tls_settings = (config.cafile, config.certfile, config.tls_version, config.alpn)
    if config.tls_insecure or any(value is not None for value in tls_settings):
        settings["tls"] = tls_context(config)
    return Client.from_url(config.url, **settings)


def tls_context(config: ExternalBrokerConfig) -> ssl.SSLContext:
    """The remote is checked against ``cafile`` (else the system's CAs), by name unless
    ``tls_insecure``; ``certfile``/``keyfile`` are this side's certificate."""
    import ssl

    cafile = None if config.cafile is None else str(config.cafile)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # ssl.SSLError too
        raise ValueError(f"cafile {config.cafile}: cannot load it: {exc.strerror or exc}") from None
    if config.certfile is not None:
        try:
            context.load_cert_chain(str(config.certfile), str(config.keyfile))
        except OSError as exc:
            raise ValueError(
                f"certfile {config.certfile} / keyfile {config.keyfile}: cannot load them: {exc.strerror or exc}"
            ) from None
    if config.tls_insecure:
        context.check_hostname = False
    if config.tls_version == "TLSv1.3":
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    if config.alpn is not None:
        context.set_alpn_protocols([config.alpn])
    return context


def local_address(config: ExternalBrokerConfig) -> tuple[str, int] | None:
    return None if config.bind_address is None else (config.bind_address, 0)
