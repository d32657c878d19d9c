"""What the README's Quick start and first API steps promise a newcomer (a wrenmq feature, no MQTT
statement): ``wrenmq serve`` opens the API and console too and its start-up log gives the console's
URL; a taken API port is reported naming ``api_port``; ``wrenmq apikey`` finds the keys where
``wrenmq serve --data-dir`` does."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serveproc import BrokerProcess, clean_env, free_port, serve_command

TIMEOUT = 10.0


def wrenmq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wrenmq", *args], env=clean_env(), capture_output=True, text=True, timeout=30, cwd=cwd
    )


def wait_for_line(broker: BrokerProcess, text: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while True:
        for line in broker.log().splitlines():
            if text in line:
                return line
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.05)


def test_apikey_takes_data_dir_like_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = wrenmq("apikey", "--data-dir", str(data), "create", "admin")
    assert before.returncode == 0, before.stderr
    after = wrenmq("apikey", "create", "viewer", "--read-only", "--data-dir", str(data))  # after the action too
    assert after.returncode == 0, after.stderr
    assert str(data / "api_keys.json") in before.stderr
    listed = wrenmq("apikey", "list", "--data-dir", str(data))
    assert listed.stdout.splitlines() == ["admin\tread-write", "viewer\tread-only"]
    api_port = free_port()
    broker = BrokerProcess(data, "--api-port", str(api_port)).start()  # serve --data-dir <data>
    try:
        wait_for_line(broker, "API listening on")
        for key, status in ((before.stdout.strip(), 200), (after.stdout.strip(), 200), ("wmq_unknown", 401)):
            response = httpx.get(
                f"http://127.0.0.1:{api_port}/api/v1/broker/status", headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == status, response.text
    finally:
        broker.stop()


def test_serve_logs_the_console_url_and_serves_it(tmp_path: Path) -> None:
    api_port = free_port()
    broker = BrokerProcess(tmp_path, "--api-port", str(api_port)).start()
    try:
        line = wait_for_line(broker, "web console at")
        url = f"http://127.0.0.1:{api_port}/"
        assert line.endswith(f"web console at {url}"), line
        page = httpx.get(url, timeout=TIMEOUT)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    finally:
        broker.stop()


def test_api_port_taken_names_api_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            serve_command(free_port(), tmp_path / "data", "--api-port", str(port)),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"API listener on 127.0.0.1:{port}: " in result.stderr
    assert "(api_port: choose another port, or off for no API and console)" in result.stderr


def test_readme_devices_example_finds_the_simulators_devices(wrenmq_server_factory) -> None:  # type: ignore[no-untyped-def]
    """The README's device query, as written, lists a device ``wrenmq simulate devices`` runs."""
    import re

    from wrenmq.api.keys import ApiKeyStore

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r'curl -H "\$AUTH" "\$API/(devices\?status=online&type=[^"]+)"', readme)
    assert found is not None, "the README's device query is gone: update this test"
    server = wrenmq_server_factory(api_port=0)
    key = ApiKeyStore(server.broker.config.api_keys_path).create("readme")
    simulator = subprocess.Popen(
        [sys.executable, "-m", "wrenmq", "simulate", "devices", "--count", "1", "-p", str(server.port), "--quiet"],
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            response = httpx.get(
                f"{server.api_url}/api/v1/{found.group(1)}", headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200, response.text
            if response.json()["items"]:
                break
            assert time.monotonic() < deadline, f"{found.group(1)} found nothing"
            time.sleep(0.1)
        assert [item["deviceId"] for item in response.json()["items"]] == ["sim-0001"]
    finally:
        simulator.terminate()
        simulator.wait(TIMEOUT)
