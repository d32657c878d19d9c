"""``/api/v1/keys`` (issue 18, the console's API keys page): create, list and revoke the API's keys
over HTTP as ``wrenmq apikey`` does. A created key is answered once and works at once; the file and
the list never hold it (only its SHA-256); a revoked key is refused (401) at its next request. A
management route: a read-only key lists but may not change (403), a ``console_users`` session may
not even list (403), a ``console_admins`` session may do all. Real broker, real HTTP (httpx)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from problems import problem
from userfiles import write_passwords
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

API = "/api/v1"


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path) -> WrenmqServer:
    passwd = write_passwords(tmp_path / "passwd", alice="wonderland", bob="builder")
    return wrenmq_server_factory(api_port=0, password_file=passwd, console_admins=["alice"], console_users=["bob"])


def client(server: WrenmqServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.api_url + API, headers={"Authorization": "Bearer " + token}, timeout=10)


def session(server: WrenmqServer, username: str, password: str) -> httpx.Client:
    signed_in = httpx.post(server.api_url + API + "/session", json={"username": username, "password": password})
    assert signed_in.status_code == 201, signed_in.text
    return client(server, signed_in.json()["token"])


def test_api_keys_create_works_at_once_is_shown_once_and_revoke_refuses_it(server: WrenmqServer) -> None:
    admin = client(server, ApiKeyStore(server.broker.config.api_keys_path).create("admin"))
    created = admin.post("/keys", json={"name": "dashboard", "read_only": True})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["key"]
    assert body["name"] == "dashboard" and body["read_only"] is True and token.startswith("wmq_")

    dashboard = client(server, token)
    assert dashboard.get("/broker/status").status_code == 200  # works at once
    problem(dashboard.post("/publish", json={"topic": "a/b", "payload": "x"}), 403)  # read-only

    listed = admin.get("/keys").json()
    assert [(k["name"], k["read_only"]) for k in listed["keys"]] == [("admin", False), ("dashboard", True)]
    assert listed["api_keys_file"] == str(server.broker.config.api_keys_path)
    assert token not in admin.get("/keys").text
    assert token not in Path(listed["api_keys_file"]).read_text()  # only its hash is kept

    problem(admin.post("/keys", json={"name": "dashboard"}), 409)  # names are unique
    problem(admin.post("/keys", json={"name": "no spaces"}), 422)
    problem(admin.post("/keys", json={"name": ""}), 422)

    assert admin.delete("/keys/dashboard").status_code == 204
    problem(dashboard.get("/broker/status"), 401)  # revoked: refused at its next request
    problem(admin.delete("/keys/dashboard"), 404)
    assert [k["name"] for k in admin.get("/keys").json()["keys"]] == ["admin"]


def test_api_keys_are_managed_by_admins_only(server: WrenmqServer) -> None:
    store = ApiKeyStore(server.broker.config.api_keys_path)
    reader = client(server, store.create("reader", read_only=True))
    store.create("victim")
    # A read-only key lists, and may not create or revoke.
    assert [k["name"] for k in reader.get("/keys").json()["keys"]] == ["reader", "victim"]
    problem(reader.post("/keys", json={"name": "mine"}), 403)
    problem(reader.delete("/keys/victim"), 403)
    # A console_users session may not even list; a console_admins session may do all.
    bob = session(server, "bob", "builder")
    problem(bob.get("/keys"), 403)
    problem(bob.post("/keys", json={"name": "mine"}), 403)
    problem(bob.delete("/keys/victim"), 403)
    alice = session(server, "alice", "wonderland")
    made = alice.post("/keys", json={"name": "alices"})
    assert made.status_code == 201 and made.json()["read_only"] is False
    assert client(server, made.json()["key"]).get("/keys").status_code == 200
    assert alice.delete("/keys/victim").status_code == 204
    assert sorted(k.name for k in store.all()) == ["alices", "reader"]
