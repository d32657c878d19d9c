"""Where ``wrenmq serve`` writes its log (a wrenmq feature, no MQTT statement): ``log_dest`` stderr,
stdout, a file that logrotate may move (reopened, as WatchedFileHandler does), syslog on a Unix
datagram socket; the same from Mosquitto's ``log_dest`` lines; a bad value stops start-up naming it."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serveproc import BrokerProcess, clean_env, free_port, serve_command
from wrenmq.config import ConfigError, load_config

TIMEOUT = 10.0


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def connect_once(port: int, client_id: str) -> None:
    """A CONNECT and DISCONNECT: a log line each, naming ``client_id``."""
    from mqttraw import RawClient

    with RawClient(port, 5) as client:
        assert client.connect(client_id).reason_code == 0
        client.disconnect()


def test_log_dest_file_is_reopened_after_logrotate_moves_it(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "wrenmq.log"
    log_file.parent.mkdir()
    broker = BrokerProcess(tmp_path, "--log-dest", "file", env={"WRENMQ_LOG_FILE": str(log_file)}).start()
    try:
        connect_once(broker.port, "before-rotate")
        wait_until(lambda: "before-rotate" in log_file.read_text(), f"no line in {log_file}: {broker.log()}")
        assert "before-rotate" not in broker.log()  # the file instead of stderr, not as well
        rotated = log_file.with_suffix(".log.1")
        log_file.rename(rotated)  # what logrotate does (without copytruncate)
        connect_once(broker.port, "after-rotate")
        wait_until(lambda: log_file.exists() and "after-rotate" in log_file.read_text(), "not reopened")
        assert "after-rotate" not in rotated.read_text()
    finally:
        broker.stop()


def test_log_dest_stderr_and_file_both_get_every_line(tmp_path: Path) -> None:
    log_file = tmp_path / "wrenmq.log"
    config = tmp_path / "wrenmq.toml"
    config.write_text(f'log_dest = ["stderr", "file"]\nlog_file = "{log_file}"\nlog_format = "json"\n')
    broker = BrokerProcess(tmp_path, "--config", str(config)).start()
    try:
        connect_once(broker.port, "to-both")
        wait_until(lambda: "to-both" in log_file.read_text() and "to-both" in broker.log(), "not in both")
        assert log_file.read_text().startswith("{")
    finally:
        broker.stop()


def test_log_dest_syslog_sends_to_the_socket_with_facility_and_level(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(TIMEOUT)
    broker = BrokerProcess(
        tmp_path, "--log-dest", "syslog", env={"WRENMQ_SYSLOG_ADDRESS": path, "WRENMQ_SYSLOG_FACILITY": "local3"}
    ).start()
    try:
        connect_once(broker.port, "via-syslog")
        messages = []
        while not any("via-syslog" in found for found in messages):
            messages.append(server.recv(65536).decode())
        line = next(found for found in messages if "via-syslog" in found)
        # RFC 3164 priority: facility local3 (19) * 8 + informational (6) = 158.
        assert line.startswith(f"<158>wrenmq[{broker.proc.pid}]: INFO "), line  # type: ignore[union-attr]
    finally:
        broker.stop()
        server.close()


def test_log_dest_from_mosquitto_conf(tmp_path: Path) -> None:
    log_file = tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {free_port()} 127.0.0.1\nlog_dest stdout\nlog_dest file {log_file}\nlog_dest syslog\n"
        "log_facility 5\nlog_dest topic\n"
    )
    warnings: list[str] = []
    config = load_config(conf, warnings=warnings)
    assert config.log.dest == ["stdout", "file", "syslog"]
    assert config.log.file == log_file
    assert config.log.syslog_facility == "local5"
    assert any("line 6: log_dest: log_dest topic is not supported" in found for found in warnings), warnings
    conf.write_text("log_dest none\n")
    assert load_config(conf).log.dest == []
    assert load_config(None).log.dest == ["stderr"]  # Mosquitto's default too, in the foreground


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('log_dest = ["stderr", "papyrus"]', r"key 'log_dest' at log_dest\[1\]: Input should be 'stderr'"),
        ('log_dest = ["file"]', "key 'log_dest': log_dest file needs log_file"),
        ('syslog_facility = "kern"', "key 'syslog_facility': Input should be 'daemon'"),
    ],
)
def test_bad_log_settings_stop_start_up_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "wrenmq.toml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError, match=named):
        load_config(config)


@pytest.mark.parametrize(
    ("line", "named"), [("log_dest papyrus", "line 1: log_dest must be"), ("log_facility 9", "line 1: log_facility")]
)
def test_bad_mosquitto_log_lines_stop_start_up_naming_the_line(tmp_path: Path, line: str, named: str) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(line + "\n")
    with pytest.raises(ConfigError, match=named):
        load_config(conf)


def test_log_file_that_cannot_be_opened_stops_start_up_naming_log_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "wrenmq.log"
    proc = subprocess.run(
        serve_command(free_port(), tmp_path, "--log-dest", "file"),
        env=clean_env(WRENMQ_LOG_FILE=str(missing)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"log_file {missing}: No such file or directory" in proc.stderr
