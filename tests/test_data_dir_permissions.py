"""The message store is private (issue 14, item 10): under the usual umask 022, the data directory is
created 0700 and every file wrenmq writes there 0600, SQLite's -wal and -shm included, as Mosquitto
writes its store 0600; an existing directory or file that is more open draws a start-up warning
naming the path and its mode. Password and API key files are written 0600 too.

Each test runs ``wrenmq`` as a subprocess with umask 022 set in the child, whatever the test runner's.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt

from serveproc import clean_env, free_port, serve_command


def umask_022() -> None:
    os.umask(0o022)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {found.name: mode(found) for found in sorted(directory.iterdir())}


@contextmanager
def running(data: Path, *extra: str) -> Iterator[tuple[int, list[str]]]:
    """``wrenmq serve`` on SQLite in ``data`` with the API and presence on; yields (MQTT port, the
    stderr lines so far) once it accepts clients, then stops it with SIGTERM."""
    port = free_port()
    args = serve_command(port, data, "--api-port", "0", "--sys-interval", "0", *extra, storage=None)
    proc = subprocess.Popen(args, env=clean_env(), stderr=subprocess.PIPE, text=True, preexec_fn=umask_022)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any("listening on mqtt:" in line for line in lines):
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        yield port, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        lines.append(rest)
    assert proc.returncode == 0, "".join(lines)


def publish_retained(port: int) -> None:
    """A retained QoS 1 message, acknowledged: committed to wrenmq.db (and so its WAL) in strict mode."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="perm-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish("secret/note", b"payload", qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_data_dir_is_0700_and_every_file_in_it_0600_under_umask_022(tmp_path: Path) -> None:
    data = tmp_path / "var" / "wrenmq"
    with running(data) as (port, _):
        publish_retained(port)
        while_running = modes(data)
    assert mode(data) == 0o700
    # While running: the stores and SQLite's own -wal and -shm beside each.
    for name in ("wrenmq.db", "presence.db", "resources.db", "bridges.db"):
        for suffix in ("", "-wal", "-shm"):
            assert while_running.get(name + suffix) == 0o600, while_running
    assert all(found == 0o600 for found in while_running.values()), while_running
    assert all(found == 0o600 for found in modes(data).values()), modes(data)
    assert mode(data.parent) == 0o755  # a parent it had to create is an ordinary directory


def test_existing_open_data_dir_and_database_are_warned_about_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    old = os.umask(0o022)
    try:
        sqlite3.connect(data / "wrenmq.db").close()  # as an older wrenmq made it: 0644
    finally:
        os.umask(old)
    assert mode(data / "wrenmq.db") == 0o644
    keys = data / "api_keys.json"
    keys.write_text('{"keys": []}\n')
    os.chmod(keys, 0o644)
    with running(data) as (_, lines):
        pass
    err = "".join(lines)
    assert f"API key file {keys} has mode 0644: other users on this host can read it; run chmod 600 {keys}" in err
    assert f"data directory {data} has mode 0755: other users on this host can read it; run chmod 700 {data}" in err
    db = data / "wrenmq.db"
    assert f"database file {db} has mode 0644: other users on this host can read it; run chmod 600 {db}" in err
    assert mode(data) == 0o755  # the operator's choice is warned about, not overridden
    assert "presence.db has mode" not in err  # what wrenmq created itself is private


def test_passwd_writes_0600_and_an_open_password_file_is_warned_about(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    result = subprocess.run(
        [sys.executable, "-m", "wrenmq", "passwd", "add", "-c", str(passwd), "alice", "-p", "secret"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=umask_022,
    )
    assert result.returncode == 0, result.stderr
    assert mode(passwd) == 0o600
    os.chmod(passwd, 0o644)
    with running(tmp_path / "data", "--password-file", str(passwd)) as (_, lines):
        pass
    assert f"password file {passwd} has mode 0644: other users on this host can read it" in "".join(lines)


def test_apikey_store_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "wrenmq", "apikey", "create", "ops"],
        env=clean_env(WRENMQ_DATA_DIR=str(data)),
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=umask_022,
    )
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    assert modes(data) == {"api_keys.json": 0o600}
