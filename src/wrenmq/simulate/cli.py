"""``wrenmq simulate devices``: the flags, and the loop that runs the fleet and prints its status line.

Connection flags are ``wrenmq pub``/``sub``'s (mosquitto's): ``-h -p -u -P -V --cafile ...``. Exit
status 0 after ``--duration`` or SIGINT/SIGTERM, once every device has disconnected cleanly; 2 for
bad flags; 1 when TLS cannot be set up. An unreachable broker is not an error: the devices keep
retrying with backoff, and the status line says why they are not connected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .device import FleetSettings

__all__ = ["add_parser", "run_devices"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
STATUS_INTERVAL = 2.0  # seconds between status lines

_DESCRIPTION = """\
Run COUNT simulated devices against an MQTT broker, one client each, speaking the device topic
scheme: a retained offline will on <devices-root>/<id>/lwt (replaced by a retained online message
after each connect), an announce
on <devices-root>/discovery/announce, a retained <devices-root>/<id>/status, heartbeats, and events
after each command. Devices obey play, pause, stop, seek, join and leave sent to
<devices-root>/<id>/commands/<cmd> or, once joined, <sessions-root>/<session>/commands/<cmd>.
A status line goes to stderr every few seconds. The run ends after --duration or on SIGINT/SIGTERM:
every device then disconnects cleanly (DISCONNECT), so the broker does NOT publish their wills; only
drop-outs (--drop-rate) and a killed simulator make wills fire."""


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = subcommands.add_parser(
        "simulate", help="simulate MQTT devices (demos, load tests)", description="Simulate MQTT clients."
    )
    simulate.set_defaults(run=_usage(simulate))
    kinds = simulate.add_subparsers(title="what to simulate", metavar="KIND")
    parser = kinds.add_parser(
        "devices",
        add_help=False,  # -h is the host, as in wrenmq pub/sub
        help="devices that speak the device topic scheme",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("--count", type=_positive_int, default=10, metavar="N", help="devices to run (default 10)")
    broker = parser.add_argument_group("broker")
    broker.add_argument("-h", "--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    broker.add_argument("-p", "--port", type=_port, default=1883, help="broker port (default 1883)")
    broker.add_argument("-u", "--username", help="username (the same for every device)")
    broker.add_argument("-P", "--pw", dest="password", help="password")
    broker.add_argument(
        "-V", "--protocol-version", type=_device_version, default=5, metavar="VERSION",
        help="MQTT version: 5 or 311 (default 5)",
    )  # fmt: skip
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--cafile", help="CA certificates (PEM) to trust; enables TLS")
    tls.add_argument("--capath", help="directory of CA certificates to trust; enables TLS")
    tls.add_argument("--cert", help="client certificate (PEM)")
    tls.add_argument("--key", help="client private key (PEM)")
    tls.add_argument("--insecure", action="store_true", help="do not check the server's host name")
    tls.add_argument("--tls-use-os-certs", action="store_true", help="trust the system's CAs; enables TLS")
    tls.add_argument("--tls-version", choices=("tlsv1.2", "tlsv1.3"), help="use exactly this TLS version")
    devices = parser.add_argument_group("devices")
    devices.add_argument("--prefix", type=_level, default="sim", help="device ids are <prefix>-0001, ... (default sim)")
    devices.add_argument("--type", dest="device_type", type=_text, default="vr-headset", help="device type announced")
    devices.add_argument(
        "--heartbeat", type=_positive_float, default=15.0, metavar="SECONDS", help="heartbeat interval (default 15)"
    )
    devices.add_argument(
        "--drop-rate", type=_probability, default=0.0, metavar="P",
        help="probability per device per minute of a drop-out: the socket is closed without DISCONNECT "
        "(the will fires) and the device comes back 2-10 s later (default 0)",
    )  # fmt: skip
    devices.add_argument(
        "--duration", type=_positive_float, metavar="SECONDS", help="stop after this (default: at SIGINT/SIGTERM)"
    )
    devices.add_argument(
        "--ramp", type=_positive_float, default=50.0, metavar="N", help="devices started per second (default 50)"
    )
    devices.add_argument("--devices-root", type=_root, default="devices", help="devices topic root (default devices)")
    devices.add_argument(
        "--sessions-root", type=_root, default="sessions", help="sessions topic root (default sessions)"
    )
    devices.add_argument("--seed", type=int, help="seed the random numbers (jitter, drop-outs) to repeat a run")
    devices.add_argument("--quiet", action="store_true", help="no status lines, no warnings")
    parser.set_defaults(run=run_devices)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return run


# --- flag types (argparse names the flag in their errors) ------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text!r}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, not {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {value}")
    return value


def _device_version(text: str) -> int:
    from wrenmq.client.cli import _protocol_version  # the same names as wrenmq pub/sub accept

    version = _protocol_version(text)
    if version == 3:
        raise argparse.ArgumentTypeError("devices speak MQTT 5 or 3.1.1: use 5 or 311")
    return version


def _text(text: str) -> str:
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError("must be a non-empty string")
    return text


def _level(text: str) -> str:
    """One topic level: no '/', and no wildcards."""
    if not text or any(c in text for c in "/+#\0"):
        raise argparse.ArgumentTypeError(f"must be one topic level without '/', '+' or '#', not {text!r}")
    return text


def _root(text: str) -> str:
    """A topic prefix: levels without wildcards, no leading or trailing '/'."""
    if not text or text.startswith(("/", "$")) or text.endswith("/") or any(c in text for c in "+#\0"):
        raise argparse.ArgumentTypeError(
            f"must be a topic prefix without wildcards or a leading/trailing '/' (or '$'), not {text!r}"
        )
    return text


# --- running ---------------------------------------------------------------------------------------


def run_devices(args: argparse.Namespace) -> int:
    from wrenmq.aio import run  # uvloop where it is installed
    from wrenmq.client.cli import UsageError, _Failure, _tls_context

    if args.password is not None and args.username is None and args.protocol_version < 5:
        print("wrenmq simulate devices: error: -P/--pw needs -u/--username at MQTT 3.1.1", file=sys.stderr)
        return EXIT_USAGE
    try:
        tls = _tls_context(args, implied=False)
    except UsageError as exc:
        print(f"wrenmq simulate devices: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Failure as exc:
        print(f"wrenmq simulate devices: error: {exc}", file=sys.stderr)
        return EXIT_ERROR

    from .device import FleetSettings

    settings = FleetSettings(
        count=args.count,
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        version=args.protocol_version,
        tls=tls,
        prefix=args.prefix,
        device_type=args.device_type,
        heartbeat=args.heartbeat,
        drop_rate=args.drop_rate,
        ramp=args.ramp,
        devices_root=args.devices_root,
        sessions_root=args.sessions_root,
        seed=args.seed,
    )
    _setup_logging(args.quiet)
    try:
        run(_simulate(settings, args.duration, args.quiet))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return EXIT_OK
    return EXIT_OK


def _setup_logging(quiet: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("wrenmq simulate: %(levelname)s: %(message)s"))
    logger = logging.getLogger("wrenmq.simulate")
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


async def _simulate(settings: FleetSettings, duration: float | None, quiet: bool) -> None:
    import asyncio
    import signal

    from .device import Fleet

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stopping.set)
        except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt instead
            pass
    fleet = Fleet(settings)
    address = f"{settings.host}:{settings.port}"
    if not quiet:
        _status(f"starting {settings.count} devices against {address}, {settings.ramp:g} per second")
    await fleet.start()
    try:
        async with asyncio.timeout(duration):
            while not stopping.is_set():
                try:
                    await asyncio.wait_for(stopping.wait(), STATUS_INTERVAL)
                except TimeoutError:
                    pass
                if not quiet:
                    _status(fleet.status_line())
    except TimeoutError:  # --duration is over
        pass
    finally:
        if not quiet:
            _status(f"stopping: {fleet.status_line()}")
        await fleet.stop()
        if not quiet:
            _status(f"stopped: {settings.count} devices disconnected")


def _status(line: str) -> None:
    print(f"wrenmq simulate: {line}", file=sys.stderr, flush=True)
