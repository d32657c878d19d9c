"""Prometheus metrics of the services beside the broker: external broker connections and their
bridges, device presence, and the realtime transports (Socket.IO, long polling).

Like ``BrokerCollector``, read at scrape time from the services' own counters and sizes, so the
services pay nothing per message for being measured. A service that is off yields no samples (the
families are still described, so a dashboard shows "no data" rather than an unknown metric).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .wiring import ApiServices

__all__ = ["ServicesCollector"]


class ServicesCollector(Collector):
    def __init__(self, services: ApiServices, app: FastAPI) -> None:
        self.services = services
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._bridges()
        yield from self._presence()
        yield from self._realtime()

    def _bridges(self) -> Iterator[Metric]:
        labels = ["connection"]
        connected = GaugeMetricFamily(
            "wrenmq_bridge_connected", "1 while the connection to an external broker is up, else 0.", labels=labels
        )
        messages_in = CounterMetricFamily(
            "wrenmq_bridge_messages_in", "Messages received from the external broker and published here.", labels=labels
        )
        messages_out = CounterMetricFamily(
            "wrenmq_bridge_messages_out",
            "Messages sent to the external broker (QoS 1/2: acknowledged by it).",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "wrenmq_bridge_queued_messages", "Messages waiting (durably) for the external broker.", labels=labels
        )
        dropped = CounterMetricFamily(
            "wrenmq_bridge_dropped",
            "Bridged messages dropped because the connection's queue (queue_size) was full.",
            labels=labels,
        )
        refused = CounterMetricFamily(
            "wrenmq_bridge_refused", "Bridged messages the external broker (or this one) refused.", labels=labels
        )
        service = self.services.connections
        for name, connection in sorted(service.connections.items()) if service is not None else ():
            connected.add_metric([name], 1 if connection.connected else 0)
            messages_in.add_metric([name], connection.messages_in)
            messages_out.add_metric([name], connection.messages_out)
            queued.add_metric([name], len(connection.outbox))
            dropped.add_metric([name], connection.dropped)
            refused.add_metric([name], connection.refused)
        yield from (connected, messages_in, messages_out, queued, dropped, refused)

    def _presence(self) -> Iterator[Metric]:
        devices = GaugeMetricFamily(
            "wrenmq_presence_devices", "Devices in the presence registry, online or offline.", labels=["state"]
        )
        presence = self.services.presence
        if presence is not None:
            online = sum(1 for entry in presence.devices.values() if entry.get("online"))
            devices.add_metric(["online"], online)
            devices.add_metric(["offline"], len(presence.devices) - online)
        yield devices

    def _realtime(self) -> Iterator[Metric]:
        clients = GaugeMetricFamily(
            "wrenmq_realtime_clients", "Realtime clients connected now, by transport.", labels=["transport"]
        )
        users = GaugeMetricFamily(
            "wrenmq_realtime_presence_users", "Application users present (realtime presence), over any transport."
        )
        journal = GaugeMetricFamily(
            "wrenmq_realtime_journal_messages", "Messages in the realtime journal, for clients that resume."
        )
        dropped = CounterMetricFamily(
            "wrenmq_realtime_messages_dropped",
            "Messages realtime clients lost: inbox full (slow reader) or a QoS 1 message never acknowledged.",
        )
        sent = CounterMetricFamily("wrenmq_realtime_socketio_messages_sent", "Messages sent to Socket.IO clients.")
        resent = CounterMetricFamily(
            "wrenmq_realtime_socketio_messages_resent", "QoS 1 messages resent to Socket.IO clients that did not ack."
        )
        service = self.services.realtime
        bridge: Any = getattr(self.app.state, "socketio", None)
        if service is not None:
            socketio = sum(1 for key in service.subscribers if key.startswith("sio:"))
            polling = sum(1 for key in service.subscribers if key.startswith("poll:"))
            clients.add_metric(["socketio"], socketio)
            clients.add_metric(["polling"], polling)
            users.add_metric([], len(service.presence.attachments))
            journal.add_metric([], len(service.journal))
            dropped.add_metric([], service.messages_dropped)
        if bridge is not None:
            sent.add_metric([], bridge.messages_sent)
            resent.add_metric([], bridge.resent)
        yield from (clients, users, journal, dropped, sent, resent)
