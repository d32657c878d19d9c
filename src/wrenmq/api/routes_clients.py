"""``/api/v1/clients``: every session, connected or not, is a client. List them (paged, filtered),
look at one (connection, session, subscriptions, in-flight and queued counts), or disconnect one
(MQTT 5: DISCONNECT 0x98 Administrative action), optionally discarding its session. Client ids,
user names and addresses are other users' business: these are management routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Query, Response

from .models import ClientDetail, ClientSummary, Page, SubscriptionInfo
from .problems import Problem, problem_responses
from .routing import WRITE_RESPONSES, Paging, v1_router

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade, ClientView, SubscriptionView

PROTOCOLS = {3: "3.1", 4: "3.1.1", 5: "5.0"}


def subscription_info(sub: SubscriptionView) -> SubscriptionInfo:
    return SubscriptionInfo(
        topic_filter=sub.topic_filter,
        qos=sub.qos,
        no_local=sub.no_local,
        retain_as_published=sub.retain_as_published,
        retain_handling=sub.retain_handling,
        subscription_identifier=sub.subscription_id,
        share_group=sub.share_group,
    )


def client_summary(client: ClientView) -> ClientSummary:
    return ClientSummary(
        client_id=client.client_id,
        connected=client.connected,
        username=client.username,
        address=client.address,
        protocol=PROTOCOLS.get(client.protocol_version, str(client.protocol_version)),
        listener=client.listener,
        subscription_count=len(client.subscriptions),
        inflight=client.inflight,
        queued=client.queued,
    )


def client_detail(client: ClientView) -> ClientDetail:
    return ClientDetail(
        **client_summary(client).model_dump(),
        keep_alive=client.keep_alive,
        session_expiry_interval=client.session_expiry_interval,
        connected_since=client.connected_since,
        dropped=client.dropped,
        subscriptions=[subscription_info(sub) for sub in client.subscriptions],
    )


def install(app: FastAPI, broker: BrokerFacade) -> None:
    router = v1_router("clients", manage=True)

    def find(client_id: str) -> ClientView:
        client = broker.client(client_id)
        if client is None:
            raise Problem(404, f"no client {client_id!r} (no session with that client id)")
        return client

    @router.get("/clients", summary="List clients (sessions, connected or not)")
    async def list_clients(
        paging: Annotated[Paging, Depends()],
        prefix: Annotated[str | None, Query(description="Only client ids starting with this.")] = None,
        username: Annotated[str | None, Query(description="Only clients logged in as this user.")] = None,
        connected: Annotated[bool | None, Query(description="true: connected only; false: offline only.")] = None,
    ) -> Page[ClientSummary]:
        found = broker.client_ids(prefix, connected, username)
        page, total = paging.page(found, key=lambda client_id: client_id)
        views = (broker.client(client_id) for client_id in page)
        items = [client_summary(view) for view in views if view is not None]
        return Page[ClientSummary](items=items, total=total, limit=paging.limit, offset=paging.offset)

    @router.get("/clients/{client_id:path}", summary="One client", responses=problem_responses(404))
    async def get_client(client_id: str) -> ClientDetail:
        return client_detail(find(client_id))

    @router.delete(
        "/clients/{client_id:path}",
        summary="Disconnect a client (MQTT 5: reason 0x98 Administrative action)",
        status_code=204,
        responses={**WRITE_RESPONSES, **problem_responses(404)},
    )
    async def disconnect_client(
        client_id: str,
        discard_session: Annotated[
            bool, Query(description="Also end the session (subscriptions, queued messages), not just the connection.")
        ] = False,
    ) -> Response:
        """An MQTT 5 client is sent DISCONNECT with reason code 0x98 (Administrative action); a 3.1.1
        client's connection is closed. Its will, if any, is published. The session stays (until its
        expiry interval runs out) unless ``discard_session=true``."""
        find(client_id)
        broker.disconnect(client_id, discard_session)
        return Response(status_code=204)

    app.include_router(router)
