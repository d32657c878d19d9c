"""A blocking raw-socket MQTT client on the project's codec, for packet-exact tests.

Unlike paho it sends exactly what a test builds (including malformed bytes) and hands back
exactly what the broker sent, so a test can check reason codes, flags and ordering.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode


class ConnectionClosed(Exception):
    """The broker closed the connection."""


class RawClient:
    def __init__(self, port: int, version: int = 4, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = Parser(protocol_level=version)
        self.pending: list[p.AnyPacket] = []
        self._next_pid = 0

    # -- raw I/O --------------------------------------------------------------------------

    def send(self, packet: p.AnyPacket | bytes) -> None:
        data = packet if isinstance(packet, bytes | bytearray) else encode(packet, self.version)
        self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> p.AnyPacket:
        """The next packet from the broker; raises ConnectionClosed on EOF, TimeoutError on silence."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no packet from the broker") from None
            except ConnectionResetError:
                raise ConnectionClosed("connection reset") from None
            if not data:
                raise ConnectionClosed("connection closed by the broker")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    def expect(self, cls: type, timeout: float | None = None) -> Any:
        packet = self.recv(timeout)
        assert isinstance(packet, cls), f"expected {cls.__name__}, got {packet!r}"
        return packet

    def nothing(self, timeout: float = 0.3) -> None:
        """Assert that the broker sends nothing for ``timeout`` seconds."""
        try:
            packet = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet {packet!r}")

    def expect_closed(self, timeout: float = 5.0) -> list[p.AnyPacket]:
        """Wait for the broker to close the connection; returns the packets it sent first."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.recv(max(0.01, deadline - time.monotonic())))
            except ConnectionClosed:
                return seen
            except TimeoutError:
                raise AssertionError(f"connection still open; broker sent {seen!r}") from None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- conveniences ---------------------------------------------------------------------

    def pid(self) -> int:
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    def connect(self, client_id: str = "", clean: bool = True, keep_alive: int = 60, **kwargs: Any) -> p.Connack:
        """Send CONNECT and return the CONNACK (whatever its reason code)."""
        self.send(p.Connect(client_id, self.version, clean, keep_alive, **kwargs))
        return self.expect(p.Connack)

    def subscribe(
        self, topic_filter: str, qos: int = 0, properties: dict[int, Any] | None = None, **opts: Any
    ) -> p.Suback:
        self.send(p.Subscribe(self.pid(), [p.Subscription(topic_filter, qos, **opts)], properties))
        return self.expect(p.Suback)

    def publish(
        self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False, **kwargs: Any
    ) -> p.AnyPacket | None:
        """Publish and, for QoS 1/2, complete the flow; returns the PUBACK or PUBCOMP."""
        pid = self.pid() if qos else None
        self.send(p.Publish(topic, payload, qos, retain, pid, **kwargs))
        if qos == 1:
            return self.expect(p.Puback)
        if qos == 2:
            rec = self.expect(p.Pubrec)
            self.send(p.Pubrel(rec.packet_id))
            return self.expect(p.Pubcomp)
        return None

    def disconnect(self, reason_code: int = 0, properties: dict[int, Any] | None = None) -> None:
        self.send(p.Disconnect(reason_code, properties))
        self.close()


def connected(raw: Any, version: int, client_id: str = "", persistent: bool = False) -> RawClient:
    """A raw client from the ``raw`` fixture, connected; ``persistent`` keeps its session after it goes away."""
    client: RawClient = raw(version)
    props = {0x11: 300} if persistent and version == 5 else None  # Session Expiry Interval
    assert client.connect(client_id, clean=not persistent, properties=props).reason_code == 0
    return client
