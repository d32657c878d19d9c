"""Reading the deployment files as their tools would (Dockerfile, compose.yaml, a systemd unit), so
tests can run the very commands they hold, and building and installing the wheel those commands run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "Dockerfile", "Served", "Unit", "build_wheel", "install_wheel"]


@dataclass
class Dockerfile:
    """The final stage of a Dockerfile: its ENV, ENTRYPOINT, CMD and HEALTHCHECK command."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    instructions: list[tuple[str, str]] = field(default_factory=list)  # every stage's, in order

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        found = cls()
        for instruction, rest in _instructions(path.read_text()):
            found.instructions.append((instruction, rest))
            if instruction == "FROM":  # a new stage: only the last one's settings make the image
                found.env, found.entrypoint, found.cmd, found.healthcheck = {}, [], [], []
            elif instruction == "ENV":
                for word in shlex.split(rest):
                    key, _, value = word.partition("=")
                    found.env[key] = value
            elif instruction == "ENTRYPOINT":
                found.entrypoint = _exec_form(rest)
            elif instruction == "CMD":
                found.cmd = _exec_form(rest)
            elif instruction == "HEALTHCHECK":
                words = rest.split(" CMD ", 1)
                assert len(words) == 2, f"HEALTHCHECK without CMD: {rest}"
                found.healthcheck = _exec_form(words[1])
        return found

    @property
    def command(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]

    def stage_args(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    found: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instruction, _, rest = current.partition(" ")
        found.append((instruction.upper(), " ".join(rest.split())))
        current = ""
    return found


def _exec_form(text: str) -> list[str]:
    words = json.loads(text)
    assert isinstance(words, list) and all(isinstance(word, str) for word in words), f"not exec form: {text}"
    return words


@dataclass
class Unit:
    """A systemd unit file: each section's keys, each with every value given (in order)."""

    sections: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> Unit:
        sections: dict[str, dict[str, list[str]]] = {}
        current: dict[str, list[str]] = {}
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
        return cls(sections)

    def service(self, key: str) -> str:
        values = self.sections["Service"][key]
        assert len(values) == 1, f"{key} given {len(values)} times"
        return values[0]

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.sections["Service"].get("Environment", []):
            for word in shlex.split(value):
                key, _, setting = word.partition("=")
                env[key] = setting
        return env


def build_wheel(out: Path) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist from this checkout, then the wheel from that sdist alone, as
    ``python -m build`` does. Pure Python (WRENMQ_PURE_PYTHON=1), so it takes seconds, not the
    minutes mypyc needs; what is checked here, the files, is the same for the compiled wheel."""
    env = {**os.environ, "WRENMQ_PURE_PYTHON": "1"}
    flags = ["--no-isolation", "--skip-dependency-check"]  # the test environment already holds them
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", *flags, "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        env=env,
    )
    (sdist,) = out.glob("*.tar.gz")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *flags, "--outdir", str(out), str(_unpack(sdist, out / "src"))],
        check=True,
        capture_output=True,
        env=env,
    )
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def _unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    (top,) = into.iterdir()
    return top


def install_wheel(wheel: Path, target: Path) -> Path:
    """Install ``wheel`` (no dependencies: they are this interpreter's) into ``target``; returns
    the directory to put first on PYTHONPATH. Its ``bin/wrenmq`` runs this interpreter."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


class Served:
    """A ``wrenmq serve`` started from a deployment file's command line, with its output in a file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, api_port: int) -> None:
        self.log_path = log_path
        self.api = f"http://127.0.0.1:{api_port}"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log()}"
            try:
                if httpx.get(self.api + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"/healthz did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s:\n{self.log()}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
