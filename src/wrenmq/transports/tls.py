"""TLS for the tls and wss listeners: one ``ssl.SSLContext`` per listener, and client identities."""

from __future__ import annotations

import ssl
from typing import Any

from ..config import ConfigError, ListenerConfig

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def server_context(config: ListenerConfig) -> ssl.SSLContext:
    """A server context from the listener's certificate, key, CA, minimum version and ciphers.

    Errors name the setting: a missing or unreadable file stops start-up with a ``ConfigError``.
    """
    where = f"listener {config.label}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.tls_version]
    assert config.certfile is not None and config.keyfile is not None  # checked by ListenerConfig
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{where}: certfile {config.certfile} / keyfile {config.keyfile}: cannot load: {_why(exc)}"
        ) from None
    if config.cafile is not None:
        try:
            context.load_verify_locations(cafile=config.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: cafile {config.cafile}: cannot load: {_why(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED if config.require_certificate else ssl.CERT_OPTIONAL
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError as exc:
            raise ConfigError(f"{where}: ciphers {config.ciphers!r}: {_why(exc)}") from None
    return context


def certificate_identity(transport: Any) -> str | None:
    """The common name (CN) of the verified client certificate, if the client sent one."""
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ssl.SSLError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # set_ciphers raises SSLError("No cipher can be selected.")
    return str(exc) or type(exc).__name__
