"""Interactive API docs at ``/api/docs`` (Swagger UI), with every asset served by the API itself
from the swagger-ui-bundle package: wrenmq runs on closed networks, so nothing comes from a CDN,
and the online spec validator Swagger UI calls by default is switched off. The page and its
assets need no API key; "Authorize" in the page takes one for the calls it makes.

(swagger-ui-bundle-v2 is used: the original swagger-ui-bundle ships Swagger UI 4, which cannot
render the OpenAPI 3.1 documents FastAPI produces.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

if TYPE_CHECKING:
    from ..broker.broker import Broker

DOCS = "/api/docs"
ASSETS = DOCS + "/assets"


def install(app: FastAPI, broker: Broker) -> None:
    import swagger_ui_bundle  # type: ignore[import-untyped]

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="swagger-ui")
    openapi_url = app.openapi_url or "/api/openapi.json"

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - interactive docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )
