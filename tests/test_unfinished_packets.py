"""Keep Alive counts complete Control Packets, and a packet that never finishes arriving is bounded.

A client that trickles the bytes of a packet it never completes has sent no Control Packet: it is
closed at 1.5 x Keep Alive [MQTT-3.1.2-24] (5.0: [MQTT-3.1.2-22]), before CONNECT by the connect
timeout, and without a keep alive by ``packet_read_timeout`` (so ``max_packet_size`` x connections
cannot be held for ever). Settings are a second or so, so each test takes about two seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mqttraw import ConnectionClosed, RawClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import encode
from wrenmq.mqtt.reason_codes import ReasonCode

TRICKLE = 0.1  # seconds between bytes


class Trickler:
    """Sends ``data`` one byte every ``TRICKLE`` seconds from a thread, until stopped or refused."""

    def __init__(self, client: RawClient, data: bytes) -> None:
        self.client, self.data = client, data
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(len(self.data)):
            if self.stopped.wait(TRICKLE):
                return
            try:
                self.client.sock.send(self.data[i : i + 1])
            except OSError:
                return

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2.0)


def closed_within(client: RawClient, seconds: float) -> tuple[float, list[p.AnyPacket]]:
    """Wait up to ``seconds`` for the broker to close; returns (seconds taken, packets sent first)."""
    started = time.monotonic()
    sent = client.expect_closed(seconds)
    return time.monotonic() - started, sent


def big_publish(size: int, version: int = 5) -> bytes:
    return encode(p.Publish("unfinished", b"u" * size, 0), version)


def test_trickled_partial_packet_does_not_count_for_keep_alive(raw: Callable[..., RawClient]):
    # [MQTT-3.1.2-24] (3.1.1) / [MQTT-3.1.2-22] (5.0): "does not receive a Control Packet" means a
    # whole one; bytes of a packet that never completes do not keep the connection alive.
    v4, v5 = raw(4), raw(5)
    v4.connect("trickle4", keep_alive=1)
    v5.connect("trickle5", keep_alive=1)
    started = time.monotonic()
    tricklers = [Trickler(v4, big_publish(1000, 4)), Trickler(v5, big_publish(1000))]
    try:
        _, sent4 = closed_within(v4, 4.0)
        _, sent5 = closed_within(v5, 1.0)
        assert time.monotonic() - started < 2.6, "closed much later than 1.5 x Keep Alive"
        assert sent4 == []  # 3.1.1: closed as if the network had failed
        assert [x.reason_code for x in sent5 if isinstance(x, p.Disconnect)] == [ReasonCode.KEEP_ALIVE_TIMEOUT]
    finally:
        for trickler in tricklers:
            trickler.stop()


def test_complete_packets_keep_a_trickling_client_alive(raw: Callable[..., RawClient]):  # [MQTT-3.1.2-24]
    # The same pace of bytes, but making whole PINGREQs: the connection stays (2.4 s > 1.5 x 1 s).
    client = raw(5)
    client.connect("pinger", keep_alive=1)
    trickler = Trickler(client, b"\xc0\x00" * 12)
    try:
        for _ in range(12):
            client.expect(p.Pingresp, timeout=1.0)
    finally:
        trickler.stop()
    client.send(p.Pingreq())  # sentinel: still connected
    client.expect(p.Pingresp)


def test_partial_connect_closed_at_connect_timeout(wrenmq_server_factory, clients):
    # A CONNECT that never finishes arriving is not a CONNECT: the connect timeout applies to it.
    server = wrenmq_server_factory(connect_timeout=1.0)
    client = clients(server, 5)
    trickler = Trickler(client, encode(p.Connect("slowpoke", 5, properties={0x26: [("k", "v" * 200)]}), 5))
    try:
        waited, sent = closed_within(client, 4.0)
        assert waited < 2.0
        assert sent == []
    finally:
        trickler.stop()


def test_unfinished_packet_closed_at_packet_read_timeout(wrenmq_server_factory, clients):
    # Keep Alive 0 turns the keep-alive off; a packet that is started must still finish in time.
    server = wrenmq_server_factory(packet_read_timeout=1.0)
    holders = [clients(server, 5) for _ in range(10)]
    tricklers = []
    for i, client in enumerate(holders):
        assert client.connect(f"holder{i}", keep_alive=0).reason_code == 0
        packet = big_publish(1024 * 1024)
        client.send(packet[: len(packet) // 2])  # half a megabyte held by the broker ...
        tricklers.append(Trickler(client, packet[len(packet) // 2 :]))  # ... and the rest, slowly
    try:
        started = time.monotonic()
        for client in holders:
            _, sent = closed_within(client, 4.0 - (time.monotonic() - started))
            assert [x.reason_code for x in sent if isinstance(x, p.Disconnect)] == [ReasonCode.KEEP_ALIVE_TIMEOUT]
        assert time.monotonic() - started < 2.0
        assert not server.broker.connections or all(c.closed for c in server.broker.connections)
    finally:
        for trickler in tricklers:
            trickler.stop()


def test_packet_finished_within_packet_read_timeout_is_handled(wrenmq_server_factory, clients):
    # The deadline is per packet: a client whose packets each finish in time is never cut off,
    # however long it stays connected.
    server = wrenmq_server_factory(packet_read_timeout=1.0)
    client = clients(server, 5)
    assert client.connect("steady", keep_alive=0).reason_code == 0
    for _ in range(4):  # 4 x 0.6 s: longer than the deadline in all, each packet well within it
        ping = encode(p.Pingreq(), 5)
        client.send(ping[:1])
        time.sleep(0.6)
        client.send(ping[1:])
        client.expect(p.Pingresp)
    try:
        client.nothing(0.01)
    except ConnectionClosed:
        raise AssertionError("closed although every packet finished within packet_read_timeout") from None
