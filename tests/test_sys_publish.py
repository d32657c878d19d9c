"""``$SYS`` belongs to the broker (issue 14, item 7): topics starting with ``$`` are the server's
[MQTT-4.7.2-1 context: "Applications cannot use a topic with a leading $ character for their own
purposes"]. A client's PUBLISH to ``$SYS...`` is refused whatever its ACL (5.0: PUBACK/PUBREC
0x87; 3.1.1: the usual ack, as Mosquitto does), counted, never routed and never retained; so are
wills on ``$SYS`` topics (CONNACK 0x87), and publishes to ``$share/...`` (a filter, not a topic).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttraw import RawClient
from paho_sync import MQTTv5, PahoClient
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode
from wrenmq.pytest_plugin import WrenmqServer

SPOOF = "$SYS/broker/clients/connected"


def until_sentinel(client: RawClient, server: WrenmqServer, sentinel: str) -> list[p.Publish]:
    """Every PUBLISH ``client`` gets before the broker's own message on ``sentinel``."""
    server.publish(sentinel, b"end")
    seen: list[p.Publish] = []
    while True:
        packet = client.expect(p.Publish)
        if packet.topic == sentinel:
            return seen
        seen.append(packet)


@pytest.fixture
def watcher(wrenmq_server: WrenmqServer) -> RawClient:
    client = RawClient(wrenmq_server.port, 5)
    assert client.connect("watcher").reason_code == 0
    client.subscribe("$SYS/#")
    client.subscribe("#")
    return client


@pytest.mark.parametrize("qos", [1, 2])
def test_sys_publish_refused_v5(wrenmq_server: WrenmqServer, watcher: RawClient, qos: int) -> None:  # [MQTT-4.7.2-1]
    with RawClient(wrenmq_server.port, 5) as spoofer:
        assert spoofer.connect("spoofer").reason_code == 0
        spoofer.send(p.Publish(SPOOF, b"99999", qos, True, 7))
        ack = spoofer.expect(p.Puback if qos == 1 else p.Pubrec)
        assert ack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert until_sentinel(watcher, wrenmq_server, "$SYS/sentinel") == []
    assert wrenmq_server.broker.retained.get(SPOOF) is None
    assert wrenmq_server.broker.stats.acl_denied == 1


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_sys_publish_dropped_v311(wrenmq_server: WrenmqServer, watcher: RawClient, qos: int) -> None:
    """3.1.1 has no way to say no: the usual ack, and the message goes nowhere."""
    with RawClient(wrenmq_server.port, 4) as spoofer:
        assert spoofer.connect("spoofer").reason_code == 0
        if qos:
            assert spoofer.publish(SPOOF, b"99999", qos, True) is not None
        else:
            spoofer.publish(SPOOF, b"99999", 0, True)
            spoofer.send(p.Pingreq())
            spoofer.expect(p.Pingresp)
    assert until_sentinel(watcher, wrenmq_server, "$SYS/sentinel") == []
    assert wrenmq_server.broker.retained.get(SPOOF) is None


def test_sys_refused_even_where_the_acl_allows_it(
    wrenmq_server_factory: Callable[..., WrenmqServer], tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic readwrite $SYS/#\n")
    server = wrenmq_server_factory(acl_file=acl, allow_anonymous=True)
    with RawClient(server.port, 5) as spoofer:
        assert spoofer.connect("spoofer").reason_code == 0
        assert spoofer.publish("$SYS/broker/uptime", b"0", 1).reason_code == ReasonCode.NOT_AUTHORIZED
        assert spoofer.publish("$SYSTEM/x", b"0", 1).reason_code == ReasonCode.NOT_AUTHORIZED  # as Mosquitto: "$SYS*"


def test_share_topic_publish_refused(wrenmq_server: WrenmqServer) -> None:
    with RawClient(wrenmq_server.port, 5) as client:
        assert client.connect("c").reason_code == 0
        assert client.publish("$share/g/t", b"0", 1).reason_code == ReasonCode.NOT_AUTHORIZED


def test_other_dollar_topics_still_flow(wrenmq_server: WrenmqServer) -> None:  # [MQTT-4.7.2-1]
    """Only $SYS and $share are refused; other `$` topics work, and reach `$`-filters only."""
    with RawClient(wrenmq_server.port, 5) as sub, RawClient(wrenmq_server.port, 5) as pub:
        assert sub.connect("sub").reason_code == 0
        sub.subscribe("#")
        sub.subscribe("$app/#")
        assert pub.connect("pub").reason_code == 0
        assert pub.publish("$app/x", b"1", 1).reason_code == 0
        got = sub.expect(p.Publish)
        assert got.topic == "$app/x"
        assert until_sentinel(sub, wrenmq_server, "after") == []  # once, for "$app/#" only, not "#"


@pytest.mark.parametrize("version", [4, 5])
def test_will_on_sys_topic_refused(wrenmq_server: WrenmqServer, version: int) -> None:
    with RawClient(wrenmq_server.port, version) as client:
        connack = client.connect("w", will=p.Will("$SYS/broker/clients/connected", b"0", 0, True))
        expected = ReasonCode.NOT_AUTHORIZED if version == 5 else ConnackReturnCode.NOT_AUTHORIZED
        assert connack.reason_code == expected


def test_in_bridge_cannot_write_sys(
    mosquitto_factory: Callable[..., Any], wrenmq_server_factory: Callable[..., WrenmqServer]
) -> None:
    """Another broker does not speak for this one's $SYS: an in bridge whose local topic would be
    `$SYS/...` refuses the message (counted as refused on the connection); others still come in."""
    mosquitto = mosquitto_factory()
    bridges = ["topic broker/# in 0 $SYS/ remote/", "topic ok/# in 0"]
    connection = {"name": "up", "url": f"mqtt://127.0.0.1:{mosquitto.port}", "reconnect_max": 0.5, "bridges": bridges}
    server = wrenmq_server_factory(brokers=[connection])
    watcher = RawClient(server.port, 5)
    assert watcher.connect("watcher").reason_code == 0
    watcher.subscribe("$SYS/#")
    watcher.subscribe("ok/#")
    links = server.connections
    assert links is not None
    deadline = time.monotonic() + 10
    while not links.connections["up"].subscribed:
        assert time.monotonic() < deadline, "the bridge did not subscribe"
        time.sleep(0.05)
    remote = PahoClient(mosquitto.port, MQTTv5, "remote")
    remote.publish("remote/broker/clients/connected", b"99999", qos=1, retain=True)
    remote.publish("ok/sentinel", b"end", qos=1)
    assert watcher.expect(p.Publish).topic == "ok/sentinel"  # and nothing on $SYS before it
    assert server.broker.retained.get("$SYS/broker/clients/connected") is None
    assert links.connections["up"].refused == 1
    remote.close()
    watcher.close()
