"""Sessions belong to the user who made them (issue 14, item 5).

A client id names a session [MQTT-3.1.2-4], [MQTT-3.2.2-2], but the session is the user's: when a
CONNECT with Clean Start 0 names a client id whose session (live, stored, or restored from SQLite)
belongs to another user name or certificate identity, the old session is discarded, as Mosquitto
does, and the client starts a fresh one (Session Present 0). A live connection is taken over only
by its own user; another user's CONNECT for that client id is refused (0x87; 3.1.1: 5).
Anonymous and named clients are different owners. Each case is logged and counted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttraw import RawClient
from wrenmq.auth.passwords import PasswordFile
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode
from wrenmq.pytest_plugin import WrenmqServer
from wrenmq.storage.sqlite import SCHEMA_VERSION

EXPIRY = {0x11: 3600}  # Session Expiry Interval for 5.0 clients
NOT_AUTHORIZED = {5: ReasonCode.NOT_AUTHORIZED, 4: ConnackReturnCode.NOT_AUTHORIZED}
USERS = {"alice": b"wonderland", "bob": b"builder"}


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    path.write_text("")
    passwords = PasswordFile.load(path)
    for user, password in USERS.items():
        passwords.set_password(user, password.decode())
    passwords.save()
    return path


@pytest.fixture
def start(wrenmq_server_factory: Callable[..., WrenmqServer], passwd: Path) -> Callable[..., WrenmqServer]:
    def make(**overrides: Any) -> WrenmqServer:
        return wrenmq_server_factory(password_file=passwd, allow_anonymous=True, **overrides)

    return make


def login(server: WrenmqServer, version: int, user: str | None, client_id: str, clean: bool = False) -> RawClient:
    """A raw client connected as ``user`` (None: anonymous), with a persistent session."""
    client = RawClient(server.port, version)
    connack = client.connect(
        client_id,
        clean=clean,
        username=user,
        password=USERS[user] if user else None,
        properties=EXPIRY if version == 5 else None,
    )
    client.connack = connack  # type: ignore[attr-defined]
    return client


def sentinel_after(client: RawClient, server: WrenmqServer) -> list[p.Publish]:
    """Subscribe ``client`` to a sentinel topic, publish it, and return every PUBLISH that came
    before the sentinel (negative checks wait for this, not for silence)."""
    topic = f"sentinel/{id(client)}"
    client.send(p.Subscribe(client.pid(), [p.Subscription(topic, 1)]))
    before: list[p.Publish] = []
    subscribed = False
    while True:
        packet = client.recv()
        if isinstance(packet, p.Suback):
            subscribed = True
            server.publish(topic, b"end", qos=1)
        elif isinstance(packet, p.Publish):
            if packet.qos:
                client.send(p.Puback(packet.packet_id))
            if packet.topic == topic and subscribed:
                return before
            before.append(packet)


@pytest.mark.parametrize("version", [4, 5])
def test_stored_session_not_resumed_by_another_user(start: Callable[..., WrenmqServer], version: int) -> None:
    """[MQTT-3.2.2-2] is about the client, not the id: bob naming alice's client id with Clean
    Start 0 gets Session Present 0 and none of her queued messages; her session is gone."""
    server = start()
    alice = login(server, version, "alice", "alice-phone")
    assert alice.connack.session_present is False
    alice.subscribe("home/alice/#", 1)
    alice.disconnect()
    server.publish("home/alice/door", b"secret", qos=1)

    bob = login(server, version, "bob", "alice-phone")
    assert bob.connack.reason_code == 0 and bob.connack.session_present is False
    assert sentinel_after(bob, server) == []
    server.publish("home/alice/door", b"live", qos=1)  # alice's subscription went with her session
    assert sentinel_after(bob, server) == []
    assert server.broker.stats.session_owner_conflicts == 1
    bob.disconnect()

    again = login(server, version, "alice", "alice-phone")
    assert again.connack.session_present is False  # discarded, not handed back and forth
    again.close()


@pytest.mark.parametrize("version", [4, 5])
def test_anonymous_and_named_are_different_owners(start: Callable[..., WrenmqServer], version: int) -> None:
    server = start()
    alice = login(server, version, "alice", "shared-id")
    alice.subscribe("home/alice/#", 1)
    alice.disconnect()
    server.publish("home/alice/door", b"secret", qos=1)
    anonymous = login(server, version, None, "shared-id")
    assert anonymous.connack.reason_code == 0 and anonymous.connack.session_present is False
    assert sentinel_after(anonymous, server) == []
    anonymous.close()


@pytest.mark.parametrize("version", [4, 5])
def test_same_user_resumes_its_session(start: Callable[..., WrenmqServer], version: int) -> None:  # [MQTT-3.2.2-2]
    server = start()
    alice = login(server, version, "alice", "alice-phone")
    alice.subscribe("home/alice/#", 1)
    alice.disconnect()
    server.publish("home/alice/door", b"queued", qos=1)
    again = login(server, version, "alice", "alice-phone")
    assert again.connack.session_present is True
    assert [m.payload for m in sentinel_after(again, server)] == [b"queued"]
    assert server.broker.stats.session_owner_conflicts == 0
    again.close()


@pytest.mark.parametrize("version", [4, 5])
def test_live_session_not_taken_over_by_another_user(start: Callable[..., WrenmqServer], version: int) -> None:
    """[MQTT-3.1.4-3] lets a client take over its own session; another user cannot kick alice
    off with her client id: the CONNECT is refused (0x87; 3.1.1: 5) and alice keeps her
    connection and her traffic."""
    server = start()
    alice = login(server, version, "alice", "alice-phone")
    alice.subscribe("home/alice/#", 1)
    with RawClient(server.port, version) as bob:
        connack = bob.connect("alice-phone", clean=True, username="bob", password=USERS["bob"])
        assert connack.reason_code == NOT_AUTHORIZED[version]
        bob.expect_closed()
    server.publish("home/alice/door", b"live", qos=1)
    assert [m.payload for m in sentinel_after(alice, server)] == [b"live"]
    assert server.broker.stats.session_owner_conflicts == 1
    # alice's own new connection still takes over [MQTT-3.1.4-3]
    second = login(server, version, "alice", "alice-phone")
    assert second.connack.reason_code == 0 and second.connack.session_present is True
    alice.expect_closed()
    second.close()


@pytest.mark.parametrize("version", [4, 5])
def test_owner_survives_a_restart(
    wrenmq_server_factory: Callable[..., WrenmqServer], passwd: Path, tmp_path: Path, version: int
) -> None:
    """A session restored from SQLite keeps its owner: bob still cannot resume alice's session after
    a restart, and alice can."""
    settings = {"password_file": passwd, "storage": "sqlite", "data_dir": tmp_path / "data"}
    first = wrenmq_server_factory(**settings)
    for client_id in ("alice-phone", "alice-tablet"):
        alice = login(first, version, "alice", client_id)
        alice.subscribe("home/alice/#", 1)
        alice.disconnect()
    first.publish("home/alice/door", b"queued", qos=1)
    first.stop()

    second = wrenmq_server_factory(**settings)
    bob = login(second, version, "bob", "alice-phone")
    assert bob.connack.session_present is False
    assert sentinel_after(bob, second) == []
    assert second.broker.stats.session_owner_conflicts == 1
    alice = login(second, version, "alice", "alice-tablet")
    assert alice.connack.session_present is True
    assert [m.payload for m in sentinel_after(alice, second)] == [b"queued"]
    bob.close()
    alice.close()


V1_SCHEMA = """
CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    properties BLOB NOT NULL, expiry_at REAL);
CREATE TABLE sessions (client_id TEXT PRIMARY KEY, protocol_version INTEGER NOT NULL,
    expiry_interval INTEGER NOT NULL, disconnected_at REAL, subscriptions TEXT NOT NULL, will_topic TEXT,
    will_payload BLOB, will_qos INTEGER, will_retain INTEGER, will_properties BLOB, will_expiry_at REAL,
    will_delay INTEGER NOT NULL, next_seq INTEGER NOT NULL);
