"""The asyncio side of the simulator: one :class:`wrenmq.client.Client` per device, all in one event loop.

A :class:`SimulatedDevice` drives its :class:`~.state.DeviceState` from its client's messages and
publishes what the state says. The client reconnects by itself (with backoff) when the broker goes
away; after every connect the device replaces its stale will with a retained online message
(JSON, as every payload on its topics), subscribes, announces itself and publishes its retained
status. A drop-out (``drop_rate``) aborts the socket without DISCONNECT, so
the broker publishes the will, and comes back with a new client 2 to 10 seconds later. A
:class:`Fleet` starts the devices at a bounded rate and stops them all with DISCONNECT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..client import Client, ClientError, Message, Will
from .state import DeviceState, DeviceTopics, JsonObject

if TYPE_CHECKING:
    import ssl

    from ..client.connection import Connection

__all__ = ["Counters", "DeviceClient", "Fleet", "FleetSettings", "SimulatedDevice"]

log = logging.getLogger("wrenmq.simulate")

DROP_DOWNTIME = (2.0, 10.0)  # seconds a dropped-out device stays away


@dataclass(frozen=True, slots=True)
class FleetSettings:
    count: int = 10
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    version: int = 5
    tls: ssl.SSLContext | None = None
    prefix: str = "sim"
    device_type: str = "vr-headset"
    heartbeat: float = 15.0
    drop_rate: float = 0.0  # probability per device per minute of connected time
    ramp: float = 50.0  # devices started per second
    devices_root: str = "devices"
    sessions_root: str = "sessions"
    seed: int | None = None

    def device_id(self, index: int) -> str:
        return f"{self.prefix}-{index:0{max(4, len(str(self.count)))}d}"


@dataclass(slots=True)
class Counters:
    """Fleet-wide numbers for the status line."""

    commands_obeyed: int = 0
    commands_refused: int = 0  # unknown, malformed or missing parameters
    dropouts: int = 0


class DeviceClient(Client):
    """A :class:`Client` that tells its device when a connection ends, and can drop one abruptly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = asyncio.Event()

    def connection_closed(self, conn: Connection, reason: ClientError) -> None:
        current = self._conn is conn  # not a failed attempt's late close
        super().connection_closed(conn, reason)
        if current:
            self.lost.set()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a device that loses power or network does: the
        broker then publishes the will. (The client has no public abort; this is the one place that
        reaches for its connection.)"""
        conn = self._conn
        if conn is not None:
            conn.abort()


class SimulatedDevice:
    def __init__(self, index: int, settings: FleetSettings, counters: Counters) -> None:
        self.settings = settings
        self.counters = counters
        device_id = settings.device_id(index)
        seed = f"{settings.seed}:{device_id}" if settings.seed is not None else None
        self.rng = random.Random(seed)  # per device, so --seed is reproducible whatever the scheduling
        topics = DeviceTopics(device_id, settings.devices_root, settings.sessions_root)
        name = f"Simulated {settings.device_type} {index}"
        self.state = DeviceState(topics, settings.device_type, name, time.time())
        self.topics = topics
        self.client: DeviceClient | None = None
        self.away = False  # dropped out, and not back yet

    @property
    def device_id(self) -> str:
        return self.state.device_id

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    async def run(self) -> None:
        """Live until cancelled: connect, and after each drop-out, stay away a while and come back."""
        while True:
            client = self._new_client()
            self.client = client
            client.start()
            await self._live(client)  # returns at a drop-out
            self.counters.dropouts += 1
            self.away = True
            client.drop()
            await client.disconnect()  # the socket is gone already: this only closes the Client object
            downtime = self.rng.uniform(*DROP_DOWNTIME)
            log.info("%s dropped out; back in %.1fs", self.device_id, downtime)
            await asyncio.sleep(downtime)
            self.away = False

    async def stop(self) -> None:
        """Disconnect cleanly (DISCONNECT: the broker discards the will). Cancel :meth:`run` first."""
        if self.client is not None:
            await self.client.disconnect()

    def _new_client(self) -> DeviceClient:
        settings = self.settings
        return DeviceClient(
            settings.host,
            settings.port,
            client_id=self.device_id,
            version=settings.version,
            username=settings.username,
            password=settings.password,
            will=self._will(),
            tls=settings.tls,
            max_queued=100,
            queue_full="drop_oldest",
        )

    def _will(self) -> Will:
        payload = json.dumps(self.state.will(time.time()), separators=(",", ":")).encode()
        return Will(self.topics.lwt, payload, qos=1, retain=True)

    async def _live(self, client: DeviceClient) -> None:
        """Run one client's life; returns when the device drops out (never, with no drop rate)."""
        tasks = [
            asyncio.create_task(self._on_each_connect(client)),
            asyncio.create_task(self._obey(client)),
            asyncio.create_task(self._beat(client)),
        ]
        for task in tasks:
            task.add_done_callback(self._task_done)
        try:
            await self._until_drop(client)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: %r", self.device_id, task.exception(), exc_info=task.exception())

    async def _until_drop(self, client: DeviceClient) -> None:
        rate = self.settings.drop_rate
        if rate <= 0:
            await asyncio.Future()  # until cancelled
        # Drop-outs as a Poisson process over connected time, P(at least one in a minute) = rate.
        per_second = -math.log1p(-min(rate, 1 - 1e-9)) / 60
        while True:
            await client.wait_connected()
            await asyncio.sleep(self.rng.expovariate(per_second))
            if client.connected:
                return

    async def _on_each_connect(self, client: DeviceClient) -> None:
        """After each (re)connect: replace the stale will, subscribe, announce, publish the status."""
        while True:
            await client.wait_connected()
            client.lost.clear()
            if not client.connected:  # lost again before this task ran
                continue
            now = time.time()
            client.will = self._will()  # a fresher timestamp for the next connect's will
            try:
                await self._publish(client, self.topics.lwt, self.state.online(now))
                # Subscribe before announcing: whoever reacts to the announce may send a command at once.
                await client.subscribe([(topic, 1) for topic in self.state.subscriptions()])
                await self._publish(client, self.topics.announce, self.state.announce(now, __version__), retain=False)
                await self._publish(client, self.topics.status, self.state.status(time.time()))
            except ClientError as exc:
                log.info("%s: announcing failed (%s); again on the next connect", self.device_id, exc)
            await client.lost.wait()

    async def _obey(self, client: DeviceClient) -> None:
        async for message in client.messages():
            try:
                await self._command(client, message)
            except ClientError as exc:
                log.info("%s: answering a command failed: %s", self.device_id, exc)

    async def _command(self, client: DeviceClient, message: Message) -> None:
        reaction = self.state.handle(message.topic, message.payload, time.time())
        if reaction is None:
            return
        if reaction.warning:
            log.warning("%s", reaction.warning)
        if reaction.obeyed:
            self.counters.commands_obeyed += 1
        else:
            self.counters.commands_refused += 1
        if reaction.unsubscribe:
            await client.unsubscribe(reaction.unsubscribe)
        if reaction.subscribe:
            await client.subscribe([(topic, 1) for topic in reaction.subscribe])
        if reaction.status is not None:
            await self._publish(client, self.topics.status, reaction.status)
        await self._publish(client, self.topics.events, reaction.event, retain=False)

    async def _beat(self, client: DeviceClient) -> None:
        """Heartbeats at QoS 0; the first after a random fraction of the interval, so that a fleet
        started together does not beat in lockstep."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat
        due = loop.time() + self.rng.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += interval
            if client.connected:
                try:
                    await self._publish(client, self.topics.heartbeat, self.state.heartbeat(time.time()), 0, False)
                except ClientError:
                    pass  # a QoS 0 heartbeat lost with the connection: the next one will do

    async def _publish(
        self, client: Client, topic: str, payload: JsonObject, qos: int = 1, retain: bool = True
    ) -> None:
        await client.publish(topic, json.dumps(payload, separators=(",", ":")).encode(), qos, retain)


class Fleet:
    """All the devices: started at ``settings.ramp`` per second, stopped together with DISCONNECT."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.counters = Counters()
        self.devices = [SimulatedDevice(index, settings, self.counters) for index in range(1, settings.count + 1)]
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the devices in the background, ``ramp`` per second."""
        self._starting = asyncio.create_task(self._ramp())

    async def _ramp(self) -> None:
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        for number, device in enumerate(self.devices):
            delay = started_at + number / self.settings.ramp - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._tasks.append(asyncio.create_task(device.run(), name=device.device_id))

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(device.stop() for device in self.devices), return_exceptions=True)

    @property
    def started(self) -> int:
        return len(self._tasks)

    @property
    def connected(self) -> int:
        return sum(device.connected for device in self.devices)

    def last_error(self) -> str | None:
        """Why a started device that is not connected (and not away after a drop-out) is not: e.g.
        the broker is unreachable, or refuses the connection."""
        for device in self.devices:
            client = device.client
            if client is not None and not device.away and not client.connected and client.last_error is not None:
                return str(client.last_error)
        return None

    def status_line(self) -> str:
        counters = self.counters
        line = (
            f"{self.connected}/{len(self.devices)} devices connected, "
            f"{counters.commands_obeyed} commands obeyed, {counters.dropouts} drop-outs"
        )
        if counters.commands_refused:
            line += f", {counters.commands_refused} commands refused"
        away = sum(device.away for device in self.devices)
        if away:
            line += f", {away} away after a drop-out"
        if self.started < len(self.devices):
            line += f", {self.started} started"
        error = self.last_error()
        if error is not None:
            line += f"; not connected: {error} (retrying)"
        return line
