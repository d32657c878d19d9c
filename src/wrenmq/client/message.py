"""Received messages, and the streams that hand them to the application.

A :class:`MessageStream` is what ``client.messages()`` returns: an async iterator with its own
queue. Every stream whose filter matches a message gets it; messages that match no stream wait in
the client's bounded backlog until a stream that wants them is opened (so a retained message that
arrives right after SUBACK is not lost before the application starts iterating).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..mqtt.topics import parse_shared, topic_matches, valid_topic_filter
from .errors import Disconnected

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Message", "MessageStream"]


@dataclass(frozen=True, slots=True)
class Message:
    """One PUBLISH received from the broker."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: dict[int, Any] = field(default_factory=dict)  # keyed by wrenmq.mqtt.PropertyId
    dup: bool = False
    packet_id: int | None = None

    def matches(self, topic_filter: str) -> bool:
        """Does this message's topic match ``topic_filter`` (``$share/<group>/`` is ignored)?"""
        return topic_matches(parse_shared(topic_filter)[1], self.topic)


class StreamOwner(Protocol):
    """What a stream tells the client that feeds it (``Client``): read from, and closed."""

    def _stream_drained(self, stream: MessageStream) -> None: ...

    def _remove_stream(self, stream: MessageStream) -> None: ...


class MessageStream:
    """An async iterator over received messages, optionally only those matching ``topic_filter``.

    It ends (``StopAsyncIteration``) when the client is closed, and raises the client's final
    error (e.g. :class:`~wrenmq.client.Disconnected`) when the connection is lost for good. A stream
    whose queue passes the client's ``max_buffered`` pauses reading from the socket until it is
    read from again, so hold a stream only while you read it (or close it: ``async with``, or
    :meth:`close`). A stream nobody references any more is dropped automatically.
    """

    def __init__(self, client: StreamOwner, topic_filter: str | None = None) -> None:
        if topic_filter is not None:
            inner = parse_shared(topic_filter)[1]
            if not valid_topic_filter(inner):
                raise ValueError(f"invalid topic filter {topic_filter!r} [MQTT-4.7.1-1]")
            topic_filter = inner
        self.topic_filter = topic_filter
        self._client = client
        self._queue: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._error: BaseException | None = None

    def accepts(self, topic: str) -> bool:
        return self.topic_filter is None or topic_matches(self.topic_filter, topic)

    def __len__(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        while not self._queue:
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        self._client._stream_drained(self)
        return message

    async def get(self, timeout: float | None = None) -> Message:
        """The next message; ``TimeoutError`` after ``timeout`` seconds without one, and
        :class:`~wrenmq.client.Disconnected` (or the client's final error) once the client is closed."""
        async with asyncio.timeout(timeout):
            try:
                return await self.__anext__()
            except StopAsyncIteration:
                raise self._error or Disconnected("the client is closed") from None

    def close(self) -> None:
        """Stop receiving; messages already queued are discarded."""
        self._client._remove_stream(self)
        self._queue.clear()
        self.finish(None)

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- called by the client -------------------------------------------------------------------

    def put(self, message: Message) -> None:
        self._queue.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
