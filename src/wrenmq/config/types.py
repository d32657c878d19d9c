"""The value types settings share (ports, paths, lists from the environment) and the config errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BeforeValidator, Field

__all__ = [
    "ConfigError",
    "CrossFieldError",
    "KiB",
    "MiB",
    "OptionalPath",
    "OptionalPort",
    "Port",
    "TlsVersion",
    "is_loopback",
]

KiB = 1024
MiB = 1024 * KiB


class ConfigError(Exception):
    """A setting is missing, unknown or invalid; the message names the key and its source."""


class CrossFieldError(ValueError):
    """A rule over several keys; carries the keys (relative to the model that checks the rule) so
    the error can name where each came from."""

    def __init__(self, keys: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.keys = keys
        self.message = message


def expand_path(value: Any) -> Any:
    """Accept strings (TOML and env have no Path type) and expand ``~`` the way a shell would."""
    if isinstance(value, str | Path):
        return Path(value).expanduser()
    raise ValueError("expected a path string")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("wrenmq"))


def _optional_port(value: Any) -> Any:
    """``false``, ``"off"`` or ``"none"`` switch a listener off (TOML has no null)."""
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none", "false", "")):
        return None
    return value


Port = Annotated[int, Field(ge=0, le=65535)]
OptionalPort = Annotated[Port | None, BeforeValidator(_optional_port)]
OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: None if v is None else expand_path(v))]
TlsVersion = Literal["TLSv1.2", "TLSv1.3"]
LogDest = Literal["stderr", "stdout", "file", "syslog"]
SyslogFacility = Literal[
    "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"
]


def split_words(value: Any) -> Any:
    """``log_dest`` from the environment or a flag: "stderr,file" or "stderr file"; "none": []."""
    if isinstance(value, str):
        words = value.replace(",", " ").split()
        return [] if words == ["none"] else words
    return value


JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
JWT_MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key at least as long as the hash
METRICS_HISTORY_MAX_SAMPLES = 100_000  # per field, 8 bytes each: under 9 MB for the 11 columns


def comma_list(value: Any) -> Any:
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
