"""A simulated fleet against the presence service, end to end (wrenmq feature, issue 8): the device
simulator (``wrenmq simulate devices``, a subprocess) drives 50 devices at wrenmq; the devices API
shows them online, and once the simulator is killed (its sockets close without DISCONNECT, so the
broker publishes each device's will [MQTT-3.1.2-8]) it shows them offline."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from serveproc import clean_env
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

COUNT = 50
TIMEOUT = 20.0


@pytest.fixture
def api(wrenmq_server_factory: Callable[..., WrenmqServer]) -> Iterator[tuple[WrenmqServer, httpx.Client]]:
    server = wrenmq_server_factory(api_port=0, presence_heartbeat_interval=1.0, presence_missed_heartbeats=3)
    key = ApiKeyStore(server.broker.config.api_keys_path).create(f"fleet-{uuid.uuid4().hex[:6]}")
    with httpx.Client(base_url=server.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=5) as http:
        yield server, http


def devices(http: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    response = http.get("/api/v1/devices", params={"limit": 1000, **query})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_until(check: Callable[[], bool], what: str) -> float:
    """Seconds it took for ``check`` to hold (at most TIMEOUT)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < TIMEOUT, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def simulate(port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "wrenmq", "simulate", "devices", "--count", str(COUNT), "-p", str(port)]
    command += ["--heartbeat", "1", "--ramp", "200", "--quiet", "--seed", "7", *extra]
    return subprocess.Popen(command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_presence_simulated_fleet_online_then_offline_when_killed(api: tuple[WrenmqServer, httpx.Client]) -> None:
    server, http = api
    process = simulate(server.port)
    try:
        wait_until(lambda: len(devices(http, status="online")) == COUNT, f"{COUNT} devices online")
        fleet = devices(http)
        assert len(fleet) == COUNT
        assert {device["type"] for device in fleet} == {"vr-headset"}
        assert all(device["online"] for device in fleet)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    took = wait_until(lambda: not devices(http, status="online"), "every device offline")
    assert len(devices(http, status="offline")) == COUNT
    # The will fires as the sockets close: well within the heartbeat timeout (3 x 1 s).
    assert took < 3.0, f"{took:.1f} s to see the fleet offline"


def test_presence_simulated_fleet_obeys_a_session_command_from_the_api(
    api: tuple[WrenmqServer, httpx.Client],
) -> None:
    """Devices told through the API to join a session then obey a session command, and the
    registry shows the new state."""
    server, http = api
    process = simulate(server.port)
    try:
        wait_until(lambda: len(devices(http, status="online")) == COUNT, f"{COUNT} devices online")
        for device in devices(http)[:5]:
            response = http.post(f"/api/v1/devices/{device['deviceId']}/commands/join", json={"sessionId": "s1"})
            assert response.status_code == 202, response.text
        wait_until(lambda: len(devices(http, session="s1")) == 5, "5 devices in session s1")
        response = http.post("/api/v1/sessions/s1/commands/play", json={})
        assert response.status_code == 202, response.text
        wait_until(
            lambda: {device["status"] for device in devices(http, session="s1")} == {"playing"}, "session playing"
        )
        assert all(device["status"] != "playing" for device in devices(http) if device.get("sessionId") != "s1")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
