"""Deployment: the sdist and wheel, the container's and the systemd unit's command lines, start-up
warnings. Docker cannot run here, so the image's ENTRYPOINT + CMD, ENV and HEALTHCHECK are read
from the Dockerfile and run against the wheel built from the sdist, as the image would run them;
the unit's ExecStart, Environment and ExecReload likewise, with a real sd_notify socket.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import wrenmq
from deployfiles import ROOT, Dockerfile, Served, Unit, build_wheel, install_wheel
from paho_sync import MQTTv5, MQTTv311, PahoClient
from serveproc import clean_env, free_port, serve_command

PURE_PYTHON_WARNING = "the hot path is not compiled"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel): those ``python -m build`` left in $DEPLOY_TEST_DIST (CI: the compiled wheel),
    else built here from this checkout, pure Python (seconds, not mypyc's minutes)."""
    given = os.environ.get("DEPLOY_TEST_DIST")
    if given:
        (sdist,), (wheel,) = Path(given).glob("*.tar.gz"), Path(given).glob("*.whl")
        return sdist, wheel
    return build_wheel(tmp_path_factory.mktemp("dist"))


def _compiled(wheel: Path) -> bool:
    return any(name.endswith((".so", ".pyd")) for name in zipfile.ZipFile(wheel).namelist())


