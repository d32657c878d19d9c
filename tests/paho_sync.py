"""A paho-mqtt client wrapped so that a synchronous test can wait on it (for the publish/subscribe tests).

paho runs its network loop in a thread; this wrapper turns its callbacks into queues so a test
can say "connect and wait for CONNACK", "subscribe and wait for SUBACK", "wait for N messages".
"""

from __future__ import annotations

import queue
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

MQTTv311 = MQTTProtocolVersion.MQTTv311
MQTTv5 = MQTTProtocolVersion.MQTTv5
PROTOCOLS = [MQTTv311, MQTTv5]
TIMEOUT = 5.0


class PahoClient:
    """A connected paho client; received messages land in ``self.messages``."""

    def __init__(
        self,
        port: int,
        protocol: MQTTProtocolVersion,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        **connect_kw: Any,
    ) -> None:
        self.protocol = protocol
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._acks.put(("connack", rc))
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self._acks.put(("suback", rcs))
        self.client.on_unsubscribe = lambda _c, _u, _mid, rcs, _p: self._acks.put(("unsuback", rcs))
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect("127.0.0.1", port, keepalive=30, **connect_kw)
        self.client.loop_start()
        kind, rc = self._acks.get(timeout=TIMEOUT)
        assert kind == "connack" and not rc.is_failure, f"paho could not connect: {rc}"

    def subscribe(self, topic: Any, qos: int = 0, **kw: Any) -> list[int]:
        """Subscribe and wait for the SUBACK; returns its reason codes as ints."""
        self.client.subscribe(topic, qos, **kw)
        kind, rcs = self._acks.get(timeout=TIMEOUT)
        assert kind == "suback", kind
        return [rc.value for rc in rcs]

    def unsubscribe(self, topic: str) -> None:
        self.client.unsubscribe(topic)
        kind, _ = self._acks.get(timeout=TIMEOUT)
        assert kind == "unsuback", kind

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, **kw: Any) -> None:
        """Publish and wait until paho has finished the QoS flow (PUBACK / PUBCOMP received)."""
        info = self.client.publish(topic, payload, qos, retain, **kw)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"paho did not complete publishing to {topic!r}"

    def receive(self, count: int, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def nothing(self, timeout: float = 0.3) -> None:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic!r}: {msg.payload!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class PahoFactory:
    """Makes PahoClients for one broker and closes them all (use from a fixture)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[PahoClient] = []

    def __call__(self, protocol: MQTTProtocolVersion, client_id: str = "", **connect_kw: Any) -> PahoClient:
        client = PahoClient(self.port, protocol, client_id, **connect_kw)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
