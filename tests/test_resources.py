"""The resource change-event service (wrenmq feature, issue 7): ``/api/v1/resources`` over httpx
against a real broker, with paho-mqtt (3.1.1 and 5.0) subscribed to ``events/#`` as the
independent reader: events on ``events/all`` and ``events/<kind>/<id>``, their diffs, nothing for a
change that changes nothing, seq gap-free per kind, ``?since=`` replay, persistence in SQLite
across a restart, API key and validation errors, the events_* settings, and ``wrenmq sub``
printing the events of a PUT and a PATCH.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from paho_sync import MQTTv5, MQTTv311, PahoClient
from problems import PROBLEM
from serveproc import clean_env
from wrenmq.api.keys import ApiKeyStore
from wrenmq.pytest_plugin import WrenmqServer

TIMEOUT = 10.0
R = "/api/v1/resources"


class Api:
    """A broker with its API, httpx clients (read-write ``http``, read-only ``viewer``,
    ``anonymous``) and a paho subscriber on ``<prefix>/#``."""

    def __init__(self, server: WrenmqServer, protocol: Any = MQTTv5, prefix: str = "events") -> None:
        self.server = server
        store = ApiKeyStore(server.broker.config.api_keys_path)
        tag = uuid.uuid4().hex[:8]
        key = store.create(f"rw-{tag}")
        viewer = store.create(f"ro-{tag}", read_only=True)
        url = server.api_url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
        self.viewer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {viewer}"}, timeout=TIMEOUT)
        self.anonymous = httpx.Client(base_url=url, timeout=TIMEOUT)
        self.sub = PahoClient(server.port, protocol, f"sub-{tag}")
        self.sub.subscribe(f"{prefix}/#", 1)

    def events(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        return [(m.topic, json.loads(m.payload)) for m in self.sub.receive(count)]

    def close(self) -> None:
        self.sub.close()
        for client in (self.http, self.viewer, self.anonymous):
            client.close()


@pytest.fixture
def api(wrenmq_server_factory: Callable[..., WrenmqServer]) -> Iterator[Api]:
    client = Api(wrenmq_server_factory(api_port=0))
    yield client
    client.close()


def _pairs(received: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The events received on each topic (each event arrives once on each of its two topics)."""
    return {topic: event for topic, event in received}


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["3.1.1", "5.0"])
def test_create_update_delete_publish_on_both_topics(
    wrenmq_server_factory: Callable[..., WrenmqServer], protocol: Any
) -> None:
    """Each change is one event, the same on events/all and events/<kind>/<id>, with the shape the
    issue gives: event, <kind>_id, <kind>, diff, timestamp (RFC 3339 UTC), seq, id (a UUID)."""
    api = Api(wrenmq_server_factory(api_port=0), protocol)
    try:
        created = api.http.put(f"{R}/flow/f1", json={"label": "cam 1", "format": "video"})
        assert created.status_code == 201, created.text
        received = _pairs(api.events(2))
        assert set(received) == {"events/all", "events/flow/f1"}
        event = received["events/all"]
        assert received["events/flow/f1"] == event == created.json()["event"]
        assert event["event"] == "created" and event["flow_id"] == "f1" and event["seq"] == 1
        assert event["flow"] == {"label": "cam 1", "format": "video"}
        assert event["diff"] == {"format": {"old": None, "new": "video"}, "label": {"old": None, "new": "cam 1"}}
        assert event["timestamp"].endswith("Z") and datetime.fromisoformat(event["timestamp"]).utcoffset() is not None
        assert uuid.UUID(event["id"]).version == 4

        replaced = api.http.put(f"{R}/flow/f1", json={"label": "cam 2", "format": "video"})
        assert replaced.status_code == 200
        event = _pairs(api.events(2))["events/flow/f1"]
        assert event["event"] == "updated" and event["seq"] == 2
        assert event["diff"] == {"label": {"old": "cam 1", "new": "cam 2"}}

        deleted = api.http.delete(f"{R}/flow/f1")
        assert deleted.status_code == 200 and deleted.json()["resource"] is None
        received = _pairs(api.events(2))
        event = received["events/all"]
        assert received["events/flow/f1"] == event
        assert event["event"] == "deleted" and event["seq"] == 3
        assert event["flow"] == {"label": "cam 2", "format": "video"}
        assert event["diff"] == {"format": {"old": "video", "new": None}, "label": {"old": "cam 2", "new": None}}
        ids = {created.json()["event"]["id"], replaced.json()["event"]["id"], event["id"]}
        assert len(ids) == 3  # each event its own id
        api.sub.nothing()
        assert api.http.get(f"{R}/flow/f1").status_code == 404
    finally:
        api.close()


def test_patch_is_a_json_merge_patch_and_nested_fields_diff_as_dotted_paths(api: Api) -> None:
    """RFC 7396: members replace, null removes, objects merge; the diff names nested fields as
    dotted paths and compares lists whole."""
    api.http.put(f"{R}/flow/f1", json={"label": "a", "tags": ["x"], "source": {"host": "h1", "port": 5004}})
    api.events(2)
    patch = {"label": None, "tags": ["x", "y"], "source": {"port": 5006, "mux": True}}
    response = api.http.patch(
        f"{R}/flow/f1", content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["resource"] == {"tags": ["x", "y"], "source": {"host": "h1", "port": 5006, "mux": True}}
    event = _pairs(api.events(2))["events/flow/f1"]
    assert event["diff"] == {
        "label": {"old": "a", "new": None},
        "source.mux": {"old": None, "new": True},
        "source.port": {"old": 5004, "new": 5006},
        "tags": {"old": ["x"], "new": ["x", "y"]},
    }
    assert api.http.get(f"{R}/flow/f1").json() == response.json()["resource"]


def test_a_change_that_changes_nothing_publishes_nothing_and_takes_no_seq(api: Api) -> None:
    api.http.put(f"{R}/flow/f1", json={"label": "a", "n": {"x": 1}})
    api.events(2)
    same_put = api.http.put(f"{R}/flow/f1", json={"n": {"x": 1}, "label": "a"})
    same_patch = api.http.patch(f"{R}/flow/f1", json={"n": {"x": 1}, "absent": None})
    for response in (same_put, same_patch):
        assert response.status_code == 200 and response.json()["event"] is None
    api.sub.nothing(0.5)
    api.http.patch(f"{R}/flow/f1", json={"label": "b"})
    assert _pairs(api.events(2))["events/all"]["seq"] == 2  # the no-ops took no seq
    assert api.http.get(f"{R}/flow/events").json()["last_seq"] == 2


def test_seq_is_gap_free_per_kind_under_concurrent_writes(api: Api) -> None:
    """40 writes from 8 threads over two kinds: each kind's seqs are 1..n in publish order."""

    def write(i: int) -> None:
        kind = ("flow", "device")[i % 2]
        assert api.http.put(f"{R}/{kind}/r{i % 5}", json={"v": i}).status_code in (200, 201)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(40)))
    received = api.events(80)
    for kind in ("flow", "device"):
        on_all = [event["seq"] for topic, event in received if topic == "events/all" and f"{kind}_id" in event]
        assert on_all == list(range(1, 21))  # published in seq order, no gap, no repeat
        log = api.http.get(f"{R}/{kind}/events", params={"limit": 1000}).json()
        assert [event["seq"] for event in log["items"]] == list(range(1, 21)) and log["last_seq"] == 20


