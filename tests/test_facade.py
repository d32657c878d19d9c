"""The broker facade (``wrenmq.broker.facade``): what the API and services see of the broker, as
values taken when they ask, and the one ACL question that counts a denial (a wrenmq rule; ACL
semantics are Mosquitto's, see test_acl.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import wrenmq
from mqttraw import RawClient
from wrenmq.broker.facade import BrokerFacade
from wrenmq.hooks import READ, WRITE, RestoredClient
from wrenmq.mqtt import packets as p

ACL = """\
user alice
topic read sensors/alice/#
topic write commands/alice
"""


async def blocking(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _connect(port: int) -> RawClient:
    client = RawClient(port, 5)
    assert client.connect("view-me", properties={0x11: 300}).reason_code == 0
    client.subscribe("room/+/temp", 1)
    return client


async def test_facade_counts_a_denial_once_and_quiet_checks_not_at_all(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory", acl_file=acl, allow_anonymous=True) as broker:
        facade = BrokerFacade(broker)
        alice = RestoredClient("alice-1", "alice", 5)
        assert facade.authorize(alice, "sensors/alice/t", READ)
        assert facade.authorize(alice, "commands/alice", WRITE)
        assert broker.stats.acl_denied == 0
        assert not facade.authorize(alice, "sensors/bob/t", READ, count=False)  # a list filtered quietly
        assert broker.stats.acl_denied == 0
        assert not facade.authorize(alice, "commands/bob", WRITE)
        assert broker.stats.acl_denied == 1
        # A filter readable in part: refused unless the caller checks each message (partial=True).
        assert not facade.read_access(alice, "sensors/#")
        assert broker.stats.acl_denied == 2
        assert facade.read_access(alice, "sensors/#", partial=True)
        assert facade.read_access(alice, "sensors/alice/#")
        assert broker.stats.acl_denied == 2


async def test_facade_views_are_values_of_the_moment(tmp_path: Path) -> None:
    async with wrenmq.Broker(port=0, ws_port=None, storage="memory", sys_interval=0) as broker:
        facade = BrokerFacade(broker)
        client = await blocking(_connect, broker.port)
        try:
            await broker.publish("room/1/temp", b"21", qos=1, retain=True)
            view = facade.client("view-me")
            assert view is not None and view.connected and view.protocol_version == 5
            assert view.session_expiry_interval == 300 and view.connected_since is not None
            assert [s.topic_filter for s in view.subscriptions] == ["room/+/temp"]
            assert facade.client_ids(prefix="view") == ["view-me"] and facade.client_ids(connected=False) == []
            assert [(owner, sub.topic_filter) for owner, _, sub in facade.subscriptions()] == [
                ("view-me", "room/+/temp")
            ]
            counts = facade.counts()
            assert (counts.connections, counts.sessions, counts.subscriptions, counts.retained) == (1, 1, 1, 1)
            assert [m.topic for m in facade.retained_matching("room/#")] == ["room/1/temp"]
            assert facade.retained("room/1/temp") is not None and facade.retained("room/2/temp") is None
            await blocking(client.expect, p.Publish)
            client.send(p.Disconnect())
        finally:
            client.close()
        for _ in range(200):  # the broker sees the DISCONNECT: the session stays (expiry 300 s)
            if not facade.client_ids(connected=True):
                break
            await asyncio.sleep(0.01)
        later = facade.client("view-me")
        assert later is not None and not later.connected and later.address is None
        assert view.connected  # the earlier view did not change with the broker
