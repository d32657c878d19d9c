"""Resource change events for applications that only emit them, to any MQTT broker::

    from wrenmq.events import ChangePublisher

    async with ChangePublisher() as events:  # MQTT_BROKER_URL, MQTT_TOPIC_PREFIX, ...
        await events.created("flow", "f1", {"label": "cam 1"})
        await events.updated("flow", "f1", {"label": "cam 2"}, previous={"label": "cam 1"})
        await events.deleted("flow", "f1", {"label": "cam 2"})

The events have the shape of the broker's change-event service (``/api/v1/resources``), built by
the same code (``wrenmq.services.change_events``), and go to ``<prefix>/all`` and
``<prefix>/<kind>/<id>``. ``seq`` counts per kind in this publisher (from 1 at each start): there
is no store behind it, so unlike the service's it does not survive a restart.

The application never waits for the broker: the methods return the event at once and the
publishing happens in the background (:meth:`ChangePublisher.flush` waits for it). When the
broker is down, events are queued up to ``max_queued`` (the oldest dropped past it, with a
warning) and sent in order once it is back (``offline="queue"``), or dropped with a warning
(``offline="drop"``). Disabled (``MQTT_ENABLED=false``), events are built and returned but not sent.

Environment (constructor arguments win): ``MQTT_ENABLED`` (true/false, default true),
``MQTT_BROKER_URL`` (``tcp://host:1883``, ``ssl://``, ``ws://``, ``wss://``, ``mqtt://``; default
``tcp://localhost:1883``; user and password may be in the URL), ``MQTT_TOPIC_PREFIX`` (default
``events``), ``MQTT_QOS`` (default 1), ``MQTT_RETAIN`` (default false), ``MQTT_OFFLINE`` (queue or
drop, default queue), ``MQTT_QUEUE_SIZE`` (events, default 1000), ``MQTT_CLIENT_ID``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .mqtt.properties import PropertyId
from .services.change_events import EventType, build_event, diff, encode_event, kind_problem, name_problem, topics

if TYPE_CHECKING:
    from types import TracebackType

    from .client import Client

__all__ = ["ChangePublisher"]

log = logging.getLogger("wrenmq.events")

OfflinePolicy = Literal["queue", "drop"]
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r}: use true or false")


def _env_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r}: must be {low} to {high}")
    return value


class ChangePublisher:
    """Publishes create/update/delete events through a :class:`wrenmq.client.Client`.

    ``client_options`` go to the client (e.g. ``backoff=(0.5, 30)``, ``version=4``, ``tls=ctx``).
    ``env`` replaces ``os.environ`` as the source of the ``MQTT_*`` settings.
    """

    def __init__(
        self,
        broker_url: str | None = None,
        *,
        enabled: bool | None = None,
        prefix: str | None = None,
        qos: int | None = None,
        retain: bool | None = None,
        offline: OfflinePolicy | None = None,
        max_queued: int | None = None,
        client_id: str | None = None,
        env: Mapping[str, str] | None = None,
        **client_options: Any,
    ) -> None:
        env = os.environ if env is None else env
        self.enabled = enabled if enabled is not None else _env_bool(env, "MQTT_ENABLED", True)
        self.broker_url = broker_url or env.get("MQTT_BROKER_URL") or "tcp://localhost:1883"
        self.prefix = prefix if prefix is not None else env.get("MQTT_TOPIC_PREFIX", "events")
        if not self.prefix or any(bad in self.prefix for bad in ("+", "#", "\x00")):
            raise ValueError(f"MQTT_TOPIC_PREFIX={self.prefix!r}: a topic name (not empty, no + or #)")
        self.qos = qos if qos is not None else _env_int(env, "MQTT_QOS", 1, 0, 2)
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos!r}")
        self.retain = retain if retain is not None else _env_bool(env, "MQTT_RETAIN", False)
        policy = offline or env.get("MQTT_OFFLINE", "queue")
        if policy not in ("queue", "drop"):
            raise ValueError(f"MQTT_OFFLINE={policy!r}: use queue or drop")
        self.offline: OfflinePolicy = policy  # type: ignore[assignment]
        self.max_queued = max_queued if max_queued is not None else _env_int(env, "MQTT_QUEUE_SIZE", 1000, 1, 10**7)
        if self.max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.client_id = client_id or env.get("MQTT_CLIENT_ID")
        self.client_options = client_options
        self.client: Client | None = None
        self.published = 0  # messages the broker acknowledged (QoS 0: sent)
        self.dropped = 0  # messages not sent: offline with offline="drop", or pushed out of a full queue
        self._seq: dict[str, int] = {}
        self._pending: set[asyncio.Task[None]] = set()
        if self.enabled:
            from .client.url import parse_url

            parse_url(self.broker_url)  # a bad URL fails here, naming it, not in the background

    async def start(self) -> None:
        """Connect in the background (retrying with backoff); returns at once."""
        if not self.enabled or self.client is not None:
            return
        from .client import Client

        options: dict[str, Any] = {
            "max_queued": 2 * self.max_queued,  # two messages (topics) per event
            "queue_full": "drop_oldest",
            "reconnect": True,
            **self.client_options,
        }
        if self.client_id:
            options["client_id"] = self.client_id
        self.client = Client.from_url(self.broker_url, **options)
        self.client.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` seconds for events still being sent, then disconnect."""
        await self.flush(timeout)
        client, self.client = self.client, None
        if client is not None:
            await client.disconnect()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event so far is sent (acknowledged at QoS 1/2); False on timeout."""
        if not self._pending:
            return True
        _done, pending = await asyncio.wait(set(self._pending), timeout=timeout)
        return not pending

    async def __aenter__(self) -> ChangePublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def queued(self) -> int:
        """Messages waiting for the broker (two per event)."""
        return self.client.queued if self.client is not None else 0

    # --- events ----------------------------------------------------------------------------------

    async def created(self, kind: str, id: str, resource: dict[str, Any]) -> dict[str, Any]:
        return self._emit("created", kind, id, resource, diff(None, resource))

    async def updated(
        self,
        kind: str,
        id: str,
        resource: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """With ``previous``, the diff names each changed field, and an update that changes nothing
        publishes nothing (returns None); without it the diff is empty (the old values are unknown)."""
        if previous is not None and previous == resource:
            return None
        changes = diff(previous, resource) if previous is not None else {}
        return self._emit("updated", kind, id, resource, changes)

    async def deleted(self, kind: str, id: str, resource: dict[str, Any]) -> dict[str, Any]:
        """``resource`` is the last state of what was deleted."""
        return self._emit("deleted", kind, id, resource, diff(resource, None))

    def _emit(
        self, event: EventType, kind: str, resource_id: str, resource: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any]:
        for name, value, check in (("kind", kind, kind_problem), ("id", resource_id, name_problem)):
            problem = check(value)
            if problem:
                raise ValueError(f"{name} {value!r} {problem}")
        seq = self._seq.get(kind, 0) + 1
        self._seq[kind] = seq
        built = build_event(event, kind, resource_id, resource, changes, seq)
        client = self.client
        if not self.enabled:
            log.debug("MQTT disabled: %s event %s/%s not sent", event, kind, resource_id)
            return built
        if client is None:
            raise RuntimeError("ChangePublisher.start() first (or use it with async with)")
        if not client.connected and self.offline == "drop":
            self.dropped += 2
            log.warning("broker %s unreachable: %s event %s/%s dropped", self.broker_url, event, kind, resource_id)
            return built
        payload = encode_event(built)
        loop = asyncio.get_running_loop()
        for topic in topics(self.prefix, kind, resource_id):
            task = loop.create_task(self._publish(client, topic, payload))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return built

    async def _publish(self, client: Client, topic: str, payload: bytes) -> None:
        from .client import ClientError, MessageDropped, QueueFull

        try:
            await client.publish(topic, payload, self.qos, self.retain, {PropertyId.CONTENT_TYPE: "application/json"})
        except (MessageDropped, QueueFull):
            self.dropped += 1
            log.warning("event queue full (%d events): an event for %s was dropped", self.max_queued, topic)
        except ClientError as exc:
            self.dropped += 1
            log.warning("event for %s not sent: %s", topic, exc)
        else:
            self.published += 1
