"""``/api/v1/brokers``: the connections to external brokers (and their bridges), with their status;
add one at runtime, change one, remove one. ``POST /publish`` with ``"broker": "<name>"`` publishes through
one (routes_publish.py calls :func:`publish_external`).

Anyone signed in reads their status (the console's dashboard shows it; URLs have passwords
masked); adding, changing and removing one is a management action. A connection added here is validated
like a ``[[brokers]]`` table in the config file (422 naming the field, e.g. ``body.bridges.0``)
and lasts until the broker stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..client.url import parse_url
from ..config import ConfigError, ExternalBrokerConfig
from ..services.brokers import BrokerConnection, BrokerConnections, Outgoing, Unavailable
from .problems import Problem, field_error, problem_responses
from .routing import BODY_RESPONSES, WRITE_RESPONSES, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["BrokerStatus", "install", "publish_external"]

PUBLISH_TIMEOUT = 10.0  # seconds POST /publish waits for the remote's acknowledgement


class BrokerStatus(BaseModel):
    """An external broker connection and how it is doing."""

    name: str
    url: str = Field(description="The broker's URL (any password in it masked).")
    source: Literal["config", "api"] = Field(description="From the config file, or added through the API.")
    version: int = Field(description="MQTT version: 5, or 4 (3.1.1).")
    client_id: str
    state: Literal["connecting", "connected", "reconnecting", "stopped", "standby"] = Field(
        description="`standby`: in a cluster, another node runs the connection (see `node`)."
    )
    connected: bool
    next_attempt_at: str | None = Field(description="Reconnecting: when the next attempt is made (RFC 3339).")
    last_error: str | None = Field(description="Why the last connection ended or the last attempt failed.")
    subscribed: bool = Field(description="In bridges: the remote granted their subscriptions.")
    subscribe_error: str | None = Field(description="In bridges: the remote refused a subscription.")
    messages_in: int = Field(description="Messages received from the remote and published here.")
    messages_out: int = Field(description="Messages the remote acknowledged (QoS 1/2) or was sent (QoS 0).")
    queued: int = Field(description="Messages waiting for the remote (stored durably), in flight included.")
    queue_size: int
    dropped: int = Field(description="Bridged messages dropped because the queue was full.")
    refused: int = Field(description="Messages refused by the remote (PUBACK failure) or, coming in, by this broker.")
    bridges: list[str]
    node: str | None = Field(
        default=None, description="In a cluster: the node that runs the connection (holds its lease), as last seen."
    )
    username: str | None = Field(default=None, description="The user name it connects with (setting or URL).")
    has_password: bool = Field(default=False, description="Whether it connects with a password (never shown).")
    cafile: str | None = None
    reconnect_max: float = 30.0


class BrokerEdit(ExternalBrokerConfig):
    """A ``[[brokers]]`` table replacing a connection's settings, and whether to keep its password."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_password: bool = Field(
        default=True,
        description="With no password in the body (neither `password` nor in the URL): keep the current one. "
        "false: connect without one.",
    )


class BrokerList(BaseModel):
    brokers: list[BrokerStatus]


def _service(service: BrokerConnections | None) -> BrokerConnections:
    if service is None:
        raise Problem(
            409,
            "external broker connections are not running on this broker",
            kind="not-configured",
            title="Not running",
        )
    return service


def _find(service: BrokerConnections | None, name: str) -> BrokerConnection:
    connection = service.get(name) if service is not None else None
    if connection is None:
        raise Problem(404, f"unknown broker {name!r}", kind="unknown-broker", title="Unknown broker")
    return connection


def _status(connection: BrokerConnection) -> BrokerStatus:
    config = connection.config
    url = parse_url(config.url)
    settings = {
        "username": config.username if config.username is not None else url.username,
        "has_password": (config.password if config.password is not None else url.password) is not None,
        "cafile": str(config.cafile) if config.cafile is not None else None,
        "reconnect_max": config.reconnect_max,
    }
    return BrokerStatus.model_validate({**connection.status(), **settings})


def _edited(old: ExternalBrokerConfig, edit: BrokerEdit) -> ExternalBrokerConfig:
    """The new settings: ``edit`` as a table, with the old password carried over if asked."""
    table = edit.model_dump(exclude={"keep_password"}, exclude_none=True)
    if edit.keep_password and edit.password is None and parse_url(edit.url).password is None:
        password = old.password if old.password is not None else parse_url(old.url).password
        if password is not None:
            table["password"] = password
    try:
        return ExternalBrokerConfig.model_validate(table)
    except ValidationError as exc:  # (edit was valid; the carried password cannot make it invalid)
        raise Problem.invalid([field_error(("body",), str(exc))]) from None


