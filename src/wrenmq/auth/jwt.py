"""JWT authentication: the CONNECT password is a signed token (PyJWT), the username one of its claims.

A token is checked against the configured key for its algorithm: ``jwt_secret`` (HS256),
``jwt_public_key_file`` (RS256 or ES256, by the key's type) or the ``jwt_jwks_file`` key named by
its ``kid``. ``exp`` is required and ends the connection when it passes (MQTT 5: DISCONNECT 0xA0
Maximum connect time); ``nbf``, and ``aud`` / ``iss`` when configured, are verified too. The
optional ``publish`` and ``subscribe`` claims (lists of topic filters) restrict what the client
may do: a claim that is present allows exactly what it lists, an absent claim leaves that access
to the other hooks.

A password that is not a JWT is left to the next hook (a password file), unless the client's
listener has no password file: then only tokens log in, and anything else is a bad password. On a
listener with ``use_identity_as_username`` the client certificate is the credential: the password
is not looked at.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..config import Config, ConfigError
from ..hooks import READ, WRITE, AuthResult, ClientInfo, Hook
from ..mqtt.reason_codes import ReasonCode
from ..mqtt.topics import topic_matches, valid_topic_filter
from .acl import covers

if TYPE_CHECKING:
    from ..mqtt import packets as p

__all__ = ["JwtAcl", "JwtAuthHook"]

log = logging.getLogger("wrenmq.auth.jwt")

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BAD = ReasonCode.BAD_USER_NAME_OR_PASSWORD


@dataclass(frozen=True, slots=True)
class JwtAcl:
    """The topic filters a token's ``publish`` / ``subscribe`` claims allow (None: no claim)."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None

    def may_subscribe(self, topic_filter: str) -> bool | None:
        """A filter is allowed if a claimed filter covers it: equal or narrower (``auth.acl.covers``)."""
        if self.subscribe is None:
            return None
        wanted = tuple(topic_filter.split("/"))
        return any(covers(tuple(rule.split("/")), wanted) for rule in self.subscribe)


class JwtAuthHook(Hook):
    """Authenticates JWT passwords and applies the tokens' ACL claims."""

    name = "jwt"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.algorithms = frozenset(config.jwt.algorithms)
        self.secret = config.jwt.secret if "HS256" in self.algorithms else None
        self.public_key, self.public_key_algorithm = _load_public_key(config.jwt.public_key_file, self.algorithms)
        self.jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_mtime = 0.0
        if config.jwt.jwks_file is not None:
            self.jwks, self._jwks_mtime = _load_jwks(config.jwt.jwks_file, self.algorithms)
        self.audience = config.jwt.audience
        self.issuer = config.jwt.issuer
        self.username_claim = config.jwt.username_claim
        self.acl_claims = config.jwt.acl_claims

    def handles(self, event: str) -> bool:
        if event == "on_acl_check" and not self.acl_claims:
            return False  # no per-token rules: publishes need not ask this hook
        return super().handles(event)

    # -- authentication ---------------------------------------------------------------------

    def on_connect_authenticate(self, client: ClientInfo, packet: p.Connect) -> AuthResult | None:
        listener = client.listener
        if listener is not None and listener.use_identity_as_username and client.cert_identity is not None:
            return None  # the certificate is the credential and its CN the username (as in Mosquitto)
        password = packet.password
        token = password.decode("utf-8", "replace") if password is not None else ""
        header = _header(token)
        if header is None:
            return self._not_a_token(client, packet)
        key = self._key_for(header)
        if isinstance(key, str):
            return AuthResult.deny(_BAD, key)
        algorithm, material = key
        try:
            claims = jwt.decode(
                token,
                material,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"]},  # no jwt_audience: a token naming an audience is refused
            )
        except jwt.ExpiredSignatureError:
            return AuthResult.deny(ReasonCode.NOT_AUTHORIZED, "token expired")
        except jwt.ImmatureSignatureError:
            return AuthResult.deny(ReasonCode.NOT_AUTHORIZED, "token not yet valid (nbf)")
        except jwt.MissingRequiredClaimError as exc:
            return AuthResult.deny(_BAD, f"token has no {exc.claim!r} claim")
        except jwt.InvalidAudienceError:
            return AuthResult.deny(_BAD, "token audience (aud) does not match jwt_audience")
        except jwt.InvalidIssuerError:
            return AuthResult.deny(_BAD, "token issuer (iss) is not jwt_issuer")
        except jwt.InvalidSignatureError:
            return AuthResult.deny(_BAD, "token signature does not verify")
        except jwt.PyJWTError as exc:
            return AuthResult.deny(_BAD, f"invalid token: {exc}")
        username = claims.get(self.username_claim)
        if not isinstance(username, str) or not username:
            return AuthResult.deny(_BAD, f"token claim {self.username_claim!r} (the username) is missing or not text")
        acl = None
        if self.acl_claims:
            try:
                publish, subscribe = _filters(claims, "publish"), _filters(claims, "subscribe")
            except ValueError as exc:
                return AuthResult.deny(_BAD, str(exc))
            if publish is not None or subscribe is not None:
                acl = JwtAcl(publish, subscribe)
        return AuthResult.allow(username=username, acl=acl, expires_at=float(claims["exp"]))

    def _not_a_token(self, client: ClientInfo, packet: p.Connect) -> AuthResult | None:
        """No JWT: a password file may still know the client; without one, credentials are wrong."""
        if packet.username is None and packet.password is None:
            return None  # anonymous: the listener's allow_anonymous decides
        listener = client.listener
        password_file = listener.config.password_file if listener is not None else None
        if password_file is not None or self.config.password_file is not None:
            return None
        return AuthResult.deny(_BAD, "the password is not a JWT")

    def _key_for(self, header: dict[str, Any]) -> tuple[str, Any] | str:
        """The (algorithm, key) to verify a token with this header, or why there is none."""
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            return f"token algorithm {algorithm!r} is not in jwt_algorithms"
        kid = header.get("kid")
        if kid is not None and self.config.jwt.jwks_file is not None:
            jwk = self.jwks.get(kid) if isinstance(kid, str) else None
            if jwk is None and isinstance(kid, str):
                jwk = self._reload_jwks().get(kid)
            if jwk is None:
                return f"token key id {kid!r} is not in jwt_jwks_file"
            if jwk.algorithm_name != algorithm:
                return f"token algorithm {algorithm} does not match key {kid!r} ({jwk.algorithm_name})"
            return algorithm, jwk
        if algorithm == "HS256" and self.secret is not None:
            return algorithm, self.secret
        if algorithm == self.public_key_algorithm:
            return algorithm, self.public_key
        return f"no key for {algorithm} tokens" + (" without a kid" if kid is None else "")

    def reload(self) -> bool:
        """Re-read the key files (``Broker.reload``, SIGHUP); a file that fails keeps the keys it had."""
        config = self.config
        ok = True
        try:
            if config.jwt.public_key_file is not None:
                self.public_key, self.public_key_algorithm = _load_public_key(
                    config.jwt.public_key_file, self.algorithms
                )
            if config.jwt.jwks_file is not None:
                self.jwks, self._jwks_mtime = _load_jwks(config.jwt.jwks_file, self.algorithms)
        except ConfigError as exc:
            log.warning("%s (keeping the keys loaded before)", exc)
            ok = False
        return ok

    def _reload_jwks(self) -> dict[str, jwt.PyJWK]:
        """An unknown kid may be a rotated key: re-read the JWKS file if it changed."""
        path = self.config.jwt.jwks_file
        assert path is not None
        try:
            if os.stat(path).st_mtime == self._jwks_mtime:
                return self.jwks
            self.jwks, self._jwks_mtime = _load_jwks(path, self.algorithms)
            log.info("reloaded jwt_jwks_file %s: %d keys", path, len(self.jwks))
        except (OSError, ConfigError) as exc:
            log.warning("cannot reload jwt_jwks_file: %s (keeping the keys loaded before)", exc)
        return self.jwks

    # -- authorisation ----------------------------------------------------------------------

    def on_acl_check(self, client: ClientInfo, topic: str, access: int) -> bool | None:
        auth = client.auth
        acl = auth.acl if auth is not None else None
        if not isinstance(acl, JwtAcl):
            return None
        if access == WRITE:
            if acl.publish is None:
                return None
            return any(topic_matches(rule, topic) for rule in acl.publish)
        if access == READ:
            return acl.may_subscribe(topic)
        return None


