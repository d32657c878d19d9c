"""Subscriptions and topic matching: a trie of topic levels with a per-topic match cache.

``Router.match(topic)`` is on the hot path of every PUBLISH. The trie walk is done once per
distinct topic and cached until the subscriptions change, so steady traffic on a stable set of
subscriptions costs one dict lookup per message.

Two kinds of subscription live in the trie: a client session's (:class:`Subscriber`) and an
in-process one (:class:`LocalSubscriber`: a realtime reader, an API stream, a bridge out), which
has a handler instead of a session (Mochi MQTT's inline subscriptions). One match per message
finds both, so services do no topic matching of their own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..mqtt.topics import SHARE_PREFIX, parse_shared, valid_topic_filter
from .message import Message

if TYPE_CHECKING:
    from mypy_extensions import i32  # compiled: a 4-byte field (annotations only: no run-time import)

    from .session import Session

log = logging.getLogger("wrenmq.router")

# A local subscription's handler: (message, QoS, Subscription Identifiers or None). It runs on the
# event loop inside ``Broker.route``, after every publish hook: it must not block, and must treat
# the message as read-only (other subscribers share it).
LocalHandler = Callable[[Message, int, list[int] | None], object]


class Subscriber:
    """One session's subscription to one filter (section 3.8.3.1 options)."""

    __slots__ = (
        "no_local",
        "qos",
        "reader",
        "retain_as_published",
        "retain_handling",
        "session",
        "share",
        "subscription_id",
        "topic_filter",
    )

    def __init__(
        self,
        session: Session,
        topic_filter: str,
        qos: int,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_id: int | None = None,
    ) -> None:
        self.session = session
        self.topic_filter = topic_filter  # as subscribed, with any $share/ prefix
        # The options next to each other: compiled, two i32 and two bools fill 8 + 8 bytes, not 32.
        self.qos: i32 = qos
        self.retain_handling: i32 = retain_handling
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.subscription_id = subscription_id
        self.share: SharedGroup | None = None
        # Granted in part by an ACL (hooks.PARTIAL): the client object its hooks are asked about each
        # message's topic before it is delivered here. None (nearly always): no per-message check.
        self.reader: Any = None


class LocalSubscriber:
    """An in-process subscription to one filter: ``handler`` is called with each matching message.

    ``client_id`` names its owner, as a client id names a session: one subscription per owner and
    filter (subscribing again replaces it), and an owner matching one message through several
    filters gets one call, at the highest QoS, with every Subscription Identifier [MQTT-3.3.4-2],
    [MQTT-3.3.4-3]. With ``no_local`` it is not given messages whose ``origin`` is its
    ``client_id`` [MQTT-3.8.3-3]: a bridge names the messages it brings in so, and does not send
    them back out. An owner that acts for a user checks that user's ACL when it subscribes.
    """

    __slots__ = ("client_id", "handler", "no_local", "node_only", "qos", "subscription_id", "topic_filter")

    def __init__(
        self,
        client_id: str,
        topic_filter: str,
        handler: LocalHandler,
        qos: int = 2,
        no_local: bool = False,
        subscription_id: int | None = None,
        node_only: bool = False,
    ) -> None:
        self.client_id = client_id
        self.topic_filter = topic_filter
        self.handler = handler
        # In a cluster: wants only the messages published on this node (a bridge out, which every
        # node runs for its own publishers), not those other nodes forward here.
        self.node_only = node_only
        self.qos = qos
        self.no_local = no_local
        self.subscription_id = subscription_id


class SharedGroup:
    """The members of ``$share/{name}/{filter}``; each message goes to one member [MQTT-4.8.2-3]."""

    __slots__ = ("_next", "key", "members")

    def __init__(self, key: str) -> None:
        self.key = key  # the full "$share/name/filter"
        self.members: dict[str, Subscriber] = {}
        self._next = 0

    def pick(self, exclude: Session | None = None) -> Subscriber | None:
        """Round-robin over members, preferring connected ones that keep up: a member whose write
        buffer is full (congested) gets the group's messages only when every connected one is,
        so one slow consumer does not take, queue or drop its share while others are free."""
        members = list(self.members.values())
        if not members:
            return None
        n = len(members)
        fallback = None
        busy = None
        for i in range(n):
            sub = members[(self._next + i) % n]
            if sub.session is exclude:
                continue
            conn = sub.session.connection
            if conn is not None:
                if not conn.congested:
                    self._next = (self._next + i + 1) % n
                    return sub
                if busy is None:
                    busy = sub
            elif fallback is None:
                fallback = sub
        self._next = (self._next + 1) % n
        return busy if busy is not None else fallback


