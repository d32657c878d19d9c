"""``wrenmq.client`` against real brokers: wrenmq (in a thread, or as a process that is killed and
restarted) and Debian's Mosquitto, with paho-mqtt as an independent peer.

Where the network has to fail on cue (a lost PUBACK, a dead path, a killed socket) the client talks
through ``mqttproxy.MqttProxy``, a TCP proxy that also records the packets each way, so the tests
can check the exact flow the client sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from certs import make_ca, make_cert
from mosquitto_fixture import MosquittoBroker, free_port, port_open
from mqttproxy import MqttProxy
from paho_sync import MQTTv5, PahoClient
from serveproc import clean_env, serve_command
from wrenmq.client import (
    Client,
    ConnectError,
    Disconnected,
    MessageDropped,
    ProtocolError,
    PublishError,
    QueueFull,
    Will,
    backoff_delay,
    parse_url,
)
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0
VERSIONS = [4, 5]
FAST = {"backoff": (0.05, 0.3), "connect_timeout": 5.0}


@dataclass(frozen=True)
class Peer:
    name: str
    port: int
    host: str = "127.0.0.1"

    def client(self, **options: Any) -> Client:
        return Client(self.host, self.port, **(FAST | options))


@pytest.fixture(params=["wrenmq", "mosquitto"])
def peer(
    request: pytest.FixtureRequest,
    wrenmq_server_factory: Callable[..., WrenmqServer],
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> Peer:
    if request.param == "wrenmq":
        return Peer("wrenmq", wrenmq_server_factory().port)
    return Peer("mosquitto", mosquitto_factory().port)


def persistent(version: int, client_id: str) -> dict[str, Any]:
    """Options for a session the broker keeps while the client is away."""
    if version == 5:
        return {"version": 5, "client_id": client_id, "session_expiry": 300}
    return {"version": 4, "client_id": client_id, "clean_start": False}


async def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def nothing_more(stream: Any, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        message = await stream.get(wait)
        raise AssertionError(f"unexpected message {message}")


# --- publish and subscribe --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_publish_and_receive_at_each_qos(peer: Peer, version: int, qos: int) -> None:
    # [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] as sender; [MQTT-4.3.2-4] [MQTT-4.3.3-8] as receiver
    async with peer.client(version=version) as sub, peer.client(version=version) as pub:
        stream = sub.messages()
        assert await sub.subscribe("qos/test", qos) == [qos]
        assert await pub.publish("qos/test", b"payload", qos) in (
            ReasonCode.SUCCESS,
            ReasonCode.NO_MATCHING_SUBSCRIBERS,
        )
        message = await stream.get(TIMEOUT)
        assert (message.topic, message.payload, message.qos, message.retain) == ("qos/test", b"payload", qos, False)


@pytest.mark.parametrize("version", VERSIONS)
async def test_publish_returns_once_the_qos_flow_completes(peer: Peer, version: int) -> None:
    # [MQTT-4.3.2-3]: unacknowledged until PUBACK; [MQTT-4.3.3-3] [MQTT-4.3.3-4] [MQTT-4.3.3-5]: PUBREC, PUBREL, PUBCOMP
    async with MqttProxy(peer.port) as proxy, Client("127.0.0.1", proxy.port, version=version) as client:
        await client.publish("flow/one", b"1", qos=1)
        (publish,) = proxy.seen("c2s", p.Publish)
        assert (publish.qos, publish.dup, publish.packet_id) == (1, False, publish.packet_id)
        assert [ack.packet_id for ack in proxy.seen("s2c", p.Puback)] == [publish.packet_id]
        await client.publish("flow/two", b"2", qos=2)
        pid = proxy.seen("c2s", p.Publish)[1].packet_id
        flow = [
            (direction, type(packet).__name__)
            for direction, packet, _ in proxy.packets
            if isinstance(packet, (p.Publish, p.Pubrec, p.Pubrel, p.Pubcomp)) and packet.packet_id == pid
        ]
        assert flow == [("c2s", "Publish"), ("s2c", "Pubrec"), ("c2s", "Pubrel"), ("s2c", "Pubcomp")]


@pytest.mark.parametrize("version", VERSIONS)
async def test_retained_message_reaches_a_later_subscriber(peer: Peer, version: int) -> None:  # [MQTT-3.3.1-6]
    async with peer.client(version=version) as pub:
        await pub.publish("retained/state", b"on", qos=1, retain=True)
    async with peer.client(version=version) as sub:
        stream = sub.messages("retained/#")
        await sub.subscribe("retained/#", 1)
        message = await stream.get(TIMEOUT)
        assert (message.topic, message.payload, message.retain) == ("retained/state", b"on", True)


@pytest.mark.parametrize("version", VERSIONS)
async def test_unsubscribe_stops_delivery(peer: Peer, version: int) -> None:  # [MQTT-3.10.4-2]
    async with peer.client(version=version) as client:
        stream = client.messages()
        await client.subscribe(["unsub/a", ("unsub/b", 1)])
        assert await client.unsubscribe("unsub/a") == [ReasonCode.SUCCESS]
        await client.publish("unsub/a", b"gone", 1)
        await client.publish("unsub/b", b"kept", 1)
        assert (await stream.get(TIMEOUT)).payload == b"kept"
        await nothing_more(stream)


async def test_broker_assigns_a_client_id_at_mqtt5(peer: Peer) -> None:  # [MQTT-3.1.3-6] [MQTT-3.2.2-16]
    async with peer.client(version=5) as client:
        assert client.client_id  # sent empty; ASSIGNED_CLIENT_IDENTIFIER adopted
        assert client.connack is not None
        assert client.connack.properties[PropertyId.ASSIGNED_CLIENT_IDENTIFIER] == client.client_id


@pytest.mark.parametrize("version", VERSIONS)
async def test_refused_connection_raises_connect_error_with_the_reason(
    version: int, wrenmq_server_factory: Callable[..., WrenmqServer], mosquitto_factory: Callable[..., Any]
) -> None:  # [MQTT-3.2.2-6]: a refusing CONNACK carries the reason, then the server closes
    expected = ReasonCode.NOT_AUTHORIZED if version == 5 else 5  # 3.1.1: Connection Refused, not authorized
    for port in (wrenmq_server_factory(allow_anonymous=False).port, mosquitto_factory(allow_anonymous=False).port):
        client = Client("127.0.0.1", port, version=version)
        with pytest.raises(ConnectError) as info:
            await client.connect()
        assert info.value.reason_code == expected
        assert client.state == "closed"


async def test_failure_reason_codes_raise(tmp_path: Path, wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    # [MQTT-3.4.2-1]/[MQTT-3.5.2-1]: PUBACK/PUBREC reason 0x87; [MQTT-3.9.3-1] SUBACK codes per filter
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\n")
    server = wrenmq_server_factory(acl_file=acl)
    async with Client("127.0.0.1", server.port, version=5) as client:
        assert await client.subscribe(["open/#", "closed/#"], 1) == [1, ReasonCode.NOT_AUTHORIZED]
        for qos in (1, 2):
            with pytest.raises(PublishError) as info:
                await client.publish("closed/x", b"", qos)
            assert info.value.reason_code == ReasonCode.NOT_AUTHORIZED
        assert await client.publish("open/x", b"", 1) == ReasonCode.SUCCESS
    async with Client("127.0.0.1", server.port, version=4) as client:
        assert await client.subscribe(["open/#", "closed/#"], 1) == [1, 0x80]  # 3.1.1: Failure


async def test_publish_above_the_brokers_maximum_qos_is_refused_locally(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:  # [MQTT-3.2.2-11]: a client must not send a QoS above Maximum QoS
    server = wrenmq_server_factory(maximum_qos=1)
    async with MqttProxy(server.port) as proxy, Client("127.0.0.1", proxy.port, version=5) as client:
        with pytest.raises(PublishError) as info:
            await client.publish("maxqos/x", b"", 2)
        assert info.value.reason_code == ReasonCode.QOS_NOT_SUPPORTED
        assert not proxy.seen("c2s", p.Publish)
        await client.publish("maxqos/x", b"", 1)


async def test_outbound_inflight_stays_within_the_brokers_receive_maximum(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:  # [MQTT-3.3.4-7]: no more unacknowledged QoS 1/2 PUBLISHes than the server's Receive Maximum
    server = wrenmq_server_factory(receive_maximum=3)
    async with MqttProxy(server.port) as proxy, Client("127.0.0.1", proxy.port, version=5) as client:
        await asyncio.gather(*(client.publish("rm/x", str(i), qos=1 + i % 2) for i in range(40)))
        outstanding = peak = 0
        for direction, packet, _ in proxy.packets:
            if direction == "c2s" and isinstance(packet, p.Publish):
                outstanding += 1
                peak = max(peak, outstanding)
            elif direction == "s2c" and isinstance(packet, (p.Puback, p.Pubcomp)):
                outstanding -= 1
        assert peak == 3
        assert len(proxy.seen("c2s", p.Publish)) == 40


# --- the client's session across connections -----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
async def test_unacknowledged_publish_is_resent_with_dup_on_reconnect(peer: Peer, version: int, qos: int) -> None:
    # [MQTT-4.4.0-1]: resend with the original packet identifier; [MQTT-3.3.1-1]: DUP set on the re-delivery
    async with MqttProxy(peer.port) as proxy, peer.client(version=version) as watcher:
        stream = watcher.messages()
        await watcher.subscribe("resend/#", 2)
        async with Client("127.0.0.1", proxy.port, **FAST, **persistent(version, f"resend-{qos}")) as client:
            proxy.drop_after("c2s", lambda packet: isinstance(packet, p.Publish))  # lose the broker's answer
            task = asyncio.create_task(client.publish("resend/x", b"once", qos))
            await proxy.wait_for("s2c-dropped", p.Puback if qos == 1 else p.Pubrec)
            assert not task.done()
            proxy.sever()
            async with asyncio.timeout(TIMEOUT):
                await task
            first, again = proxy.seen("c2s", p.Publish)
            assert (again.packet_id, again.dup, first.dup) == (first.packet_id, True, False)
            assert client.session_present
        assert (await stream.get(TIMEOUT)).payload == b"once"
        if qos == 2:  # exactly once, though the broker received it twice [MQTT-4.3.3-9]
            await nothing_more(stream)


@pytest.mark.parametrize("version", VERSIONS)
async def test_unacknowledged_pubrel_is_resent_on_reconnect(peer: Peer, version: int) -> None:
    # [MQTT-4.4.0-1]: PUBREL resent; [MQTT-4.3.3-6]: the PUBLISH is not sent again once PUBREL was
    async with (
        MqttProxy(peer.port) as proxy,
        Client("127.0.0.1", proxy.port, **FAST, **persistent(version, "pubrel")) as client,
    ):
        proxy.drop_after("c2s", lambda packet: isinstance(packet, p.Pubrel))  # lose the PUBCOMP
        task = asyncio.create_task(client.publish("pubrel/x", b"x", 2))
        await proxy.wait_for("s2c-dropped", p.Pubcomp)
        proxy.sever()
        async with asyncio.timeout(TIMEOUT):
            await task
        (publish,) = proxy.seen("c2s", p.Publish)
        assert [rel.packet_id for rel in proxy.seen("c2s", p.Pubrel, connection=2)] == [publish.packet_id]
        assert [comp.packet_id for comp in proxy.seen("s2c", p.Pubcomp, connection=2)] == [publish.packet_id]


@pytest.mark.parametrize("version", VERSIONS)
async def test_qos2_message_resent_by_the_broker_is_delivered_once(peer: Peer, version: int) -> None:
    # [MQTT-4.3.3-9]: a PUBLISH resent after our PUBREC was lost is acknowledged again, not delivered again
    async with (
        MqttProxy(peer.port) as proxy,
        peer.client(version=version) as publisher,
        Client("127.0.0.1", proxy.port, **FAST, **persistent(version, "inbound-2")) as client,
    ):
        stream = client.messages()
        await client.subscribe("inbound/#", 2)
        proxy.drop_after("s2c", lambda packet: isinstance(packet, p.Publish))  # lose our PUBREC
        await publisher.publish("inbound/x", b"exactly once", 2)
        assert (await stream.get(TIMEOUT)).payload == b"exactly once"
        await proxy.wait_for("c2s-dropped", p.Pubrec)
        proxy.sever()
        await proxy.wait_for("c2s", p.Pubcomp, connection=2)
        first, again = proxy.seen("s2c", p.Publish)
        assert (again.packet_id, again.dup) == (first.packet_id, True)
        await nothing_more(stream)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("keep_session", [True, False], ids=["persistent", "clean"])
async def test_resubscribes_only_when_the_session_was_not_present(peer: Peer, version: int, keep_session: bool) -> None:
    # [MQTT-3.2.2-2]/[MQTT-3.2.2-3]: Session Present says whether the broker kept the subscriptions
    options = persistent(version, "resub") if keep_session else {"version": version}
    async with (
        MqttProxy(peer.port) as proxy,
        peer.client(version=version) as publisher,
        Client("127.0.0.1", proxy.port, **FAST, **options) as client,
    ):
        stream = client.messages()
        await client.subscribe("resub/#", 1)
        proxy.refuse = True
        proxy.sever()
        await wait_until(lambda: client.state == "reconnecting")
        await publisher.publish("resub/away", b"while away", 1)  # kept for a persistent session only
        proxy.refuse = False
        await client.wait_connected(TIMEOUT)
        assert client.session_present is keep_session
        if keep_session:
            assert not proxy.seen("c2s", p.Subscribe, connection=2)
            assert (await stream.get(TIMEOUT)).payload == b"while away"
        else:
            (resubscribe,) = await proxy.wait_for("c2s", p.Subscribe, connection=2)
            assert [s.topic_filter for s in resubscribe.subscriptions] == ["resub/#"]
            await proxy.wait_for("s2c", p.Suback, connection=2)
        await publisher.publish("resub/back", b"back", 1)
        assert (await stream.get(TIMEOUT)).payload == b"back"


@pytest.mark.parametrize("version", VERSIONS)
async def test_persistent_session_gets_messages_queued_while_offline(peer: Peer, version: int) -> None:
    # [MQTT-3.1.2-5] (3.1.1: [MQTT-3.1.2-4]): the session resumes with the messages queued for it
    options = persistent(version, "offline")
    async with peer.client(**options) as client:
        await client.subscribe("offline/#", 1)
    async with peer.client(version=version) as publisher:
        for i in range(3):
            await publisher.publish("offline/x", f"m{i}", 1)
    async with peer.client(**(options | {"clean_start": False})) as client:
        assert client.session_present  # [MQTT-3.2.2-3]
        stream = client.messages()
        assert [(await stream.get(TIMEOUT)).payload for _ in range(3)] == [b"m0", b"m1", b"m2"]


# --- wills --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_will_is_published_when_the_socket_is_killed(peer: Peer, version: int) -> None:  # [MQTT-3.1.2-8]
    async with MqttProxy(peer.port) as proxy, peer.client(version=version) as watcher:
        stream = watcher.messages()
        await watcher.subscribe("will/#", 1)
        will = Will("will/victim", b"gone", qos=1)
        victim = Client("127.0.0.1", proxy.port, version=version, will=will, reconnect=False)
        await victim.connect()
        proxy.sever()
        message = await stream.get(TIMEOUT)
        assert (message.topic, message.payload) == ("will/victim", b"gone")
        await wait_until(lambda: victim.state == "closed")
        with pytest.raises(Disconnected):
            await victim.publish("will/after", b"", 0)


@pytest.mark.parametrize("version", VERSIONS)
async def test_disconnect_discards_the_will(peer: Peer, version: int) -> None:  # [MQTT-3.1.2-10]
    async with peer.client(version=version) as watcher:
        stream = watcher.messages()
        await watcher.subscribe("will/#", 1)
        async with peer.client(version=version, will=Will("will/polite", b"never")):
            pass
        await nothing_more(stream, 0.5)


# --- reconnection -------------------------------------------------------------------------------------


class WrenmqProcess:
    """``wrenmq serve`` with SQLite storage as a child process, to be killed and started again."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WrenmqProcess:
        env = clean_env()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "serve.log"
        with log.open("ab") as output:  # a file, not a pipe nobody reads: the broker must never block on it
            self.process = subprocess.Popen(
                serve_command(self.port, self.data_dir, storage="sqlite"),
                env=env,
                stdout=output,
                stderr=output,
            )
        deadline = time.monotonic() + TIMEOUT
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"wrenmq serve exited: {log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError("wrenmq serve did not start")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None


