"""ACL files (Mosquitto's acl_file syntax): the parser and matcher, and what clients see when the ACL
says no: PUBACK/PUBREC 0x87 (5.0) or a normal ack and no delivery (3.1.1), SUBACK 0x87 / 0x80, a
refused CONNECT for a will topic that may not be written, and $SYS only for the configured readers.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttraw import RawClient
from paho_sync import MQTTv5, PahoClient
from wrenmq.auth.acl import AclFileError, AclRules, covers, overlaps
from wrenmq.auth.files import POLL_INTERVAL
from wrenmq.config import ConfigError
from wrenmq.hooks import PARTIAL, READ, WRITE
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode

TIMEOUT = 5.0
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
DENIED_SUBACK = {5: ReasonCode.NOT_AUTHORIZED, 4: 0x80}

ACL = """\
# anonymous clients (rules before any user line)
topic read public/#
topic write public/inbox

user alice
topic readwrite home/alice/#
topic deny home/alice/diary
topic read sensors/#
topic read plants/+
topic write shared topic with spaces

user bob
topic public/#

# patterns apply to every client
pattern readwrite clients/%c/#
pattern read users/%u/#
"""


def rules(text: str = ACL) -> AclRules:
    return AclRules.parse(text, Path("acl"))


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "acl"
    path.write_text(ACL)
    return path


@pytest.fixture
def server(wrenmq_server_factory: Callable[..., Any], acl_file: Path) -> Any:
    return wrenmq_server_factory(acl_file=acl_file)


def client(server: Any, version: int, client_id: str, username: str | None = None) -> RawClient:
    raw = RawClient(server.port, version)
    ack = raw.connect(client_id, username=username, password=b"x" if username else None)
    assert ack.reason_code == 0
    return raw


# -- the parser ---------------------------------------------------------------------------------------


def test_parse_sections_and_defaults():
    """wrenmq feature (Mosquitto's acl_file syntax): sections, default readwrite, patterns anywhere."""
    parsed = rules()
    assert [(r.access, "/".join(r.levels)) for r in parsed.anonymous] == [(READ, "public/#"), (WRITE, "public/inbox")]
    assert [(r.access, "/".join(r.levels), r.line) for r in parsed.users["bob"]] == [(READ | WRITE, "public/#", 13)]
    assert [r.access for r in parsed.users["alice"]] == [READ | WRITE, 0, READ, READ, WRITE]
    assert parsed.users["alice"][-1].levels == ("shared topic with spaces",)
    assert [("/".join(r.levels), r.pattern) for r in parsed.patterns] == [
        ("clients/%c/#", True),
        ("users/%u/#", True),
    ]
    assert len(parsed) == 10


def test_empty_rule_set_denies_everything():
    """wrenmq feature: deny by default once an ACL file is configured, even an empty one."""
    empty = rules("# nothing yet\n")
    assert not empty.check(None, "c", "a", WRITE)
    assert not empty.check("alice", "c", "#", READ)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("topic read a\nfoo bar\n", 2, "unknown keyword 'foo'"),
        ("user\n", 1, "'user' needs a user name"),
        ("# c\n\ntopic\n", 3, "'topic' needs a topic"),
        ("topic read\n", 1, "'topic read' needs a topic"),
        ("pattern deny   \n", 1, "'pattern deny' needs a topic"),
        ("topic read a/#/b\n", 1, "invalid topic filter 'a/#/b'"),
        ("topic write a+\n", 1, "invalid topic filter 'a+'"),
        ("pattern write devices_%c/status\n", 1, "%c and %u must be a whole topic level"),
        ("Topic read a\n", 1, "unknown keyword 'Topic'"),
    ],
)
def test_parse_errors_name_file_and_line(tmp_path, text, line, problem):
    """wrenmq feature: a malformed ACL file is refused naming the file, the line and the problem."""
    path = tmp_path / "acl"
    path.write_text(text)
    with pytest.raises(AclFileError) as info:
        AclRules.load(path)
    assert str(info.value).startswith(f"ACL file {path}, line {line}: ")
    assert problem in str(info.value)


def test_acl_file_not_utf8_names_line(tmp_path):
    """wrenmq feature: bytes that are not UTF-8 are reported with their line."""
    path = tmp_path / "acl"
    path.write_bytes(b"topic read a\ntopic read \xff\n")
    with pytest.raises(AclFileError, match=rf"^ACL file {path}, line 2: not UTF-8"):
        AclRules.load(path)


