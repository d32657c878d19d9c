"""``GET /api/v1/cluster``: the nodes of the cluster this node belongs to, as it sees them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from .routing import v1_router

if TYPE_CHECKING:
    from ..cluster import Cluster


def _doc(text: str) -> Any:
    return Field(description=text)


class ClusterNode(BaseModel):
    name: str
    self: Annotated[bool, _doc("Whether this is the node that answered.")]
    state: Annotated[str, _doc("alive, or dead: it stopped heartbeating (its wills are then published).")]
    last_heartbeat: Annotated[float, _doc("Unix time of its last heartbeat seen here.")]
    connections: int | None = None
    sessions: int | None = None
    subscriptions: int | None = None
    messages_received: int | None = None
    messages_sent: int | None = None
    forwarded: Annotated[int | None, _doc("Messages it forwarded to other nodes (one per node).")] = None
    received_from_nodes: Annotated[int | None, _doc("Messages other nodes forwarded to it.")] = None


class ClusterStatus(BaseModel):
    enabled: Annotated[bool, _doc("False on a single node (no cluster_url).")]
    node: str | None = None
    redis: Annotated[str | None, _doc("The Redis URL, without its password.")] = None
    redis_version: str | None = None
    connected: Annotated[bool, _doc("Whether this node reaches Redis now.")] = False
    nodes: list[ClusterNode] = []
    totals: Annotated[
        dict[str, int],
        _doc("Connections, sessions, subscriptions, messages received and sent, summed over the alive nodes."),
    ] = {}
    routes: Annotated[int, _doc("Filters of other nodes in this node's replica of the route table.")] = 0
    forward_queue: Annotated[int, _doc("Forwards waiting for Redis.")] = 0
    dropped: Annotated[int, _doc("Forwards given up while Redis was unreachable (queue full).")] = 0


def install(app: FastAPI, cluster: Cluster | None) -> None:
    router = v1_router("cluster")

    @router.get("/cluster", summary="The cluster's nodes, their state and counts")
    async def get_cluster() -> ClusterStatus:
        if cluster is None:
            return ClusterStatus(enabled=False)
        return ClusterStatus(enabled=True, **cluster.status())

    app.include_router(router)
