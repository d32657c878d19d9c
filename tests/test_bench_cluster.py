"""``wrenmq bench``'s cluster scenario (issue 16; a wrenmq feature, no MQTT statement): a real
``redis-server`` and two clustered ``wrenmq serve`` nodes beside the single node, at tiny durations.
It is left out of ``--quick`` (CI's smoke run), which must stay fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from redisproc import have_redis
from wrenmq.bench.runner import chosen_scenarios
from wrenmq.bench.scenarios import SCENARIOS


def test_bench_quick_leaves_out_the_cluster_scenario() -> None:
    assert "cluster" not in chosen_scenarios(None, quick=True)
    assert "cluster" in chosen_scenarios(None, quick=False)
    assert chosen_scenarios("cluster", quick=True) == ["cluster"]  # unless asked for by name
    assert [name for name, s in SCENARIOS.items() if not s.in_quick] == ["cluster"]


@pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")
def test_bench_cluster_measures_single_local_and_cross(tmp_path: Path) -> None:
    """Every topology delivers everything (no loss); a crossing message costs Redis at least one
    command (its XADD) and more node CPU than a local one; the hop's latency is reported."""
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "wrenmq", "bench", "--quick", "--duration", "0.3", "--warmup", "0.1"]
    command += ["--scenarios", "cluster", "--compare", "mosquitto", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    (measurement,) = record["measurements"]  # wrenmq only: Mosquitto has no cluster to compare
    assert measurement["broker"] == "wrenmq" and measurement["error"] is None
    m = measurement["metrics"]
    assert m["lost"] == 0
    for topology in ("single", "local", "cross"):
        assert m[f"{topology}_msgs_per_s"] > 0 and m[f"{topology}_p50_us"] > 0
    assert m["cross_redis_ops"] >= 1.0  # one XADD per crossing message, and batched reads and acks
    assert m["cross_cpu_us"] > m["local_cpu_us"]
    assert m["hop_p50_us"] == pytest.approx(m["cross_p50_us"] - m["single_p50_us"])
    assert "| cluster | single node: delivered msg/s |" in result.stdout