class _Node:
    """One level of the trie, sized for the common case of one client per filter (a device's own
    topics): a single child is held directly (``children`` is that node, its key in its
    ``level``), and so is a single subscriber (``subs``, keyed by its session's client id); a
    dict is made for the second one, and given up when one is left. Shared groups and local
    subscribers, rarer, have a dict made on first use. None: no entry of that kind."""

    __slots__ = ("children", "level", "local", "shared", "subs")

    def __init__(self, level: str) -> None:
        self.level = level  # this node's key in its parent
        self.children: dict[str, _Node] | _Node | None = None
        self.subs: dict[str, Subscriber] | Subscriber | None = None  # client id -> subscriber
        self.shared: dict[str, SharedGroup] | None = None  # group name -> group
        self.local: dict[str, LocalSubscriber] | None = None  # owner -> in-process subscriber

    def empty(self) -> bool:
        return not (self.children or self.subs or self.shared or self.local)

    def get(self, level: str) -> _Node | None:
        """The child for ``level``, if there is one."""
        children = self.children
        if children is None:
            return None
        if isinstance(children, _Node):
            return children if children.level == level else None
        return children.get(level)

    def child(self, level: str, intern: bool = True) -> _Node:
        """The child for ``level``, made if there is none. A new node keeps a short level as the
        one interned string of its value: levels are a few words repeated under many parents
        ("cmd", "status" under each device's node), ~50 bytes per copy and so per idle connection.
        ``intern`` False: ``level`` is a string kept anyway (the subscribing client's id), and
        interning it would only add the intern table's entry; so would a long, one-off level."""
        children = self.children
        if children is None:
            node = self.children = _Node(_keep(level, intern))
            return node
        if isinstance(children, _Node):
            if children.level == level:
                return children
            node = _Node(_keep(level, intern))
            self.children = {children.level: children, node.level: node}
            return node
        found = children.get(level)
        if found is None:
            found = _Node(_keep(level, intern))
            children[found.level] = found
        return found

    def drop_child(self, level: str) -> None:
        children = self.children
        if isinstance(children, _Node):
            if children.level == level:
                self.children = None
        elif children is not None:
            children.pop(level, None)
            if len(children) == 1:
                self.children = next(iter(children.values()))
            elif not children:
                self.children = None

    def has_sub(self, client_id: str) -> bool:
        subs = self.subs
        if subs is None:
            return False
        if isinstance(subs, Subscriber):
            return subs.session.client_id == client_id
        return client_id in subs

    def put_sub(self, client_id: str, sub: Subscriber) -> None:
        subs = self.subs
        if subs is None or (isinstance(subs, Subscriber) and subs.session.client_id == client_id):
            self.subs = sub
        elif isinstance(subs, Subscriber):
            self.subs = {subs.session.client_id: subs, client_id: sub}
        else:
            subs[client_id] = sub

    def pop_sub(self, client_id: str) -> Subscriber | None:
        subs = self.subs
        if subs is None:
            return None
        if isinstance(subs, Subscriber):
            if subs.session.client_id != client_id:
                return None
            self.subs = None
            return subs
        found = subs.pop(client_id, None)
        if len(subs) == 1:
            self.subs = next(iter(subs.values()))
        elif not subs:
            self.subs = None
        return found


def _keep(level: str, intern: bool) -> str:
    """The string a new trie node keeps for ``level`` (see ``_Node.child``)."""
    return sys.intern(level) if intern and len(level) <= _INTERN_LEVEL_MAX else level


_INTERN_LEVEL_MAX: Final = 16  # longer levels are rarely shared words (ids, UUIDs): kept as they come


