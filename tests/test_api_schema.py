"""The management API's OpenAPI document and interactive docs (wrenmq feature, issue 6):

- schemathesis generates requests from the live ``/api/openapi.json`` and sends them, with a valid
  key, to a real broker (with password and ACL files, so those endpoints do real work): no
  operation may answer 5xx, and every answer must match the status codes, content types and
  schemas the document declares;
- the document declares the bearer scheme and problem details for errors;
- ``/api/docs`` loads Swagger UI from the API itself, never from another host (checked in the
  HTML, and in Chromium, which renders the operations).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from browser import chromium
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer, server_config

# Not ours: live streams, traces and metrics have their own tests (and a stream does not end by itself).
OTHERS = re.compile(r"^/(api/v1/stream|api/v1/trace|metrics)")


class LiveApi:
    def __init__(self, server: WrenmqServer) -> None:
        self.server = server
        self.url = server.api_url
        self.headers = {"Authorization": "Bearer " + ApiKeyStore(server.config.api_keys_path).create("schema")}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """One broker for the module, with password and ACL files for /users and /acl to edit."""
    data = tmp_path_factory.mktemp("wrenmq-schema")
    passwd = write_passwords(data / "passwd", admin="secret")
    acl = data / "acl"
    acl.write_text("user admin\ntopic readwrite #\n")
    server = WrenmqServer(server_config(data, api_port=0, password_file=passwd, acl_file=acl)).start()
    server.publish("sensors/kitchen", b"21.5", retain=True)
    try:
        yield LiveApi(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(live: LiveApi) -> Any:
    return schemathesis.openapi.from_url(live.url + "/api/openapi.json")


# The exclusion goes on the lazy schema: parametrize() replaces the fixture's schema's filters with
# its own (schemathesis 4), so one made in the fixture is silently dropped.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=OTHERS.pattern)

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: Any, live: LiveApi) -> None:
    """Every operation, with generated valid and invalid input: never a 5xx, and every response is
    one the document declares (status, content type, schema)."""
    case.call_and_validate(base_url=live.url, headers=live.headers, checks=CHECKS)


def test_openapi_document(live: LiveApi) -> None:
    """OpenAPI at /api/openapi.json declares the bearer scheme on every REST operation and problem
    details (application/problem+json) for their errors."""
    spec = httpx.get(live.url + "/api/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/") or path in ("/broker/status", "/publish")
        for method, operation in item.items()
        if not OTHERS.match(path)
    ]
    assert len(operations) >= 19
    for path, method, operation in operations:
        # Ways in without a key: realtime signs in by key, user or anonymous (then by session id);
        # POST /session is where a user gets a key-like token.
        if not path.startswith("/api/v1/realtime/") and (path, method) != ("/api/v1/session", "post"):
            assert operation["security"] == [{"ApiKey": []}], (path, method)
            assert "401" in operation["responses"]
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema_ref = response["content"]["application/problem+json"]["schema"]["$ref"]
                assert schema_ref == "#/components/schemas/ProblemDetails", (path, method, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""")


def _asset_urls(html: str) -> list[str]:
    """Every src=, href= and Swagger UI url: in the page."""
    return [a or b for a, b in ASSET.findall(html)]


def test_docs_assets_are_served_locally(live: LiveApi) -> None:
    """/api/docs names no asset on another host (no CDN, no online validator) and every asset it
    names is served by the API itself, without a key."""
    response = httpx.get(live.url + "/api/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert '"validatorUrl": null' in html
    assets = _asset_urls(html)
    assert {"/api/docs/assets/swagger-ui-bundle.js", "/api/docs/assets/swagger-ui.css", "/api/openapi.json"} <= set(
        assets
    )
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        fetched = httpx.get(urljoin(live.url, asset))
        assert fetched.status_code == 200, asset
        assert fetched.content


def test_docs_render_in_a_browser_from_local_assets(live: LiveApi) -> None:
    """Chromium renders the operations of the OpenAPI 3.1 document, and every request the page makes
    goes to the API's own address."""
    requested: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(live.url + "/api/docs")
        page.get_by_text("/api/v1/publish/batch", exact=True).wait_for(timeout=15_000)
        text = page.inner_text("body")
        assert "Unable to render" not in text
        assert "Authorize" in text and "/api/v1/clients/{client_id}" in text
    origin = urlsplit(live.url).netloc
    assert requested and all(urlsplit(url).netloc == origin for url in requested), requested
