"""Device presence seen by a standard device panel (issue 18): the panel code that device fleets
are written with, MQTT.js in node and in Chromium, ``JSON.parse(payload.toString())`` on every
message of ``devices/+/lwt``, ``devices/+/status`` and ``devices/discovery/announce``, with no
try/catch. Devices (paho-mqtt) drop (their will fires) and come back; with presence on, the
service clears each stale retained will, and it must do so without sending the panel anything
that is not JSON. The same panel with ``presence = false`` is the control: the service must never
make a standard panel worse than no service.

Each run ends with a sentinel status published after the service has cleared the stale wills, so
any empty message routed to the panel would have reached it (and failed it) before the sentinel.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import chromium
from paho_sync import MQTTv5, MQTTv311
from test_presence import FAST, Device
from test_simulate import Simulator
from wrenmq.pytest_plugin import WrenmqServer

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
MQTTJS = NODE_MODULES / "mqtt" / "dist" / "mqtt.min.js"
TIMEOUT = 20.0  # the machine is shared: node and Chromium may start slowly
PANEL_FILTERS = ["devices/+/lwt", "devices/+/status", "devices/discovery/announce"]
DEVICES = ["pn-1", "pn-2", "pn-3"]
SENTINEL = "pn-sentinel"

# The panel as device panels are written: parse every message, trust it is JSON.
PANEL_JS = r"""
function startPanel(mqtt, url, report) {
  const client = mqtt.connect(url, { protocolVersion: 5, clientId: "panel", reconnectPeriod: 0 });
  client.on("connect", () => {
    client.subscribe(FILTERS, { qos: 1 }, (err) => report({ ready: !err }));
  });
  for (const name of ["close", "offline", "error", "disconnect"]) {  // so a failure says why
    client.on(name, (arg) => report({ event: name, detail: arg && (arg.message || arg.reasonCode) || null }));
  }
  client.on("packetreceive", (packet) => {  // what arrived on the wire, for a failure message
    if (packet.cmd === "publish") DIAG(packet.cmd + " " + packet.topic + " " + packet.messageId);
  });
  client.on("message", (topic, payload) => {
    const body = JSON.parse(payload.toString());
    report({ topic, status: body.status || null, deviceId: body.deviceId || null });
  });
}
""".replace("FILTERS", json.dumps(PANEL_FILTERS))

NODE_PANEL = (
    PANEL_JS
    + r"""