class Match:
    """The subscribers for one topic, as cached: plain subscribers, shared groups, local ones."""

    __slots__ = ("groups", "hook_wants", "hooks_seen", "local", "local_overlapping", "overlapping", "subs", "topic")

    def __init__(
        self, subs: list[Subscriber], groups: list[SharedGroup], local: list[LocalSubscriber], topic: str = ""
    ) -> None:
        self.topic = topic  # the topic as cached: one string for every message on it (the journal keeps it)
        self.subs = subs
        self.groups = groups
        self.local = local
        # When no client matches through two filters, delivery needs no per-client merge.
        self.overlapping = len({id(s.session) for s in subs}) != len(subs)
        self.local_overlapping = len({s.client_id for s in local}) != len(local)
        # Which hooks want this topic's messages (HookSet.wants), and for which generation of them.
        self.hook_wants = 0
        self.hooks_seen = 0

    def deliver_local(self, message: Message) -> int:
        """Call the local subscribers' handlers (one call per owner); returns how many were called.
        A handler that fails is logged and the others still run."""
        origin = message.origin
        msg_qos = message.qos
        if self.local_overlapping:
            return _deliver_local_merged(message, self.local)
        count = 0
        forwarded = message.hop is not None
        for sub in self.local:
            if sub.no_local and origin is not None and sub.client_id == origin:
                continue  # [MQTT-3.8.3-3]
            if forwarded and sub.node_only:
                continue
            sid = sub.subscription_id
            try:
                sub.handler(message, sub.qos if sub.qos < msg_qos else msg_qos, None if sid is None else [sid])
            except Exception:
                log.exception("local subscriber %r (%s) failed", sub.client_id, sub.topic_filter)
            count += 1
        return count


def _deliver_local_merged(message: Message, local: list[LocalSubscriber]) -> int:
    """An owner matching through several filters gets one call (its handler for the filter of
    highest QoS) at that QoS, with every Subscription Identifier, as a client does [MQTT-3.3.4-2],
    [MQTT-3.3.4-3]."""
    merged: dict[str, tuple[LocalSubscriber, int, list[int]]] = {}
    origin = message.origin
    forwarded = message.hop is not None
    for sub in local:
        if sub.no_local and origin is not None and sub.client_id == origin:
            continue
        if forwarded and sub.node_only:
            continue
        qos = sub.qos if sub.qos < message.qos else message.qos
        entry = merged.get(sub.client_id)
        sub_ids = [] if entry is None else entry[2]
        if sub.subscription_id is not None:
            sub_ids.append(sub.subscription_id)
        if entry is None or qos > entry[1]:
            merged[sub.client_id] = (sub, qos, sub_ids)
    for sub, qos, sub_ids in merged.values():
        try:
            sub.handler(message, qos, sub_ids or None)
        except Exception:
            log.exception("local subscriber %r (%s) failed", sub.client_id, sub.topic_filter)
    return len(merged)


_CACHE_LIMIT = 100_000


