"""Subscriptions and topic matching: a trie of topic levels with a per-topic match cache.

``Router.match(topic)`` is on the hot path of every PUBLISH. The trie walk is done once per
distinct topic and cached until the subscriptions change, so steady traffic on a stable set of
subscriptions costs one dict lookup per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..mqtt.topics import parse_shared

if TYPE_CHECKING:
    from .session import Session


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
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.subscription_id = subscription_id
        self.share: SharedGroup | None = None
        # Granted in part by an ACL (hooks.PARTIAL): the client object its hooks are asked about each
        # message's topic before it is delivered here. None (nearly always): no per-message check.
        self.reader: Any = None


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
    __slots__ = ("children", "shared", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subs: dict[str, Subscriber] = {}  # client id -> subscriber
        self.shared: dict[str, SharedGroup] = {}  # group name -> group

    def empty(self) -> bool:
        return not (self.children or self.subs or self.shared)


class Match:
    """The subscribers for one topic, as cached: plain subscribers and shared groups."""

    __slots__ = ("groups", "overlapping", "subs")

    def __init__(self, subs: list[Subscriber], groups: list[SharedGroup]) -> None:
        self.subs = subs
        self.groups = groups
        # When no client matches through two filters, delivery needs no per-client merge.
        self.overlapping = len({id(s.session) for s in subs}) != len(subs)


_CACHE_LIMIT = 100_000


class Router:
    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, Match] = {}
        self.count = 0  # number of (session, filter) subscriptions
        self.shared_count = 0  # of which shared ($share/...)

    def subscribe(self, sub: Subscriber) -> bool:
        """Add or replace ``sub``; True if it replaced an existing subscription [MQTT-3.8.4-3]."""
        group, topic_filter = parse_shared(sub.topic_filter)
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        client_id = sub.session.client_id
        if group is None:
            existed = client_id in node.subs
            node.subs[client_id] = sub
        else:
            shared = node.shared.get(group)
            if shared is None:
                shared = node.shared[group] = SharedGroup(sub.topic_filter)
            existed = client_id in shared.members
            shared.members[client_id] = sub
            sub.share = shared
        if not existed:
            self.count += 1
            if group is not None:
                self.shared_count += 1
        self._cache.clear()
        return existed

    def unsubscribe(self, client_id: str, full_filter: str) -> bool:
        """Remove a subscription; False if there was none."""
        group, topic_filter = parse_shared(full_filter)
        path = [self._root]
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append(child)
            node = child
        if group is None:
            if node.subs.pop(client_id, None) is None:
                return False
        else:
            shared = node.shared.get(group)
            if shared is None or shared.members.pop(client_id, None) is None:
                return False
            if not shared.members:
                del node.shared[group]
            self.shared_count -= 1
        self.count -= 1
        self._cache.clear()
        # Prune empty nodes so the trie does not grow with every topic ever subscribed.
        levels = topic_filter.split("/")
        for i in range(len(levels), 0, -1):
            if path[i].empty():
                del path[i - 1].children[levels[i - 1]]
            else:
                break
        return True

    def match(self, topic: str) -> Match:
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        subs: list[Subscriber] = []
        groups: list[SharedGroup] = []
        levels = topic.split("/")
        # [MQTT-4.7.2-1]: a leading wildcard does not match a topic starting with '$'.
        self._walk(self._root, levels, 0, subs, groups, topic.startswith("$"))
        result = Match(subs, groups)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _walk(
        self, node: _Node, levels: list[str], i: int, subs: list[Subscriber], groups: list[SharedGroup], dollar: bool
    ) -> None:
        children = node.children
        if not children:
            return
        root = i == 0 and dollar
        if not root:
            hash_node = children.get("#")
            if hash_node is not None:  # '#' also matches the parent level [MQTT-4.7.1-2]
                subs.extend(hash_node.subs.values())
                groups.extend(hash_node.shared.values())
        if i == len(levels):
            return
        last = i + 1 == len(levels)
        for key in (levels[i], None if root else "+"):
            if key is None:
                continue
            child = children.get(key)
            if child is None:
                continue
            if last:
                subs.extend(child.subs.values())
                groups.extend(child.shared.values())
                hash_child = child.children.get("#")
                if hash_child is not None:
                    subs.extend(hash_child.subs.values())
                    groups.extend(hash_child.shared.values())
            else:
                self._walk(child, levels, i + 1, subs, groups, dollar)
