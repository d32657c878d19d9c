"""External broker connections and bridges (wrenmq feature, issue 7), against a real Mosquitto:
bridge lines in the config, the ``/api/v1/brokers`` status API, ``POST /publish`` through a named
connection (503 while it is down, ``queue: true`` delivered once it is back, bounded), bridges in
both directions with paho-mqtt at both ends, loop prevention, the durable queue across a wrenmq
restart, and no QoS 1 message lost when the Mosquitto is killed (SIGKILL) and restarted while
messages flow out over the bridge. Spec statements are MQTT 5.0's where cited.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mosquitto_fixture import MOSQUITTO, MosquittoBroker
from paho_sync import MQTTv5, MQTTv311, PahoClient
from problems import PROBLEM
from wrenmq.api.keys import ApiKeyStore
from wrenmq.config import ConfigError, load_config
from wrenmq.hooks import Hook, Reject
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def persistent_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], MosquittoBroker]]:
    """Mosquittos that keep sessions on disk (saved every second and at shutdown), so a
    subscriber's persistent session outlives a restart, even after SIGKILL once it was saved."""
    brokers: list[MosquittoBroker] = []

    def start() -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
        settings = f"persistence true\npersistence_location {broker.directory}/\nautosave_interval 1"
        # "user root": Mosquitto started as root stays root, able to write in the test's directory.
        text = broker.config.read_text().replace("persistence false", settings + "\nuser root")
        broker.config.write_text(text)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.stop()


def kill(mosquitto: MosquittoBroker) -> None:
    """SIGKILL: no DISCONNECTs, no last save."""
    process, mosquitto.process = mosquitto.process, None
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(5)


