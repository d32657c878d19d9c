"""A mosquitto.conf carries over (issue 17, a wrenmq feature: no MQTT statement): ``wrenmq serve -c
mosquitto.conf`` reads Mosquitto's format, ``wrenmq config convert`` prints the TOML it amounts to,
``wrenmq config check`` validates without starting. Ignored directives warn with their line;
directives whose absence would let in more than Mosquitto does stop start-up, naming the line.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from certs import make_ca, make_cert
from mosquitto_fixture import MOSQUITTO, MosquittoBroker
from paho_sync import MQTTv311, PahoClient
from serveproc import START_TIMEOUT, clean_env, free_port
from wrenmq.cli import main as wrenmq_main
from wrenmq.config import Config, ConfigError, load_config
from wrenmq.mosquitto_conf import MosquittoConfError, is_mosquitto_conf, read_mosquitto_conf

TIMEOUT = 10.0


def conf(tmp_path: Path, text: str, name: str = "mosquitto.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, warnings: list[str] | None = None) -> Config:
    return load_config(conf(tmp_path, text), env={}, warnings=warnings)


# --- reading the format ------------------------------------------------------------------------


def test_mosquitto_conf_recognised_by_name_or_syntax(tmp_path: Path) -> None:
    assert is_mosquitto_conf(Path("broker.conf"), b"port = 1")  # .conf: Mosquitto's, whatever it holds
    assert not is_mosquitto_conf(Path("wrenmq.toml"), b"listener 1883\n")
    assert is_mosquitto_conf(Path("config"), b"# Mosquitto\n\nlistener 1883\nallow_anonymous true\n")
    assert not is_mosquitto_conf(Path("config"), b'port = 1883\nhost = "0.0.0.0"\n')
    assert not is_mosquitto_conf(Path("config"), b"not toml and no directive\n")
    config = load_config(conf(tmp_path, "listener 1884\nallow_anonymous true\n", "settings"), env={})
    assert [(found.type, found.port) for found in config.effective_listeners()] == [("tcp", 1884)]


def test_mosquitto_conf_listeners_and_global_settings(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert, key = make_cert(ca, tmp_path, "server", server=True)
    config = load(
        tmp_path,
        f"""# a typical docker-compose mosquitto.conf
per_listener_settings false
persistence true
persistence_location {tmp_path}/data/
log_type error
log_type warning
log_type notice
log_type information
max_inflight_messages 0
max_queued_messages 500
max_queued_bytes 0
max_packet_size 100000
max_keepalive 300
sys_interval 30
persistent_client_expiration 2d
retain_available false
max_qos 1

listener 1883
listener 8883 127.0.0.1
cafile {ca.cert}
certfile {cert}
keyfile {key}
require_certificate true
use_identity_as_username true
tls_version tlsv1.3
max_connections -1

