"""A Mosquitto user's three files carry over (issue 17's "done when", a wrenmq feature): the same
mosquitto.conf, a password file made by Debian's ``mosquitto_passwd`` and an acl_file start a real
Mosquitto and then wrenmq, and the same paho clients, unchanged, see the same things on both: who
may log in, over TCP and WebSocket, and which messages a ``#`` subscriber under the ACL receives.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mosquitto_fixture import MOSQUITTO, port_open
from serveproc import START_TIMEOUT, clean_env, free_port

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto and mosquitto_passwd are needed"
)
TIMEOUT = 10.0

CONF = """\
# as a docker-compose Mosquitto has it
per_listener_settings false
allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl
persistence false
log_dest stdout
log_type error
log_type warning
log_type notice
sys_interval 10
# started as root, Mosquitto would switch to the mosquitto user, who cannot read the test's directory
user root

listener {port} 127.0.0.1
listener {ws_port} 127.0.0.1
protocol websockets
"""

ACL = """\
user dashboard
topic read sensors/#
topic read status

pattern write sensors/%u/#
pattern readwrite clients/%c/#
"""


class Paho:
    """A paho client as an application has it: connect, and record what happens."""

    def __init__(self, port: int, protocol: MQTTProtocolVersion, user: str | None, password: str | None, ws: bool):
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=protocol, transport="websockets" if ws else "tcp"
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connack", rc.is_failure))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.events.put(
            ("suback", [rc.is_failure for rc in rcs])
        )
        self.client.on_message = lambda _c, _u, msg: self.events.put(("message", msg.topic))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def next(self, kind: str) -> Any:
        found, value = self.events.get(timeout=TIMEOUT)
        assert found == kind, (found, value)
        return value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def scenario(port: int, ws_port: int) -> dict[str, Any]:
    """What the clients see; the same dict is expected from Mosquitto and from wrenmq."""
    seen: dict[str, Any] = {}
    for name, user, password in (("anonymous", None, None), ("wrong password", "dashboard", "nope")):
        client = Paho(port, mqtt.MQTTv311, user, password, ws=False)
        seen[name + " refused"] = client.next("connack")
        client.close()
    dashboard = Paho(ws_port, mqtt.MQTTv5, "dashboard", "dash-pass", ws=True)
    seen["dashboard over websocket refused"] = dashboard.next("connack")
    dashboard.client.subscribe("#", 1)
    seen["# refused"] = dashboard.next("suback")
    for protocol, user, password in ((mqtt.MQTTv311, "sensor1", "s1-pass"), (mqtt.MQTTv5, "sensor2", "s2-pass")):
        sensor = Paho(port, protocol, user, password, ws=False)
        seen[f"{user} refused"] = sensor.next("connack")
        for topic in (f"sensors/{user}/temp", "sensors/other/temp", "secret/x", f"sensors/{user}/end"):
            sensor.client.publish(topic, b"1", qos=1).wait_for_publish(TIMEOUT)
        sensor.close()
        received = []
        while not received or received[-1] != f"sensors/{user}/end":
            received.append(dashboard.next("message"))
        seen[f"dashboard received from {user}"] = received
    dashboard.close()
    return seen


EXPECTED = {
    "anonymous refused": True,
    "wrong password refused": True,
    "dashboard over websocket refused": False,
    "# refused": [False],
    "sensor1 refused": False,
    "dashboard received from sensor1": ["sensors/sensor1/temp", "sensors/sensor1/end"],
    "sensor2 refused": False,
    "dashboard received from sensor2": ["sensors/sensor2/temp", "sensors/sensor2/end"],
}


def start(command: list[str], ports: tuple[int, int], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    deadline = time.monotonic() + START_TIMEOUT
    while not all(port_open(port) for port in ports):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{command[0]} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(START_TIMEOUT)


def test_mosquitto_files_carry_over(tmp_path: Path) -> None:
    assert MOSQUITTO is not None and MOSQUITTO_PASSWD is not None
    passwd = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwd), "dashboard", "dash-pass"], check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), "sensor1", "s1-pass"], check=True)
    subprocess.run([MOSQUITTO_PASSWD, "-H", "sha512", "-b", str(passwd), "sensor2", "s2-pass"], check=True)
    (tmp_path / "acl").write_text(ACL)
    port, ws_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(CONF.format(dir=tmp_path, port=port, ws_port=ws_port))

    mosquitto = start([MOSQUITTO, "-c", str(conf)], (port, ws_port), tmp_path / "mosquitto.log")
    try:
        assert scenario(port, ws_port) == EXPECTED
    finally:
        stop(mosquitto)
    while port_open(port) or port_open(ws_port):
        time.sleep(0.05)
    wrenmq = [sys.executable, "-m", "wrenmq", "serve", "-c", str(conf), "--api-port", "off"]
    proc = start(wrenmq, (port, ws_port), tmp_path / "wrenmq.log")
    try:
        assert scenario(port, ws_port) == EXPECTED
    finally:
        stop(proc)
    lines = (tmp_path / "wrenmq.log").read_text().splitlines()
    # Beside the one an editable (pure-Python) install adds about the hot path (tests/test_deploy.py):
    warnings = [line for line in lines if "WARNING" in line and "the hot path is not compiled" not in line]
    assert len(warnings) == 2, warnings
    assert f"{conf} line 13: user: wrenmq does not change user; start it as the user it runs as" in warnings[0]
    assert f"run chmod 600 {passwd}" in warnings[1]  # mosquitto_passwd made it readable by all
