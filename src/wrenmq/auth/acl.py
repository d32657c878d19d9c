"""ACL rules in Mosquitto's ``acl_file`` syntax, and the check the ACL hook asks of them.

::

    # rules before any `user` line apply to anonymous clients
    topic read public/#
    user alice
    topic readwrite home/alice/#     # (no access word: readwrite)
    topic deny home/alice/secret
    pattern write devices/%c/status  # patterns apply to every client; %c client id, %u username

How a check is decided:

- The rules that apply are the client's section (its ``user`` section, or the anonymous one) and
  every ``pattern``. A pattern naming ``%u`` does not apply to a client without a username. As in
  Mosquitto, once patterns exist a client whose id or username contains ``+`` or ``#`` is denied
  everything (it could otherwise widen a pattern); ``%c``/``%u`` stand for a whole topic level, so
  an id or username containing ``/`` never matches one.
- WRITE (a topic name) is allowed if a rule with write access matches it and no ``deny`` rule does.
- READ of a subscription filter, as Mosquitto decides it: granted whole (every message it matches is
  delivered) if a rule with read access *covers* the filter (every topic the filter can match is
  matched by the rule: ``sensors/#`` covers ``sensors/+/temp``) and no ``deny`` rule overlaps it
  (some topic matches both); granted in part (``PARTIAL``: the broker then checks each message's
  topic before delivering it) if some topic under the filter is readable: a read rule overlaps it
  where no single ``deny`` rule covers the overlap (``#`` with read access to ``sensors/#`` only);
  refused if nothing under it is readable.
- READ of a topic name (a message about to be delivered): a read rule matches it and no ``deny`` does.
- Nothing allows: denied. An empty rule set denies everything.
- Wildcards in a rule never match a topic starting with ``$`` unless the rule itself starts with
  ``$`` (as for subscriptions [MQTT-4.7.2-1]); ``sys_reader`` clients may read ``$SYS/#``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..hooks import PARTIAL, READ, WRITE
from ..mqtt.topics import valid_topic_filter
from .errors import AclFileError

__all__ = [
    "DENY",
    "READWRITE",
    "AclFileError",
    "AclRules",
    "Rule",
    "covers",
    "insert_rule",
    "intersection",
    "overlaps",
    "remove_line",
    "rule_line",
    "save_acl_text",
]

DENY = 0
READWRITE = READ | WRITE
ACCESS_WORDS = {"read": READ, "write": WRITE, "readwrite": READWRITE, "deny": DENY}
ACCESS_NAMES = {access: word for word, access in ACCESS_WORDS.items()}
CLIENT_ID, USERNAME = "%c", "%u"
SYS_LEVELS = ("$SYS", "#")


@dataclass(frozen=True, slots=True)
class Rule:
    access: int  # READ, WRITE, READWRITE or DENY
    levels: tuple[str, ...]  # the topic filter, split at "/"
    line: int
    pattern: bool = False  # a `pattern` line: %c and %u levels are substituted

    def levels_for(self, client_id: str, username: str | None) -> tuple[str, ...] | None:
        """The levels with %c/%u substituted; None if the rule cannot apply to this client."""
        if not self.pattern:
            return self.levels
        out = []
        for level in self.levels:
            if level == CLIENT_ID:
                level = client_id
            elif level == USERNAME:
                if username is None:
                    return None
                level = username
            else:
                out.append(level)
                continue
            if not level or "/" in level:
                return None  # stands for one whole level, never several
            out.append(level)
        return tuple(out)


def covers(rule: tuple[str, ...], topic_filter: tuple[str, ...]) -> bool:
    """Does every topic that ``topic_filter`` matches also match ``rule``? (Both split at "/".)"""
    if topic_filter[0].startswith("$") and rule[0] in ("+", "#"):
        return False  # a leading wildcard in the rule does not match $-topics
    length = len(topic_filter)
    for i, level in enumerate(rule):
        if level == "#":
            return True  # "a/#" matches "a" and everything below it
        if i >= length:
            return False
        wanted = topic_filter[i]
        if wanted == "#":
            return False  # the filter reaches any depth, the rule does not
        if level == "+":
            continue
        if wanted != level:  # includes wanted == "+" against a literal level
            return False
    return length == len(rule)


def intersection(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...] | None:
    """The filter that matches exactly the topics both ``a`` and ``b`` match, or None if none do
    ("a/#" and "+/b" give "a/b"; "a/#" and "a" give "a": "#" also matches the parent level)."""
    if (a[0] in ("+", "#") and b[0].startswith("$")) or (b[0] in ("+", "#") and a[0].startswith("$")):
        return None
    out: list[str] = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#":
            return (*out, *b[i:])
        if y == "#":
            return (*out, *a[i:])
        if x is None or y is None:
            return None
        if x == "+":
            out.append(y)
        elif y == "+" or x == y:
            out.append(x)
        else:
            return None
    return tuple(out)


def overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is there a topic that both filters match?"""
    if (a[0] in ("+", "#") and b[0].startswith("$")) or (b[0] in ("+", "#") and a[0].startswith("$")):
        return False
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and x != "+" and y != "+":
            return False
    return True


