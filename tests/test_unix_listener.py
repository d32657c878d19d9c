"""MQTT on a Unix domain socket (a wrenmq feature, Mosquitto 2's ``listener 0 /path``): a
``[[listeners]]`` entry of type ``unix``, whose file mode lets only its owner (and ``socket_group``)
connect; real clients (paho-mqtt's unix transport, mosquitto_pub/mosquitto_sub ``--unix``)."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from wrenmq.config import ConfigError, load_config
from wrenmq.pytest_plugin import WrenmqServer, server_config

TIMEOUT = 10.0
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")


def unix_listener(path: Path, **settings: Any) -> dict[str, Any]:
    return {"type": "unix", "socket": str(path), **settings}


def paho_unix(path: Path, client_id: str) -> tuple[paho.Client, queue.Queue[paho.MQTTMessage]]:
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, transport="unix")
    client.on_message = lambda c, u, msg: got.put(msg)
    client.connect(str(path))  # paho's unix transport takes the socket's path as the host
    client.loop_start()
    return client, got


def test_unix_listener_carries_mqtt_between_paho_and_tcp(wrenmq_server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "mqtt.sock"
    server = wrenmq_server_factory(listeners=[unix_listener(path)])
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the owner only
    subscriber, got = paho_unix(path, "over-unix")
    try:
        subscribed = subscriber.subscribe("unix/#", qos=1)
        assert subscribed[0] == paho.MQTT_ERR_SUCCESS
        publisher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="over-tcp")
        publisher.connect("127.0.0.1", server.port)
        publisher.loop_start()
        try:
            # Retained, so it arrives whether or not the SUBSCRIBE was handled first.
            publisher.publish("unix/hello", b"from tcp", qos=1, retain=True).wait_for_publish(TIMEOUT)
            message = got.get(timeout=TIMEOUT)
            assert (message.topic, message.payload) == ("unix/hello", b"from tcp")
            kinds = {found.client_id: found.listener.type for found in server.broker.connections}
            assert kinds == {"over-unix": "unix", "over-tcp": "tcp"}
        finally:
            publisher.disconnect()
            publisher.loop_stop()
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()


@pytest.mark.skipif(MOSQUITTO_SUB is None, reason="mosquitto-clients not installed")
def test_unix_listener_from_mosquitto_conf_with_mosquitto_clients(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.sock"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener 0 {path}\nallow_anonymous true\n")
    config = load_config(conf, env={}, overrides={"api_port": "off", "data_dir": tmp_path / "data"})
    assert [(found.type, found.socket) for found in config.effective_listeners()] == [("unix", path)]
    server = WrenmqServer(config).start()
    try:
        assert MOSQUITTO_SUB is not None and MOSQUITTO_PUB is not None
        sub = subprocess.Popen(
            [MOSQUITTO_SUB, "--unix", str(path), "-t", "conf/#", "-C", "1", "-v", "-q", "1", "-W", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Published retained: the subscriber gets it whether it subscribed before or after.
        pub = [MOSQUITTO_PUB, "--unix", str(path), "-t", "conf/x", "-m", "via socket", "-q", "1", "-r"]
        subprocess.run(pub, check=True, timeout=TIMEOUT)
        out, err = sub.communicate(timeout=TIMEOUT)
        assert sub.returncode == 0, err
        assert out == "conf/x via socket\n"
    finally:
        server.stop()
    assert not path.exists()  # removed on stop


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is under a 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="wrenmq-unix-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def mosquitto_pub_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    assert MOSQUITTO_PUB is not None
    return subprocess.run(
        [MOSQUITTO_PUB, "--unix", str(path), "-t", "who/else", "-m", "x", "-q", "1"],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.skipif(os.geteuid() != 0 or MOSQUITTO_PUB is None, reason="needs root (to run a client as nobody)")
def test_unix_socket_mode_keeps_other_users_out_unless_their_group_is_named(
    wrenmq_server_factory,  # type: ignore[no-untyped-def]
    shared_dir: Path,
) -> None:
    private = shared_dir / "private.sock"
    wrenmq_server_factory(listeners=[unix_listener(private)], allow_anonymous=True)
    refused = mosquitto_pub_as_nobody(private)
    assert refused.returncode != 0 and "ermission denied" in refused.stderr, refused
    grouped = shared_dir / "grouped.sock"
    wrenmq_server_factory(listeners=[unix_listener(grouped, socket_group="nogroup")], allow_anonymous=True)
    info = grouped.stat()
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == 65534
    allowed = mosquitto_pub_as_nobody(grouped)
    assert allowed.returncode == 0, allowed


def test_unix_listener_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a unix listener needs socket"):
        server_config(tmp_path, listeners=[{"type": "unix"}])
    with pytest.raises(ConfigError, match="socket is for unix listeners only"):
        server_config(tmp_path, listeners=[{"type": "tcp", "port": 0, "socket": str(tmp_path / "s")}])
    config = server_config(tmp_path, listeners=[unix_listener(tmp_path / "s", socket_group="no-such-group-here")])
    with pytest.raises(ConfigError, match="socket_group 'no-such-group-here': no such group"):
        WrenmqServer(config).start()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener 0 {tmp_path / 'm.sock'}\nprotocol websockets\n")
    with pytest.raises(ConfigError, match="line 1: a Unix socket listener takes no TLS or WebSockets"):
        load_config(conf, env={})
    conf.write_text("listener 0\n")
    with pytest.raises(ConfigError, match="line 1: listener 0 needs the Unix socket's path"):
        load_config(conf, env={})


def test_unix_listener_replaces_a_stale_socket_but_not_a_file(wrenmq_server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import socket

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as leftover:  # a socket file left by a crashed run
        leftover.bind(str(stale))
    wrenmq_server_factory(listeners=[unix_listener(stale)])
    client, _ = paho_unix(stale, "after-stale")
    client.disconnect()
    client.loop_stop()
    taken = tmp_path / "taken"
    taken.write_text("someone's file\n")
    with pytest.raises(OSError, match="not a socket is in the way"):
        wrenmq_server_factory(listeners=[unix_listener(taken)])
    assert taken.read_text() == "someone's file\n"
