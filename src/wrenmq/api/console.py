"""The web console (``wrenmq/console``): ``GET /`` is its page, ``/console/`` its scripts and
styles. Plain files, no build step and no CDN: what the package installs is what the browser gets.
The console signs in with an API key and then uses the same API (and Socket.IO, for live data) as
any other client."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

if TYPE_CHECKING:
    from ..broker.broker import Broker

__all__ = ["install"]


def install(app: FastAPI, broker: Broker) -> None:
    root = resources.files("wrenmq") / "console"
    index = str(root / "index.html")
    app.mount("/console", StaticFiles(directory=str(root)), name="console")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})
