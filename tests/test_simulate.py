"""``wrenmq simulate devices``: the device simulator (issue 8), a wrenmq feature rather than part of the
MQTT spec. The simulator runs as a real subprocess against a real broker (wrenmq, and Mosquitto
once); paho-mqtt observes the device topics and sends the commands. The device state machine is
also tested on its own, without a broker. Each test's docstring says what it checks; the MQTT rules
the simulator leans on (wills) are cited where they are.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mosquitto_fixture import MosquittoBroker
from serveproc import clean_env, free_port, serve_command
from wrenmq.cli import main
from wrenmq.config import Config
from wrenmq.pytest_plugin import WrenmqServer
from wrenmq.simulate.state import DeviceState, DeviceTopics, timestamp

TIMEOUT = 15.0  # seconds any single expectation may take
IDS5 = [f"sim-000{n}" for n in range(1, 6)]


# --- helpers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Observer:
    """A paho client that records every message on its filters, and can wait for some."""

    def __init__(self, port: int, *filters: str, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5) -> None:
        self.seen: list[Seen] = []
        self._cond = threading.Condition()
        connected = threading.Event()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.on_connect = lambda *_: connected.set()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert connected.wait(TIMEOUT), "paho could not connect"
        if filters:
            self.client.subscribe([(topic_filter, 1) for topic_filter in filters])
            assert subscribed.wait(TIMEOUT), "paho got no SUBACK"

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.seen.append(Seen(message.topic, bytes(message.payload), bool(message.retain), time.monotonic()))
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Seen]], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
        """Wait until ``predicate(seen)`` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(list(self.seen))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = [(s.topic, s.payload[:80]) for s in self.seen[-15:]]
                    raise AssertionError(f"timed out waiting for {what or predicate}; last seen: {topics}")
                self._cond.wait(left)

    def on(self, topic: str) -> list[Seen]:
        with self._cond:
            return [s for s in self.seen if s.topic == topic]

    def command(self, topic: str, params: dict[str, Any] | None = None, payload: bytes | None = None) -> str:
        """Publish a command in the scheme's shape (or a raw ``payload``); returns its commandId."""
        command_id = str(uuid.uuid4())
        if payload is None:
            body = {"command": topic.rsplit("/", 1)[1], "params": params or {}, "commandId": command_id}
            payload = json.dumps({**body, "timestamp": timestamp(time.time())}).encode()
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)
        return command_id

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def of(seen: list[Seen], topic: str, **fields: Any) -> list[Any]:
    """The JSON payloads on ``topic`` whose fields include ``fields``."""
    out = []
    for s in seen:
        if s.topic == topic and s.payload:
            data = s.json()
            if all(data.get(key) == value for key, value in fields.items()):
                out.append(data)
    return out


def is_will(s: Seen) -> bool:
    """An offline message on an lwt topic (the devices' own online messages there are not wills)."""
    return s.topic.endswith("/lwt") and bool(s.payload) and s.json()["status"] == "offline"


def announced(seen: list[Seen]) -> set[str]:
    return {data["deviceId"] for data in of(seen, "devices/discovery/announce")}


class Simulator:
    """``python -m wrenmq simulate devices`` as a subprocess; stderr goes to a file."""

    def __init__(self, tmp_path: Path, port: int, *flags: str) -> None:
        self.stderr_path = tmp_path / f"simulate-{time.monotonic_ns()}.err"
        command = [sys.executable, "-m", "wrenmq", "simulate", "devices", "-p", str(port), *flags]
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=stderr)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(TIMEOUT)

    def wait_stderr(self, text: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            assert self.process.poll() is None, f"the simulator exited early:\n{self.stderr}"
            assert time.monotonic() < deadline, f"{text!r} not in the simulator's stderr:\n{self.stderr}"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)


@pytest.fixture
def observers() -> Iterator[Callable[..., Observer]]:
    made: list[Observer] = []

    def make(port: int, *filters: str, **kw: Any) -> Observer:
        observer = Observer(port, *filters, **kw)
        made.append(observer)
        return observer

    yield make
    for observer in made:
        observer.close()


