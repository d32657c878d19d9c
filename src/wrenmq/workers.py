"""``wrenmq serve --workers N``: a supervisor and N worker processes sharing the listeners.

One Python process uses one core; N processes on N cores serve about N times the connections and
messages. Each worker is an ordinary ``wrenmq serve`` (the same command line and config file) with
three settings of its own:

- ``reuse_port``: every MQTT listener and the API is bound with SO_REUSEPORT, so the kernel spreads
  new connections over the workers (by a hash of each connection's addresses and ports);
- ``node_name`` ``<name>-w<i>``: each worker is a member of the cluster at ``cluster_url``, which
  carries messages, retained messages, shared groups and client ids between them exactly as
  between machines (hence ``--workers`` needs ``cluster_url``);
- ``data_dir`` ``<data_dir>/w<i>``: what a node keeps on disk is its own (its persistent sessions
  are in Redis, as every cluster node's). The API keys file stays ``<data_dir>/api_keys.json``,
  re-read when it changes, so one ``wrenmq apikey`` serves every worker.

The supervisor binds nothing and routes nothing. It starts the workers, tells the service manager
``READY=1`` once every worker has (each worker's ``NOTIFY_SOCKET`` is one of the supervisor's),
forwards SIGHUP (reload) and SIGTERM/SIGINT (stop: it waits for the workers, then exits), and
restarts a worker that dies, pausing longer while it keeps dying. A worker that fails its first
start (a bad setting, a taken port, Redis unreachable) stops them all: that is a deployment error
to report, not a crash to retry. Workers get SIGTERM if the supervisor itself is killed.

Plain Python and synchronous: it runs no event loop and nothing per message.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import Config, ConfigError
from .service_manager import notify

__all__ = ["Supervisor", "check_workers", "worker_argv"]

log = logging.getLogger("wrenmq.workers")

STOP_TIMEOUT = 30.0  # seconds workers get to stop (commit, leave the cluster) before SIGKILL
FIRST_PAUSE = 0.5  # before restarting a worker that died; doubled while it keeps dying
MAX_PAUSE = 30.0
STABLE = 30.0  # a worker up this long has not been "dying again": its next pause is FIRST_PAUSE

EXIT_OK, EXIT_FAILURE = 0, 1


def check_workers(config: Config, count: int) -> None:
    """``ConfigError`` when ``config`` cannot run as ``count`` workers, naming what to change."""
    if count < 1:
        raise ConfigError(f"--workers: {count}: expected 1 or more worker processes")
    if config.cluster.url is None:
        raise ConfigError(
            "--workers needs cluster_url: each worker is a node of a cluster on Redis "
            "(set cluster_url in the config file, --cluster-url or WRENMQ_CLUSTER_URL)"
        )
    for listener in config.effective_listeners():
        if listener.type == "unix":
            raise ConfigError(
                f"--workers: listener {listener.label}: a Unix socket cannot be shared by worker processes "
                "(SO_REUSEPORT is for TCP); serve it from a separate wrenmq"
            )
        if listener.port == 0:
            raise ConfigError(
                f"--workers: listener {listener.label}: port 0 would give each worker a port of its own; choose a port"
            )
    if config.api.port == 0:
        raise ConfigError("--workers: api_port 0 would give each worker a port of its own; choose a port")


def worker_argv(argv: list[str]) -> list[str]:
    """``argv`` (the ``wrenmq`` command's arguments) without ``--workers N``: a worker's own."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag, eq, _ = arg.partition("=")
        if len(flag) >= 4 and "--workers".startswith(flag):  # argparse accepts a unique prefix
            skip = not eq
            continue
        out.append(arg)
    return out


def base_node_name(config: Config) -> str:
    from .cluster import default_node_name

    return config.cluster.node_name or default_node_name(config.port)


class Worker:
    """One worker process, its notify socket and its restart bookkeeping."""

    def __init__(self, index: int, name: str, command: list[str], env: dict[str, str], notify_path: Path) -> None:
        self.index = index
        self.name = name
        self.command = command
        self.env = env
        self.notify_path = notify_path
        self.notify_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.notify_socket.bind(str(notify_path))
        self.notify_socket.setblocking(False)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.was_ready = False  # ever, in any run: after that a death is a crash, not a failed start
        self.started = 0.0
        self.pause = FIRST_PAUSE
        self.restart_at: float | None = None

    def start(self) -> None:
        self.ready = False
        self.restart_at = None
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, env=self.env, process_group=0, preexec_fn=functools.partial(_die_with_parent, os.getpid())
        )
        log.info("worker %s started (pid %d)", self.name, self.proc.pid)

    def read_notifications(self) -> None:
        while True:
            try:
                data = self.notify_socket.recv(4096)
            except BlockingIOError:
                return
            for line in data.decode(errors="replace").splitlines():
                if line == "READY=1":
                    self.ready = self.was_ready = True
                elif line in ("RELOADING=1", "STOPPING=1"):
                    self.ready = False

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


