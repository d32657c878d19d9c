"""Running a command's coroutine: on uvloop where it is installed (a dependency everywhere but
Windows), else on asyncio's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["cancelling", "run"]


def run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def cancelling() -> bool:
    """Whether the running task is being cancelled: redis-py can turn a cancellation that lands
    inside a command into a connection error, and a loop that retries on those must stop instead."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
