"""The broker's journal of recently routed messages (broker/journal.py), which realtime clients
that resume replay from: bounded by count, payload bytes and age, stamped once per message when it
is routed (a wrenmq feature; no MQTT statement)."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from wrenmq.broker.journal import Journal
from wrenmq.broker.message import Message
from wrenmq.mqtt.properties import PropertyId


def routed(journal: Journal, seq: int, now: float, payload: bytes = b"x") -> Message:
    message = Message(f"t/{seq}", payload)
    message.seq = seq
    journal.record(message, now)
    return message


def test_record_stamps_the_message_with_wall_clock_time():
    journal = Journal(10, 1000, 60.0, offset=1_000_000.0)
    message = routed(journal, 1, 5.25)
    assert message.routed_at == 1_000_005.25
    [(seq, stamp, replayed)] = journal.since(0.0)
    assert (seq, stamp, replayed.seq, replayed.routed_at) == (1, 1_000_005.25, 1, 1_000_005.25)
    assert (replayed.topic, replayed.payload) == ("t/1", b"x")
    assert journal.oldest == 1_000_005.25


def test_journal_keeps_what_a_replay_needs_not_the_message():
    """The cost of the journal is in what it holds (megabytes of messages, freed cold): it keeps
    neither the routed message nor its encodings, nor a topic string of its own; a replay builds
    the message again with everything a realtime client is sent."""
    journal = Journal(10, 1000, 60.0, offset=100.0)
    props = {PropertyId.CONTENT_TYPE: "text/plain", PropertyId.USER_PROPERTY: [("k", "v")]}
    message = Message("plant/1/temp", b"21.5", 1, True, props, 400.0, "sensor-1")
    message.seq = 7
    message.stored_id = "abcd-3"
    message.wire(5, 1, True)  # an encoding cached on it
    router_topic = "plant/1/temp"  # the string the router's match cache holds for the topic
    held = sys.getrefcount(message)
    journal.record(message, 2.0, router_topic)
    assert sys.getrefcount(message) == held
    [(seq, stamp, replayed)] = journal.since(0.0)
    assert replayed is not message and replayed.topic is router_topic
    assert (seq, stamp) == (7, 102.0)
    assert (replayed.payload, replayed.qos, replayed.retain, replayed.properties) == (b"21.5", 1, True, props)
    assert (replayed.expires_at, replayed.origin, replayed.seq, replayed.stored_id) == (400.0, "sensor-1", 7, "abcd-3")
    assert replayed.routed_at == message.routed_at == 102.0
    plain = routed(journal, 8, 3.0)
    assert journal.since(102.0)[0][2].properties == plain.properties == {}


def test_count_bound_keeps_the_newest_across_the_ring():
    journal = Journal(3, 1000, 60.0)
    for seq in range(1, 8):
        routed(journal, seq, float(seq))
    assert [seq for seq, _, _ in journal.since(0.0)] == [5, 6, 7]
    assert len(journal) == 3 and journal.bytes == 3


def test_byte_bound_drops_the_oldest_and_a_message_larger_than_it():
    journal = Journal(10, 8, 60.0)
    routed(journal, 1, 1.0, b"aaaa")
    routed(journal, 2, 2.0, b"bbbb")
    routed(journal, 3, 3.0, b"cc")  # 10 bytes: the oldest goes
    assert [seq for seq, _, _ in journal.since(0.0)] == [2, 3] and journal.bytes == 6
    routed(journal, 4, 4.0, b"z" * 9)  # larger than the bound on its own: nothing is kept
    assert journal.since(0.0) == [] and journal.bytes == 0


def test_age_bound_counts_from_the_newest_stamp():
    journal = Journal(10, 1000, 5.0)
    routed(journal, 1, 0.0)
    routed(journal, 2, 4.0)
    routed(journal, 3, 6.0)  # 1 is 6 s old now
    assert [seq for seq, _, _ in journal.since(-1.0)] == [2, 3]


def test_since_excludes_the_entry_whose_rounded_stamp_a_client_sends():
    """A client sends back a stamp it was given, rounded to the microsecond: that entry is not
    replayed, the ones after it are, oldest first."""
    journal = Journal(10, 1000, 60.0, offset=1_700_000_000.0)
    routed(journal, 1, 0.1234564)
    routed(journal, 2, 0.2)
    stamp = round(journal.since(0.0)[0][1], 6)
    assert [seq for seq, _, _ in journal.since(stamp)] == [2]


def test_size_zero_keeps_nothing():
    journal = Journal(0, 1000, 60.0)
    message = routed(journal, 1, 1.0)
    assert journal.since(0.0) == [] and len(journal) == 0 and message.routed_at == 0.0


def test_entries_are_made_once_and_filled_again_in_place():
    """Recording allocates nothing once the ring is full: the entries are filled again in place, so
    a busy journal gives the cyclic collector nothing to count; a dropped entry lets its payload go."""
    journal = Journal(4, 1000, 60.0)
    for seq in range(1, 5):
        routed(journal, seq, float(seq))
    entries = list(journal._ring)  # (held: a new entry cannot take an old one's address)
    payload = b"big" * 100
    routed(journal, 5, 5.0, payload)
    held = sys.getrefcount(payload)
    for seq in range(6, 30):
        routed(journal, seq, float(seq))
    assert all(now is before for now, before in zip(journal._ring, entries, strict=True))
    assert sys.getrefcount(payload) == held - 1  # its entry was filled again: the payload is let go
    assert [seq for seq, _, _ in journal.since(0.0)] == [26, 27, 28, 29]


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 6),
    max_bytes=st.integers(0, 12),
    seconds=st.sampled_from([0.0, 1.5, 3.0, 100.0]),
    steps=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([0.0, 0.5, 1.0, 2.0])), max_size=40),
)
def test_journal_matches_a_plain_list_model(
    size: int, max_bytes: int, seconds: float, steps: list[tuple[int, float]]
) -> None:
    """Whatever the bounds and the pattern of sizes and times, the journal holds exactly what a
    plain list bounded the same way would: the newest messages, at most ``size``, payloads of at
    most ``max_bytes`` in total, none older than ``seconds`` before the newest."""
    journal = Journal(size, max_bytes, seconds)
    model: list[tuple[int, float, bytes]] = []
    now = 0.0
    for seq, (length, step) in enumerate(steps, 1):
        now += step
        payload = bytes([seq % 256]) * length
        routed(journal, seq, now, payload)
        model.append((seq, now, payload))
        if len(model) > size:
            model.pop(0)
        while model and (sum(len(m[2]) for m in model) > max_bytes or now - model[0][1] > seconds):
            model.pop(0)
        assert [(s, t, m.payload) for s, t, m in journal.since(-1.0)] == model
        assert len(journal) == len(model) and journal.bytes == sum(len(m[2]) for m in model)
        assert journal.oldest == (model[0][1] if model else None)