def test_since_replays_the_events_a_client_missed_in_bounded_pages(api: Api) -> None:
    for i in range(5):
        api.http.put(f"{R}/flow/f{i}", json={"v": i})
    published = [event for topic, event in api.events(10) if topic == "events/all"]
    page = api.http.get(f"{R}/flow/events", params={"since": 2, "limit": 2}).json()
    assert page["items"] == published[2:4]  # the very events published, seq 3 and 4
    assert page["next_since"] == 4 and page["more"] is True and page["last_seq"] == 5
    rest = api.http.get(f"{R}/flow/events", params={"since": page["next_since"]}).json()
    assert rest["items"] == published[4:] and rest["more"] is False
    assert api.viewer.get(f"{R}/flow/events", params={"since": 5}).json()["items"] == []
    assert api.http.get(f"{R}/other/events").json() == {"items": [], "last_seq": 0, "next_since": 0, "more": False}
    too_many = api.http.get(f"{R}/flow/events", params={"limit": 1001})
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "query.limit"


def test_current_state_one_and_paged_list(api: Api) -> None:
    for name in ("c", "a", "b"):
        api.http.put(f"{R}/flow/{name}", json={"name": name})
    api.http.put(f"{R}/device/d", json={})
    assert api.viewer.get(f"{R}/flow/b").json() == {"name": "b"}
    page = api.viewer.get(f"{R}/flow", params={"limit": 2, "offset": 1}).json()
    assert page == {"items": [{"id": "b", "resource": {"name": "b"}}, {"id": "c", "resource": {"name": "c"}}],
                    "total": 3, "limit": 2, "offset": 1}  # fmt: skip
    assert api.viewer.get(f"{R}/nothing").json()["total"] == 0


def test_resources_and_events_survive_a_restart_with_sqlite(
    wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path
) -> None:
    """A second broker on the same data_dir (storage = sqlite) has the resources and the event log,
    and continues the seq where the first stopped."""
    first = wrenmq_server_factory(api_port=0, storage="sqlite", data_dir=tmp_path)
    api = Api(first)
    api.http.put(f"{R}/flow/f1", json={"label": "a"})
    api.http.patch(f"{R}/flow/f1", json={"label": "b"})
    api.http.put(f"{R}/flow/f2", json={"label": "c"})
    api.close()
    first.stop()
    assert (tmp_path / "resources.db").is_file()

    api = Api(wrenmq_server_factory(api_port=0, storage="sqlite", data_dir=tmp_path))
    try:
        assert api.http.get(f"{R}/flow/f1").json() == {"label": "b"}
        assert api.http.get(f"{R}/flow").json()["total"] == 2
        log = api.http.get(f"{R}/flow/events", params={"since": 1}).json()
        assert [(e["event"], e["seq"]) for e in log["items"]] == [("updated", 2), ("created", 3)]
        api.http.delete(f"{R}/flow/f2")
        assert _pairs(api.events(2))["events/flow/f2"]["seq"] == 4
    finally:
        api.close()


