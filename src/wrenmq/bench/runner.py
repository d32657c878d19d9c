"""Runs the chosen scenarios against fresh brokers and reports the comparison.

Each measurement gets a fresh broker subprocess on a free loopback port. With ``--compare``, the
brokers alternate within every scenario (and the order flips every round, so drift in the
machine's load does not favour either), and the table shows the ratio wrenmq/Mosquitto.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import report
from .brokers import BrokerOptions, free_port, start_broker
from .procfs import raise_nofile_limit
from .scenarios import SCENARIOS, Run, Scenario, Settings, default_cpus, median_metrics

__all__ = ["chosen_scenarios", "main"]


def _cpus(text: str | None, default: frozenset[int]) -> frozenset[int]:
    if text is None:
        return default
    return frozenset(int(c) for c in text.split(",") if c.strip())


def chosen_scenarios(scenarios: str | None, quick: bool) -> list[str]:
    """The names given with ``--scenarios``; else all, less those ``--quick`` leaves out (the cluster's:
    it starts Redis and two more nodes, too long for a smoke run)."""
    if scenarios:
        return [n.strip() for n in scenarios.split(",") if n.strip()]
    return [name for name, scenario in SCENARIOS.items() if scenario.in_quick or not quick]


def main(args: argparse.Namespace) -> int:
    """Run the chosen scenarios; exit status 1 if a measurement failed or wrenmq lost a message."""
    if args.memory_sites:
        from .attribution import main as attribute

        return attribute(args.memory_sites)
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:<15} {scenario.description}")
        return 0
    names = chosen_scenarios(args.scenarios, args.quick)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"wrenmq bench: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    if args.rounds < 1:
        print("wrenmq bench: --rounds must be at least 1", file=sys.stderr)
        return 2

    broker_cpus, generator_cpus = default_cpus()
    settings = Settings(
        broker_cpus=_cpus(args.broker_cpus, broker_cpus), generator_cpus=_cpus(args.generator_cpus, generator_cpus)
    )
    if args.quick:
        settings = settings.quick()
    overrides = {
        k: getattr(args, k) for k in ("duration", "warmup", "nice", "idle_connections") if getattr(args, k) is not None
    }
    if args.mosquitto_nodelay is not None:
        overrides["mosquitto_nodelay"] = args.mosquitto_nodelay == "on"
    if args.api:
        overrides["api"] = True
    if overrides:
        settings = Settings(**{**asdict(settings), **overrides})
    if settings.generator_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, settings.generator_cpus)  # the coordinator stays off the broker's core
    raise_nofile_limit()
    raise_nofile_limit(settings.idle_connections + 1024)  # past the hard limit where allowed (root)
    if settings.nice:
        os.nice(settings.nice)
    brokers = ["wrenmq"] + ([args.compare] if args.compare else [])

    started = time.monotonic()

    def progress_for(label: str) -> Any:
        def progress(message: str) -> None:
            print(f"[{time.monotonic() - started:7.1f}s] {label}: {message}", file=sys.stderr, flush=True)

        return progress

    machine = report.machine_info()
    print(
        f"wrenmq bench: {', '.join(names)} on {' vs '.join(brokers)}; broker CPUs {sorted(settings.broker_cpus)}, "
        f"generator CPUs {sorted(settings.generator_cpus)}; {machine['nproc']} CPUs, Python {machine['python']}, "
        f"wrenmq hot path {machine['wrenmq_hot_path']}, mosquitto {machine['mosquitto']}",
        file=sys.stderr,
    )
    if not settings.broker_cpus:
        print("wrenmq bench: fewer than 2 CPUs: broker and generator share a core", file=sys.stderr)

    measurements: list[dict[str, Any]] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wrenmq-bench-") as tmp:
        for name in names:
            scenario = SCENARIOS[name]
            why = scenario.missing() if scenario.missing else None
            if why:
                skipped.append(f"{name} skipped: {why}")
                print(f"wrenmq bench: {skipped[-1]}", file=sys.stderr)
                continue
            for round_no in range(args.rounds):
                order = brokers if round_no % 2 == 0 else brokers[::-1]
                for broker_name in order:
                    if scenario.wrenmq_only and broker_name != "wrenmq":
                        continue
                    label = f"{name} {broker_name}" + (f" round {round_no + 1}" if args.rounds > 1 else "")
                    progress = progress_for(label)
                    measurements.append(_measure(scenario, broker_name, round_no, settings, Path(tmp), progress))

    medians: dict[tuple[str, str], dict[str, Any]] = {}
    for name in names:
        for broker_name in brokers:
            ok = [
                m["metrics"]
                for m in measurements
                if m["scenario"] == name and m["broker"] == broker_name and m["error"] is None
            ]
            if ok:
                medians[(name, broker_name)] = median_metrics(ok)
    rows = report.summary_rows(medians, brokers)
    print(report.table(rows, brokers, medians))
    notes = skipped + list(dict.fromkeys(n for m in measurements for n in m["notes"]))
    if "mosquitto" in brokers:
        notes.append(
            f"mosquitto ran with set_tcp_nodelay {'true' if settings.mosquitto_nodelay else 'false (its default)'}; "
            "see --mosquitto-nodelay"
        )
    errors = [f"{m['scenario']} {m['broker']}: {m['error']}" for m in measurements if m["error"]]
    lost = [
        f"{m['scenario']} {m['broker']}: {m['metrics'].get('lost')} lost"
        for m in measurements
        if m["metrics"].get("lost")
    ]
    for line in [*notes, *lost, *errors]:
        print(f"note: {line}")
    print(
        "ratio = wrenmq / mosquitto of the raw figure; 'better' says which direction wins. "
        "'generator-bound': the load generator saturated its core first, so that broker's figure is a lower bound; "
        "'broker core shared': other processes used the broker's core during the run."
        if "mosquitto" in brokers
        else "'generator-bound': the load generator saturated its core first, so the figure is a lower bound."
    )
    if args.json:
        report.write_json(
            args.json,
            {
                "command": ["wrenmq", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else sys.argv,
                "machine": machine,
                "settings": asdict(settings),
                "brokers": brokers,
                "measurements": measurements,
                "summary": [{k: v for k, v in row.items() if k != "fmt"} for row in rows],
                "seconds": time.monotonic() - started,
            },
        )
    failed = any(m["error"] for m in measurements) or any(
        m["metrics"].get("lost") for m in measurements if m["broker"] == "wrenmq"
    )
    return 1 if failed else 0


def broker_options(settings: Settings) -> BrokerOptions:
    """The brokers' departures from the equivalent settings: ``--mosquitto-nodelay``, and ``--api``
    (wrenmq with its HTTP API on a free port, realtime and streams with it)."""
    return BrokerOptions(
        mosquitto_nodelay=settings.mosquitto_nodelay,
        wrenmq={"api_port": free_port()} if settings.api else {},
    )


def _measure(
    scenario: Scenario, broker_name: str, round_no: int, settings: Settings, tmp: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    """One scenario against one fresh broker; errors are recorded, not raised."""
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "broker": broker_name,
        "round": round_no + 1,
        "metrics": {},
        "notes": [],
        "error": None,
    }
    workdir = tmp / f"{scenario.name}-{broker_name}-{round_no}"
    progress("starting broker")
    try:
        broker = start_broker(broker_name, workdir, set(settings.broker_cpus), settings.nice, broker_options(settings))
    except Exception as exc:
        record["error"] = str(exc)
        progress(f"error: {exc}")
        return record
    run = Run(broker, settings, progress, workdir=workdir)
    t0 = time.monotonic()
    try:
        record["metrics"] = scenario.run(run)
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        progress(f"error: {record['error']}")
    finally:
        broker.stop()
    record["notes"] = run.notes
    record["seconds"] = time.monotonic() - t0
    if record["error"] is None:
        summary = ", ".join(
            m.fmt.format(record["metrics"][m.key]) + " " + m.label
            for m in scenario.metrics[:2]
            if m.key in record["metrics"]
        )
        progress(f"done: {summary}")
    return record
