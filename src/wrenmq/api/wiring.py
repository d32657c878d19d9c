"""What the API is handed by the wiring point (``wrenmq.services.Services``): the services its
routes serve. A protocol, so the API names no module of the wiring point's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..cluster import Cluster
    from ..services.brokers import BrokerConnections
    from ..services.changes import ChangeService
    from ..services.presence import Presence
    from ..services.realtime import RealtimeService
    from .keys import ApiKeyStore

__all__ = ["ApiServices"]


class ApiServices(Protocol):
    @property
    def cluster(self) -> Cluster | None: ...

    @property
    def presence(self) -> Presence | None: ...

    @property
    def connections(self) -> BrokerConnections | None: ...

    @property
    def api_keys(self) -> ApiKeyStore | None: ...

    @property
    def changes(self) -> ChangeService | None: ...

    @property
    def realtime(self) -> RealtimeService | None: ...
