"""The ``wrenmq`` command: one function registers each subcommand, one function runs it.

New subcommands (``passwd``, ``apikey``, ``bench``, ``pub``, ``sub``) add an ``_add_<name>`` function
to ``_SUBCOMMANDS`` under the command's name; the parser stores the runner in ``args.run`` so
``main`` stays a dispatcher.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wrenmq import __version__
from wrenmq.aio import run
from wrenmq.config import CONFIG_ENV, SETTINGS, Config, ConfigError, env_var, load_config
from wrenmq.logs import setup_logging
from wrenmq.service_manager import notify

if TYPE_CHECKING:
    from wrenmq.broker import Broker

__all__ = ["main"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

Runner = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; the return value is the process exit code."""
    command_line = list(argv) if argv is not None else sys.argv[1:]
    parser = _build_parser(command_line[0] if command_line else None)
    args = parser.parse_args(command_line)
    args.command_line = command_line  # (serve --workers runs it again)
    run: Runner | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except ConfigError as exc:
        print(f"wrenmq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of ``command`` alone when it names one: ``wrenmq serve``
    neither imports nor builds the other commands' flags (0.5 MiB of an idle broker; issue 19).
    Any other first word gets them all, for ``--help`` and the error that lists the commands."""
    parser = argparse.ArgumentParser(prog="wrenmq", description="wrenmq, an MQTT 3.1.1/5.0 broker.")
    parser.add_argument("--version", action="version", version=f"wrenmq {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in [_SUBCOMMANDS[command]] if command in _SUBCOMMANDS else _SUBCOMMANDS.values():
        add(subcommands)
    return parser


# --- serve ---------------------------------------------------------------------------------------

# Config fields that `serve` exposes as flags; every other key comes from the file or environment.
_SERVE_FLAGS = (
    "host",
    "port",
    "ws_port",
    "tls_port",
    "wss_port",
    "certfile",
    "keyfile",
    "cafile",
    "password_file",
    "acl_file",
    "api_host",
    "api_port",
    "data_dir",
    "log_level",
    "log_format",
    "log_dest",
    "storage",
    "durability",
    "allow_anonymous",
    "max_packet_size",
    "sys_interval",
    "cluster_url",
    "node_name",
)


def _add_serve(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="run the broker",
        description="Run the broker until SIGINT or SIGTERM. Settings come from flags, then "
        f"WRENMQ_* environment variables, then the config file (--config or ${CONFIG_ENV}).",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="config file: TOML (settings at the top level or in [sections]) or Mosquitto's mosquitto.conf",
    )
    for key in _SERVE_FLAGS:
        _add_config_flag(parser, key)
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N worker processes sharing the listeners (SO_REUSEPORT), each a node of the cluster "
        "at cluster_url (needed), supervised: a worker that dies is restarted",
    )
    parser.set_defaults(run=_run_serve)


def _add_config_flag(parser: argparse.ArgumentParser, key: str) -> None:
    """A flag whose help, choices and type come from the Config field, so they cannot drift."""
    field = SETTINGS[key].info
    default = field.get_default(call_default_factory=True)
    help_text = f"{field.description} (default: {default}; env {env_var(key)})"
    flag = "--" + key.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": key, "default": None, "help": help_text}
    annotation = field.annotation
    optional = type(None) in typing.get_args(annotation)
    if optional:  # X | None: the flag takes an X (or "off", which the field's validator maps to None)
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        while typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is list:  # comma-separated; the field's validator splits it
        kwargs["metavar"] = key.upper()
    elif typing.get_origin(annotation) is typing.Literal:
        kwargs["choices"] = typing.get_args(annotation)
    else:
        kwargs["type"] = _off_or(int) if optional and annotation is int else annotation
        kwargs["metavar"] = key.upper()
    parser.add_argument(flag, **kwargs)


def _off_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return "off" if text.strip().lower() == "off" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return parse


def _run_serve(args: argparse.Namespace) -> int:
    config_file = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    ignored: list[str] = []  # mosquitto.conf directives wrenmq does not use
    config = load_config(config_file, overrides={key: getattr(args, key) for key in _SERVE_FLAGS}, warnings=ignored)
    try:
        setup_logging(
            config.log.level,
            log_format=config.log.format,
            dests=config.log.dest,
            log_file=config.log.file,
            syslog_address=config.log.syslog_address,
            syslog_facility=config.log.syslog_facility,
        )
    except OSError as exc:  # the log file's directory is missing or not writable; no syslog socket
        print(f"wrenmq: configuration error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in ignored:
        log.warning("%s", warning)
    if args.workers is not None:
        from wrenmq.workers import Supervisor

        return Supervisor(config, args.command_line, args.workers).run()
    try:
        run(_serve(config))
    except OSError as exc:  # typically the port is taken or the data directory is not writable
        print(f"wrenmq: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ConfigError as exc:  # found at start-up: a TLS file that does not load
        print(f"wrenmq: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


async def _serve(config: Config) -> None:
    """Start the broker, wait for SIGINT/SIGTERM, then stop it so queued writes are committed."""
    from wrenmq.broker import Broker, tune_gc  # lazily: the CLI must work (e.g. --help) without the broker

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stopping.set)
        except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt instead
            pass

    from wrenmq.services import Services

    broker = Broker(config)
    services = Services(broker)  # external brokers and bridges, the API
    try:
        await services.start_all()  # all or nothing: checked and bound before anything is created
        if hasattr(signal, "SIGHUP"):  # re-read password and ACL files, as Mosquitto does
            loop.add_signal_handler(signal.SIGHUP, _reload, broker)
        tune_gc()
        _warn_if_pure_python()
        notify("READY=1")  # systemd Type=notify: listeners are bound
        await stopping.wait()
        notify("STOPPING=1")
        log.info("stopping")
    finally:
        await services.stop()
        await broker.stop()


def _reload(broker: Broker) -> None:
    notify("RELOADING=1")
    broker.reload()
    notify("READY=1")


def _warn_if_pure_python() -> None:
    """Say so when the per-message modules were installed uncompiled (no C compiler, or mypyc
    failed): the broker works the same at about half the message rate, which nobody should find
    out from a benchmark. An editable install is pure Python on purpose, and says so too."""
    from wrenmq import hot_path

    if hot_path() == "pure Python":
        log.warning(
            "the hot path is not compiled: running pure Python at about half the message rate "
            "(reinstall where a C compiler is available, or from the compiled wheel; see the README, "
            "'The compiled hot path')"
        )


# --- bench ---------------------------------------------------------------------------------------


def _add_bench(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.bench.cli import add_parser  # the benchmark lives in its own package

    add_parser(subcommands)


# --- passwd --------------------------------------------------------------------------------------


def _add_passwd(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.auth.passwd_cli import add_parser  # password files live with the rest of auth

    add_parser(subcommands)


def _add_config(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.config_cli import add_parser  # convert and check config files

    add_parser(subcommands)


def _add_apikey(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.api.apikey_cli import add_parser  # the API's keys live with the API

    add_parser(subcommands)


def _add_ctl(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.api.ctl_cli import add_parser  # a client of the API: lives with the API

    add_parser(subcommands)


# --- pub / sub -----------------------------------------------------------------------------------


def _add_pub(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.client.cli import add_pub_parser  # flags only: the client is imported when the command runs

    add_pub_parser(subcommands)


def _add_sub(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.client.cli import add_sub_parser

    add_sub_parser(subcommands)


# --- simulate ------------------------------------------------------------------------------------


def _add_simulate(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from wrenmq.simulate.cli import add_parser  # flags only: the fleet is imported when the command runs

    add_parser(subcommands)


_SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "serve": _add_serve,
    "bench": _add_bench,
    "passwd": _add_passwd,
    "apikey": _add_apikey,
    "config": _add_config,
    "ctl": _add_ctl,
    "pub": _add_pub,
    "sub": _add_sub,
    "simulate": _add_simulate,
}
