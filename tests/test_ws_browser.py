"""MQTT.js in headless Chromium over the ws listener (section 6 of MQTT 3.1.1 and 5.0).

A real browser client: MQTT.js from the npm registry (``npm ci`` at the repository root puts it in
node_modules/), served with a tiny test page from a local HTTP server, run by Debian's Chromium
driven by Playwright (``executable_path``: nothing downloads a browser). The page connects to
wrenmq, subscribes, publishes and receives its own message, then receives one a paho client
publishes over TCP; the test asserts on what the page reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from browser import CHROMIUM, chromium
from paho_sync import MQTTv5, MQTTv311, PahoClient
from wrenmq.broker import Broker
from wrenmq.pytest_plugin import WrenmqServer

MQTTJS = Path(__file__).resolve().parent.parent / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"
TIMEOUT_MS = 10_000

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>wrenmq: MQTT.js over WebSocket</title>
<script src="/mqtt.min.js"></script>
<script>
// What the page saw, read by the test: the CONNACK code, granted QoS, messages by topic, errors.
window.report = { events: [], received: {}, error: null };

window.startTest = function (url, protocolVersion, clientId) {
  const report = window.report;
  const client = mqtt.connect(url, { protocolVersion, clientId, reconnectPeriod: 0, connectTimeout: 5000 });
  client.on("connect", (connack) => {
    report.events.push("connect");
    report.connack = protocolVersion === 5 ? connack.reasonCode : connack.returnCode;
    client.subscribe("browser/#", { qos: 1 }, (err, granted) => {
      if (err) { report.error = "subscribe: " + err; return; }
      report.granted = granted.map((g) => g.qos);
      client.publish("browser/self", "hello from chromium", { qos: 1 }, (err) => {
        if (err) { report.error = "publish: " + err; } else { report.events.push("published"); }
      });
    });
  });
  client.on("message", (topic, payload, packet) => {
    report.received[topic] = { payload: payload.toString(), qos: packet.qos };
  });
  client.on("error", (err) => { report.error = String(err); });
  client.on("close", () => { report.events.push("close"); });
};
</script>
"""


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    """A local HTTP server for the test page and the MQTT.js bundle; yields its base URL."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    if not MQTTJS.exists():
        pytest.skip(f"{MQTTJS} is missing: run npm ci at the repository root")
    files = {"/": (PAGE, "text/html"), "/mqtt.min.js": (MQTTJS.read_bytes(), "text/javascript")}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = files.get(self.path, (b"not found\n", "text/plain"))
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Type", content_type + "; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="page-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def browser(page_server: str) -> Iterator[Any]:
    """Debian's Chromium, headless, launched once for the module."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, page_server: str) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(page_server)
    yield page
    context.close()


def wait_for_message(page: Any, topic: str) -> dict[str, Any]:
    """Wait until the page has received a message on ``topic`` (or failed); returns its report."""
    page.wait_for_function(
        "(topic) => { const r = window.report; return r.error || r.events.includes('close') || r.received[topic]; }",
        arg=topic,
        timeout=TIMEOUT_MS,
    )
    report: dict[str, Any] = page.evaluate("() => window.report")
    return report


async def _subprotocol(broker: Broker, client_id: str) -> Any:
    for conn in broker.connections:
        if conn.client_id == client_id and conn.transport is not None:
            return conn.transport.get_extra_info("subprotocol")
    return None


@pytest.mark.parametrize("version", [4, 5])
def test_mqttjs_in_chromium(wrenmq_server_factory: Callable[..., WrenmqServer], page: Any, version: int) -> None:
    # [MQTT-6.0.0-1] binary frames, [MQTT-6.0.0-3]/[MQTT-6.0.0-4] subprotocol "mqtt", section 4.3.2 QoS 1
    server = wrenmq_server_factory(ws_port=0)
    client_id = f"chromium-{version}"
    page.evaluate(
        "([url, version, clientId]) => startTest(url, version, clientId)",
        [f"ws://127.0.0.1:{server.ws_port}/mqtt", version, client_id],
    )
    report = wait_for_message(page, "browser/self")
    assert report["error"] is None, report
    assert report["connack"] == 0 and report["granted"] == [1], report
    assert report["received"]["browser/self"] == {"payload": "hello from chromium", "qos": 1}
    assert server.call(_subprotocol(server.broker, client_id)) == "mqtt"  # what Chromium negotiated

    paho = PahoClient(server.port, MQTTv5 if version == 5 else MQTTv311, "paho-over-tcp")
    try:
        paho.publish("browser/from-paho", b"hello from paho", qos=1)
    finally:
        paho.close()
    report = wait_for_message(page, "browser/from-paho")
    assert report["error"] is None, report
    assert report["received"]["browser/from-paho"] == {"payload": "hello from paho", "qos": 1}
    assert "close" not in report["events"], report
