"""The broker's policy: lifecycle, connections, sessions, routing, retained messages and wills."""

from .broker import Broker, Stats

__all__ = ["Broker", "Stats"]
