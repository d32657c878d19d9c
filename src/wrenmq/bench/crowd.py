"""A load-generator worker holding many MQTT connections in one process (epoll, non-blocking).

The fleet scenarios need thousands of clients, not a fast stream: this worker opens ``count``
connections, each sending CONNECT and (optionally) SUBSCRIBE in one write as soon as its TCP
connect completes, ``in_flight`` of them awaiting their CONNACK/SUBACK at a time. Then it either

* **holds** them (``churn == 0``): idle until EXIT, counting every PUBLISH that arrives (and
  answering QoS 1 with PUBACK), and stamping ``Control.marks[slot]`` with the time of the latest
  read that brought one, so the coordinator can tell when the *last* subscriber had a message; or
* **churns**: each connection that is set up is closed at once with DISCONNECT, and a new one
  takes its place, ``churn`` times over (after ``warmup`` cycles, it waits for MEASURE).

Connections set up go to ``Control.sent[slot]``, deliveries to ``Control.received[slot]``, reports
to the pipe, as the other workers'.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..mqtt import packets as p
from ..mqtt.codec import Parser, encode
from .generator import EXIT, MEASURE, RUN, Control, _report, _setup, _wait_state

__all__ = ["CrowdSpec", "run_crowd"]

DISCONNECT = b"\xe0\x00"


@dataclass
class CrowdSpec:
    host: str
    port: int
    slot: int
    count: int  # connections to hold (churn == 0)
    prefix: str  # client ids are prefix-NNNNNN
    version: int = p.MQTT_5
    topic_filter: str = ""  # one subscription per client; "{id}" becomes the client id; "": none
    qos: int = 0  # subscription QoS
    churn: int = 0  # connect + subscribe + disconnect cycles instead of holding (after ``warmup``)
    warmup: int = 0  # churn cycles before the measured ones
    in_flight: int = 64  # connections being set up at once
    timeout: float = 120.0  # for setting up (or churning) all of them
    cpus: set[int] = field(default_factory=set)


class _Client:
    __slots__ = ("parser", "sock", "subscribed", "welcomed")

    def __init__(self, sock: socket.socket, version: int) -> None:
        self.sock = sock
        self.parser = Parser(protocol_level=version)
        self.welcomed = False  # CONNACK 0 arrived
        self.subscribed = False  # SUBACK arrived (or no subscription asked for)


class _Crowd:
    def __init__(self, spec: CrowdSpec) -> None:
        self.spec = spec
        self.poller = select.epoll()
        self.setting_up: dict[int, _Client] = {}
        self.held: dict[int, _Client] = {}
        self.errors: list[str] = []
        self.next_index = 0
        self.done = 0  # connections set up (held, or churned)

    def _greeting(self, client_id: str) -> bytes:
        spec = self.spec
        data = encode(p.Connect(client_id, spec.version, True, keep_alive=0), spec.version)
        if spec.topic_filter:
            topic_filter = spec.topic_filter.replace("{id}", client_id)
            data += encode(p.Subscribe(1, [p.Subscription(topic_filter, spec.qos)]), spec.version)
        return data

    def open_one(self) -> None:
        spec = self.spec
        client_id = f"{spec.prefix}-{self.next_index:06d}"
        self.next_index += 1
        sock = None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.connect((spec.host, spec.port))
            sock.sendall(self._greeting(client_id))
            sock.setblocking(False)
        except OSError as exc:  # EMFILE (out of file descriptors), refused
            self.errors.append(f"connect: {exc}")
            if sock is not None:
                sock.close()
            return
        client = _Client(sock, spec.version)
        client.subscribed = not spec.topic_filter
        self.setting_up[sock.fileno()] = client
        self.poller.register(sock.fileno(), select.EPOLLIN)

    def _fail(self, fd: int, client: _Client, error: str) -> None:
        self.errors.append(error)
        self.poller.unregister(fd)
        self.setting_up.pop(fd, None)
        self.held.pop(fd, None)
        client.sock.close()

    def set_up(self, target: int, hold: bool, deadline: float, ctl: Control) -> None:
        """Bring ``target`` more connections to CONNACK + SUBACK; hold them or close them."""
        last = self.next_index + target  # one attempt each: a failed one is counted, not retried
        while time.monotonic() < deadline:
            while len(self.setting_up) < self.spec.in_flight and self.next_index < last:
                self.open_one()
            if not self.setting_up:
                break
            for fd, _ in self.poller.poll(0.5):
                client = self.setting_up.get(fd)
                if client is None:
                    continue
                try:
                    data = client.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._fail(fd, client, f"recv: {exc}")
                    continue
                if not data:
                    self._fail(fd, client, "closed before CONNACK/SUBACK")
                    continue
                error = self._welcome(client, data)
                if error:
                    self._fail(fd, client, error)
                elif client.welcomed and client.subscribed:
                    del self.setting_up[fd]
                    self.done += 1
                    if hold:
                        self.held[fd] = client
                    else:
                        self.poller.unregister(fd)
                        try:
                            client.sock.send(DISCONNECT)
                        except OSError:
                            pass
                        client.sock.close()
                    ctl.sent[self.spec.slot] = self.done  # progress; received counts deliveries

    @staticmethod
    def _welcome(client: _Client, data: bytes) -> str:
        try:
            packets = client.parser.feed(data)
        except Exception as exc:
            return f"malformed reply: {exc}"
        for packet in packets:
            if isinstance(packet, p.Connack):
                if packet.reason_code:
                    return f"CONNACK refused: {packet.reason_code:#x}"
                client.welcomed = True
            elif isinstance(packet, p.Suback):
                if any(code >= 0x80 for code in packet.reason_codes):
                    return f"SUBACK refused: {packet.reason_codes}"
                client.subscribed = True
            else:
                return f"unexpected {type(packet).__name__} while setting up"
        return ""

    def listen(self, ctl: Control) -> int:
        """Until EXIT: count deliveries on the held connections, PUBACK QoS 1, stamp the latest."""
        slot, version = self.spec.slot, self.spec.version
        received = 0
        while ctl.state.value < EXIT:
            for fd, _ in self.poller.poll(0.05):
                client = self.held.get(fd)
                if client is None:
                    continue
                try:
                    data = client.sock.recv(65536)
                except BlockingIOError:
                    continue
                now = time.monotonic_ns()
                if not data:
                    raise ConnectionError(f"{self.spec.prefix}: the broker closed a held connection")
                got = 0
                for packet in client.parser.feed(data):
                    if isinstance(packet, p.Publish):
                        got += 1
                        if packet.qos == 1 and packet.packet_id is not None:
                            client.sock.sendall(encode(p.Puback(packet.packet_id), version))
                if got:
                    received += got
                    ctl.marks[slot] = now  # before the count, so a reader who sees the count sees the mark
                    ctl.received[slot] = received
        return received

    def close(self) -> None:
        for client in [*self.held.values(), *self.setting_up.values()]:
            client.sock.close()
        self.poller.close()


def _crowd(spec: CrowdSpec, ctl: Control) -> dict[str, Any]:
    _setup(spec.cpus, spec.count + spec.in_flight + 256)
    crowd = _Crowd(spec)
    result: dict[str, Any]
    ctl.pipe.send(("ready", None))
    _wait_state(ctl, RUN)
    try:
        started = time.monotonic()
        if spec.churn:
            crowd.set_up(spec.warmup, False, started + spec.timeout, ctl)
            ctl.pipe.send(("warm", {"cycles": crowd.done, "errors": len(crowd.errors)}))
            _wait_state(ctl, MEASURE)
            started = time.monotonic()
            warm, warm_errors = crowd.done, len(crowd.errors)
            crowd.set_up(spec.churn, False, started + spec.timeout, ctl)
            result = {"cycles": crowd.done - warm, "errors": len(crowd.errors) - warm_errors}
        else:
            crowd.set_up(spec.count, True, started + spec.timeout, ctl)
            result = {"connected": len(crowd.held), "errors": len(crowd.errors)}
        result["seconds"] = time.monotonic() - started
        result["error_samples"] = sorted(set(crowd.errors))[:5]
        ctl.pipe.send(("connected", result))
        result["received"] = crowd.listen(ctl)
    finally:
        crowd.close()
    return result


def run_crowd(spec: CrowdSpec, ctl: Control) -> None:
    """Process entry point: hold (or churn) ``count`` connections; count deliveries until EXIT."""
    _report(_crowd, spec, ctl)
