"""The ``wrenmq`` command line: flags, help, and configuration errors that exit 2 naming the key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serveproc import clean_env
from wrenmq import __version__
from wrenmq.cli import main


def run_wrenmq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m wrenmq`` with WRENMQ_* variables removed unless given, so the host cannot leak in."""
    return subprocess.run(
        [sys.executable, "-m", "wrenmq", *args],
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=30,
    )


SERVE_FLAGS = [
    "--config",
    "--host",
    "--port",
    "--data-dir",
    "--log-level",
    "--storage",
    "--durability",
    "--allow-anonymous",
    "--no-allow-anonymous",
    "--max-packet-size",
    "--sys-interval",
]


def test_serve_help_lists_flags() -> None:
    result = run_wrenmq("serve", "--help")
    assert result.returncode == 0, result.stderr
    for flag in SERVE_FLAGS:
        assert flag in result.stdout
    assert "WRENMQ_PORT" in result.stdout  # help says which variable sets each key


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"wrenmq {__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_bad_config_file_exits_2_naming_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("max_packet_size = 1\n")
    result = run_wrenmq("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"wrenmq: error: config file {path}: key 'max_packet_size': ")


def test_unknown_key_in_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1884\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert f"wrenmq: error: config file {path}: unknown key 'prot'" in capsys.readouterr().err


def test_bad_environment_exits_2_naming_variable() -> None:
    result = run_wrenmq("serve", env={"WRENMQ_STORAGE": "redis"})
    assert result.returncode == 2
    assert result.stderr.startswith("wrenmq: error: environment WRENMQ_STORAGE: ")


def test_mistyped_environment_variable_stops_serve_with_exit_2(tmp_path: Path) -> None:
    """A typo in a security setting must not leave the broker at its default (issue 14, item 15)."""
    args = ("serve", "--port", "0", "--ws-port", "off", "--api-port", "off", "--data-dir", str(tmp_path / "data"))
    result = run_wrenmq(*args, env={"WRENMQ_ALLOW_ANONYMUS": "false"})
    assert result.returncode == 2
    assert "environment WRENMQ_ALLOW_ANONYMUS: unknown variable (did you mean WRENMQ_ALLOW_ANONYMOUS?)" in result.stderr
    assert not (tmp_path / "data").exists()


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("port = 65536\n")
    result = run_wrenmq("serve", env={"WRENMQ_CONFIG": str(path)})
    assert result.returncode == 2
    assert f"config file {path}: key 'port'" in result.stderr


def test_out_of_range_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "65536"]) == 2
    assert "wrenmq: error: option --port: " in capsys.readouterr().err


def test_invalid_choice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--durability", "eventual"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_gracefully_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    if not hasattr(pytest.importorskip("wrenmq.broker"), "Broker"):
        pytest.skip("wrenmq.broker.Broker does not exist yet")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WRENMQ_")}
    args = [
        "serve",
        "--port",
        "0",
        "--ws-port",
        "off",
        "--api-port",
        "0",  # on, on a free port: uvicorn must leave wrenmq's logging alone
        "--storage",
        "memory",
        "--sys-interval",
        "0",
    ]
    args += ["--data-dir", str(tmp_path)]
    with subprocess.Popen(
        [sys.executable, "-m", "wrenmq", *args], env=clean, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        lines: list[str] = []
        while not any("listening on mqtt:" in line for line in lines) and time.monotonic() < deadline:
            lines.append(proc.stderr.readline())
            if not lines[-1] and proc.poll() is not None:
                break
        assert "listening on mqtt://127.0.0.1:" in lines[-1], "".join(lines)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in err
