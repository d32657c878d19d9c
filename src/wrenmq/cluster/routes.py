"""The cluster's route table: which nodes have subscribers for which filters.

Each node owns its own entries (one per distinct filter its local trie holds, shared ones as the
full ``$share/group/filter``) and keeps a replica of every other node's, so a message is matched
once on the node it arrives at and forwarded once per node with matching subscribers. The replica
is a topic trie of filters, each holding the set of nodes that subscribe to it, with a per-topic
cache cleared on every change (route changes are rare next to messages).
"""

from __future__ import annotations

from ..mqtt.topics import SHARE_PREFIX

__all__ = ["NO_ROUTE", "LocalFilters", "RouteMatch", "RouteTable"]


class _Node:
    __slots__ = ("children", "groups", "nodes")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.nodes: set[str] = set()  # nodes with a plain subscription to the filter ending here
        self.groups: dict[str, set[str]] = {}  # share key -> nodes with members of that group


class RouteMatch:
    """What one topic matches in the replica: the nodes with plain subscribers, and for each
    shared group (its full ``$share/name/filter`` key) the nodes with members."""

    __slots__ = ("groups", "nodes")

    def __init__(self, nodes: frozenset[str], groups: dict[str, frozenset[str]]) -> None:
        self.nodes = nodes
        self.groups = groups


NO_ROUTE = RouteMatch(frozenset(), {})
_CACHE_LIMIT = 50_000


def split_filter(full_filter: str) -> tuple[str | None, str]:
    """``$share/g/f`` -> ("$share/g/f", "f"); a plain filter -> (None, filter). The share key is
    kept whole: a group is one group across the cluster whatever node its members are on."""
    if full_filter.startswith(SHARE_PREFIX):
        rest = full_filter[len(SHARE_PREFIX) :]
        _, _, inner = rest.partition("/")
        return full_filter, inner
    return None, full_filter


class RouteTable:
    """The replica of the other nodes' routes (this node's own are in its router)."""

    def __init__(self) -> None:
        self._root = _Node()
        self._by_node: dict[str, set[str]] = {}
        self.cache: dict[str, RouteMatch] = {}  # by topic (read directly by Cluster.forward)

    def __len__(self) -> int:
        return sum(len(filters) for filters in self._by_node.values())

    def nodes(self) -> list[str]:
        return sorted(self._by_node)

    def filters_of(self, node: str) -> set[str]:
        return set(self._by_node.get(node, ()))

    def add(self, node: str, full_filter: str) -> None:
        filters = self._by_node.setdefault(node, set())
        if full_filter in filters:
            return
        filters.add(full_filter)
        key, topic_filter = split_filter(full_filter)
        trie = self._root
        for level in topic_filter.split("/"):
            child = trie.children.get(level)
            if child is None:
                child = trie.children[level] = _Node()
            trie = child
        if key is None:
            trie.nodes.add(node)
        else:
            trie.groups.setdefault(key, set()).add(node)
        self.cache.clear()

    def remove(self, node: str, full_filter: str) -> None:
        filters = self._by_node.get(node)
        if filters is None or full_filter not in filters:
            return
        filters.discard(full_filter)
        if not filters:
            del self._by_node[node]
        key, topic_filter = split_filter(full_filter)
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        last = path[-1]
        if key is None:
            last.nodes.discard(node)
        else:
            members = last.groups.get(key)
            if members is not None:
                members.discard(node)
                if not members:
                    del last.groups[key]
        for i in range(len(levels), 0, -1):  # prune empty nodes
            found = path[i]
            if found.children or found.nodes or found.groups:
                break
            del path[i - 1].children[levels[i - 1]]
        self.cache.clear()

    def replace(self, node: str, filters: set[str]) -> None:
        """Make ``node``'s entries exactly ``filters`` (a resync after a reconnect)."""
        for gone in self.filters_of(node) - filters:
            self.remove(node, gone)
        for new in filters:
            self.add(node, new)

    def drop(self, node: str) -> None:
        """Forget every route of ``node`` (it left or died)."""
        for gone in self.filters_of(node):
            self.remove(node, gone)

    def match(self, topic: str) -> RouteMatch:
        hit = self.cache.get(topic)
        if hit is not None:
            return hit
        if not self._by_node:
            return NO_ROUTE
        nodes: set[str] = set()
        groups: dict[str, set[str]] = {}
        _walk(self._root, topic.split("/"), 0, topic.startswith("$"), nodes, groups)
        if nodes or groups:
            result = RouteMatch(frozenset(nodes), {key: frozenset(found) for key, found in groups.items()})
        else:
            result = NO_ROUTE  # (one shared object: Cluster.forward's fast path tests for it)
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[topic] = result
        return result


def _collect(node: _Node, nodes: set[str], groups: dict[str, set[str]]) -> None:
    nodes.update(node.nodes)
    for key, members in node.groups.items():
        groups.setdefault(key, set()).update(members)


def _walk(node: _Node, levels: list[str], i: int, dollar: bool, nodes: set[str], groups: dict[str, set[str]]) -> None:
    root = i == 0 and dollar  # [MQTT-4.7.2-1]: no leading wildcard matches a '$' topic
    if not root:
        hash_node = node.children.get("#")
        if hash_node is not None:  # '#' matches the parent level too [MQTT-4.7.1-2]
            _collect(hash_node, nodes, groups)
    if i == len(levels):
        return
    for key in (levels[i],) if root else (levels[i], "+"):
        child = node.children.get(key)
        if child is None:
            continue
        if i + 1 == len(levels):
            _collect(child, nodes, groups)
            hash_child = child.children.get("#")
            if hash_child is not None:
                _collect(hash_child, nodes, groups)
        else:
            _walk(child, levels, i + 1, dollar, nodes, groups)


class LocalFilters:
    """This node's distinct filters, counted: the router reports every subscription added and
    removed, and only a filter's first and last subscriber change the cluster's table."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, full_filter: str) -> bool:
        """True if ``full_filter`` is new on this node."""
        count = self.counts.get(full_filter, 0)
        self.counts[full_filter] = count + 1
        return count == 0

    def remove(self, full_filter: str) -> bool:
        """True if the last subscription to ``full_filter`` on this node went."""
        count = self.counts.get(full_filter, 0)
        if count <= 1:
            self.counts.pop(full_filter, None)
            return count == 1
        self.counts[full_filter] = count - 1
        return False