def _header(token: str) -> dict[str, Any] | None:
    """The token's header, or None if the password is not a JWT at all."""
    if not _JWT_SHAPE.fullmatch(token):
        return None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    return header if isinstance(header.get("alg"), str) else None


def _filters(claims: dict[str, Any], claim: str) -> tuple[str, ...] | None:
    """The claim's topic filters (a single string is one filter), or None when it is absent."""
    value = claims.get(claim)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and valid_topic_filter(item) for item in value):
        raise ValueError(f"token claim {claim!r} must be a list of topic filters")
    return tuple(value)


def _load_public_key(path: Path | None, algorithms: frozenset[str]) -> tuple[Any, str | None]:
    """The PEM public key (or certificate) and the algorithm its type serves: RSA RS256, P-256 ES256."""
    if path is None:
        return None, None
    where = f"jwt_public_key_file {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a PEM public key or certificate: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = "ES256"
    else:
        raise ConfigError(f"{where}: an RSA or P-256 EC public key is needed (RS256/ES256)")
    if algorithm not in algorithms:
        raise ConfigError(f"{where}: the key is for {algorithm}, which jwt_algorithms does not list")
    return key, algorithm


def _load_jwks(path: Path, algorithms: frozenset[str]) -> tuple[dict[str, jwt.PyJWK], float]:
    """The keys of a JWKS file by kid; keys for algorithms not in jwt_algorithms are skipped."""
    where = f"jwt_jwks_file {path}"
    try:
        mtime = os.stat(path).st_mtime
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from None
    entries: Sequence[Any] | None = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'{where}: a JWKS needs a "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: keys[{index}] is not an object")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{where}: keys[{index}]: {exc}") from None
        if entry.get("use", "sig") != "sig" or jwk.algorithm_name not in algorithms:
            log.debug("%s: keys[%d] (%s) skipped: not a signing key jwt_algorithms lists", where, index, jwk.key_id)
            continue
        if not isinstance(entry.get("kid"), str):
            raise ConfigError(f'{where}: keys[{index}] has no "kid" (tokens name their key by kid)')
        keys[entry["kid"]] = jwk
    if not keys:
        raise ConfigError(f"{where}: no key for the algorithms jwt_algorithms lists ({', '.join(sorted(algorithms))})")
    return keys, mtime