const DIAG = (text) => process.stderr.write(text + "\n");
startPanel(require("mqtt"), process.argv[1], (line) => process.stdout.write(JSON.stringify(line) + "\n"));
"""
)


class NodePanel:
    """The panel in node; ``lines`` gets each report, ``None`` when the process ends."""

    def __init__(self, port: int) -> None:
        if shutil.which("node") is None or not (NODE_MODULES / "mqtt").exists():
            pytest.skip("node and the mqtt package are needed")
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
        self.process = subprocess.Popen(
            ["node", "-e", NODE_PANEL, f"mqtt://127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.wire: list[str] = []  # the PUBLISH packets MQTT.js received (its stderr)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_wire, daemon=True).start()

    def _read_wire(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.wire.append(line.rstrip())

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for(self, check: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Reports up to the first that passes ``check``; fails if the panel died first."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"the panel reported nothing that passed the check: {seen[-8:]}; on the wire: {self.wire[-8:]}"
                ) from None
            if line is None:
                self.process.wait(5)
                raise AssertionError(f"the panel died ({self.process.returncode}): {self.wire[-10:]}")
            seen.append(line)
            if check(line):
                return seen

    def close(self) -> None:
        self.process.kill()
        self.process.wait(5)


class BrowserPanel:
    """The panel in a Chromium page (MQTT.js's browser bundle over the ws listener)."""

    def __init__(self, browser: Any, ws_port: int) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto("about:blank")
        self.page.add_script_tag(path=str(MQTTJS))
        self.page.add_script_tag(
            content=PANEL_JS + "window.seen = []; window.wire = []; const DIAG = (t) => window.wire.push(t);"
        )
        self.page.evaluate(
            "(url) => startPanel(mqtt, url, (line) => window.seen.push(line))", f"ws://127.0.0.1:{ws_port}/mqtt"
        )
        self.taken = 0

    def wait_for(self, check: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert not self.errors, self.errors
            fresh: list[dict[str, Any]] = self.page.evaluate("(n) => window.seen.slice(n)", self.taken)
            for line in fresh:
                self.taken += 1
                seen.append(line)
                if check(line):
                    return seen
            self.page.wait_for_timeout(20)
        wire = self.page.evaluate("window.wire.slice(-8)")
        raise AssertionError(f"the panel froze: errors {self.errors}, last reports {seen[-5:]}, on the wire {wire}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not MQTTJS.exists():
        pytest.skip(f"{MQTTJS} is missing: run npm ci at the repository root")
    with chromium() as launched:
        yield launched


def _server_state(server: WrenmqServer) -> dict[str, Any]:
    """What the broker knows of the panel and the devices, for a failure message."""

    async def state() -> dict[str, Any]:
        broker = server.broker
        sessions = {}
        for client_id, session in broker.sessions.items():
            conn = session.connection
            sessions[client_id] = {
                "connected": conn is not None and not conn.closed,
                "inflight": len(session.inflight_out),
                "queued": len(session.queue),
                "quota": conn.send_quota if conn is not None else None,
                "paused": conn.writing_paused if conn is not None else None,
            }
        retained = {}
        for device_id in DEVICES:
            for kind in ("lwt", "status"):
                message = broker.retained.get(f"devices/{device_id}/{kind}")
                retained[f"{device_id}/{kind}"] = None if message is None else bytes(message.payload)[:60]
        stats = broker.stats
        return {
            "sessions": sessions,
            "retained": retained,
            "received": stats.messages_received_qos,
            "sent": stats.messages_sent_qos,
        }

    return server.call(state())


def _lwt_cleared(server: WrenmqServer, device_id: str) -> bool:
    async def check() -> bool:
        return server.broker.retained.get(f"devices/{device_id}/lwt") is None

    return server.call(check())


def run_fleet(server: WrenmqServer, panel: Any, presence: bool, protocol: Any = MQTTv5) -> list[dict[str, Any]]:
    """Devices come, drop (their wills fire), come back, twice; then the sentinel. Returns what
    the panel reported after it subscribed."""
    seen = panel.wait_for(lambda line: "ready" in line)
    assert seen[-1] == {"ready": True}
    reports: list[dict[str, Any]] = []
    devices: list[Device] = []
    try:
        for _cycle in range(2):
            for device_id in DEVICES:
                device = Device(server.port, protocol, device_id)
                devices.append(device)
                device.status("idle")
            reports += panel.wait_for(lambda line: line.get("topic") == f"devices/{DEVICES[-1]}/status")
            for device in devices:
                device.drop()
            devices.clear()
            # Each will: the retained offline message [MQTT-3.1.2-8], in whatever order the broker
            # saw the three connections end (they end together).
            wills = {f"devices/{d}/lwt" for d in DEVICES}
            while wills:
                reports += panel.wait_for(lambda line, w=wills: line.get("topic") in w)
                wills.discard(reports[-1]["topic"])
        for device_id in DEVICES:  # back once more, so the service clears the wills again
            devices.append(Device(server.port, protocol, device_id))
        if presence:
            deadline = time.monotonic() + TIMEOUT
            while not all(_lwt_cleared(server, d) for d in DEVICES):
                assert time.monotonic() < deadline, "the service did not clear the stale wills"
                time.sleep(0.02)
        sentinel = Device(server.port, protocol, SENTINEL, announce=False)
        devices.append(sentinel)
        sentinel.status("sentinel")
        reports += panel.wait_for(lambda line: line.get("deviceId") == SENTINEL)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe broker then: {_server_state(server)}") from None
    finally:
        for device in devices:
            device.disconnect()
    return reports


def _check(reports: list[dict[str, Any]]) -> None:
    lwts = [r for r in reports if r.get("topic", "").endswith("/lwt")]
    assert len(lwts) == 2 * len(DEVICES) and all(r["status"] == "offline" for r in lwts), lwts
    assert all(r.get("deviceId") for r in reports), reports


@pytest.mark.parametrize("presence", [True, False], ids=["presence", "no-presence"])
@pytest.mark.parametrize("protocol", [pytest.param(MQTTv311, id="3.1.1"), pytest.param(MQTTv5, id="5.0")])
def test_node_panel_survives_device_reconnects(
    wrenmq_server_factory: Callable[..., WrenmqServer], presence: bool, protocol: Any
) -> None:
    server = wrenmq_server_factory(presence=presence, **FAST)
    panel = NodePanel(server.port)
    try:
        _check(run_fleet(server, panel, presence, protocol))
        assert panel.process.poll() is None
    finally:
        panel.close()


@pytest.mark.parametrize("presence", [True, False], ids=["presence", "no-presence"])
def test_chromium_panel_survives_device_reconnects(
    wrenmq_server_factory: Callable[..., WrenmqServer], browser: Any, presence: bool
) -> None:
    server = wrenmq_server_factory(presence=presence, ws_port=0, **FAST)
    panel = BrowserPanel(browser, server.ws_port)
    try:
        _check(run_fleet(server, panel, presence))
        assert panel.errors == []
    finally:
        panel.close()


@pytest.mark.parametrize("presence", [True, False], ids=["presence", "no-presence"])
def test_node_panel_survives_simulated_drop_outs(
    wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path, presence: bool
) -> None:
    """``wrenmq simulate devices`` with drop-outs: each dropped device's will fires and it comes
    back 2-10 s later, replacing its will with a retained online message. The panel sees only JSON:
    an offline will, then the device's own online message, on the same lwt topic."""
    server = wrenmq_server_factory(presence=presence, **FAST)
    panel = NodePanel(server.port)
    simulator = Simulator(tmp_path, server.port, "--count", "4", "--drop-rate", "1", "--duration", "60", "--seed", "3")
    try:
        assert panel.wait_for(lambda line: "ready" in line)[-1] == {"ready": True}
        offline: set[str] = set()
        deadline = time.monotonic() + 40
        while True:  # until a device came back after its will: its online lwt after its offline one
            line = panel.wait_for(lambda line: line.get("topic", "").endswith("/lwt"))[-1]
            if line["status"] == "offline":
                offline.add(line["deviceId"])
            elif line["deviceId"] in offline:
                break
            assert time.monotonic() < deadline, "no device dropped out and came back"
        sentinel = Device(server.port, MQTTv5, SENTINEL, announce=False)
        sentinel.status("sentinel")
        panel.wait_for(lambda line: line.get("deviceId") == SENTINEL)
        sentinel.disconnect()
        assert panel.process.poll() is None
    finally:
        simulator.kill()
        panel.close()


def test_cleared_will_is_gone_from_storage_with_strict_durability(
    wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path
) -> None:
    """The service's clearing is a retain-store delete committed like any other: after a restart
    on the same database the stale will is not restored (5.0 [MQTT-3.3.1-6])."""
    settings: dict[str, Any] = {"storage": "sqlite", "durability": "strict", "data_dir": tmp_path, **FAST}
    first = wrenmq_server_factory(**settings)
    Device(first.port, MQTTv5, "st-1").drop()
    deadline = time.monotonic() + TIMEOUT
    while _lwt_cleared(first, "st-1"):  # until the will is retained
        assert time.monotonic() < deadline
        time.sleep(0.02)
    back = Device(first.port, MQTTv5, "st-1")
    while not _lwt_cleared(first, "st-1"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    back.disconnect()  # a clean end: the service publishes its offline message, retained ...
    while _lwt_cleared(first, "st-1"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    back = Device(first.port, MQTTv5, "st-1")  # ... and clears it again when the device is back
    while not _lwt_cleared(first, "st-1"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    back.status("idle")
    back.client.loop_stop()
    first.stop()
    second = wrenmq_server_factory(**{**settings, "presence": False})

    async def restored() -> list[str]:
        return sorted(m.topic for m in second.broker.retained if m.topic.startswith("devices/"))

    assert second.call(restored()) == ["devices/st-1/status"]
