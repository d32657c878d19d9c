"""``/api/v1/devices`` and ``/api/v1/sessions``: the device presence service (``services.presence``).

List and read the registry, send a command to a device (``devices/{id}/commands/{cmd}``) or to a
session (``sessions/{id}/commands/{cmd}``), and forget a device. 404 when presence is off
(``presence = false``) or the device is unknown. Commands are published at QoS 1 whether or not
the device is online: a device with a persistent session gets it when it is back; the answer says
whether it was online.

Under the ACL of who asks: a device is listed and read only by those who may read all of its
topics (``<devices_root>/<id>/#``); a command needs ``WRITE`` on its topic, and forgetting a device
``WRITE`` on its retained ``status`` and ``lwt`` topics, which it clears.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from ..hooks import READ, WRITE, Reject
from ..mqtt.properties import PropertyId
from ..mqtt.reason_codes import ReasonCode
from ..services.change_events import name_problem
from ..services.presence import Presence, utc_timestamp
from .models import Page
from .problems import FieldError, Problem, field_error, problem_responses
from .routing import BODY_RESPONSES, WRITE_RESPONSES, Acting, Paging, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["install"]


class Device(BaseModel):
    """A registry entry: what the device announced and last reported, and whether it is online."""

    deviceId: str
    type: str | None = Field(description="From its announce.")
    name: str | None = Field(description="From its announce.")
    status: str | None = Field(description="The status it last reported (online, idle, playing, ...).")
    online: bool = Field(description="Connected and heard from within the heartbeat timeout.")
    sessionId: str | None
    positionMs: int | None
    first_seen: str
    last_seen: str = Field(description="When it last published anything (ISO-8601 UTC).")
    last_heartbeat: str | None
    client_id: str | None = Field(description="The MQTT client id it last published with.")
    last_status: dict[str, Any] | None = Field(description="Its last devices/{id}/status payload.")


class DeviceDetail(Device):
    events: list[dict[str, Any]] = Field(description="Its recent devices/{id}/events payloads, newest first.")


class CommandSent(BaseModel):
    topic: str
    commandId: str
    matched: int = Field(description="Subscriptions the command reached.")
    online: bool = Field(description="Whether the device is online.")


class SessionCommandSent(BaseModel):
    topic: str
    commandId: str
    matched: int = Field(description="Subscriptions the command reached.")
    online: int = Field(description="Online devices that report this session.")


def _service(service: Presence | None) -> Presence:
    if service is None:
        raise Problem(404, "device presence is off on this broker (presence = false)", title="Not running")
    return service


def _check(**levels: str) -> None:
    """Each value is one topic level: 422 naming the path parameter otherwise."""
    errors: list[FieldError] = []
    for name, value in levels.items():
        problem = name_problem(value)
        if problem:
            errors.append(field_error(("path", name), problem))
    if errors:
        raise Problem.invalid(errors)


def _command(cmd: str, params: dict[str, Any] | None) -> tuple[str, bytes]:
    command_id = str(uuid.uuid4())
    payload = {"command": cmd, "params": params or {}, "timestamp": utc_timestamp(), "commandId": command_id}
    return command_id, json.dumps(payload).encode()


async def _publish(broker: Broker, topic: str, payload: bytes) -> int:
    try:
        return await broker.publish(topic, payload, 1, False, {PropertyId.CONTENT_TYPE: "application/json"})
    except Reject as reject:
        status = 403 if reject.reason_code == ReasonCode.NOT_AUTHORIZED else 422
        raise Problem(
            status,
            f"a publish hook refused the command: {reject}",
            kind="publish-rejected",
            title="Publish rejected",
            reason_code=reject.reason_code,
        ) from None


def _check_path(path: str, method: str) -> None:
    """422 for ``{id}/commands/{cmd}`` (POST) or ``{id}`` (GET, DELETE) where a part is not one level."""
    device_id, found, command = path.partition("/commands/")
    if method == "POST" and found and "/" not in device_id:
        _check(id=device_id, cmd=command)
    else:
        _check(id=path)


Params = Annotated[dict[str, Any] | None, Body(description="The command's params (a JSON object); none: {}.")]


def install(app: FastAPI, broker: Broker, presence: Presence | None) -> None:
    router = v1_router("devices")

    @router.get("/devices", summary="Devices in the presence registry", responses=problem_responses(404))
    async def list_devices(
        principal: Acting,
        paging: Annotated[Paging, Depends()],
        status: Annotated[Literal["online", "offline"] | None, Query(description="Online or offline.")] = None,
        type: Annotated[str | None, Query(description="Devices of this type.")] = None,
        session: Annotated[str | None, Query(description="Devices reporting this sessionId.")] = None,
        q: Annotated[str | None, Query(description="Substring of the device id or name.")] = None,
    ) -> Page[Device]:
        """Sorted by device id; ``status`` matches the online flag, not the reported status."""
        service = _service(presence)
        online = None if status is None else status == "online"
        needle = q.lower() if q else None
        everything = principal.may_read(service.devices_root + "/#")
        found = [
            entry
            for entry in service.devices.values()
            if (online is None or entry["online"] == online)
            and (type is None or entry["type"] == type)
            and (session is None or entry["sessionId"] == session)
            and (needle is None or needle in entry["deviceId"].lower() or needle in str(entry["name"] or "").lower())
            and (everything or principal.may_read(f"{service.devices_root}/{entry['deviceId']}/#"))
        ]
        items, total = paging.page(found, key=lambda entry: entry["deviceId"])
        return Page[Device](
            items=[Device.model_validate(e) for e in items], total=total, limit=paging.limit, offset=paging.offset
        )

    @router.get("/devices/{id}", summary="One device, with its recent events", responses=problem_responses(403, 404))
    async def get_device(principal: Acting, id: str) -> DeviceDetail:
        _check(id=id)
        service = _service(presence)
        principal.require(f"{service.devices_root}/{id}/#", READ)
        entry = service.get(id)
        if entry is None:
            raise Problem(404, f"no device {id!r}", kind="unknown-device", title="Unknown device")
        return DeviceDetail.model_validate({**entry, "events": await service.events(id)})

    @router.delete(
        "/devices/{id}",
        summary="Forget a device",
        status_code=204,
        responses={**WRITE_RESPONSES, **problem_responses(404)},
    )
    async def delete_device(principal: Acting, id: str) -> Response:
        """Removes it and its events from the registry and clears its retained status and lwt. A
        device that is still connected comes back with its next message."""
        _check(id=id)
        service = _service(presence)
        for kind in ("status", "lwt"):
            principal.require(f"{service.devices_root}/{id}/{kind}", WRITE)
        if not await service.delete(id):
            raise Problem(404, f"no device {id!r}", kind="unknown-device", title="Unknown device")
        return Response(status_code=204)

    @router.post(
        "/devices/{id}/commands/{cmd}",
        summary="Send a command to a device",
        status_code=202,
        responses={**WRITE_RESPONSES, **BODY_RESPONSES, **problem_responses(404)},
    )
    async def send_device_command(principal: Acting, id: str, cmd: str, params: Params = None) -> CommandSent:
        """Published at QoS 1 to ``devices/{id}/commands/{cmd}`` as ``{"command", "params",
        "timestamp", "commandId"}``, to a device that is offline or unknown as well (a persistent
        session gets it later); ``online`` says whether it is online now."""
        _check(id=id, cmd=cmd)
        service = _service(presence)
        topic = f"{service.devices_root}/{id}/commands/{cmd}"
        principal.require(topic, WRITE)
        command_id, payload = _command(cmd, params)
        matched = await _publish(broker, topic, payload)
        entry = service.devices.get(id)
        return CommandSent(topic=topic, commandId=command_id, matched=matched, online=bool(entry and entry["online"]))

    @router.post(
        "/sessions/{id}/commands/{cmd}",
        summary="Send a command to every device in a session",
        status_code=202,
        responses={**WRITE_RESPONSES, **BODY_RESPONSES, **problem_responses(404)},
    )
    async def send_session_command(principal: Acting, id: str, cmd: str, params: Params = None) -> SessionCommandSent:
        """Published at QoS 1 to ``sessions/{id}/commands/{cmd}``, which the session's devices
        subscribe to; ``online`` counts the online devices that report this session."""
        _check(id=id, cmd=cmd)
        service = _service(presence)
        topic = f"{service.sessions_root}/{id}/commands/{cmd}"
        principal.require(topic, WRITE)
        command_id, payload = _command(cmd, params)
        matched = await _publish(broker, topic, payload)
        online = sum(1 for e in service.devices.values() if e["online"] and e["sessionId"] == id)
        return SessionCommandSent(topic=topic, commandId=command_id, matched=matched, online=online)

    @router.api_route("/devices/{id:path}", methods=["GET", "DELETE", "POST"], include_in_schema=False)
    async def device_path_with_slash(id: str, request: Request) -> None:
        """An id (or command) with '/' is not one topic level: 422, not 404."""
        _check_path(id, request.method)
        raise Problem(404, f"no such resource: /devices/{id}")

    @router.api_route("/sessions/{id:path}", methods=["POST"], include_in_schema=False)
    async def session_path_with_slash(id: str, request: Request) -> None:
        _check_path(id, request.method)
        raise Problem(404, f"no such resource: /sessions/{id}")

    app.include_router(router)