class Supervisor:
    """Runs ``count`` workers of ``config`` until SIGTERM or SIGINT; ``run`` returns the exit code."""

    def __init__(self, config: Config, argv: list[str], count: int) -> None:
        check_workers(config, count)
        self.config = config
        self.count = count
        self.argv = worker_argv(argv)
        self.workers: list[Worker] = []
        self._signals: list[int] = []
        self._announced = False  # READY=1 sent to the service manager
        self._tmp = Path(tempfile.mkdtemp(prefix="wrenmq-workers-"))

    def _make_workers(self) -> None:
        from .storage.private import make_private_dir

        config = self.config
        make_private_dir(config.data_dir)  # the workers' directories go inside, private as it is
        base = base_node_name(config)
        for index in range(1, self.count + 1):
            name = f"{base}-w{index}"
            command = [
                sys.executable, "-m", "wrenmq", *self.argv,
                "--node-name", name, "--data-dir", str(config.data_dir / f"w{index}"),
            ]  # fmt: skip
            env = dict(os.environ)
            env.update(
                {
                    "WRENMQ_REUSE_PORT": "true",
                    "WRENMQ_API_KEYS_FILE": str(config.api_keys_path),
                    "NOTIFY_SOCKET": str(self._tmp / f"w{index}.sock"),
                }
            )
            self.workers.append(Worker(index, name, command, env, self._tmp / f"w{index}.sock"))

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = signal.set_wakeup_fd(wake_w.fileno())
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        old_handlers = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            self._make_workers()
            log.info("starting %d workers of cluster node %s", self.count, base_node_name(self.config))
            self.workers[0].start()  # the others one after another (_start_next): see there
            return self._loop(wake_r)
        finally:
            for worker in self.workers:  # (only after a failure: _loop stops them itself)
                if worker.proc is not None and worker.proc.poll() is None:
                    worker.proc.kill()
                    worker.proc.wait()
                worker.notify_socket.close()
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous)
            wake_r.close()
            wake_w.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _loop(self, wake: socket.socket) -> int:
        sockets = {worker.notify_socket: worker for worker in self.workers}
        while True:
            signals, self._signals = self._signals, []
            for signum in signals:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    return self._stop()
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: the workers reload their password and ACL files")
                    for worker in self.workers:
                        worker.signal(signal.SIGHUP)
            failed = self._reap()
            if failed is not None:
                self._stop()
                return failed
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    worker.start()
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else 5.0
            readable, _, _ = select.select([wake, *sockets], [], [], timeout)
            for sock in readable:
                if sock is wake:
                    with contextlib.suppress(BlockingIOError):
                        wake.recv(4096)
                else:
                    sockets[sock].read_notifications()
            self._start_next()
            if not self._announced and all(worker.ready for worker in self.workers):
                self._announced = True
                log.info("%d workers ready", self.count)
                notify("READY=1")

    def _start_next(self) -> None:
        """Start the first worker never started once every one before it is ready. One at a time:
        a start is a second or more of CPU (imports, the API), and workers starting together on a
        busy machine starve each other's cluster heartbeats."""
        for worker in self.workers:
            if worker.proc is None and not worker.was_ready and worker.restart_at is None:
                worker.start()
                return
            if not worker.ready:
                return

    def _reap(self) -> int | None:
        """Schedule the restart of each worker that exited; the exit code to stop with when one
        failed its first start."""
        for worker in self.workers:
            proc = worker.proc
            if proc is None or proc.poll() is None:
                continue
            worker.proc = None
            code = proc.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if not worker.was_ready:
                log.error("worker %s %s before it was ready: stopping every worker", worker.name, how)
                return code if code > 0 else EXIT_FAILURE
            now = time.monotonic()
            if now - worker.started > STABLE:
                worker.pause = FIRST_PAUSE
            worker.restart_at = now + worker.pause
            log.warning("worker %s %s: restarting it in %.1f s", worker.name, how, worker.pause)
            worker.pause = min(worker.pause * 2, MAX_PAUSE)  # the next time, should it die again soon
        return None

    def _stop(self) -> int:
        """SIGTERM every worker, wait for them (SIGKILL after ``STOP_TIMEOUT``); 0 if all stopped cleanly."""
        notify("STOPPING=1")
        log.info("stopping %d workers", self.count)
        for worker in self.workers:
            worker.restart_at = None
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        code = EXIT_OK
        for worker in self.workers:
            proc = worker.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %s did not stop within %.0f s: killed", worker.name, STOP_TIMEOUT)
                proc.kill()
                proc.wait()
            if proc.returncode != 0:
                code = EXIT_FAILURE
            worker.proc = None
        return code


def _die_with_parent(supervisor: int) -> None:
    """In the worker, before it runs: SIGTERM when the supervisor dies (Linux's PR_SET_PDEATHSIG),
    so a killed supervisor leaves no workers behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # it died before prctl: nobody would stop this worker
        os._exit(EXIT_FAILURE)
