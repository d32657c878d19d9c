"""The one login rule (issue 14, item 6): a client is let in when an authentication source vouches
for it (a password file, a JWT, a client certificate, an application's hook), or where anonymous
access is allowed. With ``allow_anonymous = false`` and no source at all, nobody gets in, by any
way in: MQTT CONNECT (0x87 Not authorized / 3.1.1 return code 5) [MQTT-3.1.4-2], the console's
``POST /api/v1/session``, long polling and Socket.IO (401), and start-up says so.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio

from mqttraw import RawClient
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode
from wrenmq.pytest_plugin import WrenmqServer

NOT_AUTHORIZED = {5: ReasonCode.NOT_AUTHORIZED, 4: ConnackReturnCode.NOT_AUTHORIZED}
TIMEOUT = 5.0


@pytest.fixture
def closed(wrenmq_server_factory: Callable[..., WrenmqServer]) -> WrenmqServer:
    """anonymous access off, and no password file, no JWT, no certificates: no source at all."""
    return wrenmq_server_factory(allow_anonymous=False, api_port=0, console_admins=["ops"])


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("password", [None, b"anything"])
def test_username_without_any_source_is_refused(closed: WrenmqServer, version: int, password: bytes | None) -> None:
    """[MQTT-3.1.4-2]: a user name nobody can vouch for is not an identity; with anonymous access
    off the CONNECT is refused (0x87; 3.1.1: 5) and the connection closed."""
    with RawClient(closed.port, version) as client:
        connack = client.connect("c1", username="ops", password=password)
        assert connack.reason_code == NOT_AUTHORIZED[version]
        client.expect_closed()
    assert closed.broker.stats.auth_failures == 1


@pytest.mark.parametrize("version", [4, 5])
def test_anonymous_still_refused(closed: WrenmqServer, version: int) -> None:  # [MQTT-3.1.4-2]
    with RawClient(closed.port, version) as client:
        assert client.connect("c2").reason_code == NOT_AUTHORIZED[version]


def test_username_without_source_allowed_where_anonymous_is(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """Where anonymous access is on, a user name no source checks is taken as given (as Mosquitto
    does without a password file): the rule refuses nothing it allowed before there."""
    server = wrenmq_server_factory(allow_anonymous=True)
    with RawClient(server.port, 5) as client:
        assert client.connect("c3", username="someone", password=b"x").reason_code == 0


def test_console_sign_in_refused_without_a_source(closed: WrenmqServer) -> None:
    """The console: ``ops`` is a console admin, but no source can check a password: 401, not a
    read-write session for whoever types the name."""
    response = httpx.post(
        closed.api_url + "/api/v1/session", json={"username": "ops", "password": "guess"}, timeout=TIMEOUT
    )
    assert response.status_code == 401, response.text
    assert closed.broker.stats.auth_failures == 1


def test_polling_sign_in_refused_without_a_source(closed: WrenmqServer) -> None:
    basic = base64.b64encode(b"ops:guess").decode()
    response = httpx.post(
        closed.api_url + "/api/v1/realtime/poll",
        headers={"Authorization": "Basic " + basic},
        json={"filters": ["a/#"]},
        timeout=TIMEOUT,
    )
    assert response.status_code == 401, response.text


def test_socketio_sign_in_refused_without_a_source(closed: WrenmqServer) -> None:
    async def attempt() -> list[Any]:
        client = socketio.AsyncClient(reconnection=False)
        errors: list[Any] = []
        client.on("connect_error", errors.append)
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(
                    closed.api_url, auth={"username": "ops", "password": "guess"}, wait_timeout=TIMEOUT
                )
        finally:
            if client.eio.http is not None and not client.eio.http.closed:
                await client.eio.http.close()
        return errors

    errors = asyncio.run(attempt())
    assert errors and "no authentication source" in errors[0]["message"]


def test_start_up_warns_that_no_one_can_log_in(
    wrenmq_server_factory: Callable[..., WrenmqServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wrenmq.broker"):
        wrenmq_server_factory(allow_anonymous=False)
    assert any("no one can log in" in record.getMessage() for record in caplog.records)


def test_no_warning_when_a_source_exists(
    wrenmq_server_factory: Callable[..., WrenmqServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wrenmq.broker"):
        wrenmq_server_factory(allow_anonymous=False, jwt_secret="s" * 32)
    assert not any("no one can log in" in record.getMessage() for record in caplog.records)
