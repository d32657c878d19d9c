"""Moving persistent sessions between nodes: takeover on CONNECT, adoption of a dead node's.

**Takeover.** A client connects on node B with a client id node O holds. B asks O (``ctl:<O>``:
``handoff``); O closes the connection there with 0x8E [MQTT-3.1.4-3], stops holding the session
(its state is in Redis already, written in order), leaves a short-lived forwarding stub for the
session's filters so that nothing routed to O meanwhile is lost, passes ownership to B and answers
``released``, all through its one ordered writer. B then loads the session from Redis and admits
the client with session present. For a moment a message may come both ways (the stub and B's
own route): the session drops repeats by message id while it settles (``Session.seen``).

**Adoption.** When a node dies, the survivor that reaps it loads the dead node's persistent
sessions (offline, with their queues and in-flight messages), announces their routes, and drains
the dead node's inbox stream (entries it had not acknowledged, and those forwarded since) into
them only: the sessions then wait for their clients on the adopter, who take them over from
there wherever they reconnect. A client that reconnects before its node is reaped waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from ..broker.message import Message
from ..broker.restore import restore
from ..broker.router import LocalSubscriber
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import parse_shared, topic_matches
from ..storage import LoadedSession, LoadedState
from .wire import decode_message, encode_message, event

if TYPE_CHECKING:
    from ..broker.session import Session
    from .node import Cluster

__all__ = ["Handover"]

log = logging.getLogger("wrenmq.cluster")

HANDOFF_TIMEOUT = 5.0  # how long a node waits for another to release a session
STUB_SECONDS = 10.0  # how long the old node forwards what it still gets for a moved session
SETTLE_SECONDS = 10.0  # how long a moved session drops repeats by message id
DEAD_WAIT = 15.0  # how long a CONNECT waits for a dead node's sessions to be adopted
DRAIN_SECONDS = 3.0  # how long an adopter reads a dead node's inbox after the others dropped its routes


class Handover:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.owned: set[str] = set()  # client ids this node holds (claimed, not released)
        self._waiting: dict[str, asyncio.Future[None]] = {}  # handoffs asked for, by client id

    # -- this node takes a client id ---------------------------------------------------------

    def claim(self, client_id: str, clean: bool) -> asyncio.Future[Any] | None:
        """Before admitting ``client_id``: None if this node holds it already, else a future done
        once it is ours (taken over from another node, its session loaded)."""
        if client_id in self.owned:
            return None
        return asyncio.ensure_future(self._claim(client_id, clean))

    async def _claim(self, client_id: str, clean: bool) -> None:
        cluster = self.cluster
        r = cluster.redis
        owner_key = cluster.key("owner", client_id)
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + DEAD_WAIT
            while True:
                found = await r.get(owner_key)
                holder = found.decode() if found is not None else None
                if holder is None or holder == cluster.node:
                    break
                if not await r.exists(cluster.key("alive", holder)):
                    if loop.time() > deadline:
                        log.warning(
                            "cluster: %s's node %s is dead and not reaped: taking it as it is", client_id, holder
                        )
                        break
                    await asyncio.sleep(0.2)  # its sessions are being adopted: take it from the adopter
                    continue
                if await self._ask(client_id, holder, clean):
                    break
                # the holder died meanwhile (or passed the client id on): look again
            await r.set(owner_key, cluster.node)
            self.owned.add(client_id)
            broker = cluster.broker
            if client_id in broker.sessions:
                return
            if clean:  # Clean Start [MQTT-3.1.2-4]: whatever Redis still has of an old session goes
                cluster.sessions.session_delete(client_id)
                return
            loaded = await cluster.sessions.load(client_id)
            if loaded is not None and client_id not in broker.sessions:
                self._take(loaded)
        except (RedisError, OSError) as exc:
            log.warning(
                "cluster: Redis unreachable while %s connected (%s): admitted on this node alone", client_id, exc
            )
            self.owned.add(client_id)

    async def _ask(self, client_id: str, holder: str, clean: bool) -> bool:
        """Ask ``holder`` to hand ``client_id`` over; True once it did (or failed to in time
        while alive), False if it died or the client id moved on meanwhile."""
        cluster = self.cluster
        r = cluster.redis
        loop = asyncio.get_running_loop()
        waiter = self._waiting[client_id] = loop.create_future()
        request = event("handoff", client_id, cluster.node, "1" if clean else "0")
        try:
            await r.publish(cluster.key("ctl", holder), request)
            deadline = loop.time() + HANDOFF_TIMEOUT
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), 0.25)
                    return True
                except TimeoutError:
                    pass
                found = await r.get(cluster.key("owner", client_id))
                if found is None or found.decode() != holder or not await r.exists(cluster.key("alive", holder)):
                    return False
                if loop.time() > deadline:
                    log.warning("cluster: node %s did not hand %s over in time: taking it", holder, client_id)
                    return True
        finally:
            self._waiting.pop(client_id, None)

    def _take(self, loaded: LoadedSession) -> Session:
        """Make ``loaded`` a live (offline) session here, dropping repeats while it settles."""
        broker = self.cluster.broker
        restore(broker, LoadedState([], [loaded]))
        session = broker.sessions[loaded.session.client_id]
        # What it holds already counts as delivered: a drained inbox entry or a stub's forward of
        # the same message is a repeat.
        seen = {broker.message_id(d.message) for d in (*session.queue, *session.inflight_out.values())}
        session.seen = seen

        def settled() -> None:
            if session.seen is seen:
                session.seen = None

        broker.loop.call_later(SETTLE_SECONDS, settled)
        return session

    def released(self, client_id: str) -> None:
        """The node that held ``client_id`` answered: it is ours to load."""
        waiter = self._waiting.get(client_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- another node takes one of ours ----------------------------------------------------------

    def hand_over(self, client_id: str, to: str, clean: bool) -> None:
        """Node ``to`` admits ``client_id``: close it here, stop holding its session (leaving a
        forwarding stub), pass the client id on and answer, in this order on the writer."""
        cluster = self.cluster
        broker = cluster.broker
        self.owned.discard(client_id)
        session = broker.sessions.get(client_id)
        if session is not None:
            conn = session.connection
            if conn is not None:
                log.info("cluster: client %s connected on node %s: its connection here is closed", client_id, to)
                conn.will = None  # the client is alive elsewhere: this is no death
                conn.disconnect_reason = "session taken over"
                conn.close_with(ReasonCode.SESSION_TAKEN_OVER, f"session taken over on node {to}")
                broker.table.detach(conn, session_continues=not clean)
            session = broker.sessions.get(client_id)
        if session is not None:
            if clean:
                broker.table.end(session)
            else:
                self._stub(client_id, to, list(session.subscriptions))
                broker.table.release(session)
                cluster.command("SREM", cluster.key("home", cluster.node), client_id)
        cluster.command("SET", cluster.key("owner", client_id), to)
        cluster.command("PUBLISH", cluster.key("ctl", to), event("released", client_id))

    def _stub(self, client_id: str, to: str, filters: list[str]) -> None:
        """For a while, send node ``to`` what still matches the moved session's filters here."""
        cluster = self.cluster
        broker = cluster.broker
        owner = f"$moved/{client_id}"

        def forward(message: Message, qos: int, sub_ids: list[int] | None) -> None:
            fields = encode_message(message, cluster.node, broker.message_id(message), [], broker.loop.time())
            fields[b"c"] = client_id.encode()
            cluster.send_to(to, fields)

        plain = sorted({parse_shared(f)[1] for f in filters})
        for topic_filter in plain:
            broker.subscribe_local(LocalSubscriber(owner, topic_filter, forward))

        def remove() -> None:
            for topic_filter in plain:
                broker.unsubscribe_local(owner, topic_filter)

        broker.loop.call_later(STUB_SECONDS, remove)

    # -- delivering to one session -----------------------------------------------------------------

    def deliver_to(self, session: Session, message: Message, groups: frozenset[str] | None) -> bool:
        """Deliver ``message`` to ``session`` as its own subscriptions would (the highest QoS of
        those matching, every Subscription Identifier); shared ones only for ``groups``."""
        best = -1
        retain = False
        sub_ids: list[int] = []
        for full_filter, sub in session.subscriptions.items():
            group, topic_filter = parse_shared(full_filter)
            if group is not None and (groups is None or full_filter not in groups):
                continue
            if not topic_matches(topic_filter, message.topic):
                continue
            if sub.no_local and message.origin == session.client_id:
                continue
            qos = min(sub.qos, message.qos)
            best = max(best, qos)
            retain = retain or (message.retain and sub.retain_as_published)
            if sub.subscription_id is not None:
                sub_ids.append(sub.subscription_id)
        if best < 0:
            return False
        session.deliver(message, best, retain, sub_ids or None, None, self.cluster.broker.loop.time())
        return True

    def targeted(self, message: Message, client_id: str) -> None:
        """An entry another node sent for one session (a stub's forward)."""
        session = self.cluster.broker.sessions.get(client_id)
        if session is not None:
            self.deliver_to(session, message, None)

    # -- adoption ------------------------------------------------------------------------------------

    async def adopt(self, dead: str) -> list[str]:
        """Load ``dead``'s persistent sessions here (the caller holds ``reaping:<dead>``)."""
        cluster = self.cluster
        r = cluster.redis
        broker = cluster.broker
        members = await r.smembers(cluster.key("home", dead))
        adopted = []
        for raw in sorted(members):
            client_id = raw.decode()
            holder = await r.get(cluster.key("owner", client_id))
            if holder is not None and holder.decode() not in (dead, cluster.node):
                continue  # its client connected elsewhere meanwhile
            if client_id in broker.sessions:
                continue
            loaded = await cluster.sessions.load(client_id)
            if loaded is None:
                continue
            session = self._take(loaded)
            await r.set(cluster.key("owner", client_id), cluster.node)
            self.owned.add(client_id)
            broker.persist.session_put(session, connected=False)  # (homes it here)
            adopted.append(client_id)
        if dead != cluster.node:
            await r.delete(cluster.key("home", dead))
        return adopted

    async def drain(self, dead: str, adopted: list[str]) -> None:
        """Deliver into the adopted sessions what ``dead``'s inbox holds and still receives until
        every node has dropped its routes; then delete the inbox."""
        cluster = self.cluster
        r = cluster.redis
        stream = cluster.key("in", dead)
        group = "wrenmq"
        loop = asyncio.get_running_loop()
        until = loop.time() + DRAIN_SECONDS
        start = "0-0"
        try:
            while True:  # what the dead node had read and not acknowledged
                reply = await r.xautoclaim(stream, group, cluster.node, 0, start_id=start, count=500)
                start = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
                self._drain_batch(stream, reply[1], adopted)
                if start == "0-0":
                    break
            while loop.time() < until:  # what was not read yet, and what still comes
                found = await r.xreadgroup(group, cluster.node, {stream: ">"}, count=500, block=200)
                if found:
                    self._drain_batch(stream, found[0][1], adopted)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                log.warning("cluster: draining %s's inbox: %s", dead, exc)
        except (RedisError, OSError) as exc:
            log.warning("cluster: draining %s's inbox: %s", dead, exc)
            return
        with contextlib.suppress(RedisError, OSError):
            await r.delete(stream, cluster.key("reaping", dead))

    def _drain_batch(self, stream: str, entries: list[Any], adopted: list[str]) -> None:
        cluster = self.cluster
        broker = cluster.broker
        now = broker.loop.time()
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue
            try:
                message, retain_only = decode_message(fields, now)
            except (KeyError, ValueError):
                continue
            if retain_only:
                continue
            target = fields.get(b"c")
            hop = message.hop
            for client_id in [target.decode()] if target is not None else adopted:
                if client_id not in adopted:
                    continue  # (a stub's forward for a session that is not among the adopted)
                session = broker.sessions.get(client_id)
                if session is not None:
                    self.deliver_to(session, message, hop.groups if hop is not None else None)
        if ids:
            cluster.command("XACK", stream, "wrenmq", *ids)
