"""One storage for all state (issue 15, item 5): the services' part of the storage interface, run
against both backends (memory and real SQLite files), and the SQLite files an older wrenmq wrote
(``presence.db``, ``resources.db``, ``bridges.db``) read as they are. ``test_storage_loop.py``
checks that the event loop never runs SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wrenmq.storage import MemoryStorage, ResourceConflict, SqliteStorage, Storage, StoredMessage


def message(topic: str, payload: bytes = b"p", qos: int = 1, properties: bytes = b"\x00") -> StoredMessage:
    return StoredMessage(topic, payload, qos, False, properties, None)


def open_sqlite(data: Path, durability: str = "strict", interval: float = 0.05) -> SqliteStorage:
    store = SqliteStorage(data / "wrenmq.db", durability, interval)
    store.open(asyncio.get_running_loop())
    return store


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store: Storage
    if request.param == "memory":
        store = MemoryStorage()
        store.open(asyncio.get_running_loop())
    else:
        store = open_sqlite(tmp_path / "data")
    yield store
    await store.close()


# -- the interface, on both backends --------------------------------------------------------------------


async def test_devices_put_load_replace_and_delete(storage: Storage) -> None:
    assert await storage.devices_load() == []
    storage.device_put([{"deviceId": "b", "online": True}, {"deviceId": "a", "status": None}])
    storage.device_put([{"deviceId": "b", "online": False, "nested": {"x": [1, 2]}}])
    assert await storage.devices_load() == [
        {"deviceId": "a", "status": None},
        {"deviceId": "b", "online": False, "nested": {"x": [1, 2]}},
    ]
    storage.device_event_add("b", {"n": 1}, 5)
    storage.device_delete("b")
    assert await storage.devices_load() == [{"deviceId": "a", "status": None}]
    assert await storage.device_events("b", 10) == []  # a device's events go with it


async def test_device_events_newest_first_and_trimmed_to_kept(storage: Storage) -> None:
    for n in range(6):
        storage.device_event_add("d1", {"n": n}, 4)
    storage.device_event_add("d2", {"n": 99}, 4)
    # Read at once, without a flush: a read sees every write enqueued before it.
    assert await storage.device_events("d1", 10) == [{"n": 5}, {"n": 4}, {"n": 3}, {"n": 2}]
    assert await storage.device_events("d1", 2) == [{"n": 5}, {"n": 4}]
    assert await storage.device_events("d2", 10) == [{"n": 99}]


async def test_reads_return_copies(storage: Storage) -> None:
    entry = {"deviceId": "c", "tags": ["x"]}
    storage.device_put([entry])
    entry["tags"].append("changed after the put")
    loaded = await storage.devices_load()
    assert loaded == [{"deviceId": "c", "tags": ["x"]}]
    loaded[0]["tags"].append("changed after the read")
    assert await storage.devices_load() == [{"deviceId": "c", "tags": ["x"]}]


async def test_resource_commit_state_get_page_and_events(storage: Storage) -> None:
    assert await storage.resource_state("flow", "f1") == (None, 0)
    await storage.resource_commit("flow", "f1", {"label": "a"}, 1, {"seq": 1, "event": "created"})
    await storage.resource_commit("flow", "f0", {"label": "z"}, 2, {"seq": 2, "event": "created"})
    await storage.resource_commit("cam", "c1", {"on": True}, 1, {"seq": 1, "event": "created"})
    await storage.resource_commit("flow", "f1", {"label": "b"}, 3, {"seq": 3, "event": "updated"})
    assert await storage.resource_state("flow", "f1") == ({"label": "b"}, 3)
    assert await storage.resource_get("flow", "f1") == {"label": "b"}
    assert await storage.resource_get("flow", "nope") is None
    assert await storage.resource_page("flow", 10, 0) == ([("f0", {"label": "z"}), ("f1", {"label": "b"})], 2)
    assert await storage.resource_page("flow", 1, 1) == ([("f1", {"label": "b"})], 2)
    events, last = await storage.resource_events("flow", 1, 10)
    assert ([e["seq"] for e in events], last) == ([2, 3], 3)
    events, last = await storage.resource_events("flow", 0, 1)
    assert ([e["seq"] for e in events], last) == ([1], 3)
    assert await storage.resource_events("cam", 1, 10) == ([], 1)

    await storage.resource_commit("flow", "f0", None, 4, {"seq": 4, "event": "deleted"})
    assert await storage.resource_state("flow", "f0") == (None, 4)
    assert await storage.resource_page("flow", 10, 0) == ([("f1", {"label": "b"})], 1)


@pytest.mark.parametrize("seq", [1, 3, 0])
async def test_resource_commit_refuses_a_seq_that_is_not_last_plus_one(storage: Storage, seq: int) -> None:
    """The event log stays gap-free and each seq is taken once, whoever writes (wrenmq feature)."""
    await storage.resource_commit("flow", "f1", {"v": 1}, 1, {"seq": 1})
    with pytest.raises(ResourceConflict):
        await storage.resource_commit("flow", "f1", {"v": 2}, seq, {"seq": seq})
    assert await storage.resource_state("flow", "f1") == ({"v": 1}, 1)  # nothing of it was stored
    await storage.resource_commit("flow", "f1", {"v": 3}, 2, {"seq": 2})  # and the store goes on
    assert await storage.resource_state("flow", "f1") == ({"v": 3}, 2)


async def test_outbox_add_delete_clear_and_load_in_order(storage: Storage) -> None:
    keys = [storage.outbox_add(conn, message(f"t/{n}")) for n, conn in enumerate("abab")]
    assert keys == sorted(keys) and len(set(keys)) == 4
    storage.outbox_delete(keys[0])
    storage.outbox_clear("b")
    late = storage.outbox_add("b", message("t/late", b"\x00\xff", 2, b"\x03\x03\x00\x01x"))
    assert late > keys[-1]  # a key is never reused
    loaded = await storage.outbox_load()
    assert [(r.key, r.connection, r.message.topic) for r in loaded] == [(keys[2], "a", "t/2"), (late, "b", "t/late")]
    assert loaded[1].message == StoredMessage("t/late", b"\x00\xff", 2, False, b"\x03\x03\x00\x01x", None)


# -- SQLite: the files, across a reopen and from an older wrenmq --------------------------------------------


async def test_sqlite_services_state_survives_a_reopen_in_the_files_it_always_had(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_sqlite(data)
    store.device_put([{"deviceId": "k1", "online": True}])
    store.device_event_add("k1", {"e": "started"}, 10)
    await store.resource_commit("flow", "f1", {"label": "a"}, 1, {"seq": 1})
    gone = store.outbox_add("plant", message("q/0"))
    kept = store.outbox_add("plant", message("q/1"))
    await store.flush()
    store.outbox_delete(gone)
    await store.close()
    assert sorted(p.name for p in data.glob("*.db")) == ["bridges.db", "presence.db", "resources.db", "wrenmq.db"]
    with sqlite3.connect(data / "bridges.db") as db:
        assert db.execute("SELECT id, topic FROM outbox").fetchall() == [(kept, "q/1")]

    store = open_sqlite(data)
    try:
        assert await store.devices_load() == [{"deviceId": "k1", "online": True}]
        assert await store.device_events("k1", 10) == [{"e": "started"}]
        assert await store.resource_state("flow", "f1") == ({"label": "a"}, 1)
        assert [(r.key, r.message.topic) for r in await store.outbox_load()] == [(kept, "q/1")]
        assert store.outbox_add("plant", message("q/2")) > kept  # not even a deleted row's key again
    finally:
        await store.close()


# The tables exactly as wrenmq before issue 15 made them, each in its own file, by its own connection.
_OLD_PRESENCE = """
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, seq);
INSERT INTO devices VALUES ('k-1', '{"deviceId": "k-1", "type": "kiosk", "online": true}');
INSERT INTO events (device, body) VALUES ('k-1', '{"n": 1}'), ('k-1', '{"n": 2}');
"""
_OLD_RESOURCES = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS events (
    kind TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, seq)
);
INSERT INTO resources VALUES ('flow', 'f1', '{"label": "b"}');
INSERT INTO events VALUES ('flow', 1, '{"seq": 1, "event": "created"}'), ('flow', 2, '{"seq": 2, "event": "updated"}');
"""
_OLD_BRIDGES = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, connection TEXT NOT NULL,
 topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, properties BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_connection ON outbox (connection, id);
