"""In-process (local) subscribers in the router and the ``on_published`` event (issue 15).

A local subscription has a handler instead of a session and lives in the same topic trie as
client subscriptions, so one match per message serves MQTT clients, realtime readers, API streams
and bridges alike. The filter rules are MQTT's: wildcards [MQTT-4.7.1-2], `$` topics
[MQTT-4.7.2-1], one delivery per owner at the highest QoS with every Subscription Identifier
[MQTT-3.3.4-2], [MQTT-3.3.4-3], No Local [MQTT-3.8.3-3]. A negative check ends with a sentinel
message that the same subscriber must get, never with a silence window.
"""

from __future__ import annotations

import queue
from typing import Any

import pytest

from hookrec import add_hook
from wrenmq.broker.message import Message
from wrenmq.broker.router import LocalSubscriber, Router
from wrenmq.hooks import Hook, Reject
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ReasonCode

Got = list[tuple[str, str, int, "list[int] | None"]]


def recorder(got: Got, owner: str) -> Any:
    def handler(message: Message, qos: int, sub_ids: list[int] | None) -> None:
        got.append((owner, message.topic, qos, sub_ids))

    return handler


def deliver(router: Router, topic: str, qos: int = 2, origin: str | None = None) -> int:
    return router.match(topic).deliver_local(Message(topic, b"x", qos, origin=origin))


# -- the trie, in memory ---------------------------------------------------------------------------


def test_local_subscriber_matches_wildcards_as_a_client_would():  # [MQTT-4.7.1-2], [MQTT-4.7.1-3]
    router = Router()
    got: Got = []
    for topic_filter in ("a/+/c", "a/#", "x"):
        router.subscribe_local(LocalSubscriber("r:" + topic_filter, topic_filter, recorder(got, topic_filter)))
    deliver(router, "a/b/c")
    deliver(router, "a")  # '#' matches its parent level
    deliver(router, "a/b")
    deliver(router, "y")
    assert sorted(got) == sorted(
        [("a/+/c", "a/b/c", 2, None), ("a/#", "a/b/c", 2, None), ("a/#", "a", 2, None), ("a/#", "a/b", 2, None)]
    )
    assert router.count == 0 and router.local_count == 3  # client subscriptions are counted apart


def test_local_wildcards_do_not_match_dollar_topics():  # [MQTT-4.7.2-1]
    router = Router()
    got: Got = []
    router.subscribe_local(LocalSubscriber("wild", "#", recorder(got, "wild")))
    router.subscribe_local(LocalSubscriber("plus", "+/status", recorder(got, "plus")))
    router.subscribe_local(LocalSubscriber("named", "$app/#", recorder(got, "named")))
    deliver(router, "$app/status")
    deliver(router, "app/status")
    assert sorted(got) == [
        ("named", "$app/status", 2, None),
        ("plus", "app/status", 2, None),
        ("wild", "app/status", 2, None),
    ]


def test_an_owner_matching_through_several_filters_gets_one_call():  # [MQTT-3.3.4-2], [MQTT-3.3.4-3]
    """As for a client: one delivery at the highest granted QoS (capped by the message's), with
    every Subscription Identifier of the filters that matched."""
    router = Router()
    got: Got = []
    router.subscribe_local(LocalSubscriber("one", "a/#", recorder(got, "one"), qos=0, subscription_id=1))
    router.subscribe_local(LocalSubscriber("one", "a/b", recorder(got, "one"), qos=1, subscription_id=2))
    router.subscribe_local(LocalSubscriber("two", "a/b", recorder(got, "two"), qos=0))
    assert deliver(router, "a/b", qos=2) == 2
    assert sorted(got) == [("one", "a/b", 1, [1, 2]), ("two", "a/b", 0, None)]
    got.clear()
    assert deliver(router, "a/b", qos=0) == 2
    assert sorted(got) == [("one", "a/b", 0, [1, 2]), ("two", "a/b", 0, None)]


def test_local_no_local_skips_the_owners_own_messages():  # [MQTT-3.8.3-3]
    router = Router()
    got: Got = []
    router.subscribe_local(LocalSubscriber("bridge", "s/#", recorder(got, "bridge"), no_local=True))
    router.subscribe_local(LocalSubscriber("reader", "s/#", recorder(got, "reader")))
    deliver(router, "s/1", origin="bridge")
    deliver(router, "s/2", origin="someone")
    assert sorted(got) == [("bridge", "s/2", 2, None), ("reader", "s/1", 2, None), ("reader", "s/2", 2, None)]


def test_local_subscribe_replaces_and_unsubscribe_prunes():  # [MQTT-3.8.4-3]
    router = Router()
    got: Got = []
    assert deliver(router, "k/v") == 0  # cached as matching nothing: subscribing must clear that
    assert router.subscribe_local(LocalSubscriber("o", "k/+", recorder(got, "first"), qos=0)) is False
    assert router.subscribe_local(LocalSubscriber("o", "k/+", recorder(got, "second"), qos=1)) is True
    assert deliver(router, "k/v") == 1
    assert got == [("second", "k/v", 1, None)]
    assert router.local_count == 1
    assert router.unsubscribe_local("o", "k/+") is True
    assert router.unsubscribe_local("o", "k/+") is False
    assert router.local_count == 0 and router._root.empty()  # no node left behind
    assert deliver(router, "k/v") == 0


