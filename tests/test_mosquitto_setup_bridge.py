"""A Mosquitto user's files carry over, with ``per_listener_settings true`` and a bridge block (issue
17's "done when", a wrenmq feature): the same mosquitto.conf, password file (Debian's
``mosquitto_passwd``) and acl_file start a real Mosquitto as the edge broker and then wrenmq, each
bridged to the same real "cloud" Mosquitto, and the same paho clients see the same things: who may
log in on which listener, what the ACL lets through, what the bridge carries each way (prefixes
swapped), and the bridge's state notification at the cloud.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mosquitto_fixture import MOSQUITTO, MosquittoBroker, port_open
from serveproc import free_port
from test_mosquitto_setup import start, stop

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto and mosquitto_passwd are needed"
)
TIMEOUT = 10.0

CONF = """\
per_listener_settings true
persistence false
log_dest stdout
log_type all
user root

# devices: logins and the ACL
listener {port} 127.0.0.1
allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl

# dashboards, over WebSocket: the same logins, no ACL
listener {ws_port} 127.0.0.1
protocol websockets
allow_anonymous false
password_file {dir}/passwd

# the local tools' listener: anonymous, no ACL
listener {open_port} 127.0.0.1
allow_anonymous true

connection cloud
address 127.0.0.1:{cloud_port}
remote_clientid edge-1
cleansession true
topic sensors/# out 1 "" site1/
topic cmd/# in 1 "" site1/
"""

ACL = """\
user sensor1
topic write sensors/sensor1/#
topic read cmd/sensor1/#
"""


class Recorder:
    """A paho client that records (what, value) events."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None, ws: bool = False) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets" if ws else "tcp")
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connack", rc.is_failure))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.events.put(("suback", rcs[0].is_failure))
        self.client.on_message = lambda _c, _u, msg: self.events.put(("message", (msg.topic, msg.payload, msg.retain)))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def next(self, kind: str) -> Any:
        found, value = self.events.get(timeout=TIMEOUT)
        assert found == kind, (found, value)
        return value

    def until(self, topic: str, live: bool = False) -> list[tuple[str, bytes]]:
        """Messages up to one on ``topic`` (``live``: not a retained copy)."""
        seen: list[tuple[str, bytes]] = []
        while True:
            found, payload, retained = self.next("message")
            if not (found == topic and live and retained):
                seen.append((found, payload))
            if found == topic and not (live and retained):
                return seen

    def subscribe(self, topic_filter: str) -> bool:
        self.client.subscribe(topic_filter, 1)
        return self.next("suback")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def scenario(
    ports: dict[str, int], cloud_port: int, start_edge: Callable[[], subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """What the clients see; the same dict is expected from Mosquitto and from wrenmq as the edge."""
    seen: dict[str, Any] = {}
    cloud = Recorder(cloud_port)
    cloud.next("connack")
    cloud.subscribe("site1/#")
    cloud.subscribe("$SYS/broker/connection/edge-1/state")
    edge = start_edge()
    # The bridge says it is up, at the cloud: "1", published live once it connected.
    seen["state at the cloud"] = cloud.until("$SYS/broker/connection/edge-1/state", live=True)[-1]
    for name, port, ws in (("devices", ports["port"], False), ("dashboards", ports["ws_port"], True)):
        anonymous = Recorder(port, ws=ws)
        seen[f"anonymous refused on {name}"] = anonymous.next("connack")
        anonymous.close()
    tools = Recorder(ports["open_port"])
    seen["anonymous refused on tools"] = tools.next("connack")
    seen["tools' # refused"] = tools.subscribe("#")
    dashboard = Recorder(ports["ws_port"], "dashboard", "dash-pass", ws=True)
    seen["dashboard refused"] = dashboard.next("connack")
    seen["dashboard's # refused"] = dashboard.subscribe("#")
    sensor = Recorder(ports["port"], "sensor1", "s1-pass")
    seen["sensor1 refused"] = sensor.next("connack")
    seen["sensor1's cmd/# refused"] = sensor.subscribe("cmd/sensor1/#")
    for topic in ("sensors/sensor1/temp", "sensors/other/temp", "sensors/sensor1/end"):
        sensor.client.publish(topic, b"21", qos=1).wait_for_publish(TIMEOUT)
    seen["the cloud received"] = cloud.until("site1/sensors/sensor1/end")
    seen["the dashboard received"] = [topic for topic, _ in dashboard.until("sensors/sensor1/end")]
    cloud.client.publish("site1/cmd/sensor1/reboot", b"now", qos=1).wait_for_publish(TIMEOUT)
    cloud.client.publish("site1/cmd/sensor2/reboot", b"now", qos=1).wait_for_publish(TIMEOUT)
    cloud.client.publish("site1/cmd/sensor1/end", b"", qos=1).wait_for_publish(TIMEOUT)
    seen["the tools received"] = [topic for topic, _ in tools.until("cmd/sensor1/end") if topic.startswith("cmd/")]
    seen["sensor1 received"] = [topic for topic, _ in sensor.until("cmd/sensor1/end")]
    for client in (sensor, dashboard, tools, cloud):
        client.close()
    stop(edge)
    return seen


EXPECTED = {
    "state at the cloud": ("$SYS/broker/connection/edge-1/state", b"1"),
    "anonymous refused on devices": True,
    "anonymous refused on dashboards": True,
    "anonymous refused on tools": False,
    "tools' # refused": False,
    "dashboard refused": False,
    "dashboard's # refused": False,
    "sensor1 refused": False,
    "sensor1's cmd/# refused": False,
    # sensors/other/temp is not sensor1's to write: dropped at the edge, never bridged.
    "the cloud received": [("site1/sensors/sensor1/temp", b"21"), ("site1/sensors/sensor1/end", b"21")],
    "the dashboard received": ["sensors/sensor1/temp", "sensors/sensor1/end"],
    "the tools received": ["cmd/sensor1/reboot", "cmd/sensor2/reboot", "cmd/sensor1/end"],
    "sensor1 received": ["cmd/sensor1/reboot", "cmd/sensor1/end"],
}


def test_mosquitto_files_with_per_listener_settings_and_a_bridge_carry_over(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    assert MOSQUITTO is not None and MOSQUITTO_PASSWD is not None
    passwd = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwd), "dashboard", "dash-pass"], check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), "sensor1", "s1-pass"], check=True)
    (tmp_path / "acl").write_text(ACL)
    ports = {"port": free_port(), "ws_port": free_port(), "open_port": free_port()}
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(CONF.format(dir=tmp_path, cloud_port=mosquitto.port, **ports))
    listening = tuple(ports.values())

    def mosquitto_edge() -> subprocess.Popen[bytes]:
        return start([MOSQUITTO, "-c", str(conf)], listening, tmp_path / "mosquitto.log")

    def wrenmq_edge() -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "wrenmq", "serve", "-c", str(conf), "--api-port", "off"]
        return start(command, listening, tmp_path / "wrenmq.log")

    assert scenario(ports, mosquitto.port, mosquitto_edge) == EXPECTED
    assert not any(port_open(port) for port in listening)
    assert scenario(ports, mosquitto.port, wrenmq_edge) == EXPECTED