@pytest.fixture
def wrenmq_process(tmp_path: Path) -> Iterator[WrenmqProcess]:
    broker = WrenmqProcess(tmp_path / "data", free_port())
    yield broker
    broker.kill()


async def _survive_restart(client: Client, stop: Callable[[], None], start: Callable[[], None]) -> None:
    """Subscribe, lose the broker, publish while it is down, bring it back: all arrive, in order."""
    stream = client.messages()
    await client.subscribe("restart/#", 1)
    stop()
    await wait_until(lambda: client.state == "reconnecting")
    tasks = [asyncio.create_task(client.publish("restart/x", str(i), 1)) for i in range(5)]
    await wait_until(lambda: client.queued == 5)  # the offline queue holds them
    start()
    assert [(await stream.get(TIMEOUT)).payload for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*tasks)
    assert client.stats.connects == 2


@pytest.mark.parametrize("session_expiry", [0, 300], ids=["clean", "persistent"])
async def test_reconnects_after_wrenmq_restarts(wrenmq_process: WrenmqProcess, session_expiry: int) -> None:
    """A wrenmq feature (reconnection is not in the spec): the broker process is killed (SIGKILL) and
    started again on the same port; the client resubscribes if SQLite did not keep its session, and
    sends its offline queue in order."""
    wrenmq_process.start()
    client = Client("127.0.0.1", wrenmq_process.port, client_id="restart", session_expiry=session_expiry, **FAST)
    async with client:
        await _survive_restart(client, wrenmq_process.kill, wrenmq_process.start)
        assert client.session_present is bool(session_expiry)