def test_bad_acl_file_stops_start_up(wrenmq_server_factory, tmp_path):
    """wrenmq feature: the broker does not start with a bad ACL file; the error names file and line."""
    path = tmp_path / "acl"
    path.write_text("user alice\ntopic read a/b#\ntopic sideways\n")
    with pytest.raises(ConfigError, match=rf"ACL file {path}, line 2: invalid topic filter"):
        wrenmq_server_factory(acl_file=path)


# -- the matcher --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "topic_filter", "expected"),
    [
        ("sensors/#", "sensors/+/temp", True),
        ("sensors/#", "sensors", True),  # "#" includes the parent level [MQTT-4.7.1-2]
        ("sensors/#", "sensors/#", True),
        ("sensors/+", "sensors/#", False),  # the filter reaches deeper than the rule
        ("sensors/+", "sensors/+", True),
        ("sensors/+", "sensors/kitchen", True),
        ("sensors/+", "sensors", False),
        ("sensors/kitchen", "sensors/+", False),  # the filter matches more than the one topic
        ("sensors/+/temp", "sensors/+/+", False),
        ("+/+/temp", "sensors/kitchen/temp", True),
        ("#", "#", True),
        ("#", "anything/at/all", True),
        ("a/b/#", "a/#", False),
        ("#", "$SYS/broker/uptime", False),  # [MQTT-4.7.2-1]: wildcard rules never match $-topics
        ("+/broker/#", "$SYS/broker/#", False),
        ("$SYS/#", "$SYS/broker/+", True),
        ("$SYS/#", "+/broker", False),  # "+/broker" matches no $-topic, and SYS/broker is not under $SYS
        ("a//b", "a//b", True),  # empty levels are levels
        ("a/+/b", "a//b", True),
    ],
)
def test_rule_covers_filter(rule, topic_filter, expected):
    """wrenmq feature: a READ rule allows a subscription only if it matches every topic the filter can."""
    assert covers(tuple(rule.split("/")), tuple(topic_filter.split("/"))) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("home/alice/diary", "home/#", True),
        ("home/alice/diary", "home/+", False),
        ("home/alice/diary", "home/+/diary", True),
        ("home/+/diary", "home/alice/+", True),
        ("home/#", "home", True),
        ("home/+", "home", False),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/c", False),
        ("a/b", "a/b/c", False),
    ],
)
def test_filters_overlap(a, b, expected):
    """wrenmq feature: a deny rule applies to a filter when some topic matches both."""
    assert overlaps(tuple(a.split("/")), tuple(b.split("/"))) is expected
    assert overlaps(tuple(b.split("/")), tuple(a.split("/"))) is expected


@pytest.mark.parametrize(
    ("username", "client_id", "topic", "access", "expected"),
    [
        # anonymous section
        (None, "anon", "public/news", READ, True),
        (None, "anon", "public/#", READ, True),
        (None, "anon", "public/news", WRITE, False),
        (None, "anon", "public/inbox", WRITE, True),
        (None, "anon", "home/alice/x", READ, False),
        # alice: her section, deny wins
        ("alice", "a1", "home/alice/kitchen", WRITE, True),
        ("alice", "a1", "home/alice/#", READ, PARTIAL),  # overlaps the denied diary: checked per message
        ("alice", "a1", "home/alice/+", READ, PARTIAL),
        ("alice", "a1", "home/alice/diary", READ, False),  # nothing under it is readable
        ("alice", "a1", "home/alice/diary/#", READ, PARTIAL),  # the deny names home/alice/diary alone
        ("alice", "a1", "#", READ, PARTIAL),  # as dashboards subscribe: what is readable arrives
        ("alice", "a1", "garden/#", READ, False),
        ("alice", "a1", "home/alice/kitchen/#", READ, True),
        ("alice", "a1", "home/alice/diary", WRITE, False),
        ("alice", "a1", "public/news", READ, False),  # the anonymous rules are not hers
        ("alice", "a1", "shared topic with spaces", WRITE, True),
        ("alice", "a1", "sensors/+/temp", READ, True),
        ("alice", "a1", "plants/#", READ, PARTIAL),  # plants/+ is readable, plants/a/b is not
        # bob: no access word = readwrite
        ("bob", "b1", "public/x", WRITE, True),
        ("bob", "b1", "public/#", READ, True),
        # patterns
        ("carol", "dev-7", "clients/dev-7/status", WRITE, True),
        ("carol", "dev-7", "clients/dev-8/status", WRITE, False),
        ("carol", "dev-7", "clients/+/status", READ, PARTIAL),  # its own clients/dev-7/status
        ("carol", "dev-7", "clients/dev-8/#", READ, False),
        ("carol", "dev-7", "users/carol/#", READ, True),
        ("carol", "dev-7", "users/carol/x", WRITE, False),
        ("carol", "dev-7", "users/bob/#", READ, False),
        (None, "dev-7", "clients/dev-7/x", WRITE, True),  # %c applies to anonymous clients too
        (None, "dev-7", "users/None/x", READ, False),  # %u does not
        ("a/b", "dev-7", "users/a/b/x", READ, False),  # %u is one whole level
        # identities that could widen a pattern are denied everything (as Mosquitto)
        ("carol", "dev+", "clients/dev+/x", WRITE, False),
        ("carol#", "dev-7", "clients/dev-7/x", WRITE, False),
        ("alice", "evil#", "home/alice/kitchen", WRITE, False),
    ],
)
def test_check(username, client_id, topic, access, expected):
    """wrenmq feature: how sections, deny rules and %c/%u patterns decide (see wrenmq.auth.acl)."""
    assert rules().check(username, client_id, topic, access) == expected


