"""A TCP proxy between an MQTT client and a broker, on the test's event loop, that can misbehave.

It forwards bytes both ways and decodes them with wrenmq's codec into :attr:`MqttProxy.packets`
(``("c2s" | "s2c", packet, connection number)``), so a test can check the exact flow a client sent.
And it plays the network's failures, which no real broker will do on request:

- ``drop_after(direction, predicate)``: once a packet matching ``predicate`` has been forwarded in
  one direction, everything after it in the *other* direction is swallowed (e.g. forward the
  client's PUBLISH, then lose the broker's PUBACK); swallowed packets are still recorded as
  ``"c2s-dropped"`` / ``"s2c-dropped"``;
- ``freeze()``: open connections go silent both ways without closing (a dead network path);
- ``sever()``: abort every open connection, both sides (a killed socket);
- ``refuse = True``: new connections are closed at once (a broker that is down).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode

__all__ = ["MqttProxy"]

Predicate = Callable[[p.AnyPacket], bool]


class _Link:
    """One proxied connection: client socket <-> broker socket."""

    def __init__(self, proxy: MqttProxy, number: int, client: asyncio.StreamWriter, broker: asyncio.StreamWriter):
        self.proxy = proxy
        self.number = number
        self.writers = {"c2s": broker, "s2c": client}
        self.parsers = {"c2s": Parser(), "s2c": Parser()}
        self.dropping = {"c2s": False, "s2c": False}
        self.frozen = False

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.transport.abort()

    async def pump(self, direction: str, reader: asyncio.StreamReader) -> None:
        """Forward one direction packet by packet (re-encoded), so a drop can start between two packets."""
        other = "s2c" if direction == "c2s" else "c2s"
        writer = self.writers[direction]
        parser = self.parsers[direction]
        try:
            while data := await reader.read(65536):
                if self.frozen:
                    continue
                if direction == "s2c":  # the broker speaks the level the client's CONNECT named
                    parser.protocol_level = self.parsers["c2s"].protocol_level
                if parser.error is not None:  # not MQTT any more: pass it on as it is
                    writer.write(data)
                    continue
                try:
                    packets = parser.feed(data)
                except Exception:
                    writer.write(data)
                    continue
                version = self.parsers["c2s"].protocol_level or 4
                out = bytearray()
                for packet in packets:
                    if self.dropping[direction]:
                        self.proxy.packets.append((f"{direction}-dropped", packet, self.number))
                        continue
                    out += encode(packet, version)
                    self.proxy.packets.append((direction, packet, self.number))
                    rule = self.proxy._rules.get(direction)
                    if rule is not None and rule(packet):
                        del self.proxy._rules[direction]
                        self.dropping[other] = True
                writer.write(bytes(out))
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.frozen:  # a frozen path passes on nothing, not even a close
                with contextlib.suppress(Exception):
                    writer.close()


class MqttProxy:
    def __init__(self, broker_port: int, broker_host: str = "127.0.0.1") -> None:
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.port = 0
        self.refuse = False
        self.packets: list[tuple[str, Any, int]] = []
        self.connections = 0
        self._links: list[_Link] = []
        self._rules: dict[str, Predicate] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> MqttProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.sever()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> MqttProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- failures --------------------------------------------------------------------------------

    def drop_after(self, direction: str, predicate: Predicate) -> None:
        """After the next packet going ``direction`` that matches, swallow the other direction."""
        self._rules[direction] = predicate

    def freeze(self) -> None:
        for link in self._links:
            link.frozen = True

    def sever(self) -> None:
        for link in self._links:
            link.abort()
        self._links.clear()

    # --- what was seen ---------------------------------------------------------------------------

    def seen(self, direction: str, kind: type, connection: int | None = None) -> list[Any]:
        return [
            packet
            for d, packet, number in self.packets
            if d == direction and isinstance(packet, kind) and (connection is None or number == connection)
        ]

    async def wait_for(
        self, direction: str, kind: type, count: int = 1, connection: int | None = None, timeout: float = 5.0
    ) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(found := self.seen(direction, kind, connection)) < count:
                await asyncio.sleep(0.01)
        return found

    # --- plumbing --------------------------------------------------------------------------------

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            client_writer.transport.abort()
            return
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.broker_host, self.broker_port)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        link = _Link(self, self.connections, client_writer, broker_writer)
        self._links.append(link)
        for direction, reader in (("c2s", client_reader), ("s2c", broker_reader)):
            task = asyncio.get_running_loop().create_task(link.pump(direction, reader))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