def checker(port: int, client_id: str = "checker") -> PahoClient:
    """A paho MQTT 5 client with a persistent session (Session Expiry one hour)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return PahoClient(port, MQTTv5, client_id, clean_start=False, properties=props)


def api(server: WrenmqServer) -> httpx.Client:
    key = ApiKeyStore(server.broker.config.api_keys_path).create(f"test-{time.monotonic_ns()}")
    return httpx.Client(base_url=server.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)


def connection(mosquitto: MosquittoBroker, *bridges: str, name: str = "plant", **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": f"mqtt://127.0.0.1:{mosquitto.port}",
        "reconnect_max": 0.5,
        "bridges": list(bridges),
        **settings,
    }


def wait_status(http: httpx.Client, name: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = http.get(f"/api/v1/brokers/{name}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if until(status):
            return status
        assert time.monotonic() < deadline, f"status never got there: {status}"
        time.sleep(0.05)


def connected(status: dict[str, Any]) -> bool:
    return bool(status["connected"])


def ready(status: dict[str, Any]) -> bool:
    return bool(status["connected"] and status["subscribed"])


def payloads(client: PahoClient, count: int) -> list[bytes]:
    return [bytes(message.payload) for message in client.receive(count, timeout=TIMEOUT)]


# --- configuration -----------------------------------------------------------------------------


def test_bridge_lines_are_checked_at_load(tmp_path: Path) -> None:
    """A bad bridge line, URL or version is a ConfigError naming the key and entry (wrenmq feature)."""
    config_file = tmp_path / "wrenmq.toml"
    config_file.write_text(
        '[[brokers]]\nname = "cloud"\nurl = "mqtt://127.0.0.1:1883"\n'
        'bridges = ["topic a/# out 1 local/ remote/", "topic b/# sideways 1"]\n'
        '[[brokers]]\nname = "other"\nurl = "http://example.com"\n'
        '[[brokers]]\nname = "third"\nurl = "mqtt://h"\nbridges = ["topic a/+/# in 3"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, env={})
    text = str(caught.value)
    assert "brokers[0].bridges[1]" in text and "'sideways'" in text
    assert "brokers[1].url" in text and "unsupported URL scheme" in text
    assert "brokers[2].bridges[0]" in text and "QoS must be 0, 1 or 2" in text

    config_file.write_text(
        '[[brokers]]\nname = "cloud"\nurl = "mqtt://h"\n[[brokers]]\nname = "cloud"\nurl = "mqtt://h"\n'
    )
    with pytest.raises(ConfigError, match="named 'cloud'"):
        load_config(config_file, env={})

    config_file.write_text(
        '[[brokers]]\nname = "cloud"\nurl = "mqtts://user:pw@h:8883"\nversion = 4\nqueue_size = 5\n'
        'bridges = ["topic sensors/# both 1 site/ cloud/", "topic \\"\\" in 0 local/cmd remote/cmd"]\n'
    )
    loaded = load_config(config_file, env={}).brokers[0]
    out, single = loaded.parsed_bridges()
    assert (out.direction, out.qos, out.to_remote("site/sensors/1"), out.to_local("cloud/sensors/1")) == (
        "both",
        1,
        "cloud/sensors/1",
        "site/sensors/1",
    )
    assert out.to_remote("site") is None and out.to_remote("other/sensors/1") is None
    assert single.to_local("remote/cmd") == "local/cmd" and single.to_local("remote/cmd/x") is None


# --- the status API and POST /publish ------------------------------------------------------------


def test_status_api_and_runtime_connections(
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
    tmp_path: Path,
) -> None:
    """GET/POST/DELETE /api/v1/brokers: status (connected, reconnecting with the next attempt and
    the last error, messages in and out), runtime additions validated like the config (wrenmq feature)."""
    mosquitto = mosquitto_factory()
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, name="plant")])
    with api(server) as http:
        status = wait_status(http, "plant", connected)
        assert status["source"] == "config" and status["state"] == "connected" and status["last_error"] is None
        assert status["url"] == f"mqtt://127.0.0.1:{mosquitto.port}"
        listed = http.get("/api/v1/brokers").json()["brokers"]
        assert [found["name"] for found in listed] == ["plant"]
        missing = http.get("/api/v1/brokers/nowhere")
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM

        mosquitto.stop()
        status = wait_status(http, "plant", lambda s: s["state"] == "reconnecting")
        assert not status["connected"] and status["last_error"] and status["next_attempt_at"].endswith("Z")
        mosquitto.start()
        wait_status(http, "plant", connected)

        body = connection(mosquitto, "topic x/# sideways", name="extra")
        invalid = http.post("/api/v1/brokers", json=body)
        assert invalid.status_code == 422
        assert any(error["field"] == "body.bridges.0" for error in invalid.json()["errors"]), invalid.json()
        body = {**connection(mosquitto, name="extra"), "url": "mqtt://user:secret@127.0.0.1:" + str(mosquitto.port)}
        created = http.post("/api/v1/brokers", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["source"] == "api" and "secret" not in created.json()["url"]
        assert http.post("/api/v1/brokers", json=body).status_code == 409
        wait_status(http, "extra", connected)
        assert http.delete("/api/v1/brokers/extra").status_code == 204
        assert http.get("/api/v1/brokers/extra").status_code == 404
        assert http.delete("/api/v1/brokers/extra").status_code == 404
        missing_ca = tmp_path / "missing-ca.pem"
        bad = http.post("/api/v1/brokers", json={"name": "tls", "url": "mqtts://h", "cafile": str(missing_ca)})
        assert bad.status_code == 422 and "missing-ca.pem" in bad.json()["detail"], bad.text
        v311 = {"name": "v311", "url": "mqtt://h", "version": 4, "password": "secret"}
        assert "only with a username" in http.post("/api/v1/brokers", json=v311).text


def test_publish_through_named_broker_503_and_queue(
    persistent_mosquitto: Callable[[], MosquittoBroker], wrenmq_server_factory: Callable[..., WrenmqServer]
) -> None:
    """POST /publish with "broker": "<name>" reaches a paho subscriber on the Mosquitto; while it is
    down the answer is 503, or 202 with "queue": true, and the queued messages arrive in order once it
    is back; a full queue is 503 too (wrenmq feature)."""
    mosquitto = persistent_mosquitto()
    subscriber = checker(mosquitto.port)
    assert subscriber.subscribe("plant/#", 1) == [1]
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, queue_size=2)])
    with api(server) as http:
        wait_status(http, "plant", connected)
        body = {"broker": "plant", "topic": "plant/a", "payload": "one", "qos": 1}
        sent = http.post("/publish", json=body)
        assert sent.status_code == 200, sent.text
        assert sent.json() | {"payload_size": 0} == {
            "topic": "plant/a",
            "qos": 1,
            "retain": False,
            "payload_size": 0,
            "matched": None,
            "broker": "plant",
            "queued": False,
            "reason_code": 0,
        }
        assert payloads(subscriber, 1) == [b"one"]

        subscriber.close()
        mosquitto.stop()
        wait_status(http, "plant", lambda s: not s["connected"])
        down = http.post("/publish", json={**body, "payload": "lost"})
        assert down.status_code == 503 and down.headers["content-type"] == PROBLEM
        assert down.json()["type"] == "urn:wrenmq:problem:broker-unavailable"
        for text in ("two", "three"):
            queued = http.post("/publish", json={**body, "payload": text, "queue": True})
            assert queued.status_code == 202 and queued.json()["queued"] is True, queued.text
        full = http.post("/publish", json={**body, "payload": "four", "queue": True})
        assert full.status_code == 503 and "full" in full.json()["detail"]
        assert http.get("/api/v1/brokers/plant").json()["queued"] == 2

        mosquitto.start()
        subscriber = checker(mosquitto.port)
        assert payloads(subscriber, 2) == [b"two", b"three"]
        subscriber.nothing(0.3)
        status = wait_status(http, "plant", lambda s: s["queued"] == 0)
        assert status["messages_out"] == 3
        subscriber.close()


# --- bridges --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_bridge_in_and_out(
    version: int,
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """out: local site/sensors/... reaches a paho subscriber on the Mosquitto as cloud/sensors/...;
    in: cloud/cmd/... published on the Mosquitto reaches a paho subscriber here as site/cmd/...,
    QoS kept, and retain too (wrenmq feature)."""
    mosquitto = mosquitto_factory()
    bridges = ("topic sensors/# out 1 site/ cloud/", "topic cmd/# in 1 site/ cloud/")
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, *bridges, version=version)])
    protocol = MQTTv5 if version == 5 else MQTTv311
    local = PahoClient(server.port, protocol, "local")
    remote = PahoClient(mosquitto.port, protocol, "remote")
    with api(server) as http:
        wait_status(http, "plant", ready)
        local.subscribe([("site/cmd/#", 1), ("site/elsewhere", 1)])  # not what it publishes itself
        remote.subscribe([("cloud/sensors/#", 1), ("cloud/other", 1)])

        local.publish("site/sensors/t1", b"21.5", qos=1)
        message = remote.receive(1)[0]
        assert (message.topic, message.payload, message.qos) == ("cloud/sensors/t1", b"21.5", 1)
        local.publish("site/other", b"not bridged", qos=1)

        remote.publish("cloud/cmd/valve", b"open", qos=1, retain=True)
        message = local.receive(1)[0]
        assert (message.topic, message.payload, message.qos) == ("site/cmd/valve", b"open", 1)
        # MQTT 5: Retain As Published on the remote subscription keeps the flag [MQTT-3.3.1-12]; at
        # 3.1.1 the bridge bit does (Mosquitto then keeps RETAIN as published for its bridges).
        assert server.broker.retained.get("site/cmd/valve") is not None
        remote.publish("cloud/elsewhere", b"not bridged", qos=1)

        local.nothing(0.3)
        remote.nothing(0.3)  # site/other stayed here
        status = http.get("/api/v1/brokers/plant").json()
        assert (status["messages_in"], status["messages_out"]) == (1, 1)
    local.close()
    remote.close()


class _RefuseSecrets(Hook):
    """A publish hook an application adds after the bridges started: it refuses one topic."""

    def on_publish(self, client: Any, message: Any) -> Any:
        if message.topic.endswith("/secret"):
            raise Reject(reason="not for anyone")
        return message


def test_a_message_a_later_hook_refuses_is_not_bridged_out(
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """Bridges pass on only what every publish hook let through, whenever the hooks were added
    (out bridges are subscriptions in the broker's router, as realtime readers and API streams are)."""
    mosquitto = mosquitto_factory()
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, "topic sensors/# out 1 site/ cloud/")])
    local = PahoClient(server.port, MQTTv5, "local")
    remote = PahoClient(mosquitto.port, MQTTv5, "remote")
    with api(server) as http:
        wait_status(http, "plant", connected)
        remote.subscribe([("cloud/sensors/#", 1)])

        async def add_hook() -> None:
            server.broker.hooks.add(_RefuseSecrets())

        server.call(add_hook())
        local.publish("site/sensors/secret", b"refused here", qos=1)
        local.publish("site/sensors/t1", b"sentinel", qos=1)
        message = remote.receive(1)[0]
        assert (message.topic, message.payload) == ("cloud/sensors/t1", b"sentinel")
    local.close()
    remote.close()


