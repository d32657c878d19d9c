"""Password files made by Mosquitto's ``mosquitto_passwd`` (issue 17, a wrenmq feature: no MQTT
statement): ``$6$`` (SHA-512) and ``$7$`` (PBKDF2-SHA512) hashes verify as Mosquitto verifies them,
stay until ``wrenmq passwd`` next sets that user's password (then argon2id), and ``wrenmq passwd``
takes mosquitto_passwd's ``-c``, ``-b``, ``-D`` and ``-U``. The files here come from Debian's real
``mosquitto_passwd``; logins go through a running broker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mqttraw import RawClient
from serveproc import clean_env
from wrenmq.auth.passwords import MosquittoHash, PasswordFile, PasswordFileError

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed")


def mosquitto_passwd(*args: str) -> None:
    assert MOSQUITTO_PASSWD is not None
    subprocess.run([MOSQUITTO_PASSWD, *args], check=True, capture_output=True, timeout=10)


def run_wrenmq(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m wrenmq`` without a controlling terminal (getpass then reads stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "wrenmq", *args],
        env=clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )


def can_login(port: int, username: str, password: bytes) -> bool:
    with RawClient(port, 4) as client:
        return client.connect("probe", username=username, password=password).reason_code == 0


@pytest.fixture
def mosquitto_file(tmp_path: Path) -> Path:
    """alice: $7$ (mosquitto_passwd's default, 101 iterations); bob: $6$; carol: $7$ with 1000."""
    path = tmp_path / "passwd"
    mosquitto_passwd("-c", "-b", str(path), "alice", "wonderland")
    mosquitto_passwd("-H", "sha512", "-b", str(path), "bob", "hunter2")
    mosquitto_passwd("-H", "sha512-pbkdf2", "-I", "1000", "-b", str(path), "carol", "pass word:with colon")
    return path


def test_mosquitto_passwd_hashes_verify(mosquitto_file: Path, wrenmq_server_factory) -> None:  # type: ignore[no-untyped-def]
    lines = mosquitto_file.read_text().splitlines()
    assert [line.split(":", 1)[1][:3] for line in lines] == ["$7$", "$6$", "$7$"]
    passwords = PasswordFile.load(mosquitto_file)
    assert passwords.verify("alice", "wonderland") and not passwords.verify("alice", "Wonderland")
    assert passwords.verify("bob", b"hunter2") and not passwords.verify("bob", b"hunter")
    assert passwords.verify("carol", "pass word:with colon")
    assert not passwords.verify("mallory", "wonderland")
    server = wrenmq_server_factory(password_file=mosquitto_file, allow_anonymous=False)
    assert can_login(server.port, "alice", b"wonderland")
    assert can_login(server.port, "bob", b"hunter2")
    assert can_login(server.port, "carol", b"pass word:with colon")
    assert not can_login(server.port, "alice", b"hunter2")
    assert not can_login(server.port, "mallory", b"wonderland")


def test_mosquitto_hash_kept_until_wrenmq_passwd_sets_it(mosquitto_file: Path, wrenmq_server_factory) -> None:  # type: ignore[no-untyped-def]
    before = mosquitto_file.read_text().splitlines()
    done = run_wrenmq("passwd", "-b", str(mosquitto_file), "bob", "new-secret")
    assert done.returncode == 0, done.stderr
    after = mosquitto_file.read_text().splitlines()
    assert after[0] == before[0] and after[2] == before[2]  # alice and carol: untouched, still Mosquitto's
    assert after[1].startswith("bob:$argon2id$")
    # mosquitto_passwd's way to add a user; the file stays loadable by both.
    assert run_wrenmq("passwd", str(mosquitto_file), "dave", stdin="d-pass\nd-pass\n").returncode == 0
    server = wrenmq_server_factory(password_file=mosquitto_file, allow_anonymous=False)
    assert can_login(server.port, "bob", b"new-secret") and not can_login(server.port, "bob", b"hunter2")
    assert can_login(server.port, "alice", b"wonderland") and can_login(server.port, "dave", b"d-pass")
    assert run_wrenmq("passwd", "-D", str(mosquitto_file), "alice").returncode == 0
    assert run_wrenmq("passwd", "list", str(mosquitto_file)).stdout.splitlines() == ["bob", "carol", "dave"]
    missing = run_wrenmq("passwd", "-D", str(mosquitto_file), "alice")
    assert missing.returncode == 1 and "user 'alice' is not in" in missing.stderr


def test_wrenmq_passwd_mosquitto_flags(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert run_wrenmq("passwd", "-c", str(path), "erin", stdin="e-pass\ne-pass\n").returncode == 0
    assert run_wrenmq("passwd", "-c", "-b", str(path), "frank", "f-pass").returncode == 0  # -c starts over
    assert PasswordFile.load(path).usernames() == ["frank"]
    assert run_wrenmq("passwd", "-H", "sha512", "-b", str(path), "gina", "g-pass").returncode == 0
    assert path.read_text().splitlines()[1].startswith("gina:$argon2id$")  # wrenmq always writes argon2id
    # -U hashes a plain-text file, as mosquitto_passwd -U does; hashes already there are kept.
    mosquitto_passwd("-b", str(path), "hank", "h-pass")
    hank = path.read_text().splitlines()[2]
    path.write_text(path.read_text() + "ivy:i-pass\njoe:pass:with:colons\n")
    done = run_wrenmq("passwd", "-U", str(path))
    assert done.returncode == 0, done.stderr
    passwords = PasswordFile.load(path)
    assert passwords.verify("ivy", "i-pass") and passwords.verify("joe", "pass:with:colons")
    assert passwords.verify("hank", "h-pass") and path.read_text().splitlines()[2] == hank
    for words, message in [
        (["-b", str(path), "kim"], "-b takes FILE USER PASSWORD"),
        (["-D", str(path)], "-D takes FILE USER"),
        (["-U", str(path), "kim"], "-U takes FILE alone"),
        ([str(path)], "expected FILE USER"),
    ]:
        done = run_wrenmq("passwd", *words)
        assert done.returncode == 1 and message in done.stderr, (words, done.stderr)


def test_malformed_mosquitto_hash_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("# users\nalice:$7$101$c2FsdA==$dG9vc2hvcnQ=\n")
    with pytest.raises(PasswordFileError, match=r"line 2: malformed mosquitto_passwd hash"):
        PasswordFile.load(path)
    path.write_text("alice:wonderland\n")
    with pytest.raises(PasswordFileError, match=r"line 1: unsupported password hash .*wrenmq passwd -U"):
        PasswordFile.load(path)


def test_unknown_user_costs_what_the_files_users_cost(mosquitto_file: Path) -> None:
    """An unknown user is checked against a dummy of the first user's kind and cost (here PBKDF2 with
    101 iterations, not a 20 ms argon2), so the time taken does not tell which users exist."""
    dummy = PasswordFile.load(mosquitto_file)._dummy()
    assert isinstance(dummy, MosquittoHash) and dummy.iterations == 101
    carol_first = mosquitto_file.parent / "carol-first"
    carol_first.write_text("\n".join(reversed(mosquitto_file.read_text().splitlines())) + "\n")
    dummy = PasswordFile.load(carol_first)._dummy()
    assert isinstance(dummy, MosquittoHash) and dummy.iterations == 1000
