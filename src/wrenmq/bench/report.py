"""The comparison table (GitHub Markdown, so it pastes into BENCHMARKS.md) and the JSON record."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from .brokers import mosquitto_version
from .scenarios import SCENARIOS

__all__ = ["machine_info", "summary_rows", "table", "write_json"]

SATURATED = 85.0  # CPU % above which a process counts as the one that ran out of core
CONTENDED = 15.0  # CPU % used by other processes on the broker's core that makes a figure suspect


def summary_rows(medians: dict[tuple[str, str], dict[str, Any]], brokers: list[str]) -> list[dict[str, Any]]:
    """One row per scenario metric: each broker's median figure and the ratio wrenmq/mosquitto."""
    rows = []
    scenario_names = list(dict.fromkeys(name for name, _ in medians))
    for name in scenario_names:
        scenario = SCENARIOS[name]
        for metric in scenario.metrics:
            row: dict[str, Any] = {
                "scenario": name,
                "metric": metric.label,
                "key": metric.key,
                "better": metric.better,
                "fmt": metric.fmt,
            }
            for broker in brokers:
                row[broker] = medians.get((name, broker), {}).get(metric.key)
            a, b = row.get("wrenmq"), row.get("mosquitto")
            row["ratio"] = a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None
            rows.append(row)
    return rows


def bound_notes(medians: dict[tuple[str, str], dict[str, Any]], scenario: str, brokers: list[str]) -> list[str]:
    """Say which side saturated: the generator (the broker could do more) or the broker."""
    notes = []
    for broker in brokers:
        m = medians.get((scenario, broker), {})
        gen, brk = m.get("generator_cpu"), m.get("broker_cpu")
        if gen is None or brk is None:
            continue
        if gen >= SATURATED and brk >= SATURATED:
            notes.append(f"{broker}: both saturated")
        elif gen >= SATURATED:
            notes.append(f"{broker}: generator-bound")
        elif brk >= SATURATED:
            notes.append(f"{broker}: broker-bound")
        if m.get("other_cpu_broker_core", 0.0) >= CONTENDED:
            notes.append(f"{broker}: broker core shared")
    return notes


def table(rows: list[dict[str, Any]], brokers: list[str], medians: dict[tuple[str, str], dict[str, Any]]) -> str:
    compare = "mosquitto" in brokers and "wrenmq" in brokers
    header = ["scenario", "metric", "better", *brokers]
    if compare:
        header += ["wrenmq/mosquitto", "notes"]
    else:
        header += ["notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    last = None
    for row in rows:
        first = row["scenario"] != last
        last = row["scenario"]
        cells = [row["scenario"] if first else "", row["metric"], row["better"] or ""]
        for broker in brokers:
            value = row.get(broker)
            cells.append("-" if value is None else row["fmt"].format(value))
        if compare:
            cells.append("" if row["ratio"] is None or row["better"] is None else f"{row['ratio']:.2f}x")
        cells.append("; ".join(bound_notes(medians, row["scenario"], brokers)) if first else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "not installed"
    import wrenmq

    hot_path = getattr(wrenmq, "hot_path", None)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "uvloop": uvloop_version,
        "wrenmq": __version__,
        "wrenmq_hot_path": hot_path() if hot_path is not None else "pure Python",
        "mosquitto": mosquitto_version(),
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)