def test_out_bridges_sharing_a_local_filter_are_tried_in_order(
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """Two out bridges whose local filters are the same (``a/b/#``) share one in-process
    subscription; each message still goes out through the first bridge, in configuration order,
    that takes its topic: ``a/b/c`` through the first, ``a/b`` (which ``a/b/#`` matches, but is
    outside the first's prefix ``a/b/``) through the second."""
    mosquitto = mosquitto_factory()
    bridges = ["topic # out 1 a/b/ first/", "topic b/# out 1 a/ second/"]
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, *bridges)])
    local = PahoClient(server.port, MQTTv5, "local")
    remote = PahoClient(mosquitto.port, MQTTv5, "remote")
    with api(server) as http:
        wait_status(http, "plant", connected)
        remote.subscribe([("first/#", 1), ("second/#", 1)])
        local.publish("a/b/c", b"1", qos=1)
        local.publish("a/b", b"2", qos=1)
        got = [(m.topic, bytes(m.payload)) for m in remote.receive(2)]
        assert got == [("first/c", b"1"), ("second/b", b"2")]
    local.close()
    remote.close()


@pytest.mark.parametrize("version", [4, 5])
def test_both_bridge_does_not_echo(
    version: int,
    mosquitto_factory: Callable[..., MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """A `both` bridge on the same topics: a message crosses once each way and never comes back
    (MQTT 5: No Local on the remote subscription [MQTT-3.8.3-3]; 3.1.1: the echo is recognised;
    here: what came in over the connection is not sent out over it)."""
    mosquitto = mosquitto_factory()
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, "topic echo/# both 1", version=version)])
    local = PahoClient(server.port, MQTTv5, "local")
    remote = PahoClient(mosquitto.port, MQTTv5, "remote")
    with api(server) as http:
        wait_status(http, "plant", ready)
        local.subscribe("echo/#", 1)
        remote.subscribe("echo/#", 1)

        local.publish("echo/from-here", b"1", qos=1)
        assert [m.topic for m in remote.receive(1)] == ["echo/from-here"]
        assert [m.topic for m in local.receive(1)] == ["echo/from-here"]  # its own subscription
        remote.publish("echo/from-there", b"2", qos=1)
        assert [m.topic for m in local.receive(1)] == ["echo/from-there"]
        assert [m.topic for m in remote.receive(1)] == ["echo/from-there"]
        local.nothing(1.0)
        remote.nothing(0.2)
        status = http.get("/api/v1/brokers/plant").json()
        assert (status["messages_in"], status["messages_out"], status["queued"]) == (1, 1, 0)
    local.close()
    remote.close()


