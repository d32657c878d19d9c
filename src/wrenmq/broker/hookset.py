"""The broker's side of the hook interface (``wrenmq.hooks``): registration and dispatch.

For every event the set keeps a list of the bound methods of the hooks that override it, so the
hot path asks ``if hooks.publish:`` (an empty list when no hook cares) and pays nothing more.
Compiled with the hot path; the ``Hook`` classes themselves are plain Python.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..hooks import PARTIAL, READ, AuthResult, Hook, Reject
from .message import Message

if TYPE_CHECKING:
    from .router import Match

log = logging.getLogger("wrenmq.hooks")

WANT_PUBLISH = 1  # HookSet.wants: some on_publish hook wants the topic
WANT_PUBLISHED = 2  # ... some on_published hook

_EVENTS = (
    "on_start",
    "on_stop",
    "on_connect_authenticate",
    "on_acl_check",
    "on_connect",
    "on_subscribe",
    "on_unsubscribe",
    "on_publish",
    "on_published",
    "on_message_delivered",
    "on_disconnect",
    "on_session_expired",
    "on_realtime_connect",
    "on_realtime_disconnect",
    "on_dropped",
)


class HookSet:
    def __init__(self) -> None:
        self.hooks: list[Any] = []
        self.start: list[Any] = []
        self.stop: list[Any] = []
        self.authenticate: list[Any] = []
        self.acl_check: list[Any] = []
        self.connect: list[Any] = []
        self.subscribe: list[Any] = []
        self.unsubscribe: list[Any] = []
        self.publish: list[Any] = []
        # The prefixes of every topic some publish hook wants (None: all topics), and each hook's.
        self.publish_prefixes: tuple[str, ...] | None = None
        self._publish_topics: list[tuple[str, ...] | None] = []
        self.published: list[Any] = []
        # The same for on_published (a hook's publish_topics serve both events).
        self.published_prefixes: tuple[str, ...] | None = None
        self._published_topics: list[tuple[str, ...] | None] = []
        self.delivered: list[Any] = []
        self.disconnect: list[Any] = []
        self.session_expired: list[Any] = []
        self.realtime_connect: list[Any] = []
        self.realtime_disconnect: list[Any] = []
        # Checked where the broker drops something (``if hooks.dropped:``), never per routed message.
        self.dropped: list[Any] = []
        # Counts the changes of the hooks: a topic's cached answer to ``wants`` holds while it stays.
        self.generation = 1

    def add(self, hook: Any, first: bool = False) -> None:
        """Register ``hook`` (a ``wrenmq.hooks.Hook``) after the others, or before them."""
        if not isinstance(hook, Hook):
            raise TypeError(f"{hook!r} is not a wrenmq.hooks.Hook")
        if first:
            self.hooks.insert(0, hook)
        else:
            self.hooks.append(hook)
        self._index()

    def remove(self, hook: Any) -> None:
        self.hooks.remove(hook)
        self._index()

    def refresh(self) -> None:
        """Ask every hook again which events it ``handles`` (its configuration changed), keeping
        the order they were added in."""
        self._index()

    def find(self, kind: type) -> list[Any]:
        """The registered hooks that are instances of ``kind``."""
        return [hook for hook in self.hooks if isinstance(hook, kind)]

    def _index(self) -> None:
        lists = [self._handlers(event) for event in _EVENTS]
        self.start, self.stop, self.authenticate, self.acl_check = lists[0], lists[1], lists[2], lists[3]
        self.connect, self.subscribe, self.unsubscribe, self.publish = lists[4], lists[5], lists[6], lists[7]
        self.published, self.delivered, self.disconnect, self.session_expired = lists[8:12]
        self.realtime_connect, self.realtime_disconnect, self.dropped = lists[12], lists[13], lists[14]
        self._publish_topics = [hook.publish_topics for hook in self.hooks if hook.handles("on_publish")]
        self.publish_prefixes = _prefixes(self._publish_topics)
        self._published_topics = [hook.publish_topics for hook in self.hooks if hook.handles("on_published")]
        self.published_prefixes = _prefixes(self._published_topics)
        self.generation += 1

    def _handlers(self, event: str) -> list[Any]:
        return [getattr(hook, event) for hook in self.hooks if hook.handles(event)]

    # -- dispatch: decisions ---------------------------------------------------------------------

    def run_authenticate(self, client: Any, packet: Any) -> Any:
        """The first decision (an ``AuthResult``), or None when no hook decides; or, when a hook
        answers with an awaitable (a check off the event loop), a future of that answer, the
        hooks after it asked in turn if it is None. A hook that fails denies: a broken credential
        store must not let everyone in."""
        return _authenticate_from(self.authenticate, 0, client, packet)

    def run_acl_check(self, client: Any, topic: str, access: int) -> bool:
        """True unless a hook answers False (or PARTIAL: not all of it) first; a hook that fails denies."""
        for handler in self.acl_check:
            try:
                result = handler(client, topic, access)
            except Exception:
                log.exception("ACL hook %r failed; denying", handler)
                return False
            if result is not None:
                return result is True or (result != PARTIAL and bool(result))
        return True

    def run_read_check(self, client: Any, topic_filter: str) -> int:
        """A subscription's READ check: 1 (all of it), PARTIAL (some topics under it: check each
        message) or 0 (none); a hook that fails denies."""
        for handler in self.acl_check:
            try:
                result = handler(client, topic_filter, READ)
            except Exception:
                log.exception("ACL hook %r failed; denying", handler)
                return 0
            if result is not None:
                if result is not True and result == PARTIAL:
                    return PARTIAL
                return 1 if result else 0
        return 1

    def run_publish(self, client: Any, message: Message) -> Message:
        """Each hook may replace the message; ``Reject`` propagates to the caller."""
        for handler, topics in zip(self.publish, self._publish_topics, strict=True):
            if topics is not None and not message.topic.startswith(topics):
                continue
            try:
                replaced = handler(client, message)
            except Reject:
                raise
            except Exception:
                log.exception("publish hook %r failed; message passed on unchanged", handler)
                continue
            if replaced is not None:
                message = replaced
        return message

    def wants(self, match: Match) -> int:
        """Which hooks want the messages of ``match``'s topic: ``WANT_PUBLISH`` (some ``on_publish``
        hook), ``WANT_PUBLISHED`` (some ``on_published`` hook). Worked out once per topic and kept
        on the router's cached match until the hooks change, so a routed message pays two
        attribute reads, not a prefix test per event."""
        if match.hooks_seen != self.generation:
            topic = match.topic
            wanted = 0
            prefixes = self.publish_prefixes
            if self.publish and (prefixes is None or topic.startswith(prefixes)):
                wanted = WANT_PUBLISH
            prefixes = self.published_prefixes
            if self.published and (prefixes is None or topic.startswith(prefixes)):
                wanted |= WANT_PUBLISHED
            match.hook_wants = wanted
            match.hooks_seen = self.generation
        return match.hook_wants

    def wants_published(self, topic: str) -> bool:
        """Whether some ``on_published`` hook wants ``topic`` (one ``str.startswith`` when the
        hooks name their topics)."""
        prefixes = self.published_prefixes
        return bool(self.published) and (prefixes is None or topic.startswith(prefixes))

    def run_published(self, client: Any, message: Message, matched: int) -> None:
        """The ``on_published`` hooks that want the message's topic; one that fails is logged."""
        for handler, topics in zip(self.published, self._published_topics, strict=True):
            if topics is not None and not message.topic.startswith(topics):
                continue
            try:
                handler(client, message, matched)
            except Exception:
                log.exception("hook %r failed", handler)

    # -- dispatch: notifications -----------------------------------------------------------------

    def notify(self, handlers: list[Any], *args: Any) -> None:
        for handler in handlers:
            try:
                handler(*args)
            except Exception:
                log.exception("hook %r failed", handler)


