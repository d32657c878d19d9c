"""The broker's policy: lifecycle, connections, sessions, routing, retained messages and wills."""

from .broker import Broker, Stats, tune_gc

__all__ = ["Broker", "Stats", "tune_gc"]