@pytest.fixture
def simulators(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    made: list[Simulator] = []

    def make(port: int, *flags: str) -> Simulator:
        simulator = Simulator(tmp_path, port, *flags)
        made.append(simulator)
        return simulator

    yield make
    for simulator in made:
        simulator.kill()


def retained(port: int, topic_filter: str, count: int, observers: Callable[..., Observer]) -> list[Seen]:
    """The retained messages a new subscriber to ``topic_filter`` gets (waiting for ``count``)."""
    fresh = observers(port, topic_filter)
    return fresh.wait(lambda seen: len(seen) >= count and seen, what=f"{count} retained on {topic_filter}")


# --- against wrenmq ----------------------------------------------------------------------------------


@pytest.fixture
def broker_port(wrenmq_server_factory: Callable[..., WrenmqServer]) -> int:
    """A wrenmq broker without its presence service, which publishes a will-shaped offline message
    of its own when a device disconnects: here every offline message on an lwt topic is a will."""
    overrides = {"presence": False} if "presence" in Config.model_fields else {}
    return wrenmq_server_factory(**overrides).port


def test_devices_announce_status_and_beat_then_stop_without_wills(
    broker_port: int, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """Five devices announce themselves, publish a retained idle status and heartbeat at about the
    interval; SIGTERM makes every device DISCONNECT and the simulator exit 0, so no will fires
    ([MQTT-3.1.2-10]: the will is deleted on a DISCONNECT)."""
    port = broker_port
    observer = observers(port, "devices/#")
    simulator = simulators(port, "--count", "5", "--heartbeat", "0.5", "--duration", "60")
    observer.wait(lambda seen: announced(seen) == set(IDS5), what="5 announces")
    for device_id in IDS5:
        announce = of(observer.seen, "devices/discovery/announce", deviceId=device_id)[0]
        assert announce["type"] == "vr-headset" and announce["name"] and announce["timestamp"].endswith("Z")
    status_topics = {f"devices/{i}/status" for i in IDS5}
    # Every status published (live) before a new subscriber asks for them: then all five are retained.
    observer.wait(lambda seen: status_topics <= {s.topic for s in seen}, what="5 statuses")
    statuses = retained(port, "devices/+/status", 5, observers)
    assert {s.topic for s in statuses} == status_topics
    for s in statuses:
        assert s.retain
        data = s.json()
        assert (data["status"], data["positionMs"], data["sessionId"]) == ("idle", 0, None)
    beats = observer.wait(lambda _: len(observer.on("devices/sim-0003/heartbeat")) >= 5, what="5 heartbeats")
    assert beats
    times = [s.at for s in observer.on("devices/sim-0003/heartbeat")]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert 0.2 < gaps[len(gaps) // 2] < 1.5, gaps  # about 0.5 s apart
    beat = observer.on("devices/sim-0003/heartbeat")[-1].json()
    assert beat["deviceId"] == "sim-0003" and isinstance(beat["uptimeMs"], int)
    simulator.wait_stderr("5/5 devices connected")

    assert simulator.signal(signal.SIGTERM) == 0, simulator.stderr
    time.sleep(0.5)  # a will would be published the moment the connection closed
    assert [s for s in observer.seen if is_will(s)] == []
    assert "stopped" in simulator.stderr


def test_duration_ends_cleanly(
    broker_port: int, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """--duration runs, then stops every device with DISCONNECT and exits 0: no will fires [MQTT-3.1.2-10]."""
    port = broker_port
    observer = observers(port, "devices/#")
    simulator = simulators(port, "--count", "3", "--duration", "2", "--quiet")
    assert simulator.process.wait(TIMEOUT) == 0
    assert len(announced(observer.seen)) == 3
    time.sleep(0.5)
    assert [s for s in observer.seen if is_will(s)] == []
    assert simulator.stderr == ""  # --quiet


def test_play_pause_and_bad_commands(
    broker_port: int, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """A play command makes the device's retained status "playing", and positionMs advances with time;
    every command is answered with an event carrying its commandId. Unknown commands and malformed
    payloads produce an event and change nothing; the device keeps obeying afterwards."""
    port = broker_port
    observer = observers(port, "devices/#")
    simulators(port, "--count", "2", "--duration", "60")
    observer.wait(lambda seen: len(announced(seen)) == 2 and len(of(seen, "devices/sim-0002/status")) >= 1)

    play_id = observer.command("devices/sim-0001/commands/play")
    event = observer.wait(lambda seen: of(seen, "devices/sim-0001/events", commandId=play_id), what="play event")[0]
    assert (event["event"], event["command"], event["deviceId"]) == ("command", "play", "sim-0001")
    status = retained(port, "devices/sim-0001/status", 1, observers)[0].json()
    assert status["status"] == "playing"
    time.sleep(0.6)
    pause_id = observer.command("devices/sim-0001/commands/pause")
    observer.wait(lambda seen: of(seen, "devices/sim-0001/events", commandId=pause_id), what="pause event")
    paused = of(observer.seen, "devices/sim-0001/status", status="paused")[-1]
    assert paused["positionMs"] >= 300  # advanced while playing (0.6 s)
    assert of(observer.seen, "devices/sim-0002/status", status="playing") == []  # the other device did not play

    unknown_id = observer.command("devices/sim-0001/commands/explode")
    unknown = observer.wait(lambda seen: of(seen, "devices/sim-0001/events", commandId=unknown_id))[0]
    assert (unknown["event"], unknown["command"]) == ("unknown-command", "explode")
    observer.command("devices/sim-0001/commands/play", payload=b"this is not json")
    observer.wait(lambda seen: of(seen, "devices/sim-0001/events", event="malformed-command"), what="malformed event")
    seek_id = observer.command("devices/sim-0001/commands/seek", {"positionMs": 42_000})
    observer.wait(lambda seen: of(seen, "devices/sim-0001/events", commandId=seek_id), what="seek event")
    status = retained(port, "devices/sim-0001/status", 1, observers)[0].json()
    assert (status["status"], status["positionMs"]) == ("paused", 42_000)  # the bad ones changed nothing


def test_join_then_session_commands_reach_members_only(
    broker_port: int, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """After join, a device obeys its session's commands (and reports the session in its status);
    devices not in the session ignore them; after leave, it does too."""
    port = broker_port
    observer = observers(port, "devices/#")
    simulators(port, "--count", "3", "--duration", "60")
    observer.wait(lambda seen: len(of(seen, "devices/sim-0003/status")) >= 1 and len(announced(seen)) == 3)
    for device_id in ("sim-0001", "sim-0002"):
        join_id = observer.command(f"devices/{device_id}/commands/join", {"sessionId": "class-7"})
        observer.wait(lambda seen, d=device_id, j=join_id: of(seen, f"devices/{d}/events", commandId=j))
        status = of(observer.seen, f"devices/{device_id}/status")[-1]
        assert status["sessionId"] == "class-7"

    play_id = observer.command("sessions/class-7/commands/play")
    for device_id in ("sim-0001", "sim-0002"):
        observer.wait(lambda seen, d=device_id: of(seen, f"devices/{d}/events", commandId=play_id), what=device_id)
    stop_at = observer.command("devices/sim-0003/commands/stop")  # sim-0003 answers its own commands...
    observer.wait(lambda seen: of(seen, "devices/sim-0003/events", commandId=stop_at))
    assert of(observer.seen, "devices/sim-0003/events", commandId=play_id) == []  # ...but not the session's

    leave_id = observer.command("devices/sim-0002/commands/leave")
    observer.wait(lambda seen: of(seen, "devices/sim-0002/events", commandId=leave_id))
    assert of(observer.seen, "devices/sim-0002/status")[-1]["sessionId"] is None
    pause_id = observer.command("sessions/class-7/commands/pause")
    observer.wait(lambda seen: of(seen, "devices/sim-0001/events", commandId=pause_id))
    time.sleep(0.5)
    assert of(observer.seen, "devices/sim-0002/events", commandId=pause_id) == []


def test_killed_simulator_fires_every_will(
    broker_port: int, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """SIGKILL closes every device's socket without DISCONNECT, so the broker publishes each device's
    will: a retained offline message on devices/{id}/lwt.  # [MQTT-3.1.2-8]"""
    port = broker_port
    observer = observers(port, "devices/+/lwt", "devices/+/status")
    simulator = simulators(port, "--count", "5", "--duration", "60")
    observer.wait(lambda seen: all(of(seen, f"devices/{i}/status") for i in IDS5), what="5 statuses")
    simulator.process.kill()
    simulator.process.wait(TIMEOUT)
    observer.wait(lambda seen: len({s.topic for s in seen if is_will(s)}) == 5, what="5 wills")
    for device_id in IDS5:
        will = of(observer.seen, f"devices/{device_id}/lwt")[-1]
        assert (will["deviceId"], will["status"]) == (device_id, "offline") and will["timestamp"].endswith("Z")
    kept = retained(port, "devices/+/lwt", 5, observers)
    assert {s.topic for s in kept} == {f"devices/{i}/lwt" for i in IDS5} and all(s.retain for s in kept)


def test_drop_outs_fire_the_will_and_the_device_returns(
    broker_port: int, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """With --drop-rate 1 a device soon drops its socket (the broker publishes its will, [MQTT-3.1.2-8])
    and comes back 2-10 s later: it replaces the will with a retained online message (JSON, never an
    empty payload: panels parse every message on the lwt topic) and announces again."""
    port = broker_port
    observer = observers(port, "devices/#")
    simulator = simulators(port, "--count", "2", "--drop-rate", "1", "--duration", "60", "--seed", "7")

    def returned(seen: list[Seen]) -> str | None:
        for index, s in enumerate(seen):
            if is_will(s):
                device_id = s.json()["deviceId"]
                after = seen[index + 1 :]
                cleared = any(x.topic == f"devices/{device_id}/lwt" and x.json()["status"] == "online" for x in after)
                if cleared and device_id in announced(after):
                    return device_id
        return None

    device_id = observer.wait(returned, timeout=40, what="a drop-out and a return")
    assert device_id in ("sim-0001", "sim-0002")
    simulator.wait_stderr("drop-outs")
    assert simulator.signal(signal.SIGTERM) == 0


def test_unreachable_broker_is_retried_and_reported(
    tmp_path: Path, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """With no broker listening, the devices keep retrying and the status line says why; once a broker
    starts on that port they connect and announce themselves."""
    port = free_port()
    simulator = simulators(port, "--count", "2", "--duration", "60")
    simulator.wait_stderr("not connected")
    assert "0/2 devices connected" in simulator.stderr
    with (tmp_path / "serve.log").open("wb") as log:
        broker = subprocess.Popen(serve_command(port), env=clean_env(), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                observer = observers(port, "devices/+/status")
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, "the broker did not start"
                time.sleep(0.2)
        observer.wait(lambda seen: len({s.topic for s in seen}) == 2, timeout=45, what="2 statuses")
        assert simulator.signal(signal.SIGTERM) == 0
    finally:
        broker.terminate()
        broker.wait(TIMEOUT)


# --- against Mosquitto -------------------------------------------------------------------------------


def test_against_mosquitto_at_311(
    mosquitto: MosquittoBroker, observers: Callable[..., Observer], simulators: Callable[..., Simulator]
) -> None:
    """The simulator speaks plain MQTT: against Mosquitto at 3.1.1 the devices announce, obey a command,
    reconnect after a broker restart and publish their status again, and, when the simulator is killed,
    Mosquitto publishes their wills [MQTT-3.1.2-8]."""
    port = mosquitto.port
    observer = observers(port, "devices/#", protocol=MQTTProtocolVersion.MQTTv311)
    simulator = simulators(port, "--count", "3", "-V", "311", "--heartbeat", "0.5", "--duration", "60")
    ids = {"sim-0001", "sim-0002", "sim-0003"}
    observer.wait(lambda seen: announced(seen) == ids and len(observer.on("devices/sim-0003/status")) >= 1)
    play_id = observer.command("devices/sim-0002/commands/play")
    observer.wait(lambda seen: of(seen, "devices/sim-0002/events", commandId=play_id), what="play event")
    assert of(observer.seen, "devices/sim-0002/status")[-1]["status"] == "playing"
    observer.wait(lambda _: len(observer.on("devices/sim-0001/heartbeat")) >= 2, what="heartbeats")

    observer.close()
    mosquitto.restart()  # no persistence: the retained statuses are gone, until the devices reconnect
    observer = observers(port, "devices/#", protocol=MQTTProtocolVersion.MQTTv311)
    statuses = observer.wait(
        lambda seen: (
            {s.topic for s in seen if s.topic.endswith("/status")} == {f"devices/{i}/status" for i in ids} and seen
        ),
        timeout=40,
        what="statuses after the restart",
    )
    assert of(statuses, "devices/sim-0002/status")[-1]["status"] == "playing"  # the state survived
    simulator.process.kill()
    simulator.process.wait(TIMEOUT)
    observer.wait(
        lambda seen: {s.json()["deviceId"] for s in seen if is_will(s)} == ids,
        what="3 wills",
    )


# --- flags -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--count", "0"], "--count"),
        (["--count", "many"], "--count"),
        (["-p", "70000"], "-p/--port"),
        (["-V", "31"], "-V/--protocol-version"),
        (["--drop-rate", "1.5"], "--drop-rate"),
        (["--heartbeat", "0"], "--heartbeat"),
        (["--duration", "-1"], "--duration"),
        (["--ramp", "0"], "--ramp"),
        (["--prefix", "a/b"], "--prefix"),
        (["--devices-root", "dev/#"], "--devices-root"),
        (["--sessions-root", "/sessions"], "--sessions-root"),
        (["--seed", "x"], "--seed"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(flags: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag is an argparse error that names it, with exit status 2 (in process: argparse exits)."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "devices", *flags])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_bad_flag_as_a_subprocess_and_help() -> None:
    """The same through ``python -m wrenmq``; --help says that a clean stop fires no will, and exits 0."""
    bad = subprocess.run(
        [sys.executable, "-m", "wrenmq", "simulate", "devices", "--heartbeat", "soon"],
        env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert bad.returncode == 2 and "--heartbeat" in bad.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "wrenmq", "simulate", "devices", "--help"],
        env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert shown.returncode == 0
    assert "DISCONNECT" in shown.stdout and "NOT publish their wills" in shown.stdout
    bare = subprocess.run(
        [sys.executable, "-m", "wrenmq", "simulate"], env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert bare.returncode == 2 and "devices" in bare.stderr


# --- the state machine, without a broker -------------------------------------------------------------


def _device(session_root: str = "sessions") -> DeviceState:
    return DeviceState(DeviceTopics("sim-0001", "devices", session_root), "vr-headset", "Headset 1", started=1000.0)


def _cmd(name: str, params: dict[str, Any] | None = None, command_id: str = "c1") -> bytes:
    return json.dumps({"command": name, "params": params or {}, "commandId": command_id}).encode()


def test_state_play_pause_seek_stop_follow_the_clock() -> None:
    """positionMs advances with the time while playing, freezes on pause, jumps on seek, resets on stop."""
    device = _device()
    assert device.status(1000.0) == {
        "deviceId": "sim-0001",
        "status": "idle",
        "positionMs": 0,
        "sessionId": None,
        "timestamp": "1970-01-01T00:16:40.000Z",
    }
    topic = "devices/sim-0001/commands/"
    reaction = device.handle(topic + "play", _cmd("play", command_id="p1"), 1001.0)
    assert reaction is not None and reaction.obeyed and reaction.status is not None
    assert reaction.status["status"] == "playing" and reaction.status["positionMs"] == 0
    assert reaction.event == {
        "deviceId": "sim-0001",
        "event": "command",
        "command": "play",
        "commandId": "p1",
        "timestamp": timestamp(1001.0),
    }
    assert device.status(1003.5)["positionMs"] == 2500
    paused = device.handle(topic + "pause", _cmd("pause"), 1004.0)
    assert paused is not None and paused.status is not None
    assert (paused.status["status"], paused.status["positionMs"]) == ("paused", 3000)
    assert device.status(1010.0)["positionMs"] == 3000  # frozen
    seek = device.handle(topic + "seek", _cmd("seek", {"positionMs": 60_000}), 1011.0)
    assert seek is not None and seek.status is not None and seek.status["positionMs"] == 60_000
    device.handle(topic + "play", _cmd("play"), 1012.0)
    assert device.status(1013.0)["positionMs"] == 61_000
    stop = device.handle(topic + "stop", _cmd("stop"), 1014.0)
    assert stop is not None and stop.status is not None
    assert (stop.status["status"], stop.status["positionMs"]) == ("stopped", 0)
    assert device.status(1020.0)["positionMs"] == 0


def test_state_join_and_leave_change_the_subscriptions() -> None:
    """join subscribes to the session's commands (leaving the previous session), leave unsubscribes;
    session commands are obeyed only for the current session."""
    device = _device("classes")
    topic = "devices/sim-0001/commands/"
    assert device.handle("classes/a/commands/play", _cmd("play"), 1.0) is None  # not in a session yet
    joined = device.handle(topic + "join", _cmd("join", {"sessionId": "a"}), 2.0)
    assert joined is not None and joined.subscribe == ["classes/a/commands/+"] and joined.unsubscribe == []
    assert joined.status is not None and joined.status["sessionId"] == "a"
    assert device.subscriptions() == ["devices/sim-0001/commands/+", "classes/a/commands/+"]
    played = device.handle("classes/a/commands/play", _cmd("play"), 3.0)
    assert played is not None and played.obeyed and device.state == "playing"
    moved = device.handle(topic + "join", _cmd("join", {"sessionId": "b"}), 4.0)
    assert moved is not None and moved.subscribe == ["classes/b/commands/+"]
    assert moved.unsubscribe == ["classes/a/commands/+"]
    assert device.handle("classes/a/commands/stop", _cmd("stop"), 5.0) is None  # left a: ignored
    left = device.handle(topic + "leave", _cmd("leave"), 6.0)
    assert left is not None and left.unsubscribe == ["classes/b/commands/+"]
    assert left.status is not None and left.status["sessionId"] is None
    assert device.subscriptions() == ["devices/sim-0001/commands/+"]


@pytest.mark.parametrize(
    ("name", "payload", "event"),
    [
        ("dance", _cmd("dance"), "unknown-command"),
        ("play", b"\xff\xfe not json", "malformed-command"),
        ("play", b"[1, 2]", "malformed-command"),
        ("play", b'{"params": 7}', "malformed-command"),
        ("seek", _cmd("seek", {}), "invalid-command"),
        ("seek", _cmd("seek", {"positionMs": -5}), "invalid-command"),
        ("join", _cmd("join", {"sessionId": "a/b"}), "invalid-command"),
    ],
)
def test_state_refuses_bad_commands_without_changing(name: str, payload: bytes, event: str) -> None:
    """Unknown commands, payloads that are not JSON objects and missing parameters give an event, a
    warning, and no state change (so no status to publish)."""
    device = _device()
    before = device.status(5.0)
    reaction = device.handle(f"devices/sim-0001/commands/{name}", payload, 5.0)
    assert reaction is not None and not reaction.obeyed
    assert reaction.event["event"] == event and reaction.event["command"] == name
    assert reaction.status is None and reaction.warning and not reaction.subscribe
    assert device.status(5.0) == before


def test_seed_makes_the_randomness_repeatable() -> None:
    """--seed gives each device the same random numbers (heartbeat jitter, drop-outs) on every run, and
    different devices different ones; device ids are <prefix>-0001 and wider for big fleets."""
    from wrenmq.simulate.device import Fleet, FleetSettings

    def draws(seed: int | None) -> list[list[float]]:
        fleet = Fleet(FleetSettings(count=3, seed=seed))
        return [[device.rng.random() for _ in range(3)] for device in fleet.devices]

    assert draws(7) == draws(7) != draws(8)
    assert len({tuple(d) for d in draws(7)}) == 3
    assert draws(None) != draws(None)
    assert [d.device_id for d in Fleet(FleetSettings(count=2, prefix="hs")).devices] == ["hs-0001", "hs-0002"]
    assert Fleet(FleetSettings(count=12_000)).devices[-1].device_id == "sim-12000"