def test_sys_readers_and_explicit_sys_rules():
    """wrenmq feature: $SYS is readable by sys_readers and by rules that name $SYS explicitly."""
    acl = rules("user root\ntopic readwrite #\nuser ops\ntopic read $SYS/broker/uptime\n")
    assert not acl.check("root", "r", "$SYS/#", READ)  # "#" does not reach $SYS [MQTT-4.7.2-1]
    assert acl.check("root", "r", "$SYS/#", READ, sys_reader=True)
    assert acl.check("nobody", "n", "$SYS/broker/+", READ, sys_reader=True)
    assert not acl.check("nobody", "n", "$SYS/broker/x", WRITE, sys_reader=True)  # reading only
    assert acl.check("ops", "o", "$SYS/broker/uptime", READ)
    assert acl.check("ops", "o", "$SYS/#", READ) == PARTIAL  # only its one topic arrives
    assert not acl.check("ops", "o", "#", READ)


# -- clients --------------------------------------------------------------------------------------------


def test_v5_publish_denied_gets_0x87_and_is_not_delivered(server):  # [MQTT-3.4.2-1], [MQTT-3.5.2-1]
    reader = client(server, 5, "reader", "bob")
    assert reader.subscribe("public/#", 1).reason_codes == [1]
    anon = client(server, 5, "anon")
    assert anon.publish("public/news", b"denied", 1).reason_code == ReasonCode.NOT_AUTHORIZED  # type: ignore[union-attr]
    anon.send(p.Publish("public/news", b"denied", 2, False, 7))
    pubrec = anon.expect(p.Pubrec)
    assert (pubrec.packet_id, pubrec.reason_code) == (7, ReasonCode.NOT_AUTHORIZED)  # ends the QoS 2 flow
    anon.publish("public/news", b"denied", 0)
    assert anon.publish("public/inbox", b"allowed", 1).reason_code == 0  # type: ignore[union-attr]
    message = reader.expect(p.Publish)
    assert (message.topic, message.payload) == ("public/inbox", b"allowed")  # and nothing before it
    reader.nothing()
    assert server.call(_stat(server, "acl_denied")) == 3
    reader.close()
    anon.close()


async def _stat(server: Any, name: str) -> int:
    return int(getattr(server.broker.stats, name))


def test_v311_publish_denied_is_acked_but_not_delivered(server):  # [MQTT-3.3.5-2] (3.1.1)
    reader = client(server, 4, "reader", "bob")
    assert reader.subscribe("public/#", 2).reason_codes == [2]
    anon = client(server, 4, "anon")
    puback = anon.publish("public/news", b"denied", 1)
    assert isinstance(puback, p.Puback) and puback.reason_code == 0
    assert isinstance(anon.publish("public/news", b"denied", 2), p.Pubcomp)  # the whole QoS 2 flow, as usual
    anon.publish("public/inbox", b"allowed", 1)
    message = reader.expect(p.Publish)
    assert (message.topic, message.payload) == ("public/inbox", b"allowed")
    reader.nothing()
    reader.close()
    anon.close()