def test_queue_survives_wrenmq_restart(
    persistent_mosquitto: Callable[[], MosquittoBroker],
    wrenmq_server_factory: Callable[..., WrenmqServer],
    tmp_path: Path,
) -> None:
    """With SQLite storage the out queue is durable: messages bridged while the remote was down,
    and wrenmq restarted meanwhile, are sent in order when both are back (wrenmq feature)."""
    mosquitto = persistent_mosquitto()
    subscriber = checker(mosquitto.port)
    subscriber.subscribe("cloud/#", 1)
    subscriber.close()
    mosquitto.stop()
    settings = {"storage": "sqlite", "data_dir": tmp_path / "data", "api_port": 0}
    brokers = [connection(mosquitto, 'topic q/# out 1 "" cloud/')]
    server = wrenmq_server_factory(**settings, brokers=brokers)
    publisher = PahoClient(server.port, MQTTv5, "publisher")
    for n in range(5):
        publisher.publish(f"q/{n}", str(n).encode(), qos=1)
    publisher.close()
    with api(server) as http:
        assert http.get("/api/v1/brokers/plant").json()["queued"] == 5
    server.stop()

    mosquitto.start()
    server = wrenmq_server_factory(**settings, brokers=brokers)
    subscriber = checker(mosquitto.port)
    assert payloads(subscriber, 5) == [b"0", b"1", b"2", b"3", b"4"]
    subscriber.close()


