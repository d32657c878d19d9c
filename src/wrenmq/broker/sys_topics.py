"""``$SYS/broker/...`` topics: broker statistics published every ``sys_interval`` seconds, retained.

The names are Mosquitto's wherever the meaning carries over, so dashboards made for Mosquitto read
them unchanged. The ``load/.../{1min,5min,15min}`` values are computed as Mosquitto computes them:
a rate per minute over the last interval, smoothed exponentially with a 1, 5 or 15 minute time
constant, printed with two decimals. As in Mosquitto, ``messages/...`` count MQTT control packets
of every type (CONNECT, PINGREQ, PUBACK, ...), ``publish/messages/...`` PUBLISHes only (received:
from clients, wills and in-process publications); ``load/connections`` counts CONNECTs accepted, ``load/sockets``
every socket a listener accepted. ``publish/bytes/...`` are PUBLISH payload bytes, where ``bytes/...``
count every byte of every packet. ``heap/current`` and ``heap/maximum`` are the process's
resident memory now and at its peak (Python has no heap of its own to report), in bytes.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import sys
import time
from typing import TYPE_CHECKING

from .. import __version__
from .message import Message

if TYPE_CHECKING:
    from .broker import Broker

LOAD_WINDOWS = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory now (Linux: /proc/self/statm); elsewhere the peak, the best there is."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes; Linux: KiB


class SysTopics:
    def __init__(self, broker: Broker, interval: float) -> None:
        self.broker = broker
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._last: dict[str, bytes] = {}
        self.clients_maximum = 0  # the most clients seen connected at once, at an update
        self._counted_at = 0.0  # monotonic time of the last load update
        self._counts: dict[str, int] = {}  # the counters behind each load, at that time
        self._loads: dict[str, float] = {}  # "<name>/<window>" -> smoothed per-minute rate

    def start(self) -> None:
        self.publish_now()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def packets(self) -> tuple[int, int]:
        """MQTT control packets received and sent, of every type (Mosquitto's ``messages/received``
        and ``messages/sent``, counted in packet_mosq.c for each packet read or written): those of
        closed connections and of every live one; sent PUBLISHes are counted by the broker."""
        stats = self.broker.stats
        received, sent = stats.packets_in_closed, stats.packets_out_closed + stats.messages_sent
        for conn in self.broker.connections:
            received += conn.protocol.packets_in
            sent += conn.protocol.packets_out
        return received, sent

    def counters(self) -> dict[str, int]:
        """The running totals whose rates the load topics give, by their name under ``load/``."""
        stats = self.broker.stats
        received, sent = self.packets()
        return {
            "messages/received": received,
            "messages/sent": sent,
            "publish/received": stats.messages_received,
            "publish/sent": stats.messages_sent,
            "publish/dropped": self.limit_drops(),
            "bytes/received": stats.bytes_received,
            "bytes/sent": stats.bytes_sent,
            "connections": stats.clients_total,
            "sockets": stats.sockets_total,
        }

    def limit_drops(self) -> int:
        """Messages dropped by a limit (queue full, congested, too large), not by an ACL: Mosquitto's
        ``publish/messages/dropped``."""
        stats = self.broker.stats
        return stats.dropped_queue_full + stats.dropped_congested + stats.dropped_too_large

    def values(self) -> dict[str, str]:
        broker = self.broker
        stats = broker.stats
        connected = sum(1 for c in broker.connections if c.connected)
        disconnected = sum(1 for s in broker.sessions.values() if s.connection is None)
        self.clients_maximum = max(self.clients_maximum, connected)
        packets_received, packets_sent = self.packets()
        stored = len(broker.retained)
        stored_bytes = broker.retained.bytes
        for session in broker.sessions.values():
            stored += len(session.queue) + len(session.inflight_out) + len(session.resend)
            stored_bytes += session.queued_bytes
        found = {
            "version": f"wrenmq {__version__}",
            "uptime": f"{int(time.time() - broker.started_at)} seconds",
            "clients/connected": str(connected),
            "clients/total": str(len(broker.sessions)),
            "clients/disconnected": str(disconnected),
            "clients/active": str(connected),  # Mosquitto's older names for the two above
            "clients/inactive": str(disconnected),
            "clients/maximum": str(self.clients_maximum),
            "clients/expired": str(stats.sessions_expired),
            "messages/received": str(packets_received),
            "messages/sent": str(packets_sent),
            "messages/dropped": str(stats.messages_dropped),
            "messages/stored": str(stored),
            "store/messages/count": str(stored),
            "store/messages/bytes": str(stored_bytes),
            "publish/messages/received": str(stats.messages_received),
            "publish/messages/sent": str(stats.messages_sent),
            "publish/messages/dropped": str(self.limit_drops()),
            "publish/bytes/received": str(stats.publish_bytes_received),
            "publish/bytes/sent": str(stats.publish_bytes_sent),
            "bytes/received": str(stats.bytes_received),
            "bytes/sent": str(stats.bytes_sent),
            "heap/current": str(rss_bytes()),
            "heap/maximum": str(peak_rss_bytes()),
            "subscriptions/count": str(broker.router.count),
            "shared_subscriptions/count": str(broker.router.shared_count),
            "retained messages/count": str(len(broker.retained)),
            "sessions/owner conflicts": str(stats.session_owner_conflicts),
        }
        found.update(self._load_values())
        return found

    def _load_values(self) -> dict[str, str]:
        """Mosquitto's load averages (sys_tree.c, calc_load): per-minute rates since the last
        update, each window's value moved towards it by 1 - exp(-elapsed / window)."""
        now = time.monotonic()
        counts = self.counters()
        elapsed = now - self._counted_at
        first = not self._counts
        if not first and elapsed <= 0:
            return {}
        found: dict[str, str] = {}
        for name, total in counts.items():
            per_minute = 0.0 if first else (total - self._counts[name]) * 60.0 / elapsed
            for window, seconds in LOAD_WINDOWS:
                key = f"load/{name}/{window}"
                current = self._loads.get(key, 0.0)
                if not first:
                    current = per_minute + math.exp(-elapsed / seconds) * (current - per_minute)
                self._loads[key] = current
                found[key] = f"{current:.2f}"
        self._counts, self._counted_at = counts, now
        return found

    def publish_now(self) -> None:
        """Publish every value that changed since the last round, retained, then re-arm."""
        broker = self.broker
        for key, value in self.values().items():
            payload = value.encode()
            if self._last.get(key) == payload:
                continue
            self._last[key] = payload
            broker.route(Message(f"$SYS/broker/{key}", payload, 0, True))
        self._handle = broker.loop.call_later(self.interval, self.publish_now)