def test_local_subscriber_refuses_shared_and_invalid_filters():  # [MQTT-4.7.1-1], section 4.8.2
    router = Router()
    for bad in ("$share/g/a", "a/#/b", "a+", ""):
        with pytest.raises(ValueError):
            router.subscribe_local(LocalSubscriber("o", bad, recorder([], "o")))
    assert router.local_count == 0


def test_a_failing_local_handler_does_not_stop_the_others():
    router = Router()
    got: Got = []

    def broken(message: Message, qos: int, sub_ids: list[int] | None) -> None:
        raise RuntimeError("boom")

    router.subscribe_local(LocalSubscriber("broken", "t", broken))
    router.subscribe_local(LocalSubscriber("fine", "t", recorder(got, "fine")))
    assert deliver(router, "t") == 2
    assert got == [("fine", "t", 2, None)]


# -- in a running broker --------------------------------------------------------------------------


class Inbox:
    """A local subscription's handler that hands messages to the test thread."""

    def __init__(self) -> None:
        self.got: queue.Queue[tuple[str, bytes, int]] = queue.Queue()

    def __call__(self, message: Message, qos: int, sub_ids: list[int] | None) -> None:
        self.got.put((message.topic, message.payload, qos))

    def next(self) -> tuple[str, bytes, int]:
        return self.got.get(timeout=5)


def subscribe_local(server: Any, sub: LocalSubscriber) -> None:
    async def add() -> None:
        server.broker.subscribe_local(sub)

    server.call(add())


class Censor(Hook):
    def on_publish(self, client: Any, message: Message) -> Message:
        if message.topic.endswith("/secret"):
            raise Reject(ReasonCode.NOT_AUTHORIZED, "censored")
        if message.topic.endswith("/loud"):
            return Message(message.topic, message.payload.upper(), message.qos, message.retain, message.properties)
        return message


def test_local_subscriber_gets_what_the_publish_hooks_let_through(wrenmq_server, clients):
    """A local subscription is delivered during routing, after every ``on_publish`` hook: it sees
    a changed message as changed and never a refused one, even from a hook added after it."""
    inbox = Inbox()
    subscribe_local(wrenmq_server, LocalSubscriber("test:local", "room/#", inbox, qos=1))
    add_hook(wrenmq_server, Censor())
    client = clients(wrenmq_server, 5)
    assert client.connect("pub").reason_code == 0
    client.publish("room/secret", b"no", 1)
    client.publish("room/loud", b"hey", 2)
    client.publish("room/sentinel", b"end", 0)
    assert inbox.next() == ("room/loud", b"HEY", 1)  # QoS capped by the subscription
    assert inbox.next() == ("room/sentinel", b"end", 0)


def test_local_subscribers_are_not_counted_as_matching_subscribers(wrenmq_server, clients):  # [MQTT-3.4.2-1]
    """PUBACK's 0x10 No matching subscribers speaks of client subscriptions, as before local ones
    existed: a message only a local subscriber (a browser, a stream) takes still gets 0x10."""
    inbox = Inbox()
    subscribe_local(wrenmq_server, LocalSubscriber("test:local", "lonely/#", inbox))
    client = clients(wrenmq_server, 5)
    assert client.connect("pub").reason_code == 0
    ack = client.publish("lonely/x", b"1", 1)
    assert ack.reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    assert inbox.next() == ("lonely/x", b"1", 1)


def test_local_subscription_ends_with_unsubscribe(wrenmq_server):
    inbox = Inbox()
    subscribe_local(wrenmq_server, LocalSubscriber("test:local", "u/+", inbox))
    subscribe_local(wrenmq_server, LocalSubscriber("test:local", "end", inbox))
    wrenmq_server.publish("u/1", b"a")

    async def remove() -> bool:
        return wrenmq_server.broker.unsubscribe_local("test:local", "u/+")

    assert wrenmq_server.call(remove()) is True
    wrenmq_server.publish("u/2", b"b")
    wrenmq_server.publish("end", b"sentinel")
    assert inbox.next() == ("u/1", b"a", 0)
    assert inbox.next() == ("end", b"sentinel", 0)


# -- on_published ---------------------------------------------------------------------------------


