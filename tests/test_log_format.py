"""Log formats of ``wrenmq serve`` (a wrenmq feature, no MQTT statement): text lines whose timestamps
carry their zone, and ``log_format = "json"``: one object per line, UTC timestamps with zone."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from mqttraw import RawClient
from serveproc import clean_env, free_port, serve_command
from wrenmq.logs import JsonFormatter

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def _serve_log(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> list[str]:
    """Start ``wrenmq serve``, connect and disconnect a client (a log line each), stop it; its lines."""
    port = free_port()
    proc = subprocess.Popen(
        serve_command(port, tmp_path, *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(**(env or {})),
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        client = RawClient(port, 5)
        assert client.connect("log-format").reason_code == 0
        client.disconnect()
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        lines += proc.stdout.readlines()
        assert proc.wait(10) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    return [line.rstrip("\n") for line in lines]


def test_text_log_lines_carry_a_utc_timestamp_with_zone(tmp_path: Path) -> None:
    lines = _serve_log(tmp_path)
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    stamp = datetime.fromisoformat(lines[0].split(" ", 1)[0])
    assert stamp.tzinfo is not None and abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_json_log_is_one_object_per_line_with_utc_timestamps(tmp_path: Path) -> None:
    lines = _serve_log(tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in lines]  # every line parses, alone
    assert entries
    for entry in entries:
        assert set(entry) >= {"time", "level", "logger", "message"}, entry
        assert entry["time"].endswith("Z")
        stamp = datetime.fromisoformat(entry["time"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("wrenmq ") and " listening on " in message for message in messages), messages
    assert any("log-format" in message and "connected" in message for message in messages), messages
    assert "stopping" in messages


def test_json_log_format_comes_from_the_environment_and_config_file(tmp_path: Path) -> None:
    from_env = _serve_log(tmp_path / "env", env={"WRENMQ_LOG_FORMAT": "json"})
    assert all(json.loads(line)["time"] for line in from_env)
    config = tmp_path / "wrenmq.toml"
    config.write_text('log_format = "json"\n')
    from_file = _serve_log(tmp_path / "file", "--config", str(config))
    assert all(json.loads(line)["level"] for line in from_file)


def test_json_log_keeps_multi_line_exceptions_on_one_line() -> None:
    import logging
    import sys

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("wrenmq.x", logging.ERROR, __file__, 1, "failed: %s", ("a\nb",), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    entry = json.loads(text)
    assert entry["message"] == "failed: a\nb" and entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback") and "ValueError: bad\nthing" in entry["exception"]


def test_bad_log_format_names_the_key(tmp_path: Path) -> None:
    result = subprocess.run(
        serve_command(free_port(), tmp_path, "--log-format", "xml"), capture_output=True, text=True, env=clean_env()
    )
    assert result.returncode == 2 and "--log-format" in result.stderr and "'xml'" in result.stderr