CREATE TABLE session_messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL, qos INTEGER NOT NULL,
    packet_id INTEGER, state INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    msg_qos INTEGER NOT NULL, retain INTEGER NOT NULL, properties BLOB NOT NULL, expiry_at REAL,
    PRIMARY KEY (client_id, seq)) WITHOUT ROWID;
CREATE TABLE inbound_qos2 (client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def test_store_from_before_owners_is_migrated(
    wrenmq_server_factory: Callable[..., WrenmqServer], passwd: Path, tmp_path: Path
) -> None:
    """A store written before sessions had owners (schema 1) is migrated in place; its sessions
    have no recorded owner, so the first user to resume one claims it, and from then on it is
    that user's."""
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "wrenmq.db")
    db.executescript(V1_SCHEMA)
    db.execute(
        "INSERT INTO sessions VALUES ('old-device', 4, 4294967295, 1.0, '[[\"a/#\",1,false,false,0,null]]',"
        " NULL, NULL, NULL, NULL, NULL, NULL, 0, 0)"
    )
    db.commit()
    db.close()
    server = wrenmq_server_factory(password_file=passwd, storage="sqlite", data_dir=data)
    # Migrated through schema 2 (owners) to the current one.
    assert sqlite3.connect(data / "wrenmq.db").execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    alice = login(server, 4, "alice", "old-device")
    assert alice.connack.session_present is True
    alice.close()
    bob = login(server, 4, "bob", "old-device")
    assert bob.connack.session_present is False
    assert server.broker.stats.session_owner_conflicts == 1
    bob.close()