def test_no_qos1_message_lost_when_remote_is_killed(
    persistent_mosquitto: Callable[[], MosquittoBroker], wrenmq_server_factory: Callable[..., WrenmqServer]
) -> None:
    """The issue's key test: QoS 1 messages flow out over a bridge; the Mosquitto is killed
    (SIGKILL) and restarted on the same port while local publishing goes on; every message
    reaches the subscriber on the Mosquitto (at least once [MQTT-4.3.2-1])."""
    total = 300
    mosquitto = persistent_mosquitto()
    received: set[bytes] = set()
    first = checker(mosquitto.port)
    first.subscribe("cloud/#", 1)
    time.sleep(1.5)  # Mosquitto has saved the subscription (autosave_interval 1)
    server = wrenmq_server_factory(api_port=0, brokers=[connection(mosquitto, 'topic data/# out 1 "" cloud/')])
    publisher = PahoClient(server.port, MQTTv5, "publisher")
    published = threading.Event()
    errors: list[BaseException] = []

    def publish_all() -> None:
        try:
            for n in range(total):
                publisher.publish(f"data/{n % 7}", str(n).encode(), qos=1)
                time.sleep(0.005)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            published.set()

    with api(server) as http:
        wait_status(http, "plant", connected)
        thread = threading.Thread(target=publish_all)
        thread.start()
        while len(received) < total // 4:  # traffic is flowing over the bridge
            received.update(payloads(first, 1))
        kill(mosquitto)
        first.client.loop_stop()  # its connection is gone; what it had read is in its queue
        while not first.messages.empty():
            received.add(bytes(first.messages.get().payload))
        wait_status(http, "plant", lambda s: not s["connected"])
        time.sleep(0.3)  # local publishing goes on while the remote is down
        assert len(received) < total
        mosquitto.start()
        second = checker(mosquitto.port)
        published.wait(TIMEOUT * 3)
        thread.join()
        assert not errors, errors
        deadline = time.monotonic() + TIMEOUT * 2
        while len(received) < total and time.monotonic() < deadline:
            try:
                received.update(payloads(second, 1))
            except Exception:
                break
        missing = sorted(set(range(total)) - {int(p) for p in received})
        assert not missing, f"{len(missing)} QoS 1 messages lost: {missing[:20]}"
        wait_status(http, "plant", lambda s: s["queued"] == 0 and s["connected"])
        second.close()
    publisher.close()


def test_readme_bridge_example_loads(tmp_path: Path) -> None:
    """The README's [[brokers]] example is a valid config, bridges as its comments say (wrenmq feature)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("<!-- bridges-example")
    begin = readme.index("```toml\n", start) + len("```toml\n")
    block = readme[begin : readme.index("\n```", begin)]
    config_file = tmp_path / "wrenmq.toml"
    config_file.write_text(block.replace("/etc/wrenmq/cloud-ca.pem", str(tmp_path / "ca.pem")))
    cloud = load_config(config_file, env={}).brokers[0]
    sensors, commands, status = cloud.parsed_bridges()
    assert sensors.to_remote("plant/sensors/t1") == "plant-7/sensors/t1" and sensors.to_local("x") is None
    assert commands.to_local("plant-7/commands/stop") == "plant/commands/stop"
    assert (status.direction, status.to_remote("status"), status.to_local("status")) == ("both", "status", "status")
