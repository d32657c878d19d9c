"""Prometheus metrics: ``GET /metrics`` in the text exposition format (needs an API key unless
``metrics_public`` is set).

The broker's own numbers are read when Prometheus scrapes, by ``BrokerCollector``: the publish hot
path keeps paying only the plain counter increments of ``broker.Stats``, and sums over sessions
(queued, in-flight) are taken at scrape time. What only the API sees, requests by route and status
and the event loop's lag, is kept in prometheus-client metrics. Everything lives in a registry of
the app's own, not prometheus-client's global one, so two brokers in one process do not mix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Security
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .deps import acting
from .problems import problem_responses
from .routing import BEARER
from .service_metrics import ServicesCollector

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade

__all__ = ["LAG_INTERVAL", "BrokerCollector", "LoopLagMonitor", "RequestMetrics", "install"]

LAG_INTERVAL = 0.5  # seconds between event-loop lag samples
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))
_PROTOCOLS = {3: "3.1", 4: "3.1.1", 5: "5.0"}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: FastAPI, broker: BrokerFacade) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(broker, app))
    registry.register(ServicesCollector(app.state.services, app))
    # process_*: resident and virtual memory, CPU seconds, open and maximum file descriptors, start
    # time (Linux: read from /proc at scrape time; elsewhere the collector yields nothing).
    ProcessCollector(registry=registry)
    requests = Counter(
        "wrenmq_api_requests",
        "HTTP API requests by method, route template and status (WebSocket: 101 accepted, else the refusal).",
        ["method", "route", "status"],
        registry=registry,
    )
    durations = Histogram(
        "wrenmq_api_request_duration_seconds",
        "Time to answer an HTTP API request, by method and route template (streams: how long they were open).",
        ["method", "route"],
        registry=registry,
    )
    app.add_middleware(RequestMetrics, requests=requests, durations=durations, routes=app.routes)
    lag = LoopLagMonitor(broker, registry)
    app.state.metrics_registry = registry
    app.state.on_stop.append(lag.stop)
    lag.start_if_running()

    public = broker.config.metrics.public

    @app.get(
        "/metrics",
        tags=["metrics"],
        summary="Prometheus metrics (text exposition format)",
        description="Served without a key (metrics_public = true)."
        if public
        else "Scrape with `authorization: {type: Bearer, credentials: <API key>}` in the scrape config.",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}, "description": "The metrics."},
            **({} if public else problem_responses(401)),
        },
        dependencies=[] if public else [Depends(acting), Security(BEARER)],
    )
    async def metrics() -> Response:
        # On the event loop, not in a thread: the collector walks broker state the loop changes.
        lag.start_if_running()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class BrokerCollector(Collector):
    """The broker's counters and sizes, read at scrape time."""

    def __init__(self, broker: BrokerFacade, app: FastAPI) -> None:
        self.broker = broker
        self.app = app

    def collect(self) -> Iterator[Metric]:
        broker = self.broker
        stats = broker.stats

        info = GaugeMetricFamily("wrenmq_build_info", "The wrenmq version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "wrenmq_start_time_seconds", "When the broker started (Unix time).", value=broker.started_at
        )

        # Connections: MQTT clients past CONNACK, and the network connections of each listener.
        connected = GaugeMetricFamily(
            "wrenmq_clients_connected",
            "MQTT clients connected now (CONNACK sent), by listener and protocol version.",
            labels=["listener", "protocol"],
        )
        counts: dict[tuple[str, str], int] = {
            (listener.name, name): 0 for listener in broker.listeners for name in _PROTOCOLS.values()
        }
        for (listener_name, version), count in broker.connections_by_listener().items():
            key = (listener_name, _protocol(version))
            counts[key] = counts.get(key, 0) + count
        for labels, count in counts.items():
            connected.add_metric(list(labels), count)
        yield connected
        connects = CounterMetricFamily(
            "wrenmq_client_connections",
            "MQTT clients accepted (CONNACK success) since start, by protocol version.",
            labels=["protocol"],
        )
        for level, name in _PROTOCOLS.items():
            connects.add_metric([name], stats.clients_by_version[level])
        yield connects
        sockets = GaugeMetricFamily(
            "wrenmq_listener_connections",
            "Network connections open now on each listener (before and after CONNECT).",
            labels=["listener", "type"],
        )
        accepted = CounterMetricFamily(
            "wrenmq_listener_accepted",
            "Network connections each listener has accepted since start.",
            labels=["listener", "type"],
        )
        for listener in broker.listeners:
            sockets.add_metric([listener.name, listener.type], listener.connections)
            accepted.add_metric([listener.name, listener.type], listener.connections_total)
        yield sockets
        yield accepted

        # Messages and bytes.
        received = CounterMetricFamily(
            "wrenmq_messages_received",
            "PUBLISH messages received from clients (and wills published), by QoS.",
            labels=["qos"],
        )
        sent = CounterMetricFamily("wrenmq_messages_sent", "PUBLISH messages sent to clients, by QoS.", labels=["qos"])
        for qos in range(3):
            received.add_metric([str(qos)], stats.messages_received_qos[qos])
            sent.add_metric([str(qos)], stats.messages_sent_qos[qos])
        yield received
        yield sent
        yield CounterMetricFamily(
            "wrenmq_received_bytes", "Bytes read from MQTT clients (all packets).", value=stats.bytes_received
        )
        yield CounterMetricFamily(
            "wrenmq_sent_bytes", "Bytes written to MQTT clients (all packets).", value=stats.bytes_sent
        )
        dropped = CounterMetricFamily(
            "wrenmq_messages_dropped",
            "Messages discarded, by cause: congested (QoS 0 to a client whose write buffer is full), denied "
            "(publish refused by ACL, hook or topic limits), queue_full (max_queued_messages or "
            "max_queued_bytes), too_large "
            "(over the client's Maximum Packet Size), expired (Message Expiry Interval passed while queued).",
            labels=["cause"],
        )
        dropped.add_metric(["congested"], stats.dropped_congested)
        dropped.add_metric(["denied"], stats.dropped_denied)
        dropped.add_metric(["queue_full"], stats.dropped_queue_full)
        dropped.add_metric(["too_large"], stats.dropped_too_large)
        dropped.add_metric(["expired"], stats.messages_expired)
        yield dropped
        yield CounterMetricFamily(
            "wrenmq_slow_consumers_disconnected",
            "Clients disconnected because they stopped reading (slow_consumer_timeout, max_write_buffer).",
            value=stats.slow_consumers_dropped,
        )

        # State: sizes taken now.
        now = broker.counts()
        queued, queued_bytes, inflight = now.queued, now.queued_bytes, now.inflight
        yield GaugeMetricFamily("wrenmq_retained_messages", "Retained messages stored.", value=now.retained)
        yield GaugeMetricFamily(
            "wrenmq_subscriptions",
            "Subscriptions (client and filter pairs, shared ones included).",
            value=now.subscriptions,
        )
        sessions = GaugeMetricFamily("wrenmq_sessions", "Sessions, by whether a client is connected.", labels=["state"])
        sessions.add_metric(["connected"], now.connections)
        sessions.add_metric(["disconnected"], now.sessions - now.connections)
        yield sessions
        yield GaugeMetricFamily("wrenmq_queued_messages", "QoS 1/2 messages waiting in session queues.", value=queued)
        yield GaugeMetricFamily(
            "wrenmq_queued_bytes", "Topic and payload bytes of the messages in session queues.", value=queued_bytes
        )
        yield GaugeMetricFamily(
            "wrenmq_inflight_messages", "QoS 1/2 messages sent and not yet acknowledged.", value=inflight
        )

        # Failures.
        yield CounterMetricFamily(
            "wrenmq_auth_failures", "Failed logins (bad credentials, anonymous refused).", value=stats.auth_failures
        )
        yield CounterMetricFamily(
            "wrenmq_acl_denials",
            "Publishes, subscriptions, wills and API streams the ACL refused.",
            value=stats.acl_denied,
        )
        yield CounterMetricFamily(
            "wrenmq_session_owner_conflicts",
            "CONNECTs naming a client id whose session is another user's (session discarded, or take-over refused).",
            value=stats.session_owner_conflicts,
        )
        yield CounterMetricFamily(
            "wrenmq_protocol_errors", "Connections closed for an MQTT protocol violation.", value=stats.protocol_errors
        )
        yield CounterMetricFamily(
            "wrenmq_internal_errors",
            "Unexpected errors while handling a packet (see the log).",
            value=stats.internal_errors,
        )
        yield CounterMetricFamily(
            "wrenmq_websocket_upgrades_refused",
            "Requests on a WebSocket listener answered with an HTTP error (malformed, wrong path, too large).",
            value=stats.websocket_upgrades_refused,
        )

        # API streams (streams.py), when that module is installed.
        hub: Any = getattr(self.app.state, "streams", None)
        if hub is not None:
            yield GaugeMetricFamily(
                "wrenmq_api_streams", "Open API message streams (SSE and WebSocket).", value=len(hub.streams)
            )
            yield CounterMetricFamily(
                "wrenmq_api_stream_messages", "Messages sent to API streams.", value=hub.messages_sent
            )
            yield CounterMetricFamily(
                "wrenmq_api_stream_dropped",
                "Messages API streams dropped because their reader was slower than the messages (stream_buffer).",
                value=hub.messages_dropped,
            )