def test_memory_storage_keeps_nothing_on_disk(api: Api) -> None:
    api.http.put(f"{R}/flow/f1", json={"a": 1})
    assert api.http.get(f"{R}/flow/f1").json() == {"a": 1}
    assert not (api.server.broker.config.data_dir / "resources.db").exists()


def test_api_keys_401_and_403(api: Api) -> None:
    """Reads need a key; writes a read-write key; both checked before the body is read."""
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = api.anonymous.request(method, f"{R}/flow/f1", json={})
        assert response.status_code == 401 and response.headers["content-type"] == PROBLEM
    for method in ("PUT", "PATCH", "DELETE"):
        response = api.viewer.request(method, f"{R}/flow/f1", content=b"not json")
        assert response.status_code == 403 and response.headers["content-type"] == PROBLEM
    assert api.anonymous.get(f"{R}/flow/events").status_code == 401
    api.sub.nothing(0.3)


def test_missing_resources_are_404(api: Api) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = api.http.request(method, f"{R}/flow/nope", json={})
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
        assert "nope" in response.json()["detail"]
    api.sub.nothing(0.3)  # a PATCH of nothing creates nothing


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("flow/a+b", "path.id"),
        ("flow/a%23b", "path.id"),
        ("fl+ow/a", "path.kind"),
        ("flow/a%2Fb", "path.id"),
        ("flow/a/b", "path.id"),
        ("flow/" + "x" * 129, "path.id"),
        ("flow/events", "path.id"),
        ("seq/a", "path.kind"),
        ("event/a", "path.kind"),
    ],
)
def test_kind_and_id_must_be_single_topic_levels(api: Api, path: str, field: str) -> None:
    response = api.http.put(f"{R}/{path}", json={"a": 1})
    assert response.status_code == 422, response.text
    body = response.json()
    assert response.headers["content-type"] == PROBLEM and body["type"] == "urn:wrenmq:problem:invalid-request"
    assert [error["field"] for error in body["errors"]] == [field]


def test_body_must_be_a_json_object(api: Api) -> None:
    for body in ([1, 2], "text", 3):
        response = api.http.put(f"{R}/flow/f1", json=body)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body"
    assert api.http.patch(f"{R}/flow/f1", json=[1]).status_code == 422
    api.sub.nothing(0.3)


def test_events_prefix_qos_and_retain_settings(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """events_prefix, events_qos, events_retain: a subscriber that comes later gets the retained
    last event of each resource, at the configured QoS (capped by its subscription)."""
    server = wrenmq_server_factory(api_port=0, events_prefix="acme/changes", events_qos=1, events_retain=True)
    api = Api(server, prefix="acme/changes")
    try:
        api.http.put(f"{R}/flow/f1", json={"a": 1})
        received = {m.topic: m for m in api.sub.receive(2)}
        assert set(received) == {"acme/changes/all", "acme/changes/flow/f1"}
        assert all(m.qos == 1 for m in received.values())
        late = PahoClient(server.port, MQTTv5, "late")
        try:
            late.subscribe("acme/changes/flow/+", 1)
            (message,) = late.receive(1)
            assert message.retain and json.loads(message.payload)["flow"] == {"a": 1}  # [MQTT-3.3.1-6]
        finally:
            late.close()
    finally:
        api.close()


def test_wrenmq_sub_prints_the_events_of_a_put_and_a_patch(api: Api) -> None:
    """The issue's "done when": `wrenmq sub -t 'events/#' -v -C 2` prints the events of a PUT
    (created) and then a PATCH (updated) made over HTTP."""
    env = clean_env()
    command = [sys.executable, "-m", "wrenmq", "sub", "-p", str(api.server.port), "-t", "events/flow/#", "-v", "-C"]
    sub = subprocess.Popen([*command, "2", "-d"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert sub.stderr is not None
    while b"suback" not in (line := sub.stderr.readline()).lower():
        assert line, f"wrenmq sub ended before SUBACK: {sub.communicate(timeout=TIMEOUT)}"
    api.http.put(f"{R}/flow/f1", json={"label": "cam 1"})
    api.http.patch(f"{R}/flow/f1", json={"label": "cam 2"})
    out, err = sub.communicate(timeout=TIMEOUT)
    assert sub.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 2, out
    topics_and_events = [line.split(" ", 1) for line in lines]
    assert [topic for topic, _ in topics_and_events] == ["events/flow/f1", "events/flow/f1"]
    created, updated = (json.loads(event) for _, event in topics_and_events)
    assert (created["event"], created["seq"], created["flow"]) == ("created", 1, {"label": "cam 1"})
    assert (updated["event"], updated["seq"]) == ("updated", 2)
    assert updated["diff"] == {"label": {"old": "cam 1", "new": "cam 2"}}