class AclRules:
    """The parsed rules of one ACL file (see the module docstring for how they decide)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.anonymous: list[Rule] = []  # `topic` lines before any `user` line
        self.users: dict[str, list[Rule]] = {}
        self.patterns: list[Rule] = []

    @classmethod
    def load(cls, path: Path) -> AclRules:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AclFileError(path, f"cannot read: {exc.strerror or exc}") from None
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise AclFileError(path, "not UTF-8", line) from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path = Path("<acl>")) -> AclRules:
        rules = cls(path)
        section = rules.anonymous
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keyword, rest = _split(line)
            if keyword == "user":
                if not rest:
                    raise AclFileError(path, "'user' needs a user name", number)
                section = rules.users.setdefault(rest, [])
            elif keyword in ("topic", "pattern"):
                rule = _parse_rule(path, number, keyword, rest)
                (rules.patterns if rule.pattern else section).append(rule)
            else:
                raise AclFileError(path, f"unknown keyword {keyword!r} (expected user, topic or pattern)", number)
        return rules

    def check(
        self, username: str | None, client_id: str, topic: str, access: int, sys_reader: bool = False
    ) -> bool | int:
        """May this client publish to (WRITE) or read (READ: ``topic`` is a filter or a topic name)
        ``topic``? True, False, or for a READ of a filter under which only some topics are readable,
        ``PARTIAL`` (see the module docstring)."""
        patterns = self.patterns
        if patterns and (_wild(client_id) or (username is not None and _wild(username))):
            return False
        wanted = tuple(topic.split("/"))
        own = self.anonymous if username is None else self.users.get(username, ())
        allows: list[tuple[str, ...]] = []
        denies: list[tuple[str, ...]] = []
        for rules in (own, patterns):
            for rule in rules:
                levels = rule.levels_for(client_id, username)
                if levels is None:
                    continue
                if rule.access == DENY:
                    denies.append(levels)
                elif rule.access & access:
                    allows.append(levels)
        if sys_reader and access == READ:
            allows.append(SYS_LEVELS)
        denied = any(overlaps(levels, wanted) for levels in denies)
        if not denied and any(covers(levels, wanted) for levels in allows):
            return True
        if access != READ:
            return False
        for levels in allows:  # is anything under the filter readable?
            common = intersection(levels, wanted)
            if common is not None and not any(covers(deny, common) for deny in denies):
                return PARTIAL
        return False

    def __len__(self) -> int:
        return len(self.anonymous) + sum(map(len, self.users.values())) + len(self.patterns)

    def entries(self) -> list[tuple[str | None, Rule]]:
        """Every rule with the user whose section it is in (None: anonymous, and every pattern),
        in file order."""
        found: list[tuple[str | None, Rule]] = [(None, rule) for rule in self.anonymous + self.patterns]
        found += [(user, rule) for user, rules in self.users.items() for rule in rules]
        return sorted(found, key=lambda entry: entry[1].line)


# -- editing the file's text (the management API): comments and layout are kept -----------------


def rule_line(access: int, topic: str, pattern: bool = False) -> str:
    """A rule as a line of the file (what ``AclRules.parse`` reads back as that rule)."""
    return f"{'pattern' if pattern else 'topic'} {ACCESS_NAMES[access]} {topic}"


def insert_rule(text: str, line: str, user: str | None) -> str:
    """``text`` with the rule ``line`` added: a pattern at the end; a topic rule after the last
    line of ``user``'s section (None: the anonymous rules before the first ``user`` line), or in a
    new ``user`` section at the end."""
    lines = text.splitlines()
    section: str | None = None
    last: int | None = None  # the last line of the wanted section (its header or a topic rule)
    first_user: int | None = None
    for number, raw in enumerate(lines):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, rest = _split(stripped)
        if keyword == "user":
            section = rest
            first_user = number if first_user is None else first_user
            if rest == user:
                last = number
        elif keyword == "topic" and section == user:
            last = number
    if line.startswith("pattern "):
        at = len(lines)
    elif last is not None:
        at = last + 1
    elif user is None:
        at = len(lines) if first_user is None else first_user
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(f"user {user}")
        at = len(lines)
    lines.insert(at, line)
    return "".join(entry + "\n" for entry in lines)


def remove_line(text: str, number: int) -> str:
    """``text`` without its line ``number`` (1-based, as ``Rule.line``)."""
    lines = text.splitlines(keepends=True)
    del lines[number - 1]
    return "".join(lines)


def save_acl_text(path: Path, text: str) -> None:
    """Replace the file atomically (a temporary file in the same directory, then rename), keeping
    its permissions."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _split(text: str) -> tuple[str, str]:
    """The first word and the rest (which may contain spaces, as topics may)."""
    parts = text.split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else (text, "")


def _wild(identity: str) -> bool:
    return "+" in identity or "#" in identity


def _parse_rule(path: Path, number: int, keyword: str, rest: str) -> Rule:
    word, after = _split(rest)
    if word in ACCESS_WORDS:
        access, topic = ACCESS_WORDS[word], after
        if not topic:
            raise AclFileError(path, f"'{keyword} {word}' needs a topic", number)
    else:
        access, topic = READWRITE, rest
        if not topic:
            raise AclFileError(
                path, f"'{keyword}' needs a topic (and optionally read, write, readwrite or deny)", number
            )
    if not valid_topic_filter(topic):
        raise AclFileError(path, f"invalid topic filter {topic!r} (+ and # must be whole levels, # the last)", number)
    levels = tuple(topic.split("/"))
    pattern = keyword == "pattern"
    if pattern:
        for level in levels:
            if level not in (CLIENT_ID, USERNAME) and (CLIENT_ID in level or USERNAME in level):
                raise AclFileError(
                    path, f"in {topic!r}, %c and %u must be a whole topic level (like devices/%c/status)", number
                )
    return Rule(access, levels, number, pattern)
