"""ACL subscription semantics as Mosquitto's (issue 17): a filter under which some topics are readable
is granted, and each message is checked before it is delivered on it, so MQTT Explorer, MQTTX and
dashboards that subscribe to ``#`` get exactly what they may read. A filter under which nothing is
readable is refused (SUBACK 0x87 / 0x80 [MQTT-3.9.3-1]). Applies to live messages, to retained
messages sent on subscribe, and to persistent sessions restored after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttraw import RawClient
from paho_sync import PROTOCOLS, PahoClient
from wrenmq.auth.acl import intersection
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ReasonCode

ACL = """\
user dashboard
topic read commands/sensor1/#
topic read site/#
topic deny site/secret/#

user writer
topic write #
"""


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "acl"
    path.write_text(ACL)
    return path


def connected(port: int, client_id: str, username: str, version: int = 5, clean: bool = True) -> RawClient:
    raw = RawClient(port, version)
    assert raw.connect(client_id, clean=clean, username=username, password=b"x").reason_code == 0
    return raw


def received_until(client: PahoClient, sentinel: str) -> list[str]:
    topics = []
    while True:
        topics.append(client.receive(1)[0].topic)
        if topics[-1] == sentinel:
            return topics


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a/#", "+/b", "a/b"),
        ("a/#", "a", "a"),  # "#" matches the parent level too
        ("#", "a/+/c", "a/+/c"),
        ("a/+", "a/b/c", None),
        ("+/x/#", "a/+/y", "a/x/y"),
        ("#", "$SYS/x", None),  # wildcards never reach $ topics [MQTT-4.7.2-1]
        ("$SYS/#", "$SYS/+", "$SYS/+"),
    ],
)
def test_filter_intersection(a: str, b: str, expected: str | None) -> None:
    found = intersection(tuple(a.split("/")), tuple(b.split("/")))
    assert found == (None if expected is None else tuple(expected.split("/")))
    assert intersection(tuple(b.split("/")), tuple(a.split("/"))) == found


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hash_subscriber_receives_exactly_the_readable_topics(
    wrenmq_server_factory: Callable[..., Any], acl_file: Path, protocol: Any
) -> None:
    """With read access to commands/sensor1/# and site/# (but site/secret/#), ``#`` and
    ``commands/#`` are granted and deliver those topics only."""
    server = wrenmq_server_factory(acl_file=acl_file)
    dashboard = PahoClient(server.port, protocol, "dash", username="dashboard", password="x")
    assert dashboard.subscribe([("#", 1), ("commands/#", 1)]) == [1, 1]
    writer = PahoClient(server.port, protocol, "writer", username="writer", password="x")
    for topic in (
        "commands/sensor2/reboot",  # not readable
        "commands/sensor1/reboot",
        "site/secret/key",  # denied
        "other/thing",
        "site/temp",
        "commands/sensor1",  # "commands/sensor1/#" reaches its parent too
        "site/end",
    ):
        writer.publish(topic, b"-", qos=1)
    # One copy each, though two of its filters match (as the spec's overlapping subscriptions).
    assert received_until(dashboard, "site/end") == [
        "commands/sensor1/reboot",
        "site/temp",
        "commands/sensor1",
        "site/end",
    ]
    dashboard.close()
    writer.close()


@pytest.mark.parametrize("version", [5, 4])
def test_filter_with_nothing_readable_is_refused(  # [MQTT-3.9.3-1]
    wrenmq_server_factory: Callable[..., Any], acl_file: Path, version: int
) -> None:
    server = wrenmq_server_factory(acl_file=acl_file)
    dashboard = connected(server.port, "dash", "dashboard", version)
    denied = ReasonCode.NOT_AUTHORIZED if version == 5 else 0x80
    filters = ["commands/sensor2/#", "site/secret/#", "commands/+/x", "$share/g/#", "$share/g/site/#"]
    dashboard.send(p.Subscribe(1, [p.Subscription(f, 0) for f in filters]))
    # commands/+/x reaches commands/sensor1/x; a shared subscription is granted whole or not at all.
    assert dashboard.expect(p.Suback).reason_codes == [denied, denied, 0, denied, denied]
    dashboard.close()


def test_retained_messages_on_subscribe_are_checked(wrenmq_server_factory: Callable[..., Any], acl_file: Path) -> None:
    server = wrenmq_server_factory(acl_file=acl_file)
    writer = connected(server.port, "writer", "writer")
    for topic in ("site/secret/key", "commands/sensor2/state", "site/state", "commands/sensor1/state"):
        writer.publish(topic, topic.encode(), qos=1, retain=True)
    dashboard = connected(server.port, "dash", "dashboard")
    dashboard.subscribe("#", 1)
    topics = sorted(dashboard.expect(p.Publish).topic for _ in range(2))
    assert topics == ["commands/sensor1/state", "site/state"]
    writer.publish("site/end", b"sentinel", qos=1)
    assert dashboard.expect(p.Publish).topic == "site/end"  # nothing else came before it
    dashboard.close()
    writer.close()


def test_partial_subscription_survives_restart(
    wrenmq_server_factory: Callable[..., Any], acl_file: Path, tmp_path: Path
) -> None:
    """A persistent session's partly granted subscription still filters after a restart: messages
    queued while the client is away, and messages after it is back."""
    data_dir = tmp_path / "data"
    first = wrenmq_server_factory(acl_file=acl_file, storage="sqlite", data_dir=data_dir)
    dashboard = connected(first.port, "dash", "dashboard", version=4, clean=False)
    assert dashboard.subscribe("#", 1).reason_codes == [1]
    dashboard.disconnect()
    first.stop()
    second = wrenmq_server_factory(acl_file=acl_file, storage="sqlite", data_dir=data_dir)
    writer = connected(second.port, "writer", "writer")
    writer.publish("site/secret/key", b"-", qos=1)
    writer.publish("site/queued", b"-", qos=1)
    dashboard = connected(second.port, "dash", "dashboard", version=4, clean=False)
    assert dashboard.expect(p.Publish).topic == "site/queued"
    dashboard.send(p.Puback(1))
    writer.publish("site/secret/other", b"-", qos=1)
    writer.publish("site/live", b"-", qos=1)
    assert dashboard.expect(p.Publish).topic == "site/live"
    dashboard.close()
    writer.close()
