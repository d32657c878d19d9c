"""The broker's message ids (issue 18): every routed message is numbered once, and its id
(``<boot id>-<number>``) is the same on every way it reaches a realtime client: the MQTT 5 user
property ``wrenmq-message-id`` for a client that asked for it in CONNECT (user property
``wrenmq-message-ids: 1``), ``message_id`` in long polling and Socket.IO. The browser client drops
repeats across transports by it. A client that did not ask gets the message's user properties
unaltered [MQTT-3.3.2-17], [MQTT-3.3.2-18].

paho-mqtt 2.x on MQTT, httpx on long polling, a real broker on free ports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_sync import MQTTv5, MQTTv311, PahoClient
from serveproc import BrokerProcess
from wrenmq.pytest_plugin import WrenmqServer

POLL = "/api/v1/realtime/poll"
ID = re.compile(r"^[0-9a-f]{8}-[0-9]+$")


def asking(port: int, client_id: str, clean: bool = True, expiry: int = 0) -> PahoClient:
    properties = Properties(PacketTypes.CONNECT)
    properties.UserProperty = [("wrenmq-message-ids", "1")]
    if expiry:
        properties.SessionExpiryInterval = expiry
    return PahoClient(port, MQTTv5, client_id, clean_start=clean, properties=properties)


def user_properties(message: Any) -> list[tuple[str, str]]:
    found = getattr(message.properties, "UserProperty", None) if message.properties else None
    return list(found or [])


def test_same_message_id_over_mqtt_and_polling(wrenmq_server_factory: Callable[..., WrenmqServer]) -> None:
    """One message, one id: the MQTT client that asked sees it last among the message's own user
    properties (kept in order [MQTT-3.3.2-18]); long polling sends the same ``message_id``; the
    next message has a higher number."""
    server = wrenmq_server_factory(api_port=0)
    with httpx.Client(base_url=server.api_url, timeout=10) as http:
        session = http.post(POLL, json={"filters": ["ids/#"]}).json()["id"]
        mqtt = asking(server.port, "ids-mqtt")
        mqtt.subscribe("ids/#", 1)
        publisher = PahoClient(server.port, MQTTv5, "ids-pub")
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("event-id", "e-1"), ("b", "2")]
        publisher.publish("ids/a", b'{"n": 1}', 1, properties=props)
        publisher.publish("ids/a", b'{"n": 2}', 1)
        first, second = mqtt.receive(2)
        assert user_properties(first)[:2] == [("event-id", "e-1"), ("b", "2")]
        name, first_id = user_properties(first)[2]
        assert name == "wrenmq-message-id" and ID.match(first_id), first_id
        ((name, second_id),) = user_properties(second)
        assert name == "wrenmq-message-id"
        boot, number = first_id.split("-")
        assert second_id.split("-") == [boot, str(int(number) + 1)]
        polled: list[dict[str, Any]] = []
        while len(polled) < 2:
            polled += http.get(f"{POLL}/{session}", params={"timeout": 5}).json()["messages"]
        assert [m["message_id"] for m in polled] == [first_id, second_id]
        assert [json.loads(m["payload"])["n"] for m in polled] == [1, 2]
        publisher.close()
        mqtt.close()


def test_clients_that_did_not_ask_get_user_properties_unaltered(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:  # [MQTT-3.3.2-17], [MQTT-3.3.2-18]
    server = wrenmq_server_factory()
    plain = PahoClient(server.port, MQTTv5, "plain")
    plain.subscribe("ids/#", 1)
    old = PahoClient(server.port, MQTTv311, "old")
    old.subscribe("ids/#", 1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "v")]
    PahoClient(server.port, MQTTv5, "pub").publish("ids/x", b"x", 1, properties=props)
    (got,) = plain.receive(1)
    assert user_properties(got) == [("k", "v")]
    assert old.receive(1)[0].payload == b"x"


def test_queued_message_keeps_its_id_when_the_session_resumes(
    wrenmq_server_factory: Callable[..., WrenmqServer],
) -> None:
    """What a persistent session queued while its client was away [MQTT-3.1.2-5] goes out with the
    id that long polling sent it under: the repeat the browser client drops."""
    server = wrenmq_server_factory(api_port=0)
    client = asking(server.port, "ids-away", clean=False, expiry=300)
    client.subscribe("ids/#", 1)
    client.close()
    with httpx.Client(base_url=server.api_url, timeout=10) as http:
        session = http.post(POLL, json={"filters": ["ids/#"]}).json()["id"]
        publisher = PahoClient(server.port, MQTTv5, "ids-pub")
        publisher.publish("ids/q", b"queued", 1)
        (polled,) = http.get(f"{POLL}/{session}", params={"timeout": 5}).json()["messages"]
        back = asking(server.port, "ids-away", clean=False, expiry=300)
        (queued,) = back.receive(1)
        assert queued.payload == b"queued"
        assert user_properties(queued) == [("wrenmq-message-id", polled["message_id"])]
        publisher.close()
        back.close()


def test_queued_message_keeps_its_id_across_a_broker_restart(tmp_path: Path) -> None:
    """A message queued for a persistent session and seen live under one id is replayed after a
    restart (wrenmq as a subprocess, SQLite storage, SIGTERM) under the same id, though the broker
    has a new boot id: the realtime client drops it as the repeat it is (wrenmq feature)."""
    broker = BrokerProcess(tmp_path).start()
    away = asking(broker.port, "ids-restart", clean=False, expiry=3600)
    away.subscribe("ids/#", 1)
    away.close()
    live = asking(broker.port, "ids-live")
    live.subscribe("ids/#", 1)
    publisher = PahoClient(broker.port, MQTTv5, "ids-pub")
    publisher.publish("ids/q", b"queued", 1)  # strict durability: acknowledged once the queue is committed
    publisher.close()
    ((_, seen_id),) = user_properties(live.receive(1)[0])
    live.close()
    broker.stop()

    broker.start()
    try:
        back = asking(broker.port, "ids-restart", clean=False, expiry=3600)
        (replayed,) = back.receive(1)
        assert replayed.payload == b"queued"
        assert user_properties(replayed) == [("wrenmq-message-id", seen_id)]
        PahoClient(broker.port, MQTTv5, "ids-pub").publish("ids/new", b"new", 1)
        ((_, new_id),) = user_properties(back.receive(1)[0])
        assert new_id.split("-")[0] != seen_id.split("-")[0]  # a new boot: the id was kept, not remade
        back.close()
    finally:
        broker.stop()
