"""``/api/v1/keys``: the management API's keys (``api_keys_file``), as ``wrenmq apikey`` manages
them, for the console's API keys page. A management route: API keys and ``console_admins``
sessions list them, and those that may write create and revoke them. A new key is answered once,
in the 201 of its creation; the file keeps only its SHA-256, so no route can show it again.
Revoking takes effect at the next request made with the key. In a cluster the keys created here
are the cluster's (``cluster_keys``), and work, and are revoked, on every node."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from .keys import ApiKey, ApiKeyStore
from .problems import Problem, field_error, problem_responses
from .routing import BODY_RESPONSES, WRITE_RESPONSES, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["install"]

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class KeyInfo(BaseModel):
    name: str = Field(description="Also the user name the key acts as under the ACL.")
    read_only: bool = Field(description="May read (under the ACL) and change nothing (403).")
    created: float = Field(description="Unix time.")


class KeyList(BaseModel):
    api_keys_file: str
    keys: list[KeyInfo]


class KeyCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="1-64 letters, digits, '-', '_' or '.'; unique.")
    read_only: bool = False


class KeyCreated(KeyInfo):
    key: str = Field(description="The bearer token: shown only in this answer, stored only as a hash.")


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(name=key.name, read_only=key.read_only, created=key.created)


def install(app: FastAPI, broker: Broker) -> None:
    router = v1_router("API keys", manage=True)
    store: ApiKeyStore = app.state.api_keys
    lock = asyncio.Lock()  # one change of the file at a time: each reads, changes and replaces it
    invalid = problem_responses(409)

    async def keys() -> list[ApiKey]:
        try:
            return await store.keys()
        except ValueError as exc:
            raise Problem(409, f"{exc}; fix the file first", kind="file-invalid", title="File invalid") from None

    @router.get("/keys", summary="List the API keys (never the keys themselves)", responses=invalid)
    async def list_keys() -> KeyList:
        return KeyList(api_keys_file=str(store.path), keys=[_info(key) for key in await keys()])

    @router.post(
        "/keys",
        summary="Create an API key; the answer is the only time it is shown",
        status_code=201,
        responses={**WRITE_RESPONSES, **BODY_RESPONSES, **invalid},
    )
    async def create_key(new: KeyCreate) -> KeyCreated:
        async with lock:
            if any(key.name == new.name for key in await keys()):
                raise Problem(409, f"an API key named {new.name!r} exists; revoke it first", kind="exists")
            try:
                token = await store.add(new.name, read_only=new.read_only)
            except ValueError as exc:
                raise Problem.invalid([field_error(("body", "name"), str(exc))]) from None
            created = next(key for key in await keys() if key.name == new.name)
        return KeyCreated(name=created.name, read_only=created.read_only, created=created.created, key=token)

    @router.delete(
        "/keys/{name}",
        summary="Revoke an API key",
        status_code=204,
        responses={**WRITE_RESPONSES, **invalid, **problem_responses(404)},
    )
    async def revoke_key(name: Annotated[str, PathParam(description="The key's name.")]) -> Response:
        async with lock:
            await keys()
            if not await store.revoke(name):
                raise Problem(404, f"no API key named {name!r}")
        return Response(status_code=204)

    app.include_router(router)
