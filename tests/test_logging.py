"""Logging: one line per connect and per disconnect, none per message (issue: broker core, Logging)."""

from __future__ import annotations

import io
import logging
import subprocess
import time
from pathlib import Path

import pytest

from mqttraw import RawClient
from serveproc import clean_env, free_port, serve_command
from wrenmq.logs import FLUSH_DELAY, BatchedStreamHandler, CachedTimeFormatter
from wrenmq.mqtt import packets as p


def _broker_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("wrenmq") and r.levelno == logging.INFO]


def _wait_for(caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in _broker_lines(caplog) if needle in line]
        if lines:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"no log line containing {needle!r}: {_broker_lines(caplog)}")


def test_one_line_per_connect_and_disconnect_with_id_address_version_reason(broker, caplog):
    caplog.set_level(logging.INFO)
    client = RawClient(broker.port, 5)
    assert client.connect("log-client-1").reason_code == 0
    connected = _wait_for(caplog, "log-client-1 connected")
    assert len(connected) == 1
    assert "127.0.0.1:" in connected[0] and "MQTT 5.0" in connected[0]
    client.disconnect()
    disconnected = _wait_for(caplog, "log-client-1 disconnected")
    assert len(disconnected) == 1
    assert "127.0.0.1:" in disconnected[0] and "MQTT 5.0" in disconnected[0]
    assert "client disconnected" in disconnected[0]  # the reason


def test_abnormal_close_logs_the_reason(broker, caplog):
    caplog.set_level(logging.INFO)
    client = RawClient(broker.port, 4)
    client.connect("log-client-2", keep_alive=1)
    # No PINGREQ: the broker closes the connection after 1.5 x keep alive [MQTT-3.1.2-24].
    line = _wait_for(caplog, "log-client-2 disconnected", timeout=4.0)[0]
    assert "MQTT 3.1.1" in line and "keep alive" in line
    client.close()


def test_no_log_line_per_message_at_the_default_level(broker, caplog):
    caplog.set_level(logging.INFO)
    sub = RawClient(broker.port, 4)
    sub.connect("log-sub")
    sub.subscribe("log/#", 1)
    pub = RawClient(broker.port, 4)
    pub.connect("log-pub")
    _wait_for(caplog, "log-pub connected")
    before = len(_broker_lines(caplog))
    for i in range(50):
        pub.publish(f"log/{i}", b"x", 1)
    for _ in range(50):
        msg = sub.expect(p.Publish)
        sub.send(p.Puback(msg.packet_id))
    assert len(_broker_lines(caplog)) == before
    sub.close()
    pub.close()


class _UtcIsoFormatter(logging.Formatter):
    """The standard library's own formatter, set to UTC ISO 8601 with milliseconds and Z."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


def test_cached_time_formatter_matches_the_standard_layout_in_utc_with_zone():
    record = logging.LogRecord("wrenmq.broker", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    ours = CachedTimeFormatter().format(record)
    standard = _UtcIsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
    assert ours == standard
    assert ours.split(" ", 1)[0].endswith("Z")


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_info_lines_are_flushed_in_a_batch_and_warnings_at_once():
    stream = _CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(CachedTimeFormatter())
    logger = logging.getLogger("wrenmq.test.batched")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(100):
            logger.info("line %d", i)
        assert stream.getvalue().count("\n") == 100
        assert stream.flushes == 0  # no flush per INFO line
        deadline = time.monotonic() + FLUSH_DELAY * 10
        while stream.flushes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.flushes == 1  # one flush for the batch, from the timer
        logger.warning("now")
        assert stream.flushes == 2  # warnings flush at once
    finally:
        logger.removeHandler(handler)


def test_serve_writes_the_connect_line_to_stderr_promptly(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(serve_command(port, tmp_path), stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = RawClient(port, 4)
                break
            except OSError:
                assert time.monotonic() < deadline, "broker did not start"
                time.sleep(0.05)
        client.connect("stderr-client")
        client.disconnect()
        time.sleep(FLUSH_DELAY * 3)  # the batch flush, with no further log activity
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.splitlines()
    assert sum("stderr-client connected" in line for line in lines) == 1
    assert sum("stderr-client disconnected" in line for line in lines) == 1
