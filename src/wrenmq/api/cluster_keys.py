"""API keys and console sessions of a cluster, in Redis: a load balancer may send each request to
any node, so a key created, or a console sign-in made, on one node must work on every other, and a
revocation or a sign-out must end it everywhere.

Keys created through the API (``POST /api/v1/keys``, the console) are the cluster's, kept in
Redis under the cluster's prefix: ``apikeys`` (hash: name -> the key's record, its SHA-256, never
the key) and ``apikey:<sha256>`` (the same record, to find a key by the token's hash in one read).
A node's keys file (``wrenmq apikey create``) still signs in on that node, as on a single node.
A console session is ``console:<sha256>`` with a time to live of ``console_session_hours``: it
ends by itself, and ``DELETE /api/v1/session`` ends it on every node at once.

Every request's token is looked up in Redis (one GET), not in a replica: a key created on node A
works on node B for the very next request, and one revoked is refused everywhere at once. The
request limits (``limits.py``), which cannot wait, read what the last lookups found.

A session keeps what the authentication hook answered (``AuthResult``) so the ACL sees the same on
every node: its fields, and an ACL object that is a JWT's claims (``JwtAcl``) or plain JSON. A hook
whose ACL object is anything else gets a session that works only on the node that opened it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hooks import AuthResult
from .keys import PREFIX, SESSION_PREFIX, ApiKey, ApiKeyStore, ConsoleSession, check_name

if TYPE_CHECKING:
    from ..cluster import Cluster

__all__ = ["ClusterKeyStore"]

SEEN_MAX = 10_000  # tokens the request limits remember as valid, at most


class ClusterKeyStore(ApiKeyStore):
    """The keys of the node's file and of the cluster (Redis); console sessions in Redis."""

    def __init__(self, path: Path, cluster: Cluster) -> None:
        super().__init__(path)
        self.redis: Any = cluster.redis
        self._key = cluster.key
        self.node = cluster.node
        self._local: dict[str, ConsoleSession] = {}  # sessions whose ACL object cannot travel
        self._seen: dict[str, ApiKey | ConsoleSession] = {}  # the token's hash -> what a lookup found

    # -- the request limits' synchronous view -----------------------------------------------------

    def verify(self, token: str) -> ApiKey | None:
        found = super().verify(token) if token.startswith(PREFIX) else None
        if found is None:
            seen = self._seen.get(_digest(token))
            found = seen.key if isinstance(seen, ConsoleSession) else seen
        return found

    def session(self, token: str) -> ConsoleSession | None:
        seen = self._seen.get(_digest(token))
        return seen if isinstance(seen, ConsoleSession) and seen.expires > time.time() else None

    def _remember(self, digest: str, found: ApiKey | ConsoleSession | None) -> None:
        if found is None:
            self._seen.pop(digest, None)
            return
        if len(self._seen) >= SEEN_MAX:
            self._seen.clear()
        self._seen[digest] = found

    # -- lookups ---------------------------------------------------------------------------------

    async def lookup(self, token: str) -> ApiKey | None:
        if token.startswith(SESSION_PREFIX):
            session = await self.lookup_session(token)
            return session.key if session is not None else None
        found = super().verify(token) if token.startswith(PREFIX) else None  # this node's file
        if found is not None:
            return found
        digest = _digest(token)
        record = await self.redis.get(self._key("apikey", digest))
        found = _key_from(record) if record is not None else None
        self._remember(digest, found)
        return found

    async def lookup_session(self, token: str) -> ConsoleSession | None:
        if not token.startswith(SESSION_PREFIX):
            return None
        digest = _digest(token)
        record = await self.redis.get(self._key("console", digest))
        found = None
        if record is not None:
            data = json.loads(record)
            if data.get("node") is not None:  # its ACL object lives on one node only
                found = self._local.get(digest) if data["node"] == self.node else None
            else:
                found = ConsoleSession(_key_from(json.dumps(data["key"])), data["expires"], _auth_from(data["auth"]))
            if found is not None and found.expires <= time.time():
                found = None
        self._remember(digest, found)
        return found

    # -- sessions --------------------------------------------------------------------------------

    async def sign_in(self, name: str, read_only: bool, seconds: float, auth: Any = None) -> str:
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        now = time.time()
        session = ConsoleSession(ApiKey(name, digest, read_only, now), now + seconds, auth)
        record: dict[str, Any] = {"key": _key_record(session.key), "expires": session.expires, "node": None}
        try:
            record["auth"] = _auth_record(auth)
        except TypeError:  # a hook's own ACL object: kept here, the session works on this node
            record["node"] = self.node
            self._local = {d: s for d, s in self._local.items() if s.expires > now}
            self._local[digest] = session
        await self.redis.set(self._key("console", digest), json.dumps(record), px=max(int(seconds * 1000), 1))
        return token

    async def sign_out(self, token: str) -> bool:
        digest = _digest(token)
        self._local.pop(digest, None)
        self._seen.pop(digest, None)
        return bool(await self.redis.delete(self._key("console", digest)))

    # -- keys ------------------------------------------------------------------------------------

    async def keys(self) -> list[ApiKey]:
        found = {key.name: key for key in self.all()}  # this node's file
        for record in (await self.redis.hgetall(self._key("apikeys"))).values():
            key = _key_from(record)
            found.setdefault(key.name, key)
        return sorted(found.values(), key=lambda key: key.name)

    async def add(self, name: str, read_only: bool = False) -> str:
        check_name(name)
        if any(key.name == name for key in self.all()):
            raise ValueError(f"an API key named {name!r} exists; delete it first")
        token = PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        record = json.dumps(_key_record(ApiKey(name, digest, read_only, time.time())))
        added = await self.redis.eval(
            _ADD, 2, self._key("apikeys"), self._key("apikey", digest), name, record
        )  # (the name is taken at most once, cluster-wide)
        if not added:
            raise ValueError(f"an API key named {name!r} exists; delete it first")
        return token

    async def revoke(self, name: str) -> bool:
        record = await self.redis.hget(self._key("apikeys"), name)
        revoked = False
        if record is not None:
            digest = _key_from(record).sha256
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key("apikeys"), name)
                pipe.delete(self._key("apikey", digest))
                revoked = bool((await pipe.execute())[0])
            self._seen.pop(digest, None)
        if self.delete(name):  # this node's file
            revoked = True
        return revoked


