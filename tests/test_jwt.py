"""JWT authentication (a wrenmq feature: MQTT leaves credentials to the server, [MQTT-3.1.3-5] in
5.0 section 3.1.3.5): the CONNECT password is a token signed with HS256, RS256 or ES256 (a key or a
JWKS file), its claims give the username, the expiry and per-token ACLs. Each test says what it checks;
refusals use the CONNACK codes of [MQTT-3.2.2-6] (5.0 section 3.2.2.2; 3.1.1 section 3.2.2.3).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from paho.mqtt.enums import CallbackAPIVersion

from hookrec import RecordUsernames, add_hook
from mqttraw import RawClient
from paho_sync import PROTOCOLS
from wrenmq.auth.passwords import PasswordFile
from wrenmq.config import ConfigError
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.reason_codes import ConnackReturnCode, ReasonCode

SECRET = "wrenmq-test-secret-that-is-long-enough-for-hs256"
TIMEOUT = 5.0
VERSIONS = [4, 5]
BAD_CREDENTIALS = {5: ReasonCode.BAD_USER_NAME_OR_PASSWORD, 4: ConnackReturnCode.BAD_USERNAME_OR_PASSWORD}
NOT_AUTHORIZED = {5: ReasonCode.NOT_AUTHORIZED, 4: ConnackReturnCode.NOT_AUTHORIZED}


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    other_rsa: rsa.RSAPrivateKey
    rsa_pem: Path  # public keys, PEM
    ec_pem: Path
    jwks: Path  # rsa as kid "rsa-1", ec as kid "ec-1"


def _write_public(key: Any, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def _jwk(algorithm: Any, key: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("jwt-keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [_jwk(RSAAlgorithm, rsa_key, "rsa-1"), _jwk(ECAlgorithm, ec_key, "ec-1")]}))
    return Keys(
        rsa_key,
        ec_key,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        _write_public(rsa_key, directory / "rsa.pem"),
        _write_public(ec_key, directory / "ec.pem"),
        jwks,
    )


def token(key: Any = SECRET, algorithm: str = "HS256", kid: str | None = None, **claims: Any) -> str:
    """A signed token; ``sub`` defaults to "alice" and ``exp`` to five minutes from now."""
    claims.setdefault("sub", "alice")
    claims.setdefault("exp", int(time.time()) + 300)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


@pytest.fixture
def login(clients: Callable[..., RawClient]) -> Callable[..., p.Connack]:
    """CONNECT with a username and this password (a token); returns the CONNACK. Each client has a
    client id of its own: a live session is never taken over by another user (test_session_owner)."""
    numbers = itertools.count(1)

    def connect(server: Any, version: int, password: str | bytes | None, username: str | None = "device") -> p.Connack:
        client = clients(server, version)
        secret = password.encode() if isinstance(password, str) else password
        ack: p.Connack = client.connect(f"jwt-client-{next(numbers)}", username=username, password=secret)
        return ack

    return connect


# -- algorithms and keys --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_hs256_token_logs_in_with_sub_as_username(wrenmq_server_factory, login, version):
    """An HS256 token signed with jwt_secret logs in; its sub claim replaces the CONNECT username."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    recorder = RecordUsernames()
    add_hook(server, recorder)
    assert login(server, version, token(sub="alice"), username="someone-else").reason_code == 0
    assert recorder.usernames.get(timeout=TIMEOUT) == "alice"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_file(wrenmq_server_factory, login, keys, algorithm):
    """jwt_public_key_file (PEM): RS256 with an RSA key, ES256 with a P-256 key; other signers are refused."""
    pem, private = (keys.rsa_pem, keys.rsa) if algorithm == "RS256" else (keys.ec_pem, keys.ec)
    server = wrenmq_server_factory(jwt_algorithms=[algorithm], jwt_public_key_file=pem)
    assert login(server, 5, token(private, algorithm)).reason_code == 0
    if algorithm == "RS256":
        forged = token(keys.other_rsa, "RS256")
        assert login(server, 5, forged).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    hs256 = token(SECRET, "HS256")  # an algorithm jwt_algorithms does not list
    assert login(server, 5, hs256).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


def test_jwks_file_picks_key_by_kid(wrenmq_server_factory, login, keys):
    """jwt_jwks_file: the token's kid chooses the key; unknown kids, mismatched algorithms and bad
    signatures are refused."""
    server = wrenmq_server_factory(jwt_algorithms=["RS256", "ES256"], jwt_jwks_file=keys.jwks)
    assert login(server, 5, token(keys.rsa, "RS256", kid="rsa-1")).reason_code == 0
    assert login(server, 5, token(keys.ec, "ES256", kid="ec-1")).reason_code == 0
    bad = ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert login(server, 5, token(keys.rsa, "RS256", kid="nope")).reason_code == bad
    assert login(server, 5, token(keys.ec, "ES256", kid="rsa-1")).reason_code == bad  # key is RS256
    assert login(server, 5, token(keys.other_rsa, "RS256", kid="rsa-1")).reason_code == bad
    assert login(server, 5, token(keys.rsa, "RS256")).reason_code == bad  # no kid, no other key


