"""The hook interface (wrenmq.hooks, issue 5): events fire in order with what they document, hooks
run in registration order, on_publish may change or reject a message, a failing hook is contained,
and an event no hook overrides has an empty handler list (the hot path's only cost).

These test wrenmq's extension interface, not the MQTT specification; the reason codes they check
are the spec's ([MQTT-3.4.2-1] PUBACK reason codes, 0x87 Not authorized, 0x99 Payload format invalid).
"""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from hookrec import add_hook
from mqttraw import RawClient
from wrenmq.broker.hookset import HookSet
from wrenmq.broker.message import Message
from wrenmq.config import Config, ListenerConfig
from wrenmq.hooks import READ, WRITE, AuthResult, Hook, Reject
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.properties import PropertyId
from wrenmq.mqtt.reason_codes import ReasonCode


class Recorder(Hook):
    """Records every notification as a tuple in a thread-safe queue."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def on_start(self, broker: Any) -> None:
        self.events.put(("start",))

    def on_connect(self, client: Any, packet: Any) -> None:
        self.events.put(("connect", client.client_id, client.username, packet.protocol_level))

    def on_subscribe(self, client: Any, topic_filter: str, qos: int) -> None:
        self.events.put(("subscribe", client.client_id, topic_filter, qos))

    def on_unsubscribe(self, client: Any, topic_filter: str) -> None:
        self.events.put(("unsubscribe", client.client_id, topic_filter))

    def on_message_delivered(self, client: Any, message: Any) -> None:
        self.events.put(("delivered", client.client_id, message.topic, message.payload))

    def on_disconnect(self, client: Any, reason: str, expected: bool) -> None:
        self.events.put(("disconnect", client.client_id, expected))

    def on_session_expired(self, client_id: str) -> None:
        self.events.put(("session_expired", client_id))

    def next(self, kind: str, timeout: float = 5.0) -> tuple[Any, ...]:
        """The next event of this kind (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if event[0] == kind:
                return event


def test_notifications_follow_a_client_through_its_life(wrenmq_server, clients):
    recorder = Recorder()
    add_hook(wrenmq_server, recorder)
    client = clients(wrenmq_server, 5)
    assert client.connect("alice", username="ann", password=b"pw").reason_code == 0
    assert recorder.next("connect") == ("connect", "alice", "ann", 5)
    client.subscribe("news/#", 1)
    assert recorder.next("subscribe") == ("subscribe", "alice", "news/#", 1)
    client.publish("news/today", b"hello", 0)
    client.expect(p.Publish)
    assert recorder.next("delivered") == ("delivered", "alice", "news/today", b"hello")
    client.send(p.Unsubscribe(client.pid(), ["news/#"]))
    client.expect(p.Unsuback)
    assert recorder.next("unsubscribe") == ("unsubscribe", "alice", "news/#")
    client.disconnect()
    assert recorder.next("disconnect") == ("disconnect", "alice", True)
    assert recorder.next("session_expired") == ("session_expired", "alice")  # expiry 0: ends now


def test_unexpected_close_is_reported_as_not_expected(wrenmq_server, clients):
    recorder = Recorder()
    add_hook(wrenmq_server, recorder)
    client = clients(wrenmq_server, 4)
    assert client.connect("bob").reason_code == 0
    client.close()  # no DISCONNECT
    assert recorder.next("disconnect") == ("disconnect", "bob", False)


class Uppercase(Hook):
    def on_publish(self, client: Any, message: Message) -> Message:
        return Message(message.topic, message.payload.upper(), message.qos, message.retain, message.properties)


class RejectSecrets(Hook):
    def on_publish(self, client: Any, message: Message) -> Message:
        if message.topic.startswith("secret/"):
            raise Reject(ReasonCode.PAYLOAD_FORMAT_INVALID, "no secrets here")
        return message


def test_on_publish_may_change_a_message(wrenmq_server, clients):
    add_hook(wrenmq_server, Uppercase())
    client = clients(wrenmq_server, 5)
    assert client.connect("shouty").reason_code == 0
    client.subscribe("loud/#", 0)
    client.publish("loud/x", b"quiet please", 0)
    assert client.expect(p.Publish).payload == b"QUIET PLEASE"
    # The broker's own publications go through the same hooks.
    wrenmq_server.publish("loud/y", b"from the server")
    assert client.expect(p.Publish).payload == b"FROM THE SERVER"


@pytest.mark.parametrize("version", [4, 5])
def test_on_publish_may_reject_a_message(wrenmq_server, clients, version):  # [MQTT-3.4.2-1]
    add_hook(wrenmq_server, RejectSecrets())
    watcher = clients(wrenmq_server, 5)
    assert watcher.connect("watcher").reason_code == 0
    watcher.subscribe("#", 1)
    client = clients(wrenmq_server, version)
    assert client.connect("leaker").reason_code == 0
    ack = client.publish("secret/plans", b"x", 1)
    assert ack.reason_code == (ReasonCode.PAYLOAD_FORMAT_INVALID if version == 5 else 0)
    client.publish("public/news", b"y", 1)
    assert watcher.expect(p.Publish).topic == "public/news"  # the rejected one never arrived
    with pytest.raises(Reject):
        wrenmq_server.publish("secret/server", b"z")


def test_hooks_run_in_order_and_first_can_go_in_front(wrenmq_server, clients):
    calls: list[str] = []

    class Tag(Hook):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on_publish(self, client: Any, message: Message) -> Message:
            calls.append(self.tag)
            return message

    add_hook(wrenmq_server, Tag("a"))
    add_hook(wrenmq_server, Tag("b"))

    async def front() -> None:
        wrenmq_server.broker.hooks.add(Tag("first"), first=True)

    wrenmq_server.call(front())
    wrenmq_server.publish("order/x", b"")
    assert calls == ["first", "a", "b"]


def test_on_published_sees_only_what_every_publish_hook_let_through(wrenmq_server, clients):
    """wrenmq feature: an observer (``on_published``, as Mochi's OnPublished) runs after routing,
    so it never sees a message that a publish hook refuses, even one added after it (this replaced
    ``runs_last``, which ordered passers-on behind gates)."""
    calls: list[str] = []

    class Tag(Hook):
        def __init__(self, tag: str, refuse: bool = False) -> None:
            self.tag = tag
            self.refuse = refuse

        def on_publish(self, client: Any, message: Message) -> Message:
            calls.append(self.tag)
            if self.refuse and message.topic.startswith("no/"):
                raise Reject(ReasonCode.NOT_AUTHORIZED, "no")
            return message

    class Observer(Hook):
        def on_published(self, client: Any, message: Message, matched: int) -> None:
            calls.append("observer:" + message.topic)

    add_hook(wrenmq_server, Observer())
    add_hook(wrenmq_server, Tag("a"))
    add_hook(wrenmq_server, Tag("gate", refuse=True))

    async def front() -> None:
        wrenmq_server.broker.hooks.add(Tag("first"), first=True)

    wrenmq_server.call(front())
    wrenmq_server.publish("order/x", b"")
    assert calls == ["first", "a", "gate", "observer:order/x"]
    calls.clear()
    with pytest.raises(Reject):
        wrenmq_server.publish("no/x", b"")
    wrenmq_server.publish("order/sentinel", b"")
    assert calls == ["first", "a", "gate", "first", "a", "gate", "observer:order/sentinel"]


class Gatekeeper(Hook):
    """Lets in only user 'ok' (password 'pw'); may publish only under 'own/'; may read only 'own/#'."""

    def on_connect_authenticate(self, client: Any, packet: p.Connect) -> AuthResult | None:
        if packet.username is None:
            return None
        if packet.username == "ok" and packet.password == b"pw":
            return AuthResult.allow(username="renamed")
        return AuthResult.deny(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "wrong password")

    def on_acl_check(self, client: Any, topic: str, access: int) -> bool | None:
        if access == WRITE:
            return topic.startswith("own/")
        assert access == READ
        return topic == "own/#"


@pytest.mark.parametrize("version", [4, 5])
def test_authentication_hook_decides(wrenmq_server, clients, version):  # [MQTT-3.1.4-2], [MQTT-3.2.2-7]
    add_hook(wrenmq_server, Gatekeeper())
    recorder = Recorder()
    add_hook(wrenmq_server, recorder)
    bad = clients(wrenmq_server, version)
    refused = ReasonCode.BAD_USER_NAME_OR_PASSWORD if version == 5 else 4
    assert bad.connect("bad", username="ok", password=b"nope").reason_code == refused
    bad.expect_closed()
    good = clients(wrenmq_server, version)
    assert good.connect("good", username="ok", password=b"pw").reason_code == 0
    assert recorder.next("connect")[2] == "renamed"  # the hook's username replaces the client's


@pytest.mark.parametrize("version", [4, 5])
def test_acl_hook_decides_publish_and_subscribe(wrenmq_server, clients, version):  # [MQTT-3.9.3-1]
    add_hook(wrenmq_server, Gatekeeper())
    client = clients(wrenmq_server, version)
    assert client.connect("acl", username="ok", password=b"pw").reason_code == 0
    denied = ReasonCode.NOT_AUTHORIZED if version == 5 else 0x80
    assert client.subscribe("other/#", 1).reason_codes == [denied]
    assert client.subscribe("own/#", 1).reason_codes == [1]
    ack = client.publish("other/x", b"no", 1)
    assert ack.reason_code == (ReasonCode.NOT_AUTHORIZED if version == 5 else 0)
    client.publish("own/x", b"yes", 0)
    assert client.expect(p.Publish).topic == "own/x"
    assert wrenmq_server.broker.stats.acl_denied == 2


def test_acl_hook_checks_the_will_topic(wrenmq_server, clients):  # [MQTT-3.1.2-8 context]
    add_hook(wrenmq_server, Gatekeeper())
    client = clients(wrenmq_server, 5)
    will = p.Will("other/will", b"gone", 0, False)
    assert client.connect("w", username="ok", password=b"pw", will=will).reason_code == ReasonCode.NOT_AUTHORIZED


class Broken(Hook):
    def on_connect_authenticate(self, client: Any, packet: p.Connect) -> AuthResult | None:
        raise RuntimeError("credential store down")

    def on_message_delivered(self, client: Any, message: Any) -> None:
        raise RuntimeError("metrics down")


def test_a_failing_authentication_hook_refuses_and_nothing_else_breaks(wrenmq_server, clients):
    """A broken credential store must not let everyone in; the other clients are unaffected."""
    add_hook(wrenmq_server, Broken())
    client = clients(wrenmq_server, 5)
    assert client.connect("x").reason_code == ReasonCode.UNSPECIFIED_ERROR
    assert wrenmq_server.broker.stats.internal_errors == 0


def test_a_failing_notification_hook_is_contained(wrenmq_server, clients):
    class BrokenDelivery(Hook):
        def on_message_delivered(self, client: Any, message: Any) -> None:
            raise RuntimeError("metrics down")

    add_hook(wrenmq_server, BrokenDelivery())
    client = clients(wrenmq_server, 5)
    assert client.connect("y").reason_code == 0
    client.subscribe("t", 0)
    client.publish("t", b"still delivered", 0)
    assert client.expect(p.Publish).payload == b"still delivered"


def test_unhandled_events_have_no_handlers():
    """The hot path checks one list per event: hooks that do not override an event are not in it."""
    hooks = HookSet()
    hooks.add(Recorder())
    assert hooks.publish == [] and hooks.acl_check == [] and hooks.authenticate == []
    assert len(hooks.delivered) == 1 and len(hooks.connect) == 1
    with pytest.raises(TypeError):
        hooks.add(object())


def test_message_expiry_property_survives_a_hook(wrenmq_server, clients):  # [MQTT-3.3.2-5]
    add_hook(wrenmq_server, Uppercase())
    client = clients(wrenmq_server, 5)
    assert client.connect("exp").reason_code == 0
    client.subscribe("e", 0)
    client.publish("e", b"x", 0, properties={PropertyId.CONTENT_TYPE: "text/plain"})
    assert client.expect(p.Publish).properties.get(PropertyId.CONTENT_TYPE) == "text/plain"


@pytest.mark.parametrize(
    ("listeners", "top", "expected"),
    [
        ([{"host": "127.0.0.1"}], None, True),
        ([{"host": "::1"}, {"host": "127.0.0.5"}], None, True),
        ([{"host": "0.0.0.0"}], None, False),  # beyond loopback: anonymous off by default
        ([{"host": ""}], None, False),
        ([{"host": "0.0.0.0"}], True, True),  # unless the config says so explicitly
        ([{"host": "127.0.0.1"}], False, False),
    ],
)
def test_anonymous_default_depends_on_where_listeners_bind(listeners, top, expected):
    config = Config(ws_port=None, listeners=[ListenerConfig(port=0, **found) for found in listeners])
    config = Config(**{**config.model_dump(), "allow_anonymous": top})
    assert all(config.anonymous_allowed(found) == expected for found in config.listeners)


def test_listener_override_refuses_anonymous(wrenmq_server_factory):  # [MQTT-3.2.2-7]
    server = wrenmq_server_factory(listeners=[{"type": "tcp", "port": 0, "name": "closed", "allow_anonymous": False}])
    closed = next(listener for listener in server.broker.listeners if listener.name == "closed")
    with RawClient(closed.port, 4) as anonymous:
        assert anonymous.connect("anon").reason_code == 5  # 3.1.1: not authorized
    with RawClient(server.port, 4) as elsewhere:
        assert elsewhere.connect("anon2").reason_code == 0


def test_hooks_added_and_removed_later_see_a_topic_already_routed(wrenmq_server, clients):
    """wrenmq feature: which hooks want a topic is worked out once per topic and kept with the
    router's cached match (no prefix test per message); adding or removing a hook, or one changing
    its ``publish_topics``, is seen by the very next message on a topic routed before."""
    seen: list[tuple[str, str]] = []

    class Watch(Hook):
        def __init__(self, tag: str, topics: tuple[str, ...] | None) -> None:
            self.tag = tag
            self.publish_topics = topics

        def on_publish(self, client: Any, message: Message) -> Message:
            seen.append((self.tag, "publish " + message.payload.decode()))
            return message

        def on_published(self, client: Any, message: Message, matched: int) -> None:
            seen.append((self.tag, "published " + message.payload.decode()))

    client = clients(wrenmq_server, 5)
    assert client.connect("watched").reason_code == 0
    client.subscribe("plant/#", 0)

    def send(payload: bytes) -> None:  # from a client (the inbound path), waited for by its own delivery
        client.publish("plant/temp", payload, 0)
        assert client.expect(p.Publish).payload == payload

    send(b"1")  # the topic's match is cached with no hook wanting it
    narrow = Watch("narrow", ("other/",))
    add_hook(wrenmq_server, narrow)
    send(b"2")  # a hook for other topics: still nothing for plant/temp
    wide = Watch("wide", ("plant/",))
    add_hook(wrenmq_server, wide)
    send(b"3")

    async def retarget() -> None:
        narrow.publish_topics = None  # every topic, once the broker is told
        wrenmq_server.broker.hooks.refresh()

    wrenmq_server.call(retarget())
    send(b"4")

    async def remove() -> None:
        wrenmq_server.broker.hooks.remove(wide)
        wrenmq_server.broker.hooks.remove(narrow)

    wrenmq_server.call(remove())
    send(b"5")
    assert seen == [
        ("wide", "publish 3"),
        ("wide", "published 3"),
        ("narrow", "publish 4"),
        ("wide", "publish 4"),
        ("narrow", "published 4"),
        ("wide", "published 4"),
    ]
