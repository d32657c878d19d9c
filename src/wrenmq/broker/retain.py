"""Retained messages (section 3.3.1.3), kept in a topic trie so a wildcard subscribe walks only
the part of the tree its filter can reach."""

from __future__ import annotations

from collections.abc import Iterator

from .message import Message


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class RetainStore:
    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0
        self.bytes = 0  # topic and payload bytes of the retained messages ($SYS store/messages/bytes)

    def __len__(self) -> int:
        return self._count

    def get(self, topic: str) -> Message | None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:  # (not assigned to node: compiled code checks the type of every assignment)
                return None
            node = child
        return node.message

    def set(self, message: Message) -> None:
        """Store ``message`` as the topic's retained message, replacing any [MQTT-3.3.1-5];
        an empty payload removes it [MQTT-3.3.1-6]."""
        if not message.payload:
            self.delete(message.topic)
            return
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        old = node.message
        if old is None:
            self._count += 1
        else:
            self.bytes -= len(old.topic) + len(old.payload)
        self.bytes += len(message.topic) + len(message.payload)
        node.message = message

    def delete(self, topic: str) -> bool:
        levels = topic.split("/")
        path = [self._root]
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                return False
            path.append(child)
            node = child
        old = node.message
        if old is None:
            return False
        node.message = None
        self._count -= 1
        self.bytes -= len(old.topic) + len(old.payload)
        for i in range(len(levels), 0, -1):
            n = path[i]
            if n.message is None and not n.children:
                del path[i - 1].children[levels[i - 1]]
            else:
                break
        return True

    def match(self, topic_filter: str) -> Iterator[Message]:
        """Retained messages whose topic matches ``topic_filter``; ``$`` topics are not matched
        by a leading wildcard [MQTT-4.7.2-1]."""
        yield from self._walk(self._root, topic_filter.split("/"), 0)

    def __iter__(self) -> Iterator[Message]:
        yield from self._all(self._root, skip_dollar=False)

    def _walk(self, node: _Node, levels: list[str], i: int) -> Iterator[Message]:
        if i == len(levels):
            if node.message is not None:
                yield node.message
            return
        level = levels[i]
        if level == "#":
            yield from self._all(node, skip_dollar=i == 0)
            return
        if level == "+":
            for key, child in node.children.items():
                if i == 0 and key.startswith("$"):
                    continue
                yield from self._walk(child, levels, i + 1)
            return
        found = node.children.get(level)
        if found is not None:
            yield from self._walk(found, levels, i + 1)

    def _all(self, node: _Node, skip_dollar: bool) -> Iterator[Message]:
        """Everything at and below ``node`` ('#' matches the parent level too [MQTT-4.7.1-2])."""
        if node.message is not None:
            yield node.message
        stack = [(k, c) for k, c in node.children.items() if not (skip_dollar and k.startswith("$"))]
        while stack:
            _, n = stack.pop()
            if n.message is not None:
                yield n.message
            stack.extend(n.children.items())
