"""The management API over HTTPS (issue 6: "TLS optional"): with api_certfile/api_keyfile the API
speaks only TLS, with the configured certificate; the API key check is the same."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from certs import make_ca, make_cert
from wrenmq.api.keys import ApiKeyStore


def test_api_over_tls(wrenmq_server_factory, tmp_path: Path):
    ca = make_ca(tmp_path / "ca")
    certfile, keyfile = make_cert(ca, tmp_path / "server", "127.0.0.1", server=True)
    server = wrenmq_server_factory(api_port=0, api_certfile=certfile, api_keyfile=keyfile)
    assert server.api_url.startswith("https://")
    key = ApiKeyStore(server.broker.config.api_keys_path).create("tls-test")
    context = ssl.create_default_context(cafile=str(ca.cert))
    with httpx.Client(base_url=server.api_url, verify=context) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        status = client.get("/api/v1/broker/status", headers={"Authorization": f"Bearer {key}"})
        assert status.status_code == 200
        assert client.get("/api/v1/broker/status").status_code == 401
    # Plain HTTP on the TLS port gets nowhere.
    plain = server.api_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/healthz", timeout=3)