def _protocol(level: int) -> str:
    return _PROTOCOLS.get(level, str(level))


class RequestMetrics:
    """ASGI middleware counting every request by route *template* (``/api/v1/clients/{client_id}``),
    not its path, so the number of label values stays bounded; unmatched paths count as "unmatched"."""

    def __init__(self, app: ASGIApp, requests: Counter, durations: Histogram, routes: list[BaseRoute]) -> None:
        self.app = app
        self.requests = requests
        self.durations = durations
        self.routes = routes  # the app's own, for the routes FastAPI does not name in the scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = 0
        started = time.perf_counter()
        path, root_path = scope["path"], scope.get("root_path", "")  # before a Mount changes root_path

        async def observe(message: Message) -> None:
            nonlocal status
            event = message["type"]
            if event in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif event == "websocket.accept":
                status = 101
            elif event == "websocket.close" and not status:
                status = 403  # closed before accepting: the server answers the upgrade with 403
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            method = scope.get("method", "GET") if kind == "http" else "GET"
            if method not in _METHODS:
                method = "other"
            route = scope.get("route")  # set by FastAPI's routes (APIRoute, APIWebSocketRoute)
            if route is None:  # a plain Starlette route or mount (openapi.json, docs assets), or none
                route = self._match({"type": kind, "path": path, "root_path": root_path, "method": method})
            template = _template(route)
            self.requests.labels(method, template, str(status or 500)).inc()
            self.durations.labels(method, template).observe(time.perf_counter() - started)

    def _match(self, scope: Scope) -> BaseRoute | None:
        for route in self.routes:
            plain = isinstance(route, Route | Mount) and not isinstance(route, APIRoute)
            if plain and route.matches(scope)[0] is not Match.NONE:
                return route
        return None


