"""``wrenmq apikey create|list|delete``: manage the management API's keys.

The keys file is ``api_keys_file`` from the config, by default ``<data_dir>/api_keys.json``, found
as ``wrenmq serve`` finds it (``--config``/``-c`` or ``$WRENMQ_CONFIG``, ``WRENMQ_*``,
``--data-dir``). A running broker sees new and deleted keys at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_parser"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "apikey",
        help="manage API keys for the management API",
        description="Create, list or delete the bearer tokens the HTTP API accepts. Keys are stored hashed; "
        "a new key is printed once.",
    )
    _add_location(parser, None)
    # The same options after the action too (`wrenmq apikey create admin --data-dir D`); SUPPRESS
    # keeps an action's unset option from overwriting one given before the action.
    location = argparse.ArgumentParser(add_help=False)
    _add_location(location, argparse.SUPPRESS)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    create = actions.add_parser(
        "create", parents=[location], help="create a key and print it", description="Create the key NAME."
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--read-only", action="store_true", help="the key may read but not change anything (403)")
    actions.add_parser("list", parents=[location], help="list the keys (names, not the keys)")
    delete = actions.add_parser("delete", parents=[location], help="delete a key", description="Delete the key NAME.")
    delete.add_argument("name", metavar="NAME")
    parser.set_defaults(run=run)


def _add_location(parser: argparse.ArgumentParser, default: object) -> None:
    """Where the keys are, found as ``wrenmq serve`` finds them: the config file, then --data-dir."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        default=default,
        help="config file, TOML or mosquitto.conf (for data_dir, api_keys_file); default: $WRENMQ_CONFIG",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=default,
        help="the broker's data directory, as given to wrenmq serve (keys in DIR/api_keys.json)",
    )


def run(args: argparse.Namespace) -> int:
    from wrenmq.config import CONFIG_ENV, ConfigError, load_config

    from .keys import ApiKeyStore

    try:
        config_file = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
        config = load_config(config_file, overrides={"data_dir": args.data_dir})
    except ConfigError as exc:
        print(f"wrenmq apikey: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = ApiKeyStore(config.api_keys_path)
    try:
        if args.action == "create":
            token = store.create(args.name, read_only=args.read_only)
            print(token)
            kind = "read-only key" if args.read_only else "key"
            print(f"created {kind} {args.name!r} in {store.path}; it is shown only now", file=sys.stderr)
        elif args.action == "list":
            for key in store.all():
                print(f"{key.name}\t{'read-only' if key.read_only else 'read-write'}")
        elif not store.delete(args.name):
            print(f"wrenmq apikey: no key named {args.name!r} in {store.path}", file=sys.stderr)
            return EXIT_FAILURE
    except (ValueError, OSError) as exc:
        print(f"wrenmq apikey: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