listener 9001
protocol websockets
socket_domain ipv4
listener 9443 ::1
protocol websockets
certfile {cert}
keyfile {key}
max_connections 50
""",
    )
    assert config.storage == "sqlite" and config.data_dir == tmp_path / "data"
    assert config.log.level == "info"
    assert config.limits.max_inflight_messages == 65535  # Mosquitto's 0: no limit
    assert (config.limits.max_queued_messages, config.limits.max_packet_size, config.limits.max_keepalive) == (
        500,
        100000,
        300,
    )
    assert config.limits.max_queued_bytes == 0  # no limit, in both
    assert config.sys_interval == 30
    assert config.limits.max_session_expiry_interval == 2 * 86400
    assert (config.limits.retain_available, config.limits.maximum_qos) == (False, 1)
    assert config.allow_anonymous is False  # Mosquitto 2: off once a listener is configured
    assert config.ws_port is None and config.port is None  # only the file's listeners
    listeners = [(found.type, found.host, found.port, found.max_connections) for found in config.effective_listeners()]
    assert listeners == [("tcp", "", 1883, 0), ("tls", "127.0.0.1", 8883, 0), ("ws", "0.0.0.0", 9001, 0),
                         ("wss", "::1", 9443, 50)]  # fmt: skip
    tls = config.effective_listeners()[1]
    assert (tls.cafile, tls.certfile, tls.keyfile) == (ca.cert, cert, key)
    assert tls.require_certificate and tls.use_identity_as_username and tls.tls_version == "TLSv1.3"


def test_mosquitto_conf_defaults_are_mosquittos(tmp_path: Path) -> None:
    # No listener at all: Mosquitto 2 listens on localhost:1883 only, anonymous allowed there.
    local = load(tmp_path, "log_dest stdout\n")
    assert [(found.type, found.host, found.port) for found in local.effective_listeners()] == [
        ("tcp", "127.0.0.1", 1883)
    ]
    assert local.anonymous_allowed(local.effective_listeners()[0])
    assert local.storage == "memory"  # persistence defaults to false in Mosquitto
    # `port` and listener settings before any `listener` make the default listener, on every interface.
    default = load(tmp_path, "port 1885\nmax_connections 10\nlistener 1886 127.0.0.1\n")
    assert [(found.host, found.port, found.max_connections) for found in default.effective_listeners()] == [
        ("", 1885, 10),
        ("127.0.0.1", 1886, 0),
    ]
    assert default.allow_anonymous is False
    assert load(tmp_path, "listener 1883\nallow_anonymous true\n").allow_anonymous is True


def test_mosquitto_conf_per_listener_settings(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("")
    (tmp_path / "acl").write_text("topic read public/#\n")
    config = load(
        tmp_path,
        f"""per_listener_settings true
password_file {tmp_path}/passwd
listener 1883 127.0.0.1
allow_anonymous true
acl_file {tmp_path}/acl
listener 8883
""",
    )
    local, public = config.effective_listeners()
    assert local.allow_anonymous is True and local.acl_file == tmp_path / "acl"
    assert public.allow_anonymous is False  # its own setting: Mosquitto's default, off
    assert public.acl_file is None and config.acl_file is None
    # before any listener, and no default listener: inherited by the listeners that set none
    assert config.password_file == tmp_path / "passwd" and local.password_file is None
    assert not config.anonymous_allowed(public) and config.anonymous_allowed(local)


def test_mosquitto_conf_include_dir(tmp_path: Path) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "20-limits.conf").write_text("max_keepalive 60\n")
    (confd / "10-listener.conf").write_text("listener 1890\nallow_anonymous true\n")
    (confd / "README").write_text("not read\n")
    config = load(tmp_path, f"max_keepalive 30\ninclude_dir {confd}\n")
    assert config.limits.max_keepalive == 60  # read in name order, at the include_dir line
    assert [found.port for found in config.effective_listeners()] == [1890]


def test_mosquitto_conf_ignored_directives_warn_with_their_line(tmp_path: Path) -> None:
    warnings: list[str] = []
    text = "listener 1883\npid_file /run/m.pid\nlog_dest topic\nset_tcp_nodelay true\nqueue_qos0_messages true\n"
    path = conf(tmp_path, text)
    load_config(path, env={}, warnings=warnings)
    # Each says why; a value wrenmq behaves as anyway (set_tcp_nodelay true) is not warned about.
    assert warnings == [
        f"{path} line 2: pid_file: wrenmq writes no pid file (systemd and containers track the process); ignored",
        f"{path} line 3: log_dest: log_dest topic is not supported by wrenmq; ignored",
        f"{path} line 5: queue_qos0_messages: wrenmq never queues QoS 0 messages for disconnected clients; ignored",
    ]


@pytest.mark.parametrize(
    "directive",
    [
        "auth_plugin /usr/lib/auth.so",
        "plugin /usr/lib/mosquitto_dynamic_security.so",
        "plugin_opt_config_file /etc/dynsec.json",
        "crlfile /etc/crl.pem",
        "mount_point tenant1/",
        "bind_interface eth0",
        "psk_file /etc/psk",
        "use_username_as_clientid true",
        "clientid_prefixes sensor-",
        "capath /etc/ssl/certs",
    ],
)
def test_mosquitto_conf_refuses_what_would_weaken_security(tmp_path: Path, directive: str) -> None:
    path = conf(tmp_path, f"listener 1883\n{directive}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert f"{path} line 2: {directive.split()[0]}:" in str(caught.value)
    assert "will not start" in str(caught.value)


def test_mosquitto_conf_errors_name_the_line(tmp_path: Path) -> None:
    path = conf(tmp_path, "listener 1883\nallow_anonymous yes\nmax_keepalive soon\nlistenr 1884\n")
    with pytest.raises(MosquittoConfError) as caught:
        read_mosquitto_conf(path)
    assert str(caught.value).splitlines() == [
        f"{path} line 2: allow_anonymous must be true or false, not 'yes'",
        f"{path} line 3: max_keepalive needs a whole number of at least 0",
        f"{path} line 4: unknown directive 'listenr' (did you mean 'listener'?)",
    ]
    # A value wrenmq's own checks refuse names the directive's line too.
    with pytest.raises(ConfigError, match=r"line 2 \(max_keepalive\): .*65535"):
        load(tmp_path, "listener 1883\nmax_keepalive 70000\n")
    with pytest.raises(ConfigError, match=r"line 1 \(listener\).*needs certfile and keyfile"):
        load(tmp_path, "listener 8883\ncertfile /etc/cert.pem\n")


def test_mosquitto_conf_every_bridge_directive_is_carried_over_or_warned_about(tmp_path: Path) -> None:
    """mosquitto.conf(5)'s bridge directives: each one wrenmq can honour sets its connection's
    setting; each one it cannot is a warning naming the line and saying why."""
    warnings: list[str] = []
    (tmp_path / "ca.pem").write_text("")
    (broker,) = load(
        tmp_path,
        f"""listener 1883
