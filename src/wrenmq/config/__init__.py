"""Typed broker settings, read once at start-up from a TOML file, the environment and flags.

Precedence is flags > environment > file > defaults. Every error names the key, where it came from
and what is wrong, so a bad deployment fails at start-up with a message a person can act on.
TOML values must already have the right type (``port = "1883"`` is an error); environment
variables are strings and are parsed leniently (``WRENMQ_ALLOW_ANONYMOUS=false``).

The settings are grouped: the top level (listeners, TLS, authentication, storage) and sections
(``[api]``, ``[limits]``, ``[realtime]``, ...: ``sections``). Every setting keeps the flat name it
had before sections (``api_port``), in files, variables and flags alike.
"""

from ..bridge_lines import Bridge, parse_bridge
from .listeners import ExternalBrokerConfig, ListenerConfig, split_address
from .load import CONFIG_ENV, ENV_NOT_SETTINGS, ENV_PREFIX, env_var, env_vars, load_config, read_config_file
from .model import SETTINGS, Config, Setting, nest_settings
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
)
from .types import ConfigError, is_loopback

__all__ = [
    "CONFIG_ENV",
    "ENV_NOT_SETTINGS",
    "ENV_PREFIX",
    "SECTIONS",
    "SETTINGS",
    "ApiConfig",
    "Bridge",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "EventsConfig",
    "ExternalBrokerConfig",
    "JwtConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "MetricsConfig",
    "PresenceConfig",
    "RealtimeConfig",
    "Setting",
    "env_var",
    "env_vars",
    "is_loopback",
    "load_config",
    "nest_settings",
    "parse_bridge",
    "read_config_file",
    "split_address",
]
