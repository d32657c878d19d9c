"""Liveness and readiness: ``GET /healthz`` (the process answers) and ``GET /readyz`` (every
listener is bound and the store accepts writes). Neither needs an API key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from ..broker.facade import BrokerFacade


def install(app: FastAPI, broker: BrokerFacade) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Listeners are up and the store is writable")
    async def readyz() -> JSONResponse:
        problems = []
        if not broker.running:
            problems.append("the broker is not running")
        problems += [f"listener {found.name} is not bound" for found in broker.listeners if not found.bound]
        if not broker.storage_writable():
            problems.append("the store does not accept writes")
        status = 503 if problems else 200
        return JSONResponse({"status": "unavailable" if problems else "ready", "problems": problems}, status)
