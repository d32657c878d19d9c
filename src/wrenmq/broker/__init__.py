"""The broker's policy: lifecycle, connections, sessions, routing, retained messages and wills."""

from .broker import Broker, tune_gc
from .stats import Stats

__all__ = ["Broker", "Stats", "tune_gc"]