class Published(Hook):
    """Records ``on_published`` (client id or None, topic, payload, matched)."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str | None, str, bytes, int]] = queue.Queue()

    def on_published(self, client: Any, message: Message, matched: int) -> None:
        self.events.put((None if client is None else client.client_id, message.topic, message.payload, matched))

    def next(self) -> tuple[str | None, str, bytes, int]:
        return self.events.get(timeout=5)


def test_on_published_follows_routing_with_the_match_count(wrenmq_server, clients):
    """``on_published`` gets the publisher (None for the broker's own), the message as routed and
    how many client subscriptions took it; a client matching through two filters counts once
    [MQTT-3.3.4-2]."""
    seen = Published()
    add_hook(wrenmq_server, seen)
    sub = clients(wrenmq_server, 5)
    assert sub.connect("sub").reason_code == 0
    sub.subscribe("news/#", 1)
    sub.subscribe("news/today", 0)
    pub = clients(wrenmq_server, 4)
    assert pub.connect("pub").reason_code == 0
    pub.publish("news/today", b"hello", 1)
    assert seen.next() == ("pub", "news/today", b"hello", 1)
    assert sub.expect(p.Publish).topic == "news/today"
    wrenmq_server.publish("nobody/listens", b"x")
    assert seen.next() == (None, "nobody/listens", b"x", 0)


def test_on_published_runs_after_local_delivery_and_not_for_refused_messages(wrenmq_server, clients):
    """After routing: a local subscriber has the message when ``on_published`` runs. A refused
    message is never published, so it gets no ``on_published``: the sentinel after it comes next."""
    order: list[str] = []

    def local(message: Message, qos: int, sub_ids: list[int] | None) -> None:
        order.append("local:" + message.topic)

    class Observer(Hook):
        def __init__(self) -> None:
            self.done: queue.Queue[list[str]] = queue.Queue()

        def on_published(self, client: Any, message: Message, matched: int) -> None:
            order.append("published:" + message.topic)
            if message.topic == "t/sentinel":
                self.done.put(list(order))

    observer = Observer()
    subscribe_local(wrenmq_server, LocalSubscriber("test:order", "t/#", local))
    add_hook(wrenmq_server, observer)
    add_hook(wrenmq_server, Censor())
    client = clients(wrenmq_server, 5)
    assert client.connect("pub").reason_code == 0
    assert client.publish("t/secret", b"x", 1).reason_code == ReasonCode.NOT_AUTHORIZED
    client.publish("t/one", b"1", 0)
    client.publish("t/sentinel", b"end", 0)
    assert observer.done.get(timeout=5) == [
        "local:t/one",
        "published:t/one",
        "local:t/sentinel",
        "published:t/sentinel",
    ]


def test_on_published_for_a_will(wrenmq_server, clients):  # [MQTT-3.1.2-8]
    """A will is published by the broker: ``on_published`` sees it with no client."""
    seen = Published()
    add_hook(wrenmq_server, seen)
    client = clients(wrenmq_server, 5)
    assert client.connect("dying", will=p.Will("wills/dying", b"gone", 0, False)).reason_code == 0
    client.close()  # no DISCONNECT: the will is sent
    assert seen.next() == (None, "wills/dying", b"gone", 0)


def test_the_api_runs_no_hook_per_message_on_ordinary_topics(wrenmq_server_factory):
    """With the API (realtime, streams) running, a message on an ordinary topic runs no Python
    hook: it skips every ``on_publish`` hook for one ``str.startswith`` (``publish_prefixes``;
    realtime's runs for presence topics only), no ``on_published`` hook wants it (device presence
    observes its own topics only: ``published_prefixes``), realtime
    readers are local subscriptions and the realtime journal is recorded by ``Broker.route``
    itself. A hook with only ``on_published`` adds no publish handler."""
    server = wrenmq_server_factory(api_port=0)
    hooks = server.broker.hooks
    assert hooks.publish_prefixes is not None
    assert not "sensors/t1".startswith(hooks.publish_prefixes)
    assert not hooks.wants_published("sensors/t1")
    assert server.broker.journal is not None
    server.publish("sensors/t1", b"kept")
    assert [m.topic for _, _, m in server.broker.journal.since(0.0)][-1:] == ["sensors/t1"]
    publishers, observers = len(hooks.publish), len(hooks.published)
    add_hook(server, Published())
    assert len(hooks.publish) == publishers and len(hooks.published) == observers + 1


async def test_a_message_with_an_origin_skips_that_owners_no_local_subscription(wrenmq_broker):  # [MQTT-3.8.3-3]
    """A message published with an origin (``Broker.publish(..., origin=)``, as a bridge brings
    one in) skips that origin's No Local subscription and reaches the others."""
    got: list[str] = []
    wrenmq_broker.subscribe_local(
        LocalSubscriber("\x00bridge:x", "s/#", lambda m, q, i: got.append("bridge:" + m.topic), no_local=True)
    )
    wrenmq_broker.subscribe_local(LocalSubscriber("reader", "s/#", lambda m, q, i: got.append("reader:" + m.topic)))
    await wrenmq_broker.publish("s/in", b"", origin="\x00bridge:x")
    await wrenmq_broker.publish("s/local", b"")
    assert sorted(got) == ["bridge:s/local", "reader:s/in", "reader:s/local"]