class Router:
    def __init__(self) -> None:
        self._root = _Node("")
        self._cache: dict[str, Match] = {}
        self.count = 0  # number of (session, filter) subscriptions
        self.shared_count = 0  # of which shared ($share/...)
        self.local_count = 0  # number of (owner, filter) in-process subscriptions
        # Told (full filter, added) of every subscription added or removed: the cluster's routes.
        self.watch: Any = None

    def subscribe_local(self, sub: LocalSubscriber) -> bool:
        """Add or replace an in-process subscription; True if it replaced one. ``ValueError`` for
        a filter that is not valid [MQTT-4.7.1-1] or is shared (local subscribers join no group)."""
        if sub.topic_filter.startswith(SHARE_PREFIX) or not valid_topic_filter(sub.topic_filter):
            raise ValueError(f"{sub.topic_filter!r} is not a topic filter a local subscriber may use")
        node = self._root
        for level in sub.topic_filter.split("/"):
            node = node.child(level)
        local = node.local
        if local is None:
            local = node.local = {}
        existed = sub.client_id in local
        local[sub.client_id] = sub
        if not existed:
            self.local_count += 1
            if self.watch is not None and not sub.node_only:
                self.watch(sub.topic_filter, True)
        self._cache.clear()
        return existed

    def unsubscribe_local(self, client_id: str, topic_filter: str) -> bool:
        """Remove an in-process subscription; False if there was none."""
        path = self._path(topic_filter)
        if path is None:
            return False
        node = path[-1]
        local = node.local
        gone = None if local is None else local.pop(client_id, None)
        if local is None or gone is None:
            return False
        if not local:
            node.local = None
        self.local_count -= 1
        if self.watch is not None and not gone.node_only:
            self.watch(topic_filter, False)
        self._cache.clear()
        self._prune(path, topic_filter.split("/"))
        return True

    def subscribe(self, sub: Subscriber) -> bool:
        """Add or replace ``sub``; True if it replaced an existing subscription [MQTT-3.8.4-3]."""
        group, topic_filter = parse_shared(sub.topic_filter)
        client_id = sub.session.client_id
        node = self._root
        for level in topic_filter.split("/"):
            # (a level that is the client's id, as in "dev/{id}/cmd", keeps the session's string)
            node = node.child(client_id, False) if level == client_id else node.child(level)
        if group is None:
            existed = node.has_sub(client_id)
            node.put_sub(client_id, sub)
        else:
            groups = node.shared
            if groups is None:
                groups = node.shared = {}
            shared = groups.get(group)
            if shared is None:
                shared = groups[group] = SharedGroup(sub.topic_filter)
            existed = client_id in shared.members
            shared.members[client_id] = sub
            sub.share = shared
        if not existed:
            self.count += 1
            if group is not None:
                self.shared_count += 1
            if self.watch is not None:
                self.watch(sub.topic_filter, True)
        self._cache.clear()
        return existed

    def unsubscribe(self, client_id: str, full_filter: str) -> bool:
        """Remove a subscription; False if there was none."""
        group, topic_filter = parse_shared(full_filter)
        path = self._path(topic_filter)
        if path is None:
            return False
        node = path[-1]
        if group is None:
            if node.pop_sub(client_id) is None:
                return False
        else:
            groups = node.shared
            shared = groups.get(group) if groups is not None else None
            if groups is None or shared is None or shared.members.pop(client_id, None) is None:
                return False
            if not shared.members:
                del groups[group]
                if not groups:
                    node.shared = None
            self.shared_count -= 1
        self.count -= 1
        if self.watch is not None:
            self.watch(full_filter, False)
        self._cache.clear()
        self._prune(path, topic_filter.split("/"))
        return True

    def _path(self, topic_filter: str) -> list[_Node] | None:
        """The nodes from the root to ``topic_filter``'s, or None if there is no such node."""
        path = [self._root]
        node = self._root
        for level in topic_filter.split("/"):
            child = node.get(level)
            if child is None:
                return None
            path.append(child)
            node = child
        return path

    def _prune(self, path: list[_Node], levels: list[str]) -> None:
        """Drop empty nodes so the trie does not grow with every topic ever subscribed."""
        for i in range(len(levels), 0, -1):
            if path[i].empty():
                path[i - 1].drop_child(levels[i - 1])
            else:
                break

    def match(self, topic: str) -> Match:
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        subs: list[Subscriber] = []
        groups: list[SharedGroup] = []
        local: list[LocalSubscriber] = []
        levels = topic.split("/")
        # [MQTT-4.7.2-1]: a leading wildcard does not match a topic starting with '$'.
        self._walk(self._root, levels, 0, subs, groups, local, topic.startswith("$"))
        result = Match(subs, groups, local, topic)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _walk(
        self,
        node: _Node,
        levels: list[str],
        i: int,
        subs: list[Subscriber],
        groups: list[SharedGroup],
        local: list[LocalSubscriber],
        dollar: bool,
    ) -> None:
        if node.children is None:
            return
        root = i == 0 and dollar
        if not root:
            hash_node = node.get("#")
            if hash_node is not None:  # '#' also matches the parent level [MQTT-4.7.1-2]
                _collect(hash_node, subs, groups, local)
        if i == len(levels):
            return
        last = i + 1 == len(levels)
        for key in (levels[i], None if root else "+"):
            if key is None:
                continue
            child = node.get(key)
            if child is None:
                continue
            if last:
                _collect(child, subs, groups, local)
                hash_child = child.get("#")
                if hash_child is not None:
                    _collect(hash_child, subs, groups, local)
            else:
                self._walk(child, levels, i + 1, subs, groups, local, dollar)


def _collect(node: _Node, subs: list[Subscriber], groups: list[SharedGroup], local: list[LocalSubscriber]) -> None:
    found = node.subs
    if found is not None:
        if isinstance(found, Subscriber):
            subs.append(found)
        else:
            subs.extend(found.values())
    shared = node.shared
    if shared:
        groups.extend(shared.values())
    mine = node.local
    if mine:
        local.extend(mine.values())
