"""``wrenmq config convert|check FILE``: turn a mosquitto.conf into wrenmq's TOML, or validate a
config file (TOML or mosquitto.conf) the way ``wrenmq serve`` would, without binding anything.

Kept import-light: ``wrenmq`` builds every subcommand's parser on each invocation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "dump_toml"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "config",
        help="convert a mosquitto.conf to TOML, or check a config file",
        description="Work with config files without starting the broker.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    convert = actions.add_parser(
        "convert",
        help="print the TOML equivalent of a mosquitto.conf",
        description="Print the wrenmq TOML that FILE (a mosquitto.conf) amounts to: "
        "wrenmq config convert mosquitto.conf > wrenmq.toml. Ignored directives are listed on stderr "
        "and as comments at the top.",
    )
    convert.add_argument("file", type=Path, metavar="FILE")
    check = actions.add_parser(
        "check",
        help="validate a config file without starting",
        description="Read FILE (TOML or mosquitto.conf) with the WRENMQ_* environment, as wrenmq serve "
        "does, and load the files it names (TLS certificates and keys, password, ACL and JWT key files). "
        "Exit status 0: it would start; 2: it would not (each problem is printed).",
    )
    check.add_argument("file", type=Path, metavar="FILE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config, nest_settings, read_config_file

    path: Path = args.file
    warnings: list[str] = []
    try:
        if args.action == "convert":
            from .mosquitto_conf import is_mosquitto_conf

            if path.is_file() and not is_mosquitto_conf(path, path.read_bytes()):
                print(f"wrenmq config: error: {path} is not a mosquitto.conf (it reads as TOML)", file=sys.stderr)
                return EXIT_USAGE
            values, _ = read_config_file(path, warnings)
            load_config(path, env={})  # what is printed must load: a bad value is reported here, with its line
            for warning in warnings:
                print(f"wrenmq config: warning: {warning}", file=sys.stderr)
            comments = [f"# Converted from {path} by wrenmq config convert."]
            comments += [f"# warning: {warning}" for warning in warnings]
            sys.stdout.write("\n".join(comments) + "\n\n" + dump_toml(nest_settings(values)))
            return EXIT_OK
        config = load_config(path, warnings=warnings)
    except ConfigError as exc:
        print(f"wrenmq config: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:
        print(f"wrenmq config: warning: {warning}", file=sys.stderr)
    from .broker import Broker  # lazily: only `check` builds the listeners and auth hooks

    problems = Broker(config).check()
    for problem in problems:
        print(f"wrenmq config: error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(f"{path}: OK")
    return EXIT_OK


def dump_toml(values: Mapping[str, Any]) -> str:
    """TOML for a config mapping: scalars and lists of scalars first, then sections ([api]), then
    arrays of tables ([[listeners]])."""
    sections = {key: value for key, value in values.items() if isinstance(value, Mapping)}
    tables = {key: value for key, value in values.items() if _is_tables(value)}
    lines = [f"{key} = {_value(value)}" for key, value in values.items() if key not in tables and key not in sections]
    for key, section in sections.items():
        lines += ["", f"[{key}]"]
        lines += [f"{name} = {_value(value)}" for name, value in section.items()]
    for key, entries in tables.items():
        for entry in entries:
            lines += ["", f"[[{key}]]"]
            lines += [f"{name} = {_value(value)}" for name, value in entry.items()]
    return "\n".join(lines) + "\n"


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(entry, dict) for entry in value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too.
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_value(entry) for entry in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")