connection edge
address 10.0.0.1:1884 10.0.0.2 [::1]:1885
round_robin true
bridge_cafile {tmp_path}/ca.pem
bridge_tls_version tlsv1.3
bridge_alpn mqtt
bridge_max_packet_size 2048
bridge_attempt_unsubscribe false
bridge_require_ocsp false
start_type once
restart_timeout 20
notifications_local_only true
notification_topic bridges/edge/state
local_clientid edge-local
local_username bridge
local_password secret
local_cleansession false
bridge_bind_address 10.0.0.9
idle_timeout 30
threshold 5
topic # both
""",
        warnings,
    ).brokers
    assert broker.url == "mqtts://10.0.0.1:1884"
    assert (broker.addresses, broker.round_robin) == (["10.0.0.2:1883", "[::1]:1885"], True)
    assert (broker.tls_version, broker.alpn, broker.max_packet_size) == ("TLSv1.3", "mqtt", 2048)
    assert (broker.unsubscribe_out, broker.reconnect, broker.reconnect_min, broker.reconnect_max) == (
        False,
        False,
        20,
        20,
    )
    assert (broker.notifications, broker.notifications_local_only) == (True, True)
    assert broker.notification_topic == "bridges/edge/state" and broker.bind_address == "10.0.0.9"
    ignored = [warning.split(": ", 2)[1:] for warning in warnings]
    assert [name for name, _ in ignored] == [
        "local_clientid",
        "local_username",
        "local_password",
        "local_cleansession",
        "idle_timeout",
        "threshold",
    ]
    assert all(why.endswith("; ignored") and len(why) > 40 for _, why in ignored), ignored
    assert "the ACL does not apply to a bridge" in dict(ignored)["local_username"]
    lazy: list[str] = []
    load(tmp_path, "listener 1883\nconnection c\naddress h\nstart_type lazy\ntopic #\n", lazy)
    assert lazy == [
        f"{tmp_path / 'mosquitto.conf'} line 4: start_type: wrenmq starts the bridge at once and restarts"
        " it when it fails (automatic)"
    ]


def test_mosquitto_conf_bridge_blocks_become_broker_connections(tmp_path: Path) -> None:
    warnings: list[str] = []
    (tmp_path / "ca.pem").write_text("")
    config = load(
        tmp_path,
        f"""listener 1883
