"""Who a realtime client is: a user name and password checked by the broker's one login rule, as
for an MQTT CONNECT (API keys are checked by the service, ``RealtimeService.authenticate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...api.principal import Principal
from ...broker.facade import BrokerFacade
from ...hooks import LET_IN, AuthResult
from ...mqtt import packets as p
from .errors import Denied

if TYPE_CHECKING:
    from ...broker.broker import Broker

__all__ = ["RealtimeClient", "sign_in_user"]

RealtimeClient = Principal  # who a realtime client is: the API's one principal type


async def sign_in_user(
    broker: Broker, username: str | None, password: str | None, client_id: str, peer: str, host: str
) -> RealtimeClient:
    """Check a user name and password by the broker's one login rule (``Broker.check_login``), as
    for an MQTT CONNECT: an authentication source must vouch for the user, or anonymous access be
    allowed for the API. Password checks run off the event loop. Failures count toward the
    broker's failed-login throttle. Raises :class:`Denied` (401)."""
    client = Principal.user(BrokerFacade(broker), client_id, username, peer)
    packet = p.Connect(
        client_id=client_id,
        protocol_level=5,
        username=username,
        password=password.encode() if password is not None else None,
    )
    decided = broker.check_login(client, packet, broker.anonymous_allowed(None))
    result = decided if isinstance(decided, AuthResult) else await decided
    if not result.allowed:
        broker.login_failed(host)
        if username is None:
            raise Denied(401, "sign in with an API key or a user name and password (anonymous access is off)")
        raise Denied(401, result.reason or "bad user name or password")
    if result is not LET_IN:
        client.auth = result
    if result.username is not None:
        client.username = result.username
        client.kind = "user"
    return client
