"""``GET /api/v1/broker/status``: is it running, which version, its listeners and its counters.
Also served at ``GET /broker/status`` for integrations written against that path."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import FastAPI

from .. import __version__, hot_path
from .models import BrokerCounts, BrokerStatus, ListenerInfo
from .routing import authenticated_router, v1_router

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade


def broker_status(broker: BrokerFacade) -> BrokerStatus:
    stats = broker.stats
    listeners = [
        ListenerInfo(
            name=found.name,
            type=found.type,
            url=found.url,
            connections=found.connections,
            connections_total=found.connections_total,
            listening=found.bound,
        )
        for found in broker.listeners
    ]
    now = broker.counts()
    counts = BrokerCounts(
        connections=now.connections,
        sessions=now.sessions,
        subscriptions=now.subscriptions,
        retained=now.retained,
        queued=now.queued,
        messages_received=stats.messages_received,
        messages_sent=stats.messages_sent,
        messages_dropped=stats.messages_dropped,
        messages_expired=stats.messages_expired,
        bytes_received=stats.bytes_received,
        bytes_sent=stats.bytes_sent,
        clients_total=stats.clients_total,
        auth_failures=stats.auth_failures,
        acl_denied=stats.acl_denied,
    )
    started = broker.started_at
    return BrokerStatus(
        running=broker.running,
        version=__version__,
        started_at=started,
        uptime=max(0.0, time.time() - started) if started else 0.0,
        hot_path=hot_path(),
        listeners=listeners,
        counts=counts,
    )


def install(app: FastAPI, broker: BrokerFacade) -> None:
    router = v1_router("broker")
    compat = authenticated_router("", "compatibility")
    summary = "Broker status: version, uptime, listeners and counters"

    @router.get("/broker/status", summary=summary)
    async def get_broker_status() -> BrokerStatus:
        return broker_status(broker)

    @compat.get("/broker/status", summary=summary + " (as at /api/v1/broker/status)")
    async def compat_broker_status() -> BrokerStatus:
        return broker_status(broker)

    app.include_router(router)
    app.include_router(compat)
