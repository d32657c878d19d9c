"""Who acts in an API request, a stream or a realtime connection, and what it may touch.

One :class:`Principal` stands for every caller that is not an MQTT connection: an API key, a
console session (``POST /api/v1/session``), a realtime client signed in with a user name and
password, or an anonymous realtime client. It carries the attributes ACL hooks read on a
``Connection`` (``client_id``, ``username``, ``listener``, ``auth``, ``cert_identity``, ``version``,
``peer``), so the broker's ACL hooks judge it exactly as they would an MQTT client of that user:

* topic access is :meth:`may_read` (a topic name or filter, as a SUBSCRIBE would be checked) and
  :meth:`may_write` (a topic name, as a PUBLISH), for every kind of principal;
* what else it may do is its kind: ``read_only`` principals may only read (GET), and only
  principals that ``manages`` may use the management routes (clients, subscriptions, users, ACL
  rules, external broker connections).

The README's "Who may do what" table is the contract; this module is its one implementation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from ..hooks import READ, WRITE

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade

__all__ = ["Forbidden", "Kind", "Principal"]

log = logging.getLogger("wrenmq.api.access")

Kind = Literal["key", "console", "user", "anonymous"]
_KINDS = {"key": "API key", "console": "console user", "user": "user", "anonymous": "anonymous client"}


class Forbidden(Exception):
    """Raised by :meth:`Principal.require`; the API answers it 403 with the reason (problems.py)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Principal:
    """Who acts, with the attributes ACL hooks read on a ``Connection`` (no listener, so the
    broker-wide ACL applies; MQTT 5)."""

    __slots__ = (
        "auth",
        "broker",
        "cert_identity",
        "client_id",
        "kind",
        "listener",
        "manages",
        "peer",
        "peer_host",
        "read_only",
        "username",
        "version",
    )

    def __init__(
        self,
        broker: BrokerFacade,
        kind: Kind,
        username: str | None,
        client_id: str,
        *,
        read_only: bool = False,
        manages: bool = False,
        auth: Any = None,
        peer: str = "api",
    ) -> None:
        self.broker = broker
        self.kind = kind
        self.username = username
        self.client_id = client_id
        self.read_only = read_only
        self.manages = manages
        self.auth = auth  # the AuthResult of a password sign-in: a JWT's ACL claims live here
        self.listener = None
        self.cert_identity = None
        self.version = 5
        self.peer = self.peer_host = peer

    @classmethod
    def user(cls, broker: BrokerFacade, client_id: str, username: str | None, peer: str) -> Principal:
        """A realtime client signed in by user name and password (or anonymous, without a name)."""
        return cls(broker, "user" if username is not None else "anonymous", username, client_id, peer=peer)

    def acting_as(self, client_id: str, peer: str | None = None) -> Principal:
        """The same principal under another client id (a stream, a realtime connection)."""
        other = Principal(
            self.broker,
            self.kind,
            self.username,
            client_id,
            read_only=self.read_only,
            manages=self.manages,
            auth=self.auth,
            peer=peer or self.peer,
        )
        return other

    @property
    def can_write(self) -> bool:
        return not self.read_only

    def describe(self) -> str:
        """``API key 'ops'``, ``console user 'bob'``: for reasons a person reads."""
        if self.username is None:
            return _KINDS[self.kind]
        return f"{_KINDS[self.kind]} {self.username!r}"

    # -- topic access: the broker's ACL hooks, as for an MQTT client of this user --------------

    def may_read(self, topic: str) -> bool:
        """Whether the ACL lets this principal subscribe to ``topic`` (a name or a filter)."""
        return self.broker.authorize(self, topic, READ, count=False)

    def may_write(self, topic: str) -> bool:
        """Whether the ACL lets this principal publish to ``topic``."""
        return self.broker.authorize(self, topic, WRITE, count=False)

    def refusal(self, topic: str, access: int) -> str | None:
        """None if allowed; else the reason, with the refusal counted (``acl_denied``) and
        logged. For a request that names the topic; lists are filtered with may_read quietly."""
        if self.broker.authorize(self, topic, access):
            return None
        verb = "read" if access == READ else "publish to"
        log.info("%s (client %s) may not %s %s", self.describe(), self.client_id, verb, topic)
        return f"{self.describe()} may not {verb} {topic!r} (ACL)"

    def require(self, topic: str, access: int) -> None:
        """Raise :class:`Forbidden` unless the ACL allows ``access`` to ``topic``."""
        refusal = self.refusal(topic, access)
        if refusal is not None:
            raise Forbidden(refusal)

    # -- what else it may do -------------------------------------------------------------------

    def change_refusal(self) -> str | None:
        """None if this principal may change things (any method but GET/HEAD)."""
        if not self.read_only:
            return None
        if self.kind == "key":
            return f"API key {self.username!r} is read-only"
        return f"{self.describe()} is read-only"

    def manage_refusal(self) -> str | None:
        """None if this principal may use the management routes."""
        if self.manages:
            return None
        return (
            f"{self.describe()} may not use the management routes (clients, subscriptions, users, ACL, "
            "brokers): they need an API key or a user in console_admins"
        )

    def __repr__(self) -> str:
        return f"<Principal {self.kind} {self.username!r} client {self.client_id!r}>"