def _prefixes(wanted: list[tuple[str, ...] | None]) -> tuple[str, ...] | None:
    """Every prefix the hooks want, or None when one of them wants every topic."""
    found: list[str] = []
    for topics in wanted:
        if topics is None:
            return None
        found.extend(topics)
    return tuple(found)


def _authenticate_from(handlers: list[Any], start: int, client: Any, packet: Any) -> Any:
    for index in range(start, len(handlers)):
        handler = handlers[index]
        try:
            result = handler(client, packet)
        except Exception:
            log.exception("authentication hook %r failed; refusing the client", handler)
            return AuthResult.deny(0x80, "authentication failed")
        if result is None:
            continue
        if isinstance(result, AuthResult):
            return result
        return asyncio.ensure_future(_authenticate_later(result, handler, handlers, index + 1, client, packet))
    return None


async def _authenticate_later(
    pending: Any, handler: Any, handlers: list[Any], start: int, client: Any, packet: Any
) -> Any:
    """Wait for a hook's answer, then (if it had none) ask the hooks after it, as above."""
    try:
        result = await pending
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("authentication hook %r failed; refusing the client", handler)
        return AuthResult.deny(0x80, "authentication failed")
    if result is not None:
        return result
    found = _authenticate_from(handlers, start, client, packet)
    if found is None or isinstance(found, AuthResult):
        return found
    return await found