@pytest.fixture(scope="module")
def installed(dist: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed on its own: commands run its ``bin/wrenmq`` with it first on PYTHONPATH."""
    return install_wheel(dist[1], tmp_path_factory.mktemp("site"))


def _wheel_env(installed: Path, *layers: dict[str, str], **settings: str) -> dict[str, str]:
    """This environment without WRENMQ_*, then each layer (later ones win), then ``settings``."""
    env = clean_env()
    for layer in (*layers, settings):
        env.update(layer)
    env["PYTHONPATH"] = os.pathsep.join([str(installed), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _executable(installed: Path, word: str) -> str:
    """A deployment file's ``wrenmq`` (bare or at its install path) as the wheel's script."""
    assert Path(word).name == "wrenmq", f"the command runs {word}, not wrenmq"
    return str(installed / "bin" / "wrenmq")


def _pub_sub(port: int) -> None:
    subscriber = PahoClient(port, MQTTv5, "deploy-sub")
    publisher = PahoClient(port, MQTTv311, "deploy-pub")
    try:
        assert subscriber.subscribe("deploy/#", qos=1) == [1]
        publisher.publish("deploy/check", b"hello", qos=1)
        (message,) = subscriber.receive(1)
        assert (message.topic, message.payload) == ("deploy/check", b"hello")
    finally:
        subscriber.close()
        publisher.close()


# --- the sdist and the wheel ---------------------------------------------------------------------


def test_sdist_holds_what_the_wheel_build_and_a_packager_need(dist: tuple[Path, Path]) -> None:
    import tarfile

    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"):
        assert needed in names
    for deploy in ("Dockerfile", "compose.yaml", "contrib/systemd/wrenmq.service", "contrib/docker/wrenmq.toml"):
        assert deploy in names
    assert "src/wrenmq/console/index.html" in names
    assert "src/wrenmq/static/vendor/mqtt.min.js" in names
    assert not any(name.endswith(".so") for name in names), "a built extension leaked into the sdist"


def test_wheel_built_from_the_sdist_carries_console_assets_and_license(dist: tuple[Path, Path]) -> None:
    _, wheel = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_assets = [
        path.relative_to(ROOT / "src").as_posix()
        for folder in ("console", "static")
        for path in (ROOT / "src/wrenmq" / folder).rglob("*")
        if path.is_file() and path.suffix in (".html", ".js", ".css", ".json", ".md", ".LICENSE", "")
    ]
    assert repo_assets and not set(repo_assets) - names, sorted(set(repo_assets) - names)
    assert names & {"wrenmq-0.1.0.dist-info/LICENSE", "wrenmq-0.1.0.dist-info/licenses/LICENSE"}
    metadata = zipfile.ZipFile(wheel).read("wrenmq-0.1.0.dist-info/METADATA").decode()
    assert "License: Apache-2.0" in metadata
    assert "Classifier: License :: OSI Approved :: Apache Software License" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert metadata.split("\n\n", 1)[1].startswith("# wrenmq\n")  # the README, as PyPI's page


def test_license_is_the_apache_2_text_the_readme_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Apache License 2.0" in (ROOT / "README.md").read_text()


def test_serve_warns_when_the_hot_path_runs_as_pure_python(tmp_path: Path) -> None:
    """A missing C compiler must not pass unnoticed: the broker says so at start-up (at WARNING)."""
    proc = subprocess.Popen(
        serve_command(free_port(), tmp_path, "--api-port", str(free_port())),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if " listening on " in line:
                break
        proc.send_signal(signal.SIGTERM)
        lines += proc.stdout.readlines()
        assert proc.wait(10) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    warned = [line for line in lines if PURE_PYTHON_WARNING in line]
    if wrenmq.hot_path() == "pure Python":  # this test environment (editable installs are pure Python)
        assert len(warned) == 1 and " WARNING " in warned[0], "".join(lines)
    else:
        assert not warned, "".join(lines)


# --- the container ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_volume_ports_and_healthcheck() -> None:
    image = Dockerfile.read(ROOT / "Dockerfile")
    stages = image.stage_args("FROM")
    assert len(stages) == 2 and " AS builder" in stages[0] and "-slim" in stages[1]
    assert any("--from=builder" in copy and ".whl" in copy for copy in image.stage_args("COPY"))
    assert image.stage_args("USER") == ["wrenmq"]
    assert image.stage_args("VOLUME") == ['["/var/lib/wrenmq"]']
    assert image.env["WRENMQ_DATA_DIR"] == "/var/lib/wrenmq"
    assert set(image.stage_args("EXPOSE")[0].split()) == {"1883", "8883", "9001", "8080"}
    assert image.healthcheck == ["wrenmq", "ctl", "health"]


def test_compose_runs_the_image_with_its_config_and_a_data_volume() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["wrenmq"]
    assert service["build"] == "."
    assert {"1883:1883", "9001:9001", "8080:8080"} <= set(service["ports"])
    mounts = dict(volume.split(":", 2)[:2][::-1] for volume in service["volumes"])
    assert mounts["/var/lib/wrenmq"] in compose["volumes"]  # a named volume for the data
    config = Path(service["environment"]["WRENMQ_CONFIG"])
    assert (ROOT / mounts[str(config.parent)] / config.name).is_file()


def _compose_config() -> Path:
    """The config file compose.yaml mounts, as a path in this checkout."""
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["wrenmq"]
    mounts = dict(volume.split(":", 2)[:2][::-1] for volume in service["volumes"])
    config = Path(service["environment"]["WRENMQ_CONFIG"])
    return ROOT / mounts[str(config.parent)] / config.name


def test_image_command_serves_mqtt_healthz_and_its_healthcheck_passes(
    installed: Path, dist: tuple[Path, Path], tmp_path: Path
) -> None:
    """ENTRYPOINT + CMD with the image's ENV and compose's config, on the wheel; only the ports (free
    ones here) and the volume's path (a temporary directory) differ from the container."""
    image = Dockerfile.read(ROOT / "Dockerfile")
    mqtt, ws, api = free_port(), free_port(), free_port()
    env = _wheel_env(
        installed,
        image.env,
        WRENMQ_CONFIG=str(_compose_config()),
        WRENMQ_DATA_DIR=str(tmp_path / "volume"),
        WRENMQ_PORT=str(mqtt),
        WRENMQ_WS_PORT=str(ws),
        WRENMQ_API_PORT=str(api),
    )
    command = [_executable(installed, image.command[0]), *image.command[1:]]
    served = Served(command, env, tmp_path / "serve.log", api)
    try:
        served.wait_healthy()
        served.wait_log("hot path: " + ("compiled (mypyc)" if _compiled(dist[1]) else "pure Python"))
        _pub_sub(mqtt)
        health = [_executable(installed, image.healthcheck[0]), *image.healthcheck[1:]]
        check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and check.stdout.strip() == "ok", check
        assert (tmp_path / "volume" / "wrenmq.db").exists()  # the data lives in the volume
        served.proc.send_signal(signal.SIGTERM)  # docker stop
        assert served.proc.wait(15) == 0, served.log()
    finally:
        served.close()
    # Once the broker is gone the health check fails, so the container is marked unhealthy.
    check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and "cannot reach the API" in check.stderr


def test_image_alone_refuses_anonymous_clients_on_every_interface(installed: Path, tmp_path: Path) -> None:
    """Without compose's development config, the image listens on 0.0.0.0, where anonymous
    clients are refused unless allow_anonymous says otherwise."""
    image = Dockerfile.read(ROOT / "Dockerfile")
    mqtt, api = free_port(), free_port()
    env = _wheel_env(
        installed,
        image.env,
        WRENMQ_DATA_DIR=str(tmp_path),
        WRENMQ_PORT=str(mqtt),
        WRENMQ_WS_PORT="off",
        WRENMQ_API_PORT=str(api),
    )
    served = Served([_executable(installed, image.command[0]), *image.command[1:]], env, tmp_path / "log", api)
    try:
        served.wait_healthy()
        with pytest.raises(AssertionError, match="Not authorized"):
            PahoClient(mqtt, MQTTv5, "anonymous")
    finally:
        served.close()


def test_image_command_takes_a_mosquitto_conf_as_a_mosquitto_service_mounts_it(installed: Path, tmp_path: Path) -> None:
    """The README's compose recipe for Mosquitto users: their config directory mounted as it was,
    WRENMQ_CONFIG naming their mosquitto.conf; its listeners and allow_anonymous carry over."""
    image = Dockerfile.read(ROOT / "Dockerfile")
    mqtt, ws, api = free_port(), free_port(), free_port()
    config_dir = tmp_path / "mosquitto" / "config"
    config_dir.mkdir(parents=True)
    conf = config_dir / "mosquitto.conf"
    conf.write_text(
        f"listener {mqtt}\nlistener {ws}\nprotocol websockets\nallow_anonymous true\n"
        f"persistence true\npersistence_location {tmp_path / 'mosquitto' / 'data'}/\n"
    )
    env = _wheel_env(
        installed,
        image.env,
        WRENMQ_CONFIG=str(conf),
        WRENMQ_DATA_DIR=str(tmp_path / "volume"),
        WRENMQ_API_PORT=str(api),
    )
    served = Served([_executable(installed, image.command[0]), *image.command[1:]], env, tmp_path / "log", api)
    try:
        served.wait_healthy()
        _pub_sub(mqtt)
        served.wait_log(f"ws://:{ws}/mqtt")  # Mosquitto's websockets listener, on every interface
        assert (tmp_path / "volume" / "wrenmq.db").exists()  # the image's volume, not persistence_location
    finally:
        served.close()


# --- systemd ------------------------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A Unix datagram socket like the one systemd passes as NOTIFY_SOCKET (short path: AF_UNIX)."""
    folder = tempfile.mkdtemp(prefix="wrenmq-notify-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    yield sock, path
    sock.close()
    shutil.rmtree(folder)


def test_systemd_unit_starts_notifies_reloads_and_stops(
    installed: Path, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """ExecStart with the unit's Environment (data dir: a temporary directory, as StateDirectory),
    Type=notify's READY=1 once listening, ExecReload's SIGHUP re-reads files, SIGTERM stops."""
    unit = Unit.read(ROOT / "contrib/systemd/wrenmq.service")
    assert unit.service("Type") == "notify"
    words = shlex.split(unit.service("ExecStart"))
    config_at = words.index("--config") + 1
    mqtt, api = free_port(), free_port()
    config = tmp_path / "wrenmq.toml"
    config.write_text(f"port = {mqtt}\nws_port = 'off'\napi_port = {api}\nallow_anonymous = true\n")
    words[0], words[config_at] = _executable(installed, words[0]), str(config)
    environment = unit.environment()
    assert environment["WRENMQ_DATA_DIR"] == "/var/lib/" + unit.service("StateDirectory")
    sock, path = notify_socket
    env = _wheel_env(installed, environment, WRENMQ_DATA_DIR=str(tmp_path / "state"), NOTIFY_SOCKET=path)
    served = Served(words, env, tmp_path / "journal.log", api)
    try:
        assert sock.recv(256) == b"READY=1", served.log()
        _pub_sub(mqtt)
        reload = shlex.split(unit.service("ExecReload").replace("$MAINPID", str(served.proc.pid)))
        subprocess.run(reload, check=True, timeout=10)
        assert sock.recv(256) == b"RELOADING=1"
        assert sock.recv(256) == b"READY=1"
        assert served.proc.poll() is None
        served.wait_log("reloading hooks' files")  # INFO lines are flushed within 0.2 s
        served.proc.send_signal(signal.SIGTERM)  # systemctl stop (KillSignal's default)
        assert sock.recv(256) == b"STOPPING=1"
        assert served.proc.wait(15) == 0, served.log()
    finally:
        served.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_passes_systemd_analyze_verify(installed: Path, tmp_path: Path) -> None:
    unit_text = (ROOT / "contrib/systemd/wrenmq.service").read_text()
    exec_start = shlex.split(Unit.read(ROOT / "contrib/systemd/wrenmq.service").service("ExecStart"))[0]
    copy = tmp_path / "wrenmq.service"  # with the wheel's script where the unit expects the venv's
    copy.write_text(unit_text.replace(exec_start, str(installed / "bin" / "wrenmq")))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result
    # The hardening: overall exposure at most 2.0 of 10 ("OK"; the README says so).
    security = ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(copy)]
    result = subprocess.run(security, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Overall exposure level for wrenmq.service: " in result.stdout, result


def test_wheel_install_is_what_the_commands_above_ran(installed: Path) -> None:
    """The wheel's package, not this checkout's editable one, is first on the commands' path."""
    env = _wheel_env(installed)
    found = subprocess.run(
        [sys.executable, "-c", "import wrenmq; print(wrenmq.__file__)"], env=env, capture_output=True, text=True
    )
    assert found.stdout.strip() == str(installed / "wrenmq" / "__init__.py")