def _template(route: Any) -> str:
    if isinstance(route, Mount):
        return route.path + "/{path}"
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else "unmatched"


class LoopLagMonitor:
    """How late a timer due every ``LAG_INTERVAL`` seconds fires: time the event loop spent busy
    with something else (a blocking call, a burst of packets) while work was waiting."""

    def __init__(self, broker: BrokerFacade, registry: CollectorRegistry) -> None:
        self.broker = broker
        self.gauge = Gauge(
            "wrenmq_event_loop_lag_seconds",
            f"How late the last event-loop timer fired (sampled every {LAG_INTERVAL} s).",
            registry=registry,
        )
        self.histogram = Histogram(
            "wrenmq_event_loop_lag_distribution_seconds",
            f"How late event-loop timers fired (sampled every {LAG_INTERVAL} s).",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._stopped = False

    def start_if_running(self) -> None:
        """Start sampling, from the broker's loop once it runs (called again on every scrape)."""
        if self._handle is not None or self._stopped or not self.broker.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is self.broker.loop:
            self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + LAG_INTERVAL
        self._handle = loop.call_at(self._due, self._sample, loop)

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        lag = max(0.0, loop.time() - self._due)
        self.gauge.set(lag)
        self.histogram.observe(lag)
        self._schedule(loop)

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
