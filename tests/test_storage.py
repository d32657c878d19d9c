"""Storage: round trips through real SQLite files, group commit, barriers, coalescing, crash safety."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import wrenmq.storage
import wrenmq.storage.sqlite_sessions
from wrenmq.storage import (
    NEVER_EXPIRES,
    QUEUED,
    RELEASED,
    SENT,
    LoadedState,
    MemoryStorage,
    SqliteStorage,
    StoredMessage,
    StoredSession,
    StoredSessionMessage,
    StoredSubscription,
    open_storage,
)
from wrenmq.storage import batch as ops
from wrenmq.storage.sqlite import SCHEMA_VERSION

# -- helpers ------------------------------------------------------------------------------------------


def msg(topic: str = "a/b", payload: bytes = b"hello", **kw: object) -> StoredMessage:
    fields: dict[str, object] = {"qos": 1, "retain": False, "properties": b"", "expiry_at": None} | kw
    return StoredMessage(topic, payload, **fields)  # type: ignore[arg-type]


def queued(seq: int, m: StoredMessage | None = None) -> StoredSessionMessage:
    return StoredSessionMessage(seq, 1, None, QUEUED, m or msg())


def session(client_id: str = "c1", **kw: object) -> StoredSession:
    fields: dict[str, object] = {
        "protocol_version": 5,
        "expiry_interval": 3600,
        "disconnected_at": None,
        "subscriptions": [],
        "will": None,
        "will_delay": 0,
    } | kw
    return StoredSession(client_id, **fields)  # type: ignore[arg-type]


def open_store(path: Path, durability: str = "strict", interval: float = 0.05) -> tuple[SqliteStorage, LoadedState]:
    store = SqliteStorage(path, durability, interval)
    return store, store.open(asyncio.get_running_loop())


async def reload(path: Path) -> LoadedState:
    store, state = open_store(path)
    await store.close()
    return state


def count(path: Path, table: str) -> int:
    """Rows visible to an independent reader, as after a crash."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "wrenmq.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStorage]:
    s, _ = open_store(db)
    yield s
    await s.close()


@pytest.fixture
async def batching_store(db: Path) -> AsyncIterator[SqliteStorage]:
    """Relaxed with a long window: everything enqueued before ``flush()`` lands in one batch."""
    s, _ = open_store(db, "relaxed", 60.0)
    yield s
    await s.close()


# -- round trips --------------------------------------------------------------------------------------


async def test_every_record_round_trips_across_reopen(db: Path) -> None:
    retained = [
        msg("sensors/1", b"21.5", qos=1, retain=True, properties=b"\x01\x01", expiry_at=2e9),
        msg("sensors/2", b"", qos=0, retain=True),
    ]
    subs = [
        StoredSubscription("a/#", 2, True, True, 2, 7),
        StoredSubscription("$share/g/b/+", 1, False, False, 0, None),
    ]
    will = msg("wills/c1", b"gone", qos=2, retain=True, properties=b"\x02\x00\x00\x00\x3c", expiry_at=1.5e9)
    s1 = session("c1", subscriptions=subs, will=will, will_delay=30, disconnected_at=1.7e9, next_seq=3)
    s2 = session("c2", protocol_version=4, expiry_interval=NEVER_EXPIRES)
    messages = [
        StoredSessionMessage(0, 2, 17, RELEASED, msg("x", b"\x00\xff" * 10, qos=2)),
        StoredSessionMessage(1, 1, 18, SENT, msg("y", qos=1, retain=True, properties=b"\x23\x00\x05")),
        StoredSessionMessage(2, 0, None, QUEUED, msg("z", qos=0, expiry_at=1.8e9)),
    ]

    store, state = open_store(db)
    assert state == LoadedState([], [])
    for m in retained:
        store.retain_set(m)
    store.session_put(s1)
    store.session_put(s2)
    for sm in messages:
        store.message_add("c1", sm)
    store.inbound_add("c1", 5)
    store.inbound_add("c1", 6)
    await store.close()

    state = await reload(db)
    assert sorted(state.retained, key=lambda m: m.topic) == retained
    loaded = {s.session.client_id: s for s in state.sessions}
    assert loaded["c1"].session == s1
    assert loaded["c1"].messages == messages
    assert sorted(loaded["c1"].inbound_qos2) == [5, 6]
    assert loaded["c2"].session == s2
    assert loaded["c2"].messages == []
    assert loaded["c2"].inbound_qos2 == []