connection cloud
address mqtt.example.com:8883 backup.example.com:8883
bridge_cafile {tmp_path}/ca.pem
remote_username plant-1
remote_password s3cret
remote_clientid plant-1-bridge
restart_timeout 5 60
topic sensors/# out 1 "" site1/
topic commands/# in 1
topic "" both 2 local/status remote/status
cleansession true

connection other one
address 10.0.0.2
bridge_protocol_version mqttv50
topic # both
""",
        warnings,
    )
    cloud, other = config.brokers
    assert (cloud.name, cloud.url, cloud.version) == ("cloud", "mqtts://mqtt.example.com:8883", 4)
    assert (cloud.username, cloud.password, cloud.client_id) == ("plant-1", "s3cret", "plant-1-bridge")
    assert cloud.cafile == tmp_path / "ca.pem" and cloud.reconnect_max == 60
    assert cloud.clean_start is True and other.clean_start is False
    assert [str(bridge) for bridge in cloud.parsed_bridges()] == [
        'topic sensors/# out 1 "" site1/',
        'topic commands/# in 1 "" ""',
        'topic "" both 2 local/status remote/status',
    ]
    assert (other.name, other.url, other.version) == ("other", "mqtt://10.0.0.2:1883", 5)
    assert other.bridges == ["topic # both"]
    assert warnings == []
    assert cloud.addresses == ["backup.example.com:8883"] and cloud.round_robin is False
    assert (cloud.reconnect_min, cloud.reconnect_max) == (5, 60)
    # Mosquitto's defaults for a bridge: notifications on, UNSUBSCRIBE from the out topics.
    assert cloud.notifications is True and cloud.unsubscribe_out is True and cloud.reconnect is True
    for refused in ("bridge_identity me", "bridge_capath /etc/ssl/certs", "bridge_require_ocsp true"):
        with pytest.raises(ConfigError, match=f"line 4: {refused.split()[0]}:"):
            load(tmp_path, f"listener 1883\nconnection c\naddress h\n{refused}\ntopic #\n")
    with pytest.raises(ConfigError, match="line 2: topic belongs in a bridge"):
        load(tmp_path, "listener 1883\ntopic #\n")
    with pytest.raises(ConfigError, match="line 3: 'topic # sideways': the direction must be in, out or both"):
        load(tmp_path, "connection c\naddress h\ntopic # sideways\n")


# --- wrenmq config convert | check -------------------------------------------------------------

EXAMPLE = """per_listener_settings false
allow_anonymous true
persistence false
max_queued_messages 0
log_type all
pid_file /run/mosquitto.pid
listener {port} 127.0.0.1
listener {ws_port} 127.0.0.1
protocol websockets
connection up
address 127.0.0.1:{remote}
topic sensors/# out 1
"""


def test_config_convert_prints_equivalent_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = conf(tmp_path, EXAMPLE.format(port=1883, ws_port=9001, remote=1884))
    assert wrenmq_main(["config", "convert", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path} line 6: pid_file: wrenmq writes no pid file" in err
    assert f"# warning: {path} line 6: pid_file" in out  # the warnings head the TOML as comments
    toml_path = tmp_path / "wrenmq.toml"
    toml_path.write_text(out)
    assert load_config(toml_path, env={}) == load_config(path, env={})
    assert 'url = "mqtt://127.0.0.1:1884"' in out and "[[listeners]]" in out
    assert wrenmq_main(["config", "convert", str(toml_path)]) == 2  # TOML already
    assert "is not a mosquitto.conf" in capsys.readouterr().err
    # `check` agrees; a file it names that does not load fails it, naming the key.
    assert wrenmq_main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK\n"
    path.write_text(f"listener 1883\npassword_file {tmp_path}/missing\n")
    assert wrenmq_main(["config", "check", str(path)]) == 2
    assert "missing" in capsys.readouterr().err
    path.write_text("listener 1883\nauth_plugin /x.so\n")
    assert wrenmq_main(["config", "check", str(path)]) == 2
    assert "line 2: auth_plugin" in capsys.readouterr().err


# --- wrenmq serve -c mosquitto.conf, with real clients ----------------------------------------


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"wrenmq exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"wrenmq did not listen on {port}:\n{log.read_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(START_TIMEOUT)


def start(serve: list[subprocess.Popen[bytes]], path: Path, port: int, *flags: str) -> Path:
    """``wrenmq serve -c path`` (the API off); returns its log file once ``port`` accepts."""
    log = path.with_suffix(".log")
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "wrenmq", "serve", *flags, str(path), "--api-port", "off"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
    serve.append(proc)
    wait_for_port(proc, port, log)
    return log


def test_serve_mosquitto_conf_tcp_websocket_and_tls(tmp_path: Path, serve: list[subprocess.Popen[bytes]]) -> None:
    ca = make_ca(tmp_path)
    cert, key = make_cert(ca, tmp_path, "127.0.0.1", server=True)
    port, ws_port, tls_port = free_port(), free_port(), free_port()
    path = conf(
        tmp_path,
        f"""allow_anonymous true