# KEYS: the apikeys hash, the key's index entry. ARGV: name, record. 1 if added, 0 if the name is taken.
_ADD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_record(key: ApiKey) -> dict[str, Any]:
    return {"name": key.name, "sha256": key.sha256, "read_only": key.read_only, "created": key.created}


def _key_from(record: bytes | str) -> ApiKey:
    data = json.loads(record)
    return ApiKey(str(data["name"]), str(data["sha256"]), bool(data["read_only"]), float(data["created"]))


def _auth_record(auth: Any) -> dict[str, Any] | None:
    """What the authentication hook answered, as JSON; ``TypeError`` if its ACL object cannot be."""
    if auth is None:
        return None
    if not isinstance(auth, AuthResult):
        raise TypeError(type(auth).__name__)
    from ..auth.jwt import JwtAcl

    acl: Any = auth.acl
    if isinstance(acl, JwtAcl):
        acl_record: dict[str, Any] | None = {"jwt": [acl.publish, acl.subscribe]}
    elif acl is None:
        acl_record = None
    else:
        json.dumps(acl)  # TypeError if it is not plain JSON
        acl_record = {"json": acl}
    return {
        "allowed": auth.allowed,
        "reason_code": int(auth.reason_code),
        "reason": auth.reason,
        "username": auth.username,
        "expires_at": auth.expires_at,
        "acl": acl_record,
    }


def _auth_from(record: dict[str, Any] | None) -> AuthResult | None:
    if record is None:
        return None
    acl: Any = None
    found = record.get("acl")
    if found is not None and "jwt" in found:
        from ..auth.jwt import JwtAcl

        publish, subscribe = found["jwt"]
        acl = JwtAcl(
            tuple(publish) if publish is not None else None, tuple(subscribe) if subscribe is not None else None
        )
    elif found is not None:
        acl = found["json"]
    return AuthResult(
        record["allowed"], record["reason_code"], record["reason"], record["username"], acl, record["expires_at"]
    )