async def publish_external(
    connections: BrokerConnections | None, name: str, topic: str, payload: bytes, qos: int, retain: bool, queue: bool
) -> int | None:
    """Publish through the connection ``name``: the remote's reason code, or None if queued.
    404 for an unknown name; 503 when it is down (without ``queue``) or its queue is full; 502
    when the remote refuses the message."""
    from ..client import PublishError

    connection = _find(connections, name)
    try:
        return await connection.publish(Outgoing(topic, payload, qos, retain, {}), queue, PUBLISH_TIMEOUT)
    except Unavailable as exc:
        raise Problem(503, str(exc), kind="broker-unavailable", title="Broker unavailable") from None
    except PublishError as exc:
        raise Problem(
            502,
            f"broker {name!r} refused the message: {exc}",
            kind="publish-rejected",
            title="Publish rejected",
            reason_code=exc.reason_code,
        ) from None


def install(app: FastAPI, broker: Broker, connections: BrokerConnections | None) -> None:
    router = v1_router("brokers")  # their status is the dashboard's: any signed-in principal reads it
    management = v1_router("brokers", manage=True)  # adding and removing them is management

    @router.get("/brokers", summary="External broker connections and their status")
    async def list_brokers() -> BrokerList:
        found = sorted(connections.connections.values(), key=lambda c: c.name) if connections is not None else []
        return BrokerList(brokers=[_status(connection) for connection in found])

    @router.get("/brokers/{name}", summary="One external broker connection", responses=problem_responses(404))
    async def get_broker(name: str) -> BrokerStatus:
        return _status(_find(connections, name))

    @management.post(
        "/brokers",
        summary="Add an external broker connection",
        status_code=201,
        responses={**WRITE_RESPONSES, **BODY_RESPONSES, **problem_responses(409, 422)},
    )
    async def add_broker(config: ExternalBrokerConfig) -> BrokerStatus:
        """The body is a ``[[brokers]]`` table as JSON. The connection is made in the background:
        the answer says ``connecting``; poll ``GET /api/v1/brokers/{name}``. 409 if the name is taken."""
        service = _service(connections)
        if service.get(config.name) is not None:
            raise Problem(409, f"a broker named {config.name!r} exists already", title="Name taken")
        try:
            return _status(service.add(config, source="api"))
        except ConfigError as exc:
            raise Problem.invalid([field_error(("body",), str(exc))]) from None

    @management.put(
        "/brokers/{name}",
        summary="Change an external broker connection's settings",
        responses={**WRITE_RESPONSES, **BODY_RESPONSES, **problem_responses(404, 422)},
    )
    async def edit_broker(name: str, edit: BrokerEdit) -> BrokerStatus:
        """The body is the whole ``[[brokers]]`` table (its ``name`` the one in the path); the
        connection is restarted with it and answers ``connecting``. Its counters start again;
        what its queue holds is kept where it is stored (``bridges.db``). The password is kept
        unless the body gives one or says ``"keep_password": false``. One from the config file
        gets the file's settings back when the broker restarts."""
        if edit.name != name:
            raise Problem.invalid([field_error(("body", "name"), f"must be {name!r}, the connection's name")])
        service = _service(connections)
        old = _find(connections, name)
        try:
            return _status(await service.replace(_edited(old.config, edit)))
        except ConfigError as exc:
            raise Problem.invalid([field_error(("body",), str(exc))]) from None
        except KeyError:  # removed while this request waited
            raise Problem(404, f"unknown broker {name!r}", kind="unknown-broker", title="Unknown broker") from None

    @management.delete(
        "/brokers/{name}",
        summary="Remove an external broker connection",
        status_code=204,
        responses={**WRITE_RESPONSES, **problem_responses(404)},
    )
    async def delete_broker(name: str) -> Response:
        """Disconnects and forgets the connection and the messages its queue held. One from the
        config file comes back when the broker restarts."""
        if connections is None or not await connections.remove(name):
            raise Problem(404, f"unknown broker {name!r}", kind="unknown-broker", title="Unknown broker")
        return Response(status_code=204)

    app.include_router(router)
    app.include_router(management)