@pytest.mark.parametrize("version", [5, 4])
def test_subscribe_denied_per_filter(server, version):  # [MQTT-3.9.3-1], [MQTT-3.8.4-6], [MQTT-3.8.4-7]
    alice = client(server, version, "alice-1", "alice")
    denied = DENIED_SUBACK[version]
    alice.send(
        p.Subscribe(
            1,
            [
                p.Subscription("sensors/+/temp", 1),  # covered by sensors/#
                p.Subscription("garden/#", 1),  # nothing under it is readable
                p.Subscription("plants/+", 0),
                p.Subscription("home/alice/diary", 1),  # denied
                p.Subscription("$SYS/#", 0),  # not hers
            ],
        )
    )
    assert alice.expect(p.Suback).reason_codes == [1, denied, 0, denied, denied]
    bob = client(server, version, "bob-1", "bob")
    bob.publish("public/x", b"-", 1)  # bob may write there but alice may not read: nothing arrives
    alice.subscribe("clients/alice-1/#", 0)  # pattern readwrite clients/%c/#
    alice.publish("clients/alice-1/end", b"sentinel", 0)
    assert alice.expect(p.Publish).topic == "clients/alice-1/end"
    alice.close()
    bob.close()


def test_shared_subscription_checked_on_its_filter(server):
    """wrenmq feature: a shared subscription is checked on its filter, without the $share/group/ prefix."""
    alice = client(server, 5, "alice-s", "alice")
    assert alice.subscribe("$share/g/sensors/#", 1).reason_codes == [1]
    assert alice.subscribe("$share/g/plants/#", 1).reason_codes == [ReasonCode.NOT_AUTHORIZED]
    alice.close()


@pytest.mark.parametrize("version", [5, 4])
def test_pattern_rules_substitute_client_id_and_username(server, version):
    """wrenmq feature: ``pattern`` lines with %c (client id) and %u (username) apply to every client."""
    denied = DENIED_SUBACK[version]
    dev = client(server, version, "dev-7", "carol")
    assert dev.subscribe("clients/dev-7/#", 1).reason_codes == [1]
    assert dev.subscribe("clients/dev-8/#", 1).reason_codes == [denied]
    assert dev.subscribe("users/carol/inbox", 1).reason_codes == [1]
    assert dev.subscribe("users/dave/inbox", 1).reason_codes == [denied]
    other = client(server, version, "dev-8", "dave")
    other.publish("clients/dev-7/cmd", b"not yours", 1)  # dev-8 may not write under dev-7
    other.publish("users/carol/inbox", b"read-only", 1)  # the users/ pattern is read only
    dev.publish("clients/dev-7/cmd", b"mine", 0)
    message = dev.expect(p.Publish)
    assert (message.topic, message.payload) == ("clients/dev-7/cmd", b"mine")
    dev.nothing()
    dev.close()
    other.close()


@pytest.mark.parametrize("version", [5, 4])
def test_anonymous_section(server, version):
    """wrenmq feature (as Mosquitto): rules before any ``user`` line are the anonymous clients' only."""
    denied = DENIED_SUBACK[version]
    anon = client(server, version, "anon-1")
    assert anon.subscribe("public/#", 0).reason_codes == [0]
    assert anon.subscribe("sensors/#", 0).reason_codes == [denied]
    alice = client(server, version, "alice-2", "alice")
    assert alice.subscribe("public/#", 0).reason_codes == [denied]
    anon.close()
    alice.close()


@pytest.mark.parametrize("version", [5, 4])
def test_will_topic_not_writable_refuses_connect(server, version):  # [MQTT-3.1.4-2], [MQTT-3.2.2-7]
    refused = RawClient(server.port, version)
    ack = refused.connect("will-1", username="alice", password=b"x", will=p.Will("home/bob/status", b"gone", 1))
    assert ack.reason_code == (ReasonCode.NOT_AUTHORIZED if version == 5 else ConnackReturnCode.NOT_AUTHORIZED)
    assert refused.expect_closed() == []
    refused.close()
    allowed = RawClient(server.port, version)
    ack = allowed.connect("will-2", username="alice", password=b"x", will=p.Will("home/alice/status", b"gone", 1))
    assert ack.reason_code == 0
    allowed.close()


