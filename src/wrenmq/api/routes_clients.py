"""``/api/v1/clients``: every session, connected or not, is a client. List them (paged, filtered),
look at one (connection, session, subscriptions, in-flight and queued counts), or disconnect one
(MQTT 5: DISCONNECT 0x98 Administrative action), optionally discarding its session. Client ids,
user names and addresses are other users' business: these are management routes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Query, Response

from ..mqtt.topics import parse_shared
from .models import ClientDetail, ClientSummary, Page, SubscriptionInfo
from .problems import Problem, problem_responses
from .routing import WRITE_RESPONSES, Paging, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..broker.router import Subscriber
    from ..broker.session import Session

PROTOCOLS = {3: "3.1", 4: "3.1.1", 5: "5.0"}


def subscription_info(sub: Subscriber) -> SubscriptionInfo:
    group = parse_shared(sub.topic_filter)[0]
    return SubscriptionInfo(
        topic_filter=sub.topic_filter,
        qos=sub.qos,
        no_local=sub.no_local,
        retain_as_published=sub.retain_as_published,
        retain_handling=sub.retain_handling,
        subscription_identifier=sub.subscription_id,
        share_group=group,
    )


def client_summary(session: Session) -> ClientSummary:
    conn = session.connection
    listener = conn.listener if conn is not None else None
    return ClientSummary(
        client_id=session.client_id,
        connected=conn is not None,
        username=conn.username if conn is not None else None,
        address=conn.peer if conn is not None else None,
        protocol=PROTOCOLS.get(session.protocol_version, str(session.protocol_version)),
        listener=listener.name if listener is not None else None,
        subscription_count=len(session.subscriptions),
        inflight=len(session.inflight_out),
        queued=len(session.queue),
    )


def client_detail(broker: Broker, session: Session) -> ClientDetail:
    conn = session.connection
    since = None
    if conn is not None:
        since = time.time() - (broker.loop.time() - conn.opened_at)
    return ClientDetail(
        **client_summary(session).model_dump(),
        keep_alive=conn.keep_alive if conn is not None else None,
        session_expiry_interval=session.expiry_interval,
        connected_since=since,
        dropped=session.dropped,
        subscriptions=[subscription_info(sub) for sub in session.subscriptions.values()],
    )


def install(app: FastAPI, broker: Broker) -> None:
    router = v1_router("clients", manage=True)

    def find(client_id: str) -> Session:
        session = broker.sessions.get(client_id)
        if session is None:
            raise Problem(404, f"no client {client_id!r} (no session with that client id)")
        return session

    @router.get("/clients", summary="List clients (sessions, connected or not)")
    async def list_clients(
        paging: Annotated[Paging, Depends()],
        prefix: Annotated[str | None, Query(description="Only client ids starting with this.")] = None,
        username: Annotated[str | None, Query(description="Only clients logged in as this user.")] = None,
        connected: Annotated[bool | None, Query(description="true: connected only; false: offline only.")] = None,
    ) -> Page[ClientSummary]:
        sessions = [
            session
            for session in broker.sessions.values()
            if (prefix is None or session.client_id.startswith(prefix))
            and (connected is None or (session.connection is not None) == connected)
            and (username is None or (session.connection is not None and session.connection.username == username))
        ]
        page, total = paging.page(sessions, key=lambda session: session.client_id)
        items = [client_summary(session) for session in page]
        return Page[ClientSummary](items=items, total=total, limit=paging.limit, offset=paging.offset)

    @router.get("/clients/{client_id:path}", summary="One client", responses=problem_responses(404))
    async def get_client(client_id: str) -> ClientDetail:
        return client_detail(broker, find(client_id))

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
        broker.disconnect_client(client_id, discard_session)
        return Response(status_code=204)

    app.include_router(router)