@pytest.mark.parametrize("version", VERSIONS)
async def test_reconnects_after_mosquitto_restarts(mosquitto: MosquittoBroker, version: int) -> None:
    """A wrenmq feature: Mosquitto (no persistence) is stopped and started on the same port; the
    client reconnects, resubscribes and sends what was published meanwhile, in order."""
    async with Client("127.0.0.1", mosquitto.port, version=version, **FAST) as client:
        await _survive_restart(client, mosquitto.stop, mosquitto.start)
        assert not client.session_present


def test_backoff_grows_exponentially_with_jitter_within_bounds() -> None:
    """A wrenmq feature: "equal jitter" backoff, between half the cap and the cap, capped at max."""
    for failures in range(12):
        cap = min(8.0, 0.25 * 2**failures)
        delays = {backoff_delay(failures, 0.25, 8.0) for _ in range(50)}
        assert all(cap / 2 <= delay <= cap for delay in delays)
        assert len(delays) > 1  # jittered
    assert backoff_delay(10_000, 0.25, 8.0) <= 8.0


async def test_start_retries_until_the_broker_appears(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """A wrenmq feature: start() keeps trying (with backoff) until a broker listens, then connects."""
    port = free_port()
    client = Client("127.0.0.1", port, backoff=(0.05, 0.2))
    client.start()
    try:
        publishing = asyncio.create_task(client.publish("early/x", b"queued before connecting", 1))
        # Between attempts (during one, there is no next attempt yet): waiting, with the next one set.
        await wait_until(lambda: client.stats.connect_attempts >= 3 and client.next_attempt_at is not None)
        assert client.state == "connecting"  # never connected yet
        assert isinstance(client.last_error, ConnectError)
        wrenmq_server_factory(port=port)
        await client.wait_connected(TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            await publishing
    finally:
        await client.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
async def test_keepalive_sends_pingreq_when_idle(peer: Peer, version: int) -> None:  # [MQTT-3.1.2-23]
    async with MqttProxy(peer.port) as proxy, Client("127.0.0.1", proxy.port, version=version, keepalive=1) as client:
        await proxy.wait_for("s2c", p.Pingresp, count=2, timeout=5)
        assert client.connected and proxy.connections == 1


async def test_dead_connection_is_detected_and_replaced(peer: Peer) -> None:
    """A wrenmq feature: when a PINGREQ gets no answer within the keep-alive interval, the client
    drops the connection and reconnects (here the network path goes silent without closing)."""
    async with MqttProxy(peer.port) as proxy, Client("127.0.0.1", proxy.port, keepalive=1, **FAST) as client:
        proxy.freeze()
        await wait_until(lambda: client.state == "reconnecting", timeout=5)
        assert isinstance(client.last_error, Disconnected)
        assert "keep-alive" in str(client.last_error)
        await client.wait_connected(TIMEOUT)
        assert proxy.connections == 2


# --- the offline queue --------------------------------------------------------------------------------


async def test_offline_queue_bound_raises_queue_full() -> None:
    """A wrenmq feature: with queue_full="raise", a publish beyond max_queued raises QueueFull."""
    client = Client("127.0.0.1", free_port(), max_queued=3, backoff=(0.05, 0.2))
    client.start()
    tasks = [asyncio.create_task(client.publish("q/x", str(i), 1)) for i in range(3)]
    await wait_until(lambda: client.queued == 3)
    with pytest.raises(QueueFull):
        await client.publish("q/x", b"one too many", 1)
    await client.disconnect()
    for task in tasks:  # what never went out fails when the client closes
        with pytest.raises(Disconnected):
            await task


async def test_offline_queue_drop_oldest_keeps_the_newest_in_order(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """A wrenmq feature: with queue_full="drop_oldest" the oldest waiting publish fails with
    MessageDropped and the rest are sent, in order, once connected."""
    server = wrenmq_server_factory()
    async with MqttProxy(server.port) as proxy, Client("127.0.0.1", server.port) as watcher:
        stream = watcher.messages()
        await watcher.subscribe("drop/#", 1)
        proxy.refuse = True
        client = Client("127.0.0.1", proxy.port, max_queued=3, queue_full="drop_oldest", backoff=(0.05, 0.2))
        client.start()
        try:
            tasks = [asyncio.create_task(client.publish("drop/x", str(i), 1)) for i in range(5)]
            await wait_until(lambda: client.dropped == 2)
            for task in tasks[:2]:
                with pytest.raises(MessageDropped):
                    await task
            proxy.refuse = False
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*tasks[2:])
            assert [(await stream.get(TIMEOUT)).payload for _ in range(3)] == [b"2", b"3", b"4"]
        finally:
            await client.disconnect()


# --- disconnections and protocol errors -----------------------------------------------------------------


async def test_session_takeover_ends_the_first_client_with_disconnected(peer: Peer) -> None:
    # [MQTT-3.1.4-3]: the server disconnects the existing client; MQTT 5 says why (0x8E Session taken over)
    first = Client("127.0.0.1", peer.port, client_id="taken", reconnect=False)
    await first.connect()
    stream = first.messages()
    async with Client("127.0.0.1", peer.port, client_id="taken"):
        with pytest.raises(Disconnected) as info:
            await stream.get(TIMEOUT)
    if peer.name == "wrenmq":
        assert info.value.reason_code == ReasonCode.SESSION_TAKEN_OVER
    else:  # Mosquitto 2.0 closes the socket without a DISCONNECT
        assert info.value.reason_code in (None, ReasonCode.SESSION_TAKEN_OVER)
    assert first.state == "closed"


async def test_malformed_packet_from_the_broker_is_a_protocol_error() -> None:
    """A broker that sends a PUBLISH with QoS 3 [MQTT-3.3.1-4]: no real broker does so on request, so a
    raw socket plays the broker; the client closes the connection and reports a ProtocolError."""

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # CONNACK
        await asyncio.sleep(0.2)  # after connect() has returned
        writer.write(b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH with QoS 3
        await reader.read(1024)  # until the client closes
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    async with server:
        client = Client("127.0.0.1", server.sockets[0].getsockname()[1], version=4, reconnect=False)
        await client.connect()
        stream = client.messages()
        with pytest.raises(ProtocolError) as info:
            await stream.get(TIMEOUT)
        assert info.value.reason_code == ReasonCode.MALFORMED_PACKET
        assert client.state == "closed"


async def test_packet_before_connack_fails_the_connect() -> None:
    """[MQTT-3.2.0-1]: the first packet from the server must be CONNACK (a raw socket plays the broker)."""

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\xd0\x00")  # PINGRESP
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    async with server:
        client = Client("127.0.0.1", server.sockets[0].getsockname()[1], reconnect=False)
        with pytest.raises(ConnectError) as info:
            await client.connect()
        assert "[MQTT-3.2.0-1]" in str(info.value)


# --- message streams ------------------------------------------------------------------------------------


async def test_streams_filter_and_backlog(wrenmq_server: WrenmqServer) -> None:
    """A wrenmq feature: each stream gets the messages its filter matches; messages that arrive before
    any stream wants them wait in the backlog for the first stream that does."""
    async with Client("127.0.0.1", wrenmq_server.port) as client:
        await client.subscribe("s/#", 1)
        await client.publish("s/early", b"before any stream", 1)
        await wait_until(lambda: client.stats.messages_in == 1)
        a = client.messages("s/a/#")
        everything = client.messages()
        assert (await everything.get(TIMEOUT)).topic == "s/early"
        await client.publish("s/a/1", b"", 1)
        await client.publish("s/b/1", b"", 1)
        assert (await a.get(TIMEOUT)).topic == "s/a/1"
        assert [(await everything.get(TIMEOUT)).topic for _ in range(2)] == ["s/a/1", "s/b/1"]
        await nothing_more(a)
    with pytest.raises(StopAsyncIteration):  # the client closed: the streams end
        await a.__anext__()


async def test_slow_stream_pauses_reading_instead_of_buffering_everything(
    wrenmq_server: WrenmqServer,
) -> None:
    """A wrenmq feature: a stream past max_buffered pauses reading from the socket (the broker then
    holds the rest); reading again resumes it, and every message arrives in order."""
    payload = b"x" * 20_000
    async with Client("127.0.0.1", wrenmq_server.port, max_buffered=5) as client:
        stream = client.messages()
        await client.subscribe("slow/#", 1)
        async with Client("127.0.0.1", wrenmq_server.port) as publisher:
            for i in range(100):
                await publisher.publish(f"slow/{i}", payload, 1)
        await asyncio.sleep(0.3)
        assert len(stream) < 60  # without the pause all 100 (2 MB) would sit in the stream
        topics = [(await stream.get(TIMEOUT)).topic for _ in range(100)]
        assert topics == [f"slow/{i}" for i in range(100)]


# --- transports -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    cert, key = make_cert(ca, directory, "broker", server=True)
    return ca.cert, cert, key


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_tls_and_wss_against_wrenmq(
    pki: tuple[Path, Path, Path], wrenmq_server_factory: Callable[..., WrenmqServer], transport: str
) -> None:
    """TLS and secure WebSocket (MQTT leaves TLS to the transport, section 4.2; WebSocket: section 6)."""
    ca, cert, key = pki
    server = wrenmq_server_factory(tls_port=0, wss_port=0, certfile=cert, keyfile=key)
    port = server.tls_port if transport == "tcp" else server.wss_port
    context = ssl.create_default_context(cafile=str(ca))
    async with Client("127.0.0.1", port, tls=context, transport=transport) as client:  # type: ignore[arg-type]
        stream = client.messages()
        await client.subscribe("tls/#", 2)
        await client.publish("tls/x", b"secret", 2)
        assert (await stream.get(TIMEOUT)).payload == b"secret"
    untrusted = Client("127.0.0.1", port, tls=ssl.create_default_context(), transport=transport)  # type: ignore[arg-type]
    with pytest.raises(ConnectError) as info:
        await untrusted.connect()
    assert isinstance(info.value.__cause__, ssl.SSLError)


@pytest.mark.parametrize("version", VERSIONS)
async def test_websocket_against_wrenmq_and_mosquitto(
    version: int, wrenmq_server_factory: Callable[..., WrenmqServer], mosquitto_factory: Callable[..., MosquittoBroker]
) -> None:  # [MQTT-6.0.0-1] binary frames, [MQTT-6.0.0-3] the "mqtt" subprotocol
    ports = [wrenmq_server_factory(ws_port=0).ws_port, mosquitto_factory(websockets=True).ws_port]
    for port in ports:
        url = f"ws://127.0.0.1:{port}/mqtt"
        async with Client.from_url(url, version=version) as client:
            stream = client.messages()
            await client.subscribe("ws/#", 2)
            for qos in (0, 1, 2):
                # Larger than one of Mosquitto's 4 KiB WebSocket writes (which it makes every 100 ms).
                await client.publish("ws/x", bytes([qos]) * 6_000, qos)
            assert [(await stream.get(TIMEOUT)).payload[:1] for _ in range(3)] == [b"\0", b"\1", b"\2"]


async def test_websocket_upgrade_refused_is_a_connect_error(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """A WebSocket path the broker does not serve: HTTP 404 becomes ConnectError (section 6)."""
    server = wrenmq_server_factory(ws_port=0)
    client = Client("127.0.0.1", server.ws_port, transport="ws", ws_path="/nope")
    with pytest.raises(ConnectError, match="HTTP 404"):
        await client.connect()


def test_runs_on_uvloop(wrenmq_server: WrenmqServer) -> None:
    """The bridges run the client inside the broker's uvloop loop: QoS 2 both ways there."""
    uvloop = pytest.importorskip("uvloop")

    async def roundtrip() -> bytes:
        async with Client("127.0.0.1", wrenmq_server.port) as client:
            stream = client.messages()
            await client.subscribe("uv/#", 2)
            await client.publish("uv/x", b"fast", 2)
            return (await stream.get(TIMEOUT)).payload

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(roundtrip()) == b"fast"


def test_parse_url() -> None:
    """wrenmq feature: broker URLs for Client.from_url and ``-L``."""
    url = parse_url("mqtts://al%40ice:p%3Ass@broker.example:8884/a/b")
    assert (url.host, url.port, url.tls, url.transport) == ("broker.example", 8884, True, "tcp")
    assert (url.username, url.password, url.path) == ("al@ice", "p:ss", "/a/b")
    assert parse_url("ws://[::1]/mqtt").port == 80 and parse_url("ws://[::1]/mqtt").host == "::1"
    assert parse_url("tcp://h").port == 1883 and parse_url("ssl://h").tls
    for bad in ("http://h", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError):
            parse_url(bad)


# --- paho-mqtt as an independent peer -------------------------------------------------------------------


async def test_paho_receives_what_the_client_publishes_and_vice_versa(peer: Peer) -> None:
    # [MQTT-3.3.2-17] [MQTT-3.3.2-18]: user properties and content type reach the subscriber unchanged
    receiver = await asyncio.to_thread(PahoClient, peer.port, MQTTv5, "paho-peer")
    try:
        await asyncio.to_thread(receiver.subscribe, "interop/#", 2)
        async with peer.client(version=5) as client:
            properties = {PropertyId.USER_PROPERTY: [("k", "v")], PropertyId.CONTENT_TYPE: "text/plain"}
            await client.publish("interop/to-paho", b"hello paho", 2, properties=properties)
            received: paho.MQTTMessage = await asyncio.to_thread(receiver.messages.get, True, TIMEOUT)
            assert (received.topic, received.payload, received.qos) == ("interop/to-paho", b"hello paho", 2)
            assert received.properties is not None
            assert received.properties.UserProperty == [("k", "v")]
            assert received.properties.ContentType == "text/plain"

            stream = client.messages()
            await client.subscribe("interop/from-paho", 2)
            await asyncio.to_thread(receiver.publish, "interop/from-paho", b"hello wrenmq", 1, True)
            message = await stream.get(TIMEOUT)
            assert (message.payload, message.qos) == (b"hello wrenmq", 1)
    finally:
        await asyncio.to_thread(receiver.close)


# --- the README's example -------------------------------------------------------------------------------


def test_readme_client_example_runs(wrenmq_server: WrenmqServer) -> None:
    """The README's client example, as written but for the broker's address, prints what it published."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Client and command-line tools", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"localhost", 1883' in code
    code = code.replace('"localhost", 1883', f'"127.0.0.1", {wrenmq_server.port}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENMQ_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sensors/kitchen/temperature 21.5 1 False\n"
