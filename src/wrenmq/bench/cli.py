"""``wrenmq bench`` command-line glue: the flags; :mod:`wrenmq.bench.runner` does the work.

Kept import-light because ``wrenmq`` builds every subcommand's parser on each invocation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "bench",
        help="benchmark wrenmq, optionally side by side with Mosquitto",
        description="Run the benchmark scenarios against a fresh wrenmq (and Mosquitto) per measurement "
        "and print a Markdown table. Progress goes to stderr.",
    )
    parser.add_argument("--compare", choices=["mosquitto"], help="also run every scenario against this broker")
    parser.add_argument("--scenarios", metavar="A,B", help="comma-separated scenarios (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and sub-second runs: a smoke test")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the raw results as JSON")
    parser.add_argument("--rounds", type=int, default=1, metavar="N", help="measurements per broker (median)")
    parser.add_argument("--duration", type=float, metavar="S", help="measured seconds per throughput run")
    parser.add_argument("--warmup", type=float, metavar="S", help="seconds of load before measuring")
    parser.add_argument("--broker-cpus", metavar="LIST", help="CPUs for the broker (default: the first)")
    parser.add_argument("--generator-cpus", metavar="LIST", help="CPUs for the load generator (default: the rest)")
    parser.add_argument(
        "--nice", type=int, metavar="N", help="niceness for brokers and generator (e.g. -10 on a shared machine; root)"
    )
    parser.add_argument(
        "--api",
        action="store_true",
        help="run wrenmq with its HTTP API on (realtime and streams, no client of them): their cost per message",
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        metavar="N",
        help="connections of idle_memory (default 10,000; 50,000 needs a file descriptor limit above 50,000 "
        "per process, which root may raise)",
    )
    parser.add_argument(
        "--mosquitto-nodelay",
        choices=["on", "off"],
        help="Mosquitto's set_tcp_nodelay (default off, Mosquitto's own default; on: its best latency, "
        "about half its throughput; the comparison's setting before 2026-12-05)",
    )
    parser.add_argument(
        "--memory-sites",
        type=int,
        metavar="N",
        help="instead of the scenarios: where the bytes of N idle connections go, by allocation site "
        "(tracemalloc on an in-process broker; use a pure-Python install)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .runner import main

    return main(args)