def test_jwks_file_rotation_without_restart(wrenmq_server_factory, login, keys, tmp_path):
    """A kid the broker does not know makes it re-read a changed JWKS file: rotated keys work at once."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(keys.jwks.read_text())
    server = wrenmq_server_factory(jwt_algorithms=["RS256", "ES256"], jwt_jwks_file=jwks)
    new_token = token(keys.other_rsa, "RS256", kid="rsa-2")
    assert login(server, 5, new_token).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    jwks.write_text(json.dumps({"keys": [_jwk(RSAAlgorithm, keys.other_rsa, "rsa-2")]}))
    later = time.time() + 5
    os.utime(jwks, (later, later))  # a changed mtime even on coarse-grained file systems
    assert login(server, 5, new_token).reason_code == 0


def test_public_key_file_reloaded(wrenmq_server_factory, login, keys, tmp_path):
    """Broker.reload (SIGHUP in wrenmq serve) re-reads jwt_public_key_file; a broken file keeps the old key."""
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(keys.rsa_pem.read_bytes())
    server = wrenmq_server_factory(jwt_algorithms=["RS256"], jwt_public_key_file=pem)

    async def reload() -> None:
        server.broker.reload()

    pem.write_text("not a key")
    server.call(reload())
    assert login(server, 5, token(keys.rsa, "RS256")).reason_code == 0  # the old key is kept
    _write_public(keys.other_rsa, pem)
    server.call(reload())
    assert login(server, 5, token(keys.other_rsa, "RS256")).reason_code == 0
    assert login(server, 5, token(keys.rsa, "RS256")).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_bad_signature_refused(wrenmq_server_factory, login, version):
    """A token signed with another secret: CONNACK 0x86 (5.0) / 4 (3.1.1)."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    forged = token("another-secret-of-at-least-thirty-two-bytes!")
    assert login(server, version, forged).reason_code == BAD_CREDENTIALS[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_expired_and_future_tokens_refused(wrenmq_server_factory, login, version):
    """exp in the past or nbf in the future: CONNACK 0x87 Not authorized (3.1.1: 5)."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    expired = token(exp=int(time.time()) - 10)
    assert login(server, version, expired).reason_code == NOT_AUTHORIZED[version]
    early = token(nbf=int(time.time()) + 600)
    assert login(server, version, early).reason_code == NOT_AUTHORIZED[version]


def test_token_without_exp_refused(wrenmq_server_factory, login):
    """exp is required: a token that never expires is not accepted."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    forever = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert login(server, 5, forever).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


def test_audience_and_issuer(wrenmq_server_factory, login):
    """jwt_audience / jwt_issuer must match the token's aud / iss."""
    server = wrenmq_server_factory(jwt_secret=SECRET, jwt_audience="mqtt", jwt_issuer="https://id.example")
    bad = ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert login(server, 5, token(aud="mqtt", iss="https://id.example")).reason_code == 0
    assert login(server, 5, token(aud="billing", iss="https://id.example")).reason_code == bad
    assert login(server, 5, token(iss="https://id.example")).reason_code == bad  # no aud
    assert login(server, 5, token(aud="mqtt", iss="https://evil.example")).reason_code == bad


def test_token_with_audience_refused_when_none_configured(wrenmq_server_factory, login):
    """Without jwt_audience a token minted for some audience is refused (it is meant for someone else)."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    assert login(server, 5, token(aud="billing")).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert login(server, 5, token()).reason_code == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_non_jwt_password_refused_when_jwt_is_the_only_auth(wrenmq_server_factory, login, version):
    """With JWT and no password file, credentials that are not a valid JWT are refused (0x86 / 4);
    a client without credentials is subject to allow_anonymous as usual."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    assert login(server, version, "hunter2").reason_code == BAD_CREDENTIALS[version]
    assert login(server, version, "not.a.jwt").reason_code == BAD_CREDENTIALS[version]
    assert login(server, version, b"\xff\xfe binary").reason_code == BAD_CREDENTIALS[version]
    assert login(server, version, None, username="just-a-name").reason_code == BAD_CREDENTIALS[version]
    assert login(server, version, None, username=None).reason_code == 0  # loopback: anonymous allowed
    closed = wrenmq_server_factory(jwt_secret=SECRET, allow_anonymous=False)
    assert login(closed, version, None, username=None).reason_code == NOT_AUTHORIZED[version]


def test_password_file_beside_jwt(wrenmq_server_factory, login, tmp_path):
    """With a password file as well, a password that is not a JWT is checked against the file, and
    tokens still log in (the JWT hook runs first)."""
    passwords = PasswordFile(tmp_path / "passwd")
    passwords.set_password("bob", "correct horse")
    passwords.save()
    server = wrenmq_server_factory(jwt_secret=SECRET, password_file=passwords.path)
    recorder = RecordUsernames()
    add_hook(server, recorder)
    assert login(server, 5, "correct horse", username="bob").reason_code == 0
    assert recorder.usernames.get(timeout=TIMEOUT) == "bob"
    assert login(server, 5, "wrong", username="bob").reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert login(server, 5, token(sub="alice"), username="bob").reason_code == 0
    assert recorder.usernames.get(timeout=TIMEOUT) == "alice"
    forged = token("another-secret-of-at-least-thirty-two-bytes!")
    assert login(server, 5, forged, username="bob").reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


# -- claims ---------------------------------------------------------------------------------------


def test_username_from_custom_claim(wrenmq_server_factory, login):
    """jwt_username_claim names the claim that becomes the username; a token without it is refused."""
    server = wrenmq_server_factory(jwt_secret=SECRET, jwt_username_claim="device_id")
    recorder = RecordUsernames()
    add_hook(server, recorder)
    assert login(server, 5, token(sub="ignored", device_id="sensor-7")).reason_code == 0
    assert recorder.usernames.get(timeout=TIMEOUT) == "sensor-7"
    assert login(server, 5, token(sub="alice")).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


def _acl_token() -> str:
    return token(sub="alice", publish=["sensors/alice/#"], subscribe=["commands/alice/+", "broadcast/#"])


def test_acl_claims_restrict_publish(wrenmq_server_factory, clients):
    """A token's publish claim: a publish outside it gets PUBACK 0x87 and reaches no one."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    watcher = clients(server, 5)
    assert watcher.connect("watcher", username="w", password=token(sub="watcher").encode()).reason_code == 0
    assert watcher.subscribe("#", 1).reason_codes == [1]  # no ACL claims: unrestricted
    alice = clients(server, 5)
    assert alice.connect("alice", username="a", password=_acl_token().encode()).reason_code == 0
    assert alice.publish("sensors/bob/temp", b"spoof", qos=1).reason_code == ReasonCode.NOT_AUTHORIZED
    assert alice.publish("sensors/alice/temp", b"21.5", qos=1).reason_code == 0
    delivered = watcher.expect(p.Publish)
    assert (delivered.topic, delivered.payload) == ("sensors/alice/temp", b"21.5")
    watcher.nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_acl_claims_restrict_subscribe(wrenmq_server_factory, clients, version):
    """A token's subscribe claim: filters equal to or narrower than a claim are granted; others get
    0x87 (5.0) / 0x80 (3.1.1)."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    alice = clients(server, version)
    assert alice.connect("alice", username="a", password=_acl_token().encode()).reason_code == 0
    denied = 0x87 if version == 5 else 0x80
    granted = {
        "commands/alice/reboot": 1,
        "commands/alice/+": 1,
        "broadcast/news/#": 1,
        "broadcast/#": 1,
        "commands/#": denied,
        "commands/+/reboot": denied,
        "sensors/alice/temp": denied,
        "#": denied,
    }
    for topic_filter, code in granted.items():
        assert alice.subscribe(topic_filter, 1).reason_codes == [code], topic_filter


def test_acl_claims_ignored_when_disabled(wrenmq_server_factory, clients):
    """jwt_acl_claims = false: the claims are ignored and the client is unrestricted."""
    server = wrenmq_server_factory(jwt_secret=SECRET, jwt_acl_claims=False)
    alice = clients(server, 5)
    assert alice.connect("alice", username="a", password=_acl_token().encode()).reason_code == 0
    # 0x10 No matching subscribers: accepted (a denial would be 0x87).
    assert alice.publish("sensors/bob/temp", b"x", qos=1).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    assert alice.subscribe("#", 0).reason_codes == [0]


def test_malformed_acl_claim_refused(wrenmq_server_factory, login):
    """An ACL claim that is not a list of topic filters refuses the token rather than guessing."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    for bad in ({"publish": 5}, {"subscribe": ["ok/#", "bad/#/x"]}):
        assert login(server, 5, token(**bad)).reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


# -- expiry -----------------------------------------------------------------------------------------


def test_connection_ends_when_token_expires_v5(wrenmq_server_factory, clients):
    """When exp passes the broker sends DISCONNECT 0xA0 Maximum connect time and closes [MQTT-4.13.2-1]."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    client = clients(server, 5)
    started = time.monotonic()
    assert client.connect("short", username="a", password=token(exp=time.time() + 1.5).encode()).reason_code == 0
    client.send(p.Pingreq())
    client.expect(p.Pingresp)  # alive before the token runs out
    seen = client.expect_closed(timeout=5)
    assert time.monotonic() - started >= 1.0
    assert len(seen) == 1 and isinstance(seen[0], p.Disconnect), seen
    assert seen[0].reason_code == ReasonCode.MAXIMUM_CONNECT_TIME


def test_connection_ends_when_token_expires_v311(wrenmq_server_factory, clients):
    """3.1.1 has no server DISCONNECT: the socket is closed when exp passes."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    client = clients(server, 4)
    started = time.monotonic()
    assert client.connect("short", username="a", password=token(exp=time.time() + 1.5).encode()).reason_code == 0
    assert client.expect_closed(timeout=5) == []
    assert time.monotonic() - started >= 1.0


# -- throttling and interop -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_failed_logins_throttled_per_address(wrenmq_server_factory, login, version):
    """After auth_failure_limit bad tokens from one address within a minute, even a good token from it
    is refused: CONNACK 0x9F Connection rate exceeded (3.1.1: 3 Server unavailable)."""
    server = wrenmq_server_factory(jwt_secret=SECRET, auth_failure_limit=3)
    assert login(server, version, token()).reason_code == 0  # a good login does not count
    forged = token("another-secret-of-at-least-thirty-two-bytes!")
    for _ in range(3):
        assert login(server, version, forged).reason_code == BAD_CREDENTIALS[version]
    throttled = ReasonCode.CONNECTION_RATE_EXCEEDED if version == 5 else ConnackReturnCode.SERVER_UNAVAILABLE
    assert login(server, version, token()).reason_code == throttled


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["3.1.1", "5.0"])
def test_paho_logs_in_with_token(wrenmq_server_factory, protocol):
    """paho-mqtt sends the token as its password: a good one connects, a forged one is refused."""
    server = wrenmq_server_factory(jwt_secret=SECRET)
    outcomes: list[Any] = []
    for password in (token(), token("another-secret-of-at-least-thirty-two-bytes!")):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        client.username_pw_set("device", password)
        got: list[Any] = []
        client.on_connect = lambda _c, _u, _f, rc, _p, got=got: got.append(rc)
        client.connect("127.0.0.1", server.port)
        deadline = time.monotonic() + TIMEOUT
        while not got and time.monotonic() < deadline:
            client.loop(0.1)
        client.disconnect()
        assert got, "paho got no CONNACK"
        outcomes.append(got[0])
    assert not outcomes[0].is_failure
    assert outcomes[1].is_failure and outcomes[1].value in (0x86, 4)


# -- configuration --------------------------------------------------------------------------------


def test_key_kind_must_match_algorithms(wrenmq_server_factory, keys):
    """An RSA key file with jwt_algorithms = ["ES256"] stops start-up naming jwt_public_key_file."""
    with pytest.raises(ConfigError, match=r"jwt_public_key_file.*RS256"):
        wrenmq_server_factory(jwt_algorithms=["ES256"], jwt_public_key_file=keys.rsa_pem)


def test_config_errors_name_the_jwt_keys(wrenmq_server_factory, tmp_path):
    """Algorithms without a key, a short secret, an unreadable or kid-less JWKS: errors name the key."""
    with pytest.raises(ConfigError, match=r"jwt_algorithms lists RS256.*jwt_public_key_file"):
        wrenmq_server_factory(jwt_algorithms=["RS256", "HS256"], jwt_secret=SECRET)
    with pytest.raises(ConfigError, match="jwt_secret must be at least 32 bytes"):
        wrenmq_server_factory(jwt_secret="short")
    with pytest.raises(ConfigError, match="jwt_secret is an HS256 key"):
        wrenmq_server_factory(jwt_algorithms=["RS256"], jwt_secret=SECRET, jwt_jwks_file=tmp_path / "x.json")
    with pytest.raises(ConfigError, match=r"jwt_jwks_file .*cannot read"):
        wrenmq_server_factory(jwt_algorithms=["RS256"], jwt_jwks_file=tmp_path / "missing.json")
    kidless = tmp_path / "kidless.json"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kidless.write_text(json.dumps({"keys": [RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)]}))
    with pytest.raises(ConfigError, match=r'jwt_jwks_file .*keys\[0\] has no "kid"'):
        wrenmq_server_factory(jwt_algorithms=["RS256"], jwt_jwks_file=kidless)