INSERT INTO outbox (connection, topic, payload, qos, retain, properties) VALUES
 ('plant', 'cloud/0', x'30', 1, 0, x'00'), ('plant', 'cloud/1', x'31', 1, 1, x'00'),
 ('plant', 'cloud/2', x'32', 1, 0, x'00');
DELETE FROM outbox WHERE id = 3;
"""


async def test_sqlite_reads_the_files_an_older_wrenmq_wrote(tmp_path: Path) -> None:
    """Upgrading loses nothing: presence, resources and the bridge outboxes are read from the
    files and tables the services used to keep themselves, and continue where they stopped."""
    data = tmp_path / "data"
    data.mkdir()
    for name, script in (("presence", _OLD_PRESENCE), ("resources", _OLD_RESOURCES), ("bridges", _OLD_BRIDGES)):
        db = sqlite3.connect(data / f"{name}.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(script)
        db.close()
    store = open_sqlite(data)
    try:
        assert await store.devices_load() == [{"deviceId": "k-1", "type": "kiosk", "online": True}]
        assert await store.device_events("k-1", 10) == [{"n": 2}, {"n": 1}]
        assert await store.resource_state("flow", "f1") == ({"label": "b"}, 2)
        await store.resource_commit("flow", "f1", {"label": "c"}, 3, {"seq": 3})
        records = await store.outbox_load()
        found = [(r.key, r.message.topic, r.message.retain) for r in records]
        assert found == [(1, "cloud/0", False), (2, "cloud/1", True)]
        assert store.outbox_add("plant", message("cloud/3")) == 4  # past the deleted id 3 (AUTOINCREMENT)
        store.device_event_add("k-1", {"n": 3}, 2)
        assert await store.device_events("k-1", 10) == [{"n": 3}, {"n": 2}]
    finally:
        await store.close()


async def test_sqlite_outbox_message_acknowledged_within_a_batch_never_touches_the_disk(tmp_path: Path) -> None:
    """A bridged message the remote acknowledges before the next commit costs no write (group commit)."""
    store = open_sqlite(tmp_path / "data", "relaxed", 60.0)  # everything before flush() is one batch
    try:
        for n in range(100):
            store.outbox_delete(store.outbox_add("plant", message(f"q/{n}")))
        store.outbox_add("plant", message("q/kept"))
        await store.flush()
        assert store.commits == 1 and store.ops_written == 1
    finally:
        await store.close()