def test_sys_readable_only_by_sys_readers(wrenmq_server_factory, tmp_path):
    """wrenmq feature: with an ACL, $SYS/# is readable only by the users in ``sys_readers`` (and by rules
    that name $SYS explicitly); a "#" rule does not reach it [MQTT-4.7.2-1]."""
    path = tmp_path / "acl"
    path.write_text("user alice\ntopic read #\nuser admin\n")
    server = wrenmq_server_factory(acl_file=path, sys_readers=["admin"], sys_interval=0.5)
    alice = client(server, 5, "alice-sys", "alice")
    assert alice.subscribe("$SYS/#", 0).reason_codes == [ReasonCode.NOT_AUTHORIZED]
    assert alice.subscribe("#", 0).reason_codes == [0]
    admin = client(server, 5, "admin-sys", "admin")
    assert admin.subscribe("other/#", 0).reason_codes == [ReasonCode.NOT_AUTHORIZED]  # only $SYS
    assert admin.subscribe("$SYS/#", 0).reason_codes == [0]
    message = admin.expect(p.Publish)
    assert message.topic.startswith("$SYS/broker/")
    alice.nothing(1.0)  # her "#" gets no $SYS traffic
    alice.close()
    admin.close()


@pytest.mark.skipif(MOSQUITTO_SUB is None, reason="mosquitto_sub is not installed")
@pytest.mark.parametrize(("version", "code"), [("mqttv5", 0x87), ("mqttv311", 0x80)])
def test_mosquitto_sub_denied_subscription(server, version, code):  # [MQTT-3.9.3-1]: SUBACK 0x87 / 0x80
    assert MOSQUITTO_SUB is not None
    args = ["-h", "127.0.0.1", "-p", str(server.port), "-V", version, "-u", "alice", "-P", "x", "-d"]
    done = subprocess.run(
        [MOSQUITTO_SUB, *args, "-t", "garden/#", "-W", "3"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert f"Subscribed (mid: 1): {code}" in done.stdout, done.stdout + done.stderr
    assert "All subscription requests were denied" in done.stderr


def test_paho_v5_sees_0x87(server):  # [MQTT-3.9.3-1]: paho 5.0 reads the SUBACK's 0x87 Not authorized
    anon = PahoClient(server.port, MQTTv5, "paho-anon")
    try:
        assert anon.subscribe("sensors/#", 1) == [ReasonCode.NOT_AUTHORIZED]
        assert anon.subscribe("public/#", 1) == [1]
    finally:
        anon.close()


# -- reloading ------------------------------------------------------------------------------------------


def test_acl_reloaded_when_changed(wrenmq_server_factory, acl_file, caplog):
    """wrenmq feature: a changed ACL file applies to new checks without a restart; a file that turns
    bad is logged and the rules loaded before stay in force."""
    server = wrenmq_server_factory(acl_file=acl_file)
    anon = client(server, 5, "anon-r")
    assert anon.subscribe("news/#", 0).reason_codes == [ReasonCode.NOT_AUTHORIZED]
    acl_file.write_text("topic read news/#\n")
    deadline = time.monotonic() + 3 * POLL_INTERVAL
    while anon.subscribe("news/#", 0).reason_codes != [0]:
        assert time.monotonic() < deadline, "the ACL file was not reloaded"
        time.sleep(0.2)
    with caplog.at_level(logging.ERROR, logger="wrenmq.auth"):
        acl_file.write_text("topic read news/#\nsubscribe everything\n")
        deadline = time.monotonic() + 3 * POLL_INTERVAL
        while "keeping the version loaded before" not in caplog.text:
            assert time.monotonic() < deadline, "the bad ACL file was not noticed"
            time.sleep(0.1)
    assert f"ACL file {acl_file}, line 2: unknown keyword 'subscribe'" in caplog.text
    assert anon.subscribe("news/#", 0).reason_codes == [0]
    anon.close()


def test_listener_without_acl_is_open(wrenmq_server_factory, tmp_path):
    """wrenmq feature: a listener's acl_file applies on that listener only."""
    path = tmp_path / "acl"
    path.write_text("topic read public/#\n")
    server = wrenmq_server_factory(listeners=[{"type": "tcp", "port": 0, "acl_file": path}])
    guarded_port = next(lst.port for lst in server.broker.listeners if lst.port != server.port)
    open_client = client(server, 5, "open")
    assert open_client.subscribe("private/#", 0).reason_codes == [0]
    guarded = RawClient(guarded_port, 5)
    assert guarded.connect("guarded").reason_code == 0
    assert guarded.subscribe("private/#", 0).reason_codes == [ReasonCode.NOT_AUTHORIZED]
    open_client.close()
    guarded.close()
