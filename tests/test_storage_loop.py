"""The event loop never runs SQLite (issue 15, item 5): with SQLite storage, a running broker's
bridge outbox, device presence and resources all go through the one storage writer thread, checked
structurally with a profile function on the loop's thread, not by timing a slow disk. Before, the
outbox ran its INSERT and COMMIT on the loop, inside the publish hook."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

from mosquitto_fixture import MOSQUITTO, MosquittoBroker
from paho_sync import MQTTv5, PahoClient
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0
BRIDGE = 'topic q/# out 1 "" cloud/'  # here q/... -> there cloud/q/...


class SqliteOnThread:
    """A profile function for one thread that records every call it makes into the sqlite3 module
    (a Connection or Cursor method, or sqlite3.connect): a COMMIT, or any other SQLite work, there
    would stall every client of the broker for as long as the disk takes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "c_call":
            return
        owner = getattr(arg, "__self__", None)
        if isinstance(owner, sqlite3.Connection | sqlite3.Cursor) or getattr(arg, "__module__", None) in (
            "sqlite3",
            "_sqlite3",
        ):
            self.calls.append(f"{getattr(arg, '__qualname__', arg)} from {frame.f_code.co_filename}:{frame.f_lineno}")


def on_loop(server: WrenmqServer, fn: Callable[[], None]) -> None:
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    server.loop.call_soon_threadsafe(run)
    assert done.wait(TIMEOUT)


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_event_loop_never_calls_sqlite(
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
    tmp_path: Path,
) -> None:
    """With SQLite storage, bridged messages (the outbox), device presence and resources (the API)
    all reach the disk, and the broker's event loop thread makes not one sqlite3 call for them:
    the one storage writer thread does it all (wrenmq feature)."""
    mosquitto = mosquitto_factory()
    remote = PahoClient(mosquitto.port, MQTTv5, "remote")
    remote.subscribe("cloud/#", 1)
    server = wrenmq_server_factory(
        storage="sqlite",
        data_dir=tmp_path / "data",
        api_port=0,
        presence_snapshot_debounce=0.01,
        brokers=[{"name": "plant", "url": f"mqtt://127.0.0.1:{mosquitto.port}", "bridges": [BRIDGE]}],
    )
    key = ApiKeyStore(server.broker.config.api_keys_path).create("loop-test")
    http = httpx.Client(base_url=server.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
    device = PahoClient(server.port, MQTTv5, "kiosk-1")
    watcher = SqliteOnThread()
    on_loop(server, lambda: sys.setprofile(watcher))
    try:
        deadline = time.monotonic() + TIMEOUT
        while not http.get("/api/v1/brokers/plant").json()["connected"]:
            assert time.monotonic() < deadline, "the bridge never connected"
            time.sleep(0.05)
        for n in range(20):
            device.publish(f"q/{n}", str(n).encode(), qos=1)
        assert [m.payload for m in remote.receive(20, timeout=TIMEOUT)] == [str(n).encode() for n in range(20)]
        device.publish("devices/discovery/announce", b'{"deviceId": "k-1", "type": "kiosk"}', qos=1)
        device.publish("devices/k-1/events", b'{"event": "started"}', qos=1)
        assert http.put("/api/v1/resources/flow/f1", json={"label": "a"}).status_code in (200, 201)
        assert http.get("/api/v1/resources/flow/events").json()["items"][0]["seq"] == 1
        deadline = time.monotonic() + TIMEOUT
        while http.get("/api/v1/devices/k-1").status_code != 200:  # the registry has it
            assert time.monotonic() < deadline, "the device never showed up"
            time.sleep(0.05)
        assert http.get("/api/v1/devices/k-1").json()["events"] == [{"event": "started"}]
        server.call(server.broker.storage.flush())  # and everything reached the disk
        deadline = time.monotonic() + TIMEOUT
        while http.get("/api/v1/brokers/plant").json()["queued"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        on_loop(server, lambda: sys.setprofile(None))
        http.close()
        device.close()
        remote.close()
    assert watcher.calls == []
    server.stop()
    for name in ("presence", "resources"):
        with sqlite3.connect(tmp_path / "data" / f"{name}.db") as db:
            assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1, name