async def test_updates_and_deletes_round_trip(db: Path) -> None:
    store, _ = open_store(db)
    store.retain_set(msg("keep", retain=True))
    store.retain_set(msg("drop", retain=True))
    store.session_put(session("c1", will=msg("w"), will_delay=5))
    for seq in range(3):
        store.message_add("c1", queued(seq))
    store.inbound_add("c1", 1)
    store.inbound_add("c1", 2)
    await store.flush()  # the changes below land in later batches, against stored rows

    store.retain_delete("drop")
    store.session_put(session("c1", will=None, disconnected_at=123.0))
    store.message_update("c1", 0, 99, SENT)
    store.message_delete("c1", 1)
    store.inbound_delete("c1", 1)
    await store.close()

    state = await reload(db)
    assert [m.topic for m in state.retained] == ["keep"]
    (c1,) = state.sessions
    assert c1.session.will is None and c1.session.disconnected_at == 123.0
    assert [(m.seq, m.packet_id, m.state) for m in c1.messages] == [(0, 99, SENT), (2, None, QUEUED)]
    assert c1.inbound_qos2 == [2]


async def test_next_seq_is_raised_past_stored_messages(db: Path) -> None:
    store, _ = open_store(db)
    store.session_put(session("c1", next_seq=2))
    store.message_add("c1", queued(10))
    await store.close()
    (c1,) = (await reload(db)).sessions
    assert c1.session.next_seq == 11


async def test_newer_schema_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_store(db)


async def test_session_message_keeps_its_message_id_across_reopen(db: Path) -> None:
    """Broker.message_id travels with a queued or in-flight message, so a replay after a restart
    carries the id clients saw it under; a message stored without one loads without one."""
    store, _ = open_store(db)
    store.session_put(session("c1"))
    with_ids = [
        StoredSessionMessage(0, 1, None, QUEUED, StoredMessage("a", b"1", 1, False, b"", None, "9f3c01aa-41")),
        StoredSessionMessage(1, 1, 7, SENT, StoredMessage("b", b"2", 1, False, b"", 2e9, "9f3c01aa-42")),
        StoredSessionMessage(2, 1, None, QUEUED, msg("c")),
    ]
    for sm in with_ids:
        store.message_add("c1", sm)
    await store.close()
    (c1,) = (await reload(db)).sessions
    assert [m.message.message_id for m in c1.messages] == ["9f3c01aa-41", "9f3c01aa-42", None]