pid_file /run/mosquitto/mosquitto.pid
listener {port} 127.0.0.1
listener {ws_port} 127.0.0.1
protocol websockets
listener {tls_port} 127.0.0.1
certfile {cert}
keyfile {key}
""",
    )
    log = start(serve, path, tls_port, "-c")
    subscriber = PahoClient(port, MQTTv311)
    subscriber.subscribe("mosq/#", 1)
    ws = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets")
    ws.ws_set_options(path="/mqtt")
    ws.connect("127.0.0.1", ws_port)
    ws.loop_start()
    ws.publish("mosq/ws", b"over websocket", qos=1).wait_for_publish(TIMEOUT)
    tls = mqtt.Client(CallbackAPIVersion.VERSION2)
    tls.tls_set(ca_certs=str(ca.cert), cert_reqs=ssl.CERT_REQUIRED)
    tls.connect("127.0.0.1", tls_port)
    tls.loop_start()
    tls.publish("mosq/tls", b"over tls", qos=1).wait_for_publish(TIMEOUT)
    assert sorted((m.topic, m.payload) for m in subscriber.receive(2)) == [
        ("mosq/tls", b"over tls"),
        ("mosq/ws", b"over websocket"),
    ]
    for client in (ws, tls):
        client.disconnect()
        client.loop_stop()
    subscriber.close()
    assert f"{path} line 2: pid_file: wrenmq writes no pid file" in log.read_text()


def test_serve_mosquitto_conf_refused_directive_stops_start(tmp_path: Path) -> None:
    path = conf(tmp_path, f"listener {free_port()} 127.0.0.1\nplugin /usr/lib/x86_64-linux-gnu/dynsec.so\n")
    cmd = [sys.executable, "-m", "wrenmq", "serve", "--config", str(path), "--api-port", "off"]
    done = subprocess.run(cmd, capture_output=True, env=clean_env(), timeout=START_TIMEOUT)
    assert done.returncode == 2
    assert f"{path} line 2: plugin: plugins are not supported" in done.stderr.decode()


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_serve_mosquitto_conf_bridge_to_real_mosquitto(tmp_path: Path, serve: list[subprocess.Popen[bytes]]) -> None:
    (tmp_path / "remote").mkdir()
    remote = MosquittoBroker(tmp_path / "remote").start()
    try:
        port = free_port()
        path = conf(
            tmp_path,
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f'connection plant\naddress 127.0.0.1:{remote.port}\ntopic sensors/# out 1 "" site1/\n',
        )
        start(serve, path, port, "--config")
        there = PahoClient(remote.port, MQTTv311)
        there.subscribe("site1/#", 1)
        here = PahoClient(port, MQTTv311)
        deadline = time.monotonic() + TIMEOUT
        while there.messages.empty() and time.monotonic() < deadline:  # the bridge connects in the background
            here.publish("sensors/t1", b"21.5", qos=1)
            time.sleep(0.2)
        message = there.receive(1)[0]
        assert (message.topic, message.payload) == ("site1/sensors/t1", b"21.5")
        here.close()
        there.close()
    finally:
        remote.stop()
