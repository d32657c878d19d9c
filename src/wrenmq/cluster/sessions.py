"""Persistent sessions kept in Redis, so any node can take a session over.

In a cluster the broker's session records (``Persistence.sessions``) come here instead of the
node's own storage: each write becomes a Redis command queued on the cluster's one ordered writer
(``Cluster.command``), in the same MULTI/EXEC as the forwards and inbox acknowledgements of the
same loop turn, so what a node routed and what it acknowledged from its inbox land together.

Keys (under the cluster's prefix), per client id:
- ``s:<id>``: the session record (subscriptions, will, expiry, owner), JSON;
- ``m:<id>`` (hash): seq -> a queued or in-flight message, JSON; ``ms:<id>`` (hash): seq ->
  "packet id,state" once sent (updated without rewriting the body);
- ``q2:<id>`` (set): inbound QoS 2 packet ids awaiting PUBREL;
- ``home:<node>`` (set): the persistent sessions a node holds (what a survivor adopts when it dies).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from ..storage import LoadedSession, StoredMessage, StoredSession, StoredSessionMessage, StoredSubscription

if TYPE_CHECKING:
    from .node import Cluster

__all__ = ["SessionStore"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _message_json(msg: StoredMessage) -> dict[str, Any]:
    return {
        "t": msg.topic,
        "p": _b64(msg.payload),
        "q": msg.qos,
        "r": msg.retain,
        "x": _b64(msg.properties),
        "e": msg.expiry_at,
        "i": msg.message_id,
    }


def _message(data: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        data["t"],
        base64.b64decode(data["p"]),
        data["q"],
        data["r"],
        base64.b64decode(data["x"]),
        data["e"],
        data["i"],
    )


def pack_session(session: StoredSession) -> bytes:
    return json.dumps(
        {
            "id": session.client_id,
            "v": session.protocol_version,
            "exp": session.expiry_interval,
            "off": session.disconnected_at,
            "subs": [
                [s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling, s.subscription_id]
                for s in session.subscriptions
            ],
            "will": _message_json(session.will) if session.will is not None else None,
            "wd": session.will_delay,
            "seq": session.next_seq,
            "own": session.owner,
        }
    ).encode()


def unpack_session(raw: bytes) -> StoredSession:
    data = json.loads(raw)
    return StoredSession(
        data["id"],
        data["v"],
        data["exp"],
        data["off"],
        [StoredSubscription(*sub) for sub in data["subs"]],
        _message(data["will"]) if data["will"] is not None else None,
        data["wd"],
        data["seq"],
        data["own"],
    )


class SessionStore:
    """The session part of the storage interface, on Redis (see the module's docstring)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _key(self, kind: str, client_id: str) -> str:
        return self.cluster.key(kind, client_id)

    # -- writes (queued on the cluster's writer, in order) ------------------------------------

    def session_put(self, session: StoredSession) -> None:
        cluster = self.cluster
        cluster.command("SET", self._key("s", session.client_id), pack_session(session))
        cluster.command("SADD", cluster.key("home", cluster.node), session.client_id)

    def session_delete(self, client_id: str) -> None:
        cluster = self.cluster
        cluster.command(
            "DEL",
            self._key("s", client_id),
            self._key("m", client_id),
            self._key("ms", client_id),
            self._key("q2", client_id),
        )
        cluster.command("SREM", cluster.key("home", cluster.node), client_id)

    def message_add(self, client_id: str, msg: StoredSessionMessage) -> None:
        body = {"q": msg.qos, "m": _message_json(msg.message)}
        self.cluster.command("HSET", self._key("m", client_id), msg.seq, json.dumps(body))
        if msg.packet_id is not None or msg.state:
            self.message_update(client_id, msg.seq, msg.packet_id, msg.state)

    def message_update(self, client_id: str, seq: int, packet_id: int | None, state: int) -> None:
        self.cluster.command("HSET", self._key("ms", client_id), seq, f"{packet_id or 0},{state}")

    def message_delete(self, client_id: str, seq: int) -> None:
        self.cluster.command("HDEL", self._key("m", client_id), seq)
        self.cluster.command("HDEL", self._key("ms", client_id), seq)

    def inbound_add(self, client_id: str, packet_id: int) -> None:
        self.cluster.command("SADD", self._key("q2", client_id), packet_id)

    def inbound_delete(self, client_id: str, packet_id: int) -> None:
        self.cluster.command("SREM", self._key("q2", client_id), packet_id)

    # -- reads ----------------------------------------------------------------------------------

    async def load(self, client_id: str) -> LoadedSession | None:
        """The session as stored, or None."""
        r = self.cluster.redis
        async with r.pipeline(transaction=True) as pipe:
            pipe.get(self._key("s", client_id))
            pipe.hgetall(self._key("m", client_id))
            pipe.hgetall(self._key("ms", client_id))
            pipe.smembers(self._key("q2", client_id))
            raw, bodies, states, inbound = await pipe.execute()
        if raw is None:
            return None
        messages = []
        for seq_raw, body_raw in bodies.items():
            seq = int(seq_raw)
            body = json.loads(body_raw)
            packet_id, state = 0, 0
            found = states.get(seq_raw)
            if found is not None:
                pid_text, _, state_text = found.decode().partition(",")
                packet_id, state = int(pid_text), int(state_text)
            messages.append(StoredSessionMessage(seq, body["q"], packet_id or None, state, _message(body["m"])))
        messages.sort(key=lambda m: m.seq)
        return LoadedSession(unpack_session(raw), messages, sorted(int(x) for x in inbound))