async def test_store_from_before_message_ids_is_migrated(db: Path) -> None:
    """A schema 2 store (before message ids) is migrated in place; its queued messages load with
    no id (the broker gives them one when they are sent) and new ones keep theirs."""
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript(
            wrenmq.storage.sqlite_sessions.SCHEMA.replace("    message_id TEXT,\n", "").replace(
                "user_version = 3", "user_version = 2"
            )
        )
        conn.execute(
            "INSERT INTO sessions (client_id, protocol_version, expiry_interval, subscriptions, will_delay,"
            " next_seq) VALUES ('c1', 5, 3600, '[]', 0, 1)"
        )
        conn.execute("INSERT INTO session_messages VALUES ('c1', 0, 1, NULL, 0, 't', x'31', 1, 0, x'', NULL)")
    store, state = open_store(db)
    try:
        (c1,) = state.sessions
        assert [(m.message.topic, m.message.message_id) for m in c1.messages] == [("t", None)]
        new = StoredMessage("u", b"", 1, False, b"", None, "b-1")
        store.message_add("c1", StoredSessionMessage(1, 1, None, QUEUED, new))
    finally:
        await store.close()
    (c1,) = (await reload(db)).sessions
    assert [m.message.message_id for m in c1.messages] == [None, "b-1"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


# -- barriers -----------------------------------------------------------------------------------------


async def test_barrier_fires_after_data_is_readable_by_another_connection(db: Path) -> None:
    store, _ = open_store(db, "strict")
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    def check(expected: int) -> Callable[[], None]:
        def callback() -> None:
            seen.append((expected, count(db, "session_messages")))
            if expected == 1000:
                done.set()

        return callback

    for n in range(20):
        for seq in range(n * 50, (n + 1) * 50):
            store.message_add("c1", queued(seq))
        store.barrier(check((n + 1) * 50))
    await asyncio.wait_for(done.wait(), 10)
    assert [expected for expected, _ in seen] == list(range(50, 1001, 50)), "barriers ran out of order"
    assert all(visible >= expected for expected, visible in seen), seen
    assert not store.dirty
    await store.close()


async def test_barrier_with_nothing_pending_runs_soon_not_inline(store: SqliteStorage) -> None:
    fired: list[int] = []
    store.barrier(lambda: fired.append(1))
    assert fired == []
    await asyncio.sleep(0)
    assert fired == [1]


async def test_barrier_after_commit_still_runs_behind_earlier_barriers(store: SqliteStorage) -> None:
    order: list[str] = []
    store.message_add("c1", queued(0))
    store.barrier(lambda: order.append("first"))
    deadline = time.monotonic() + 10
    while store.dirty and time.monotonic() < deadline:
        time.sleep(0.01)  # block the loop: the writer commits and schedules "first" meanwhile
    assert not store.dirty and order == []
    store.barrier(lambda: order.append("second"))  # nothing pending: call_soon
    await store.flush()
    assert order == ["first", "second"]


async def test_dirty_until_committed(store: SqliteStorage) -> None:
    assert not store.dirty
    store.retain_set(msg(retain=True))
    assert store.dirty
    await store.flush()
    assert not store.dirty


async def test_failing_callback_does_not_stop_the_others(
    store: SqliteStorage, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    store.retain_set(msg(retain=True))
    store.barrier(boom)
    store.barrier(lambda: ran.append("after"))
    await store.flush()
    assert ran == ["after"]
    assert "barrier callback" in caplog.text


# -- coalescing ---------------------------------------------------------------------------------------


def test_fold_add_then_delete_cancels() -> None:
    b = ops.fold([(ops.MESSAGE_ADD, "c", queued(1)), (ops.MESSAGE_DELETE, "c", 1)])
    assert b.split_messages() == ([], [], [])


def test_fold_update_folds_into_add() -> None:
    b = ops.fold([(ops.MESSAGE_ADD, "c", queued(1)), (ops.MESSAGE_UPDATE, "c", 1, 7, SENT)])
    upserts, updates, deletes = b.split_messages()
    assert [(c, m.seq, m.packet_id, m.state) for c, m in upserts] == [("c", 1, 7, SENT)]
    assert updates == []
    assert deletes == []


def test_fold_updates_to_a_stored_row_keep_the_last() -> None:
    b = ops.fold([(ops.MESSAGE_UPDATE, "c", 1, 7, SENT), (ops.MESSAGE_UPDATE, "c", 1, 7, RELEASED)])
    assert b.split_messages() == ([], [(7, RELEASED, "c", 1)], [])


def test_fold_delete_wins_over_update_and_add_over_delete_replaces() -> None:
    b = ops.fold([(ops.MESSAGE_UPDATE, "c", 1, 7, SENT), (ops.MESSAGE_DELETE, "c", 1)])
    assert b.split_messages() == ([], [], [("c", 1)])
    # A stored row deleted and re-added must be replaced, and deleting it again must still delete it.
    re_added = [(ops.MESSAGE_DELETE, "c", 1), (ops.MESSAGE_ADD, "c", queued(1))]
    assert [m.seq for _, m in ops.fold(re_added).split_messages()[0]] == [1]
    assert ops.fold([*re_added, (ops.MESSAGE_DELETE, "c", 1)]).split_messages() == ([], [], [("c", 1)])


def test_fold_session_delete_drops_earlier_ops_of_that_client_only() -> None:
    b = ops.fold(
        [
            (ops.SESSION_PUT, "c", session("c")),
            (ops.MESSAGE_ADD, "c", queued(0)),
            (ops.INBOUND_ADD, "c", 3),
            (ops.MESSAGE_ADD, "other", queued(0)),
            (ops.SESSION_DELETE, "c"),
            (ops.SESSION_PUT, "c", session("c", expiry_interval=5)),
        ]
    )
    assert list(b.session_deletes) == ["c"]
    assert b.sessions["c"].expiry_interval == 5
    assert "c" not in b.messages and "c" not in b.inbound
    assert [c for c, _ in b.split_messages()[0]] == ["other"]


def test_fold_retain_and_inbound_keep_the_last_op() -> None:
    b = ops.fold(
        [
            (ops.RETAIN_SET, "t", msg("t")),
            (ops.RETAIN_DELETE, "t"),
            (ops.INBOUND_ADD, "c", 1),
            (ops.INBOUND_DELETE, "c", 1),
            (ops.INBOUND_DELETE, "c", 2),
            (ops.INBOUND_ADD, "c", 2),
        ]
    )
    assert b.retained == {"t": None}
    assert b.inbound == {"c": {1: False, 2: True}}


async def test_add_and_delete_in_one_batch_never_touch_the_disk(db: Path, batching_store: SqliteStorage) -> None:
    for seq in range(100):
        batching_store.message_add("c1", queued(seq))
        batching_store.message_update("c1", seq, seq + 1, SENT)
        batching_store.message_delete("c1", seq)
    await batching_store.flush()
    assert batching_store.commits == 0 and batching_store.ops_written == 0
    assert count(db, "session_messages") == 0


async def test_add_and_delete_in_separate_batches_leave_nothing(db: Path, store: SqliteStorage) -> None:
    store.message_add("c1", queued(0))
    await store.flush()
    assert count(db, "session_messages") == 1
    store.message_delete("c1", 0)
    await store.flush()
    assert count(db, "session_messages") == 0
    assert store.commits == 2


# -- session delete -----------------------------------------------------------------------------------


@pytest.mark.parametrize("same_batch", [False, True], ids=["separate-batches", "same-batch"])
async def test_session_delete_removes_messages_and_inbound_ids(db: Path, same_batch: bool) -> None:
    store, _ = open_store(db, "relaxed", 60.0)
    store.session_put(session("c1"))
    store.session_put(session("c2"))
    for seq in range(5):
        store.message_add("c1", queued(seq))
        store.message_add("c2", queued(seq))
    store.inbound_add("c1", 1)
    store.inbound_add("c2", 1)
    if not same_batch:
        await store.flush()
    store.session_delete("c1")
    await store.close()

    (c2,) = (await reload(db)).sessions
    assert c2.session.client_id == "c2"
    assert len(c2.messages) == 5 and c2.inbound_qos2 == [1]
    with sqlite3.connect(db) as conn:
        for table in ("sessions", "session_messages", "inbound_qos2"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE client_id = 'c1'").fetchone()[0] == 0


# -- durability modes ---------------------------------------------------------------------------------


async def test_relaxed_commits_within_commit_interval(db: Path) -> None:
    store, _ = open_store(db, "relaxed", 0.3)
    committed = asyncio.Event()
    started = time.monotonic()
    store.retain_set(msg("t", retain=True))
    store.barrier(committed.set)
    await asyncio.sleep(0.1)
    assert store.dirty and count(db, "retained") == 0, "relaxed mode should wait to batch"
    await asyncio.wait_for(committed.wait(), 5)
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 2.0, elapsed
    assert count(db, "retained") == 1
    await store.close()


async def test_synchronous_pragma_follows_durability(tmp_path: Path) -> None:
    for durability, expected in (("strict", 2), ("relaxed", 1)):  # FULL, NORMAL
        store, _ = open_store(tmp_path / f"{durability}.db", durability)
        assert store._conn is not None
        store.barrier(lambda: None)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == expected
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        await store.close()


_CHILD = """
import asyncio, sys
from pathlib import Path
from wrenmq.storage import QUEUED, SqliteStorage, StoredMessage, StoredSession, StoredSessionMessage

async def main() -> None:
    store = SqliteStorage(Path(sys.argv[1]), "strict", 0.05)
    store.open(asyncio.get_running_loop())
    n = int(sys.argv[2])
    store.session_put(StoredSession("victim", 5, 0xFFFFFFFF, None, [], None, 0))
    m = StoredMessage("t/kill", b"p" * 64, 1, False, b"", None)
    for seq in range(n):
        store.message_add("victim", StoredSessionMessage(seq, 1, None, QUEUED, m))
    store.barrier(lambda: print("committed", flush=True))
    seq = n
    while True:  # keep the writer busy so that the kill lands mid-transaction
        for _ in range(500):
            store.message_add("victim", StoredSessionMessage(seq, 1, None, QUEUED, m))
            seq += 1
        await asyncio.sleep(0.001)

asyncio.run(main())
"""


async def test_committed_messages_survive_sigkill(db: Path) -> None:
    n = 20_000
    src = Path(wrenmq.storage.__file__).parents[2]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(db), str(n), stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert line == b"committed\n"
    assert child.returncode == -signal.SIGKILL

    (victim,) = (await reload(db)).sessions
    seqs = [m.seq for m in victim.messages]
    assert len(seqs) >= n
    assert seqs == list(range(len(seqs))), "a committed batch is a prefix: no gaps"


# -- errors and lifecycle -----------------------------------------------------------------------------


async def test_an_unwritable_row_is_logged_and_the_rest_of_the_batch_lands(
    db: Path, batching_store: SqliteStorage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "wrenmq.storage")
    fired = asyncio.Event()
    batching_store.retain_set(msg("good/1", retain=True))
    batching_store.retain_set(msg("bad", payload=object(), retain=True))  # type: ignore[arg-type]
    batching_store.retain_set(msg("good/2", retain=True))
    batching_store.barrier(fired.set)
    await batching_store.flush()
    assert fired.is_set()
    assert count(db, "retained") == 2
    assert "unwritable row" in caplog.text


async def test_close_is_idempotent_and_later_writes_are_dropped(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, _ = open_store(db)
    store.retain_set(msg("t", retain=True))
    await asyncio.gather(store.close(), store.close())
    await store.close()
    store.retain_set(msg("late", retain=True))
    assert "closed" in caplog.text
    assert not store.dirty
    await store.flush()  # nothing pending: returns at once
    assert [m.topic for m in (await reload(db)).retained] == ["t"]


async def test_close_without_open() -> None:
    await SqliteStorage(Path("/nonexistent/never-created.db")).close()


async def test_memory_storage_keeps_nothing_and_still_honours_barriers() -> None:
    store = MemoryStorage()
    assert store.open(asyncio.get_running_loop()) == LoadedState([], [])
    store.message_add("c", queued(0))
    assert not store.dirty
    fired: list[int] = []
    store.barrier(lambda: fired.append(1))
    assert fired == []
    await store.flush()
    assert fired == [1]
    await store.close()


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage("memory", tmp_path / "x.db", "strict", 0.05), MemoryStorage)
    sqlite_store = open_storage("sqlite", tmp_path / "x.db", "relaxed", 0.05)
    assert isinstance(sqlite_store, SqliteStorage) and sqlite_store.durability == "relaxed"
    with pytest.raises(ValueError, match="redis"):
        open_storage("redis", tmp_path / "x.db", "strict", 0.05)
    with pytest.raises(ValueError, match="durability"):
        open_storage("sqlite", tmp_path / "x.db", "paranoid", 0.05)


# -- throughput (a sanity print, not an assertion on time) --------------------------------------------


async def test_throughput_sanity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 100_000
    m = msg("bench/topic", b"x" * 100)
    lines = []
    for durability in ("strict", "relaxed"):
        store, _ = open_store(tmp_path / f"{durability}.db", durability, 0.05)
        store.session_put(session("bench"))
        started = time.perf_counter()
        for seq in range(n):
            store.message_add("bench", queued(seq, m))
        enqueued = time.perf_counter()
        await store.flush()
        added = time.perf_counter()
        for seq in range(n):
            store.message_delete("bench", seq)
        await store.flush()
        deleted = time.perf_counter()
        for seq in range(n, 2 * n):
            store.message_add("bench", queued(seq, m))
            store.message_delete("bench", seq)
        await store.flush()
        paired = time.perf_counter()
        rates = {
            "enqueue": n / (enqueued - started),
            "add+commit": n / (added - started),
            "delete+commit": n / (deleted - added),
            "add+delete interleaved": n / (paired - deleted),
        }
        lines.append(
            f"{durability:>7}: "
            + " | ".join(f"{k} {v:>9,.0f}/s" for k, v in rates.items())
            + f" | {store.commits} commits, {store.ops_written} rows written"
        )
        assert count(tmp_path / f"{durability}.db", "session_messages") == 0
        await store.close()
    with capsys.disabled():
        print("\nstorage throughput (100k messages of 100 B):", *lines, sep="\n  ")


async def test_ops_of_one_loop_callback_commit_together(store: SqliteStorage) -> None:
    """What one packet changes (a routed message and its publisher's QoS 2 packet id) lands in one
    commit, however the writer thread is scheduled meanwhile: split across a crash, it would deliver
    the message twice [MQTT-4.3.3-9]."""
    commits = store.commits
    store.message_add("sub", queued(0))
    time.sleep(0.1)  # the writer thread is idle and free to run: it must not take half the packet
    store.inbound_add("pub", 7)
    await store.flush()
    assert store.commits == commits + 1
