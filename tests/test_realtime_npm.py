"""wrenmq-realtime as an npm package: ``npm pack src/wrenmq/static`` builds it, and Node.js runs it
against wrenmq over each transport on its own (MQTT.js and socket.io-client from the repository's
node_modules, as its peer dependencies; Node's own fetch for polling)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paho_sync import MQTTv5, PahoClient
from wrenmq.pytest_plugin import WrenmqServer

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "wrenmq" / "static"
NODE_MODULES = ROOT / "node_modules"

SCRIPT = """
const WrenmqRealtime = require(process.argv[1])  // node -e: argv is [node, ...args];
const options = JSON.parse(process.argv[2]);
const rt = WrenmqRealtime.connect(options);
const say = (data) => process.stdout.write(JSON.stringify(data) + "\\n");
rt.subscribe("npm/#", (msg) => say({ topic: msg.topic, json: msg.json, transport: msg.transport }));
rt.on("status", (s) => { if (s.state === "connected") say({ connected: s.transport }); });
process.stdin.on("data", async (line) => {
  const { topic, payload } = JSON.parse(line);
  try { await rt.publish(topic, payload, { qos: 1 }); say({ published: topic }); }
  catch (err) { say({ error: String(err) }); }
});
process.stdin.on("end", () => { rt.close(); setTimeout(() => process.exit(0), 200); });
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed and unpacked npm package; its directory."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed: apt-get install nodejs npm")
    if not (NODE_MODULES / "socket.io-client").exists():
        pytest.skip("run npm ci at the repository root")
    where = tmp_path_factory.mktemp("npm")
    result = subprocess.run(
        ["npm", "pack", str(STATIC), "--pack-destination", str(where)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tarball = where / result.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        assert "package/wrenmq-realtime.js" in names and "package/package.json" in names
        archive.extractall(where, filter="data")
    return where / "package"


class NodeClient:
    def __init__(self, package: Path, options: dict[str, Any]) -> None:
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}  # the peer dependencies
        self.process = subprocess.Popen(
            ["node", "-e", SCRIPT, str(package), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self, key: str) -> dict[str, Any]:
        """The next line the script prints that has ``key`` (bounded by the test timeout)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            data: dict[str, Any] = json.loads(line)
            if key in data:
                return data
        raise AssertionError(f"node exited ({self.process.wait()}) before printing {key!r}")

    def send(self, data: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(data) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.parametrize("transport", ["mqtt", "socketio", "polling"])
def test_npm_package_receives_and_publishes_over_each_transport(
    package: Path, wrenmq_server_factory: Callable[..., WrenmqServer], transport: str
) -> None:
    """wrenmq feature: the packed npm package works in Node.js over ``transport`` alone: it gets
    what paho publishes, and what it publishes reaches paho at QoS 1."""
    server = wrenmq_server_factory(api_port=0, ws_port=0)
    options = {"url": server.api_url, "mqttUrl": f"ws://127.0.0.1:{server.ws_port}/mqtt", "transports": [transport]}
    client = NodeClient(package, options)
    paho = PahoClient(server.port, MQTTv5, client_id="npm-peer")
    try:
        assert client.read("connected") == {"connected": transport}
        paho.subscribe("from-node/#", qos=1)
        paho.publish("npm/one", b'{"n": 1}', qos=1)
        assert client.read("topic") == {"topic": "npm/one", "json": {"n": 1}, "transport": transport}
        client.send({"topic": "from-node/x", "payload": {"hello": transport}})
        assert client.read("published") == {"published": "from-node/x"}
        (message,) = paho.receive(1)
        assert message.topic == "from-node/x" and json.loads(message.payload) == {"hello": transport}
        assert message.qos == 1
    finally:
        paho.close()
        client.close()
