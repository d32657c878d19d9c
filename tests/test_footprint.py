"""The idle footprint (issue 19; BENCHMARKS.md "Idle footprint"): what `wrenmq serve` loads and
allocates before any client comes. Structural, not timed: the modules a real ``serve`` subprocess
has imported once it answers (the HTTP stack only with the API, python-socketio only with the first
Socket.IO request), and the bytes the protocol's modules allocate when imported.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from serveproc import START_TIMEOUT, clean_env, free_port, serve_command

# Run `wrenmq serve` in this interpreter; a thread waits until it answers, asks the API for what
# is given in argv[1] (JSON: paths), writes sys.modules to argv[2] and stops the broker.
_PROBE = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time

    paths, out, mqtt_port, api_port, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
    before = set(sys.modules)

    def get(path):  # with the API only: then urllib.request is the probe's, not the broker's
        import urllib.error, urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}{path}", timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    def probe():
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", mqtt_port), timeout=1).close()
                if api_port != "off":
                    get("/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    os._exit(3)
                time.sleep(0.05)
        steps = []
        for path in json.loads(paths):
            status, body = get(path)
            loaded = sorted(m for m in sys.modules if m not in before)
            steps.append({"path": path, "status": status, "body": body[:200].decode("latin-1"), "modules": loaded})
        loaded = sorted(m for m in sys.modules if m not in before)
        with open(out, "w") as file:
            json.dump({"modules": loaded, "steps": steps}, file)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=probe, daemon=True).start()
    from wrenmq.cli import main
    sys.exit(main(argv))
    """
)

# Only the HTTP API, the console and realtime need these; a broker without the API never loads them.
_HTTP_STACK = ("fastapi", "starlette", "uvicorn", "prometheus_client", "http.client", "urllib.request")
# python-socketio's package imports all of these (its clients and queue managers) with itself.
_SOCKETIO = ("socketio", "engineio", "aiohttp", "requests", "redis")
# Only a ws or wss listener needs these (0.9 MiB).
_WEBSOCKET = ("wsproto", "h11", "wrenmq.transports.websocket")


def _serve_modules(tmp_path: Path, paths: list[str], api: bool) -> dict[str, object]:
    port = free_port()
    api_port = str(free_port()) if api else "off"
    argv = serve_command(port, tmp_path)[3:]  # after `python -m wrenmq`
    argv[argv.index("--api-port") + 1] = api_port
    out = tmp_path / "modules.json"
    command = [sys.executable, "-c", _PROBE, json.dumps(paths), str(out), str(port), api_port, *argv]
    result = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=START_TIMEOUT + 30)
    assert out.exists(), f"the probe did not finish (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(out.read_text())


def _loaded(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == root or m.startswith(root + ".") for root in roots)]


def test_footprint_serve_without_api_loads_no_http_or_realtime_stack_or_sqlite(tmp_path: Path) -> None:
    found = _serve_modules(tmp_path, [], api=False)
    modules = found["modules"]
    assert isinstance(modules, list) and "wrenmq.broker.broker" in modules
    assert _loaded(modules, _HTTP_STACK + _SOCKETIO) == []
    assert _loaded(modules, _WEBSOCKET) == []  # no ws/wss listener: no WebSocket stack
    assert _loaded(modules, ("logging.handlers", "wrenmq.log_sinks")) == []  # logs to stderr: no file/syslog
    assert _loaded(modules, ("sqlite3", "wrenmq.storage.sqlite")) == []  # memory storage: no SQLite
    # serve builds its own flags only: no other command's parser (the API's keys and client, bench, ...)
    others = ("wrenmq.api", "wrenmq.bench", "wrenmq.auth.passwd_cli", "wrenmq.config_cli", "wrenmq.client")
    assert _loaded(modules, (*others, "wrenmq.simulate", "getpass")) == []


def test_footprint_idle_serve_runs_one_thread(tmp_path: Path) -> None:
    """An idle broker on a numeric address runs on its main thread alone: its listener is bound
    without ``getaddrinfo`` in the loop's thread pool, which would leave four libuv worker threads
    (and their stacks and malloc arenas) in every broker."""
    port = free_port()
    proc = subprocess.Popen(serve_command(port, tmp_path), env=clean_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the broker did not listen"
                time.sleep(0.05)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        threads = int(status.split("Threads:")[1].split()[0])
        assert threads == 1, status
    finally:
        proc.terminate()
        proc.wait(10)


def test_footprint_api_loads_socketio_with_the_first_socketio_request(tmp_path: Path) -> None:
    """The API, console and metrics answer without python-socketio; the first Engine.IO handshake
    loads it and is answered as before (an ``open`` packet with a session id)."""
    paths = ["/", "/metrics", "/socket.io/?EIO=4&transport=polling"]
    found = _serve_modules(tmp_path, paths, api=True)
    console, metrics, handshake = found["steps"]  # type: ignore[misc]
    assert console["status"] in (200, 401) and metrics["status"] in (200, 401)
    assert _loaded(metrics["modules"], ("fastapi", "uvicorn"))
    assert _loaded(metrics["modules"], _SOCKETIO) == []
    assert handshake["status"] == 200
    assert handshake["body"].startswith("0{") and '"sid"' in handshake["body"]  # Engine.IO open packet
    assert _loaded(handshake["modules"], ("socketio", "engineio")) != []


def test_footprint_protocol_modules_allocate_little_when_imported() -> None:
    """The codec's two-byte packet identifiers are made on first use: importing the protocol
    allocates a table of shared empty stand-ins (0.5 MB), not 65,536 bytes objects (2.8 MB).
    Measured: 3.1 MB before, 0.8 MB after (pure Python, its code objects included)."""
    code = textwrap.dedent(
        """
        import dataclasses, enum, tracemalloc, typing
        tracemalloc.start()
        import wrenmq.mqtt.codec as codec  # the whole protocol package (its __init__ imports every module)
        print(tracemalloc.get_traced_memory()[0], flush=True)
        assert codec.packet_id_bytes(1) == b"\\x00\\x01" and codec.packet_id_bytes(65535) == b"\\xff\\xff"
        assert codec.packet_id_bytes(258) is codec.packet_id_bytes(258) == b"\\x01\\x02"  # kept once made
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert int(result.stdout.split()[0]) < 1_500_000
    assert result.returncode == 0, result.stderr
