"""Reading a Config from a file (TOML or mosquitto.conf), ``WRENMQ_*`` variables and flags.

Every source may name a setting flat (``api_port``, ``WRENMQ_API_PORT``, ``--api-port``) or by its
section (``[api] port``, ``api.port``); they are merged by the setting they name, so precedence
(flags > environment > file > defaults) does not depend on the form. Errors name the key as the
user wrote it and where: ``config file wrenmq.toml: key 'api.port': ...``.
"""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from .model import SECTIONS, SETTINGS, Config, Setting, unknown_name, written_keys
from .types import ConfigError, CrossFieldError

__all__ = [
    "CONFIG_ENV",
    "ENV_NOT_SETTINGS",
    "ENV_PREFIX",
    "env_var",
    "env_vars",
    "load_config",
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


def env_var(key: str) -> str:
    """The environment variable named after ``key`` (flat ``api_port`` or dotted ``api.port``)."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def _env_vars() -> dict[str, Setting]:
    """Every variable and the setting it sets: the flat name's (``WRENMQ_API_PORT``) and, where it
    differs, the section's (``WRENMQ_LIMITS_MAX_PACKET_SIZE`` beside ``WRENMQ_MAX_PACKET_SIZE``)."""
    found: dict[str, Setting] = {}
    for setting in {id(setting): setting for setting in SETTINGS.values()}.values():
        for name in setting.names():
            variable = env_var(name)
            other = found.setdefault(variable, setting)
            if other is not setting:  # a section field whose name would read as another setting's
                raise AssertionError(f"{variable} would set both {other.key} and {setting.key}")
    return found


ENV_VARS = _env_vars()


def env_vars(key: str) -> list[str]:
    """The variables that set ``key`` (any of its names), the flat one first."""
    setting = SETTINGS[key]
    return sorted({env_var(name) for name in setting.names()}, key=lambda name: name != env_var(setting.flat))


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
    values: dict[str, Any] = {}  # by the setting's canonical key (api.port)
    origins: dict[str, str] = {}  # canonical key -> where it came from, naming the key as written
    written: dict[str, str] = {}  # canonical key -> the key as written (api_port or api.port)
    errors: list[str] = []

    if config_file is not None:
        where = f"config file {config_file}"
        found, found_origins = read_config_file(config_file, warnings)
        for key, value in written_keys(found):
            setting = _known(key, where, errors)
            if setting is None:
                continue
            if setting.key in written:
                errors.append(f"{where}: keys {written[setting.key]!r} and {key!r} both set {setting.key}: keep one")
                continue
            written[setting.key] = key
            values[setting.key] = value
            origins[setting.key] = found_origins.get(key, f"{where}: key {key!r}")
        origins.update({key: origin for key, origin in found_origins.items() if "[" in key})

    errors.extend(_unknown_env(env))
    by_setting: dict[str, list[str]] = {}
    for name in sorted(set(env) & ENV_VARS.keys()):
        by_setting.setdefault(ENV_VARS[name].key, []).append(name)
    for key, names in by_setting.items():
        if len(names) > 1:
            errors.append(f"environment {' and '.join(names)} both set {key}: keep one")
            continue
        try:
            values[key] = _field_adapter(key).validate_python(env[names[0]])
            origins[key] = f"environment {names[0]}"
            written[key] = _written_name(ENV_VARS[names[0]], names[0])
        except ValidationError as exc:
            errors.extend(f"environment {names[0]}: {_message(err)}" for err in exc.errors())

    for key, value in (overrides or {}).items():
        if value is not None and (setting := _known(key, "overrides", errors)) is not None:
            values[setting.key], origins[setting.key] = value, f"option --{key.replace('_', '-')}"
            written[setting.key] = key

    try:
        # Strict: TOML and flags carry real types; env strings were converted above.
        config = Config.model_validate(_nested(values), strict=True)
    except ValidationError as exc:
        errors.extend(_describe(err, origins, written) for err in exc.errors())
    else:
        if not errors:
            return config
    raise ConfigError("\n".join(errors))


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        section, dot, field = key.partition(".")
        if dot:
            nested.setdefault(section, {})[field] = value
        else:
            nested[key] = value
    return nested


def read_config_file(path: Path, warnings: list[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's settings and, for a mosquitto.conf, where each came from (key -> file and line)."""
    from ..mosquitto_conf import MosquittoConfError, is_mosquitto_conf, read_mosquitto_conf

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


def _known(key: str, where: str, errors: list[str]) -> Setting | None:
    setting = SETTINGS.get(key)
    if setting is None:
        if key in SECTIONS:
            errors.append(f"{where}: key {key!r} is a section: give it as a table ([{key}])")
        else:
            errors.append(f"{where}: {unknown_name(key)}")
    return setting


def _unknown_env(env: Mapping[str, str]) -> list[str]:
    """An error for each ``WRENMQ_*`` variable that names no setting, with the closest one."""
    known = ENV_VARS.keys() | ENV_NOT_SETTINGS
    errors = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            # Compared without the prefix, which every name shares and which would make all look alike.
            names = {found.removeprefix(ENV_PREFIX): found for found in known}
            hint = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).upper(), sorted(names), n=1)
            suggestion = f" (did you mean {names[hint[0]]}?)" if hint else ""
            errors.append(f"environment {name}: unknown variable{suggestion}")
    return errors


@functools.cache
def _field_adapter(key: str) -> TypeAdapter[Any]:
    """A lenient validator for one field, with its constraints, for parsing environment strings."""
    info = SETTINGS[key].info
    annotation: Any = info.annotation
    if not info.metadata:
        return TypeAdapter(annotation)
    constrained: Any = Annotated[(annotation, *info.metadata)]
    return TypeAdapter(constrained)


def _message(err: ErrorDetails) -> str:
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, CrossFieldError):
        return ctx_error.message
    return str(err["msg"]).removeprefix("Value error, ")


def _written_name(setting: Setting, variable: str) -> str:
    """The name of ``setting`` that environment ``variable`` spells."""
    return next(name for name in setting.names() if env_var(name) == variable)


def _describe(err: ErrorDetails, origins: Mapping[str, str], written: Mapping[str, str]) -> str:
    """Prefix a pydantic error with where its key(s) came from, naming them as they were written."""
    loc = err["loc"]
    ctx_error = err.get("ctx", {}).get("error")
    if isinstance(ctx_error, CrossFieldError) or not loc:
        # A rule over several keys, checked by Config (loc ()) or by a section (loc ("limits",)).
        prefix = "".join(f"{part}." for part in loc)
        keys = ctx_error.keys if isinstance(ctx_error, CrossFieldError) else ()
        sources = [origins[prefix + k] for k in keys if prefix + k in origins] or ["configuration"]
        return f"{', '.join(sources)}: {_message(err)}"
    depth = 2 if loc[0] in SECTIONS and len(loc) > 1 else 1
    key = ".".join(str(part) for part in loc[:depth])
    rest = loc[depth:]
    inner = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)
    where = origins.get(f"{key}[{rest[0]}]" if rest else key) or origins.get(key, f"key {key!r}")
    return f"{where}{' at ' + written.get(key, key) + inner if inner else ''}: {_message(err)}"
