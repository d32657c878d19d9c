"""Application users' presence (``realtime_presence_prefix``) across cluster nodes (issue 16): a
user attached on two nodes is online once and offline only when the last attachment anywhere
goes; a node's death takes its attachments with it.

Nodes run in this process (``nodes`` from test_cluster_realtime) and, for the node that is
killed, as a ``wrenmq serve`` subprocess; one real ``redis-server``. Users attach with the
long-polling routes (httpx); presence is watched with paho-mqtt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, PahoClient
from redisproc import have_redis
from serveproc import BrokerProcess, free_port
from test_cluster_realtime import nodes, redis_url  # noqa: F401  (fixtures)
from wrenmq.pytest_plugin import WrenmqServer

pytestmark = pytest.mark.skipif(not have_redis(), reason="needs Debian's redis-server")


def open_poll(api_url: str, presence_id: str) -> str:
    response = httpx.post(f"{api_url}/api/v1/realtime/poll", json={"filters": ["x"], "presence": {"id": presence_id}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def close_poll(api_url: str, session_id: str) -> None:
    assert httpx.delete(f"{api_url}/api/v1/realtime/poll/{session_id}").status_code == 204


def status(message: Any) -> tuple[str, str]:
    return message.topic, json.loads(message.payload)["status"]


def next_presence(watcher: PahoClient, timeout: float = 15.0) -> tuple[str, str]:
    return status(watcher.receive(1, timeout=timeout)[0])


def test_cluster_user_on_two_nodes_is_online_once_and_offline_after_the_last(
    nodes: Callable[..., WrenmqServer],  # noqa: F811
) -> None:
    """Attached on A and on B: one online; leaving A says nothing (a sentinel comes next);
    leaving B says offline."""
    a, b = nodes("a"), nodes("b")
    assert a.api_url and b.api_url
    watcher = PahoClient(b.port, MQTTv5, client_id="presence-watch")
    watcher.subscribe("presence/#", 1)
    on_a = open_poll(a.api_url, "alice")
    assert next_presence(watcher) == ("presence/alice", "online")
    on_b = open_poll(b.api_url, "alice")
    close_poll(a.api_url, on_a)
    time.sleep(1.0)  # (each node's presence decisions are taken in Redis, in order, within this)
    watcher.client.publish("presence/zz-sentinel", json.dumps({"status": "sentinel"}), qos=1)
    assert next_presence(watcher) == ("presence/zz-sentinel", "sentinel")  # no offline, no second online
    close_poll(b.api_url, on_b)
    assert next_presence(watcher) == ("presence/alice", "offline")
    watcher.close()


def test_cluster_users_of_a_killed_node_go_offline(
    nodes: Callable[..., WrenmqServer],  # noqa: F811
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """kill -9 of the node a user is attached through: a survivor says the user is offline; a
    user also attached on a survivor stays online."""
    a = nodes("a")
    assert a.api_url
    api_port = free_port()
    doomed = BrokerProcess(tmp_path, "--cluster-url", redis_url, "--node-name", "k", "--api-port", str(api_port))
    doomed.start()
    k_url = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{k_url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    watcher = PahoClient(a.port, MQTTv5, client_id="presence-watch")
    watcher.subscribe("presence/#", 1)
    try:
        open_poll(k_url, "bob")
        open_poll(k_url, "carol")
        open_poll(a.api_url, "carol")
        seen = {next_presence(watcher), next_presence(watcher)}
        assert seen == {("presence/bob", "online"), ("presence/carol", "online")}
        doomed.kill()
        assert next_presence(watcher, timeout=20) == ("presence/bob", "offline")
        watcher.client.publish("presence/zz-sentinel", json.dumps({"status": "sentinel"}), qos=1)
        assert next_presence(watcher) == ("presence/zz-sentinel", "sentinel")  # carol stays online
    finally:
        watcher.close()
        if doomed.proc is not None and doomed.proc.poll() is None:
            doomed.kill()


def test_cluster_mqtt_will_offline_refused_while_attached_on_another_node(
    nodes: Callable[..., WrenmqServer],  # noqa: F811
) -> None:
    """A user's MQTT connection on B dies (its will says offline) while the user is attached by
    long polling on A: the will is refused, the user stays online (a sentinel comes next)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    a, b = nodes("a"), nodes("b")
    assert a.api_url
    watcher = PahoClient(b.port, MQTTv5, client_id="presence-watch")
    watcher.subscribe("presence/#", 1)
    open_poll(a.api_url, "dave")
    assert next_presence(watcher) == ("presence/dave", "online")
    time.sleep(1.0)  # (the attachment's count reaches every node's replica through Redis)
    tab = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dave-mqtt", protocol=mqtt.MQTTv5)
    tab.will_set("presence/dave", json.dumps({"status": "offline"}), qos=1, retain=True)
    tab.connect("127.0.0.1", b.port)
    tab.loop_start()
    tab.publish("presence/dave", json.dumps({"status": "online"}), qos=1, retain=True).wait_for_publish(10)
    assert next_presence(watcher) == ("presence/dave", "online")
    tab.loop_stop()
    tab.socket().close()  # type: ignore[union-attr]  (gone without DISCONNECT: its will is published)
    time.sleep(1.5)
    watcher.client.publish("presence/zz-sentinel", json.dumps({"status": "sentinel"}), qos=1)
    got = next_presence(watcher)
    while got == ("presence/dave", "online"):  # (said again once the MQTT attachment went)
        got = next_presence(watcher)
    assert got == ("presence/zz-sentinel", "sentinel")
    watcher.close()
