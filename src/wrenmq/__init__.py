"""wrenmq: an MQTT 3.1.1/5.0 broker and realtime-event platform."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .broker import Broker
    from .config import Config, load_config

__all__ = ["Broker", "Config", "__version__", "hot_path", "load_config"]


def hot_path() -> str:
    """Whether the per-message modules run compiled (mypyc) or as plain Python."""
    from .broker import connection

    return "compiled (mypyc)" if not connection.__file__ or not connection.__file__.endswith(".py") else "pure Python"


def __getattr__(name: str) -> Any:
    # Imported lazily: the pytest plugin imports wrenmq.config in every test run.
    if name == "Broker":
        from .broker import Broker

        return Broker
    if name in ("Config", "load_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)
