"""``PUT /api/v1/brokers/{name}`` (issue 18: external broker connections edited, as in the
console), against a real Mosquitto with a password file: the connection restarts with the new
settings (its bridges change what goes out), keeps its password unless told otherwise, keeps what
its durable queue held while the remote refused it, and is refused to read-only keys. The status
tells the form what it needs (user name, whether there is a password, never the password)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mosquitto_fixture import MOSQUITTO, MosquittoBroker
from paho_sync import MQTTv5, PahoClient
from problems import problem
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")

pytestmark = pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto is not installed")


def locked_mosquitto(factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A Mosquitto that lets in only user ``plant`` with password ``pw``."""
    assert MOSQUITTO_PASSWD is not None
    broker = factory(allow_anonymous=False)
    broker.stop()
    passwd = broker.directory / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwd), "plant", "pw"], check=True, capture_output=True)
    # "user root": Mosquitto started as root stays root, able to read the test's directory.
    broker.config.write_text(broker.config.read_text() + f"password_file {passwd}\nuser root\n")
    return broker.start()


def wait_status(http: httpx.Client, name: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        status: dict[str, Any] = http.get(f"/api/v1/brokers/{name}").json()
        if until(status):
            return status
        assert time.monotonic() < deadline, f"status never got there: {status}"
        time.sleep(0.05)


def test_brokers_edit_restarts_with_new_bridges_keeps_password_and_queue(
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
    tmp_path: Path,
) -> None:
    mosquitto = locked_mosquitto(mosquitto_factory)
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    plant = {
        "name": "plant",
        "url": url.replace("//", "//plant:pw@"),
        "reconnect_max": 0.3,
        "bridges": ['topic a/# out 1 "" old/'],
    }
    server = wrenmq_server_factory(api_port=0, storage="sqlite", data_dir=tmp_path / "data", brokers=[plant])
    store = ApiKeyStore(server.broker.config.api_keys_path)
    http = httpx.Client(
        base_url=server.api_url, headers={"Authorization": "Bearer " + store.create("ops")}, timeout=TIMEOUT
    )
    remote = PahoClient(mosquitto.port, MQTTv5, "remote", username="plant", password="pw")
    remote.subscribe("#", 1)
    local = PahoClient(server.port, MQTTv5, "local")
    try:
        status = wait_status(http, "plant", lambda s: s["connected"])
        assert (status["username"], status["has_password"], status["source"]) == ("plant", True, "config")
        assert "pw" not in http.get("/api/v1/brokers").text.replace("plant", "")

        # The form's edit: the URL without the password, the user name apart, new bridges.
        edit = {
            "name": "plant",
            "url": url,
            "username": "plant",
            "reconnect_max": 0.3,
            "bridges": ['topic b/# out 1 "" new/'],
        }
        changed = http.put("/api/v1/brokers/plant", json=edit)
        assert changed.status_code == 200, changed.text
        assert changed.json()["bridges"] == ['topic b/# out 1 "" new/'] and changed.json()["source"] == "api"
        status = wait_status(http, "plant", lambda s: s["connected"])  # the password was kept
        assert status["has_password"] and status["last_error"] is None
        local.publish("a/1", b"not bridged any more", qos=1)
        local.publish("b/1", b"bridged", qos=1)  # the sentinel: a/1 would have arrived first
        message = remote.receive(1)[0]
        assert (message.topic, message.payload) == ("new/b/1", b"bridged")

        # Without its password Mosquitto refuses it: messages wait in the queue, through the next edit.
        refused = http.put("/api/v1/brokers/plant", json={**edit, "keep_password": False})
        assert refused.status_code == 200 and refused.json()["has_password"] is False
        wait_status(http, "plant", lambda s: s["state"] == "reconnecting" and s["last_error"])
        for n in range(3):
            local.publish(f"b/q{n}", str(n).encode(), qos=1)
        wait_status(http, "plant", lambda s: s["queued"] == 3)
        fixed = http.put("/api/v1/brokers/plant", json={**edit, "password": "pw"})
        assert fixed.status_code == 200, fixed.text
        got = [(m.topic, m.payload) for m in remote.receive(3)]
        assert got == [("new/b/q0", b"0"), ("new/b/q1", b"1"), ("new/b/q2", b"2")]
        wait_status(http, "plant", lambda s: s["connected"] and s["queued"] == 0)

        problem(http.put("/api/v1/brokers/plant", json={**edit, "name": "other"}), 422)
        problem(http.put("/api/v1/brokers/nowhere", json={**edit, "name": "nowhere"}), 404)
        problem(http.put("/api/v1/brokers/plant", json={**edit, "bridges": ["topic x sideways"]}), 422)
        reader = httpx.Client(
            base_url=server.api_url,
            timeout=TIMEOUT,
            headers={"Authorization": "Bearer " + store.create("reader", read_only=True)},
        )
        problem(reader.put("/api/v1/brokers/plant", json=edit), 403)
        reader.close()
        assert http.get("/api/v1/brokers/plant").json()["bridges"] == ['topic b/# out 1 "" new/']
    finally:
        local.close()
        remote.close()
        http.close()
