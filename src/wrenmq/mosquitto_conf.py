"""Mosquitto's ``mosquitto.conf``, read into wrenmq's settings, so a Mosquitto setup starts unchanged.

``read_mosquitto_conf`` turns the file (and its ``include_dir`` files) into the same key/value
mapping a TOML file gives ``load_config``, plus where each key came from (for error messages) and a
warning for each directive wrenmq ignores. A directive whose absence would make the broker *less*
strict than Mosquitto (a plugin, a CRL, a mount point, a bind interface, ...) is an error instead:
starting anyway would quietly widen who may connect or what they may see.

Mosquitto's own defaults are kept where they differ from wrenmq's: with listeners configured,
anonymous access is off unless ``allow_anonymous true``; ``persistence`` is off unless set (memory
storage); bridges speak MQTT 3.1.1 unless ``bridge_protocol_version`` says otherwise; no WebSocket
listener is opened unless a listener has ``protocol websockets``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mosquitto_directives import (
    BRIDGE_IGNORED,
    BRIDGE_KEYS,
    BRIDGE_REFUSED,
    BRIDGE_SETTINGS,
    DURATION,
    GLOBAL_BOOLS,
    GLOBAL_INTS,
    IGNORED,
    KNOWN,
    LEVEL_NAMES,
    LISTENER_KEYS,
    LOG_LEVELS,
    MATCHING,
    NAME_OK,
    REFUSED,
    REFUSED_PREFIXES,
    SECURITY,
)

__all__ = ["Conversion", "MosquittoConfError", "is_mosquitto_conf", "read_mosquitto_conf"]

MAX_PACKET = 268435460  # the largest MQTT packet (the Config field's upper bound)
MAX_QUEUE = 2**31 - 1  # stands for Mosquitto's "0: no limit" on queued messages


class MosquittoConfError(Exception):
    """One or more directives cannot be carried over; each line of the message names file and line."""


@dataclass(slots=True)
class Conversion:
    """The settings a mosquitto.conf amounts to, in the shape of a TOML file's."""

    values: dict[str, Any] = field(default_factory=dict)
    # key, "listeners[i]" or "brokers[i]" -> "mosquitto.conf line N" (the directive that set it)
    origins: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Line:
    path: Path
    number: int
    directive: str
    rest: str  # everything after the directive, stripped (paths and topics may contain spaces)

    @property
    def where(self) -> str:
        return f"{self.path} line {self.number}"

    @property
    def word(self) -> str:
        return self.rest.split()[0] if self.rest else ""


def is_mosquitto_conf(path: Path, data: bytes) -> bool:
    """A ``.conf`` file, or any file (not ``.toml``) that is not TOML and opens with a directive
    Mosquitto knows (``listener 1883`` is not TOML: TOML needs ``=``)."""
    if path.suffix == ".toml":
        return False
    if path.suffix == ".conf":
        return True
    try:
        tomllib.loads(data.decode())
        return False
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        pass
    for raw in data.decode(errors="replace").splitlines():
        words = raw.split()
        if words and not words[0].startswith("#"):
            return words[0] in KNOWN
    return False


def read_mosquitto_conf(path: Path) -> Conversion:
    """The settings ``path`` amounts to; ``MosquittoConfError`` lists every line that cannot be used."""
    reader = _Reader()
    lines = reader.read_lines(path)
    reader.run(lines)
    if reader.errors:
        raise MosquittoConfError("\n".join(reader.errors))
    return reader.out


class _Listener:
    def __init__(self, line: _Line | None, port: int = 1883, host: str | None = None) -> None:
        self.line = line
        self.port = port
        self.host = host
        self.protocol = "mqtt"
        self.socket_domain: str | None = None
        self.settings: dict[str, Any] = {}  # ListenerConfig keys
        self.security: dict[str, Any] = {}  # allow_anonymous, password_file, acl_file (per-listener mode)

    def as_toml(self) -> dict[str, Any]:
        secure = "certfile" in self.settings or "keyfile" in self.settings
        if self.port == 0:  # Mosquitto 2: `listener 0 <path>` is a Unix socket
            return {"type": "unix", "socket": self.host, **self.settings, **self.security}
        kind = {("mqtt", False): "tcp", ("mqtt", True): "tls", ("websockets", False): "ws"}.get(
            (self.protocol, secure), "wss"
        )
        host = self.host
        if host is None:  # every interface, as Mosquitto binds a listener without an address
            host = {"ipv4": "0.0.0.0", "ipv6": "::"}.get(self.socket_domain or "", "")
        found: dict[str, Any] = {"type": kind, "host": host, "port": self.port}
        found.update(self.settings)
        found.update(self.security)
        return found


class _Bridge:
    def __init__(self, line: _Line, name: str) -> None:
        self.line = line
        self.name = name
        self.address: tuple[str, int] | None = None
        # Mosquitto's bridge defaults where wrenmq's differ: MQTT 3.1.1, state notifications on,
        # UNSUBSCRIBE from the out topics' remote filters on connecting.
        self.settings: dict[str, Any] = {"version": 4, "notifications": True, "unsubscribe_out": True}
        self.topics: list[str] = []
        self.tls = False
        self.round_robin = False


class _Reader:
    def __init__(self) -> None:
        self.out = Conversion()
        self.errors: list[str] = []
        self.per_listener = False
        self.default: _Listener | None = None  # made by port, bind_address or a listener setting before any
        self.pre_security: dict[str, Any] = {}  # per-listener mode, before any listener
        self.listeners: list[_Listener] = []
        self.bridges: list[_Bridge] = []
        self.current: _Listener | None = None
        self.bridge: _Bridge | None = None
        self.log_levels: list[int] = []
        self._included: set[Path] = set()

    # -- reading ----------------------------------------------------------------------------------

    def read_lines(self, path: Path) -> list[_Line]:
        try:
            text = path.read_bytes().decode()
        except OSError as exc:
            self.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            return []
        except UnicodeDecodeError as exc:
            self.errors.append(f"{path}: not UTF-8: {exc}")
            return []
        lines: list[_Line] = []
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            words = stripped.split(None, 1)
            line = _Line(path, number, words[0], words[1].strip() if len(words) > 1 else "")
            if line.directive == "include_dir":
                lines.extend(self._include(line))
            else:
                lines.append(line)
        return lines

    def _include(self, line: _Line) -> list[_Line]:
        """Mosquitto reads ``*.conf`` in the directory in sorted order, at the point of the line."""
        directory = Path(line.rest)
        if not line.rest or not directory.is_dir():
            self.errors.append(f"{line.where}: include_dir {line.rest!r} is not a directory")
            return []
        found: list[_Line] = []
        for conf in sorted(directory.glob("*.conf")):
            if conf.resolve() in self._included:
                continue
            self._included.add(conf.resolve())
            found.extend(self.read_lines(conf))
        return found

    def run(self, lines: list[_Line]) -> None:
        for line in lines:  # decides how every security setting is read, wherever it appears
            if line.directive == "per_listener_settings":
                self.per_listener = self._bool(line) is True
        for line in lines:
            self._one(line)
        self._finish()

    # -- values -----------------------------------------------------------------------------------

    def _bool(self, line: _Line) -> bool | None:
        if line.rest in ("true", "false"):
            return line.rest == "true"
        self.errors.append(f"{line.where}: {line.directive} must be true or false, not {line.rest!r}")
        return None

    def _int(self, line: _Line, low: int = 0) -> int | None:
        try:
            value = int(line.word)
        except ValueError:
            value = low - 1
        if value < low:
            self.errors.append(f"{line.where}: {line.directive} needs a whole number of at least {low}")
            return None
        return value

    def _set(self, key: str, value: Any, line: _Line) -> None:
        self.out.values[key] = value
        self.out.origins[key] = f"{line.where} ({line.directive})"

    def _warn(self, line: _Line, why: str) -> None:
        self.out.warnings.append(f"{line.where}: {line.directive}: {why}")

    def _listener(self, line: _Line) -> _Listener:
        """The listener a listener setting on ``line`` belongs to (the default one before any)."""
        if self.current is not None:
            return self.current
        if self.default is None:
            self.default = _Listener(line)
        return self.default

    # -- one directive ----------------------------------------------------------------------------

    def _one(self, line: _Line) -> None:
        name = line.directive
        if name in BRIDGE_KEYS and name != "connection":
            self._bridge_line(line)
        elif name == "connection":
            self._connection(line)
        elif name in REFUSED or name.startswith(REFUSED_PREFIXES):
            why = REFUSED.get(name, "plugin options are not supported (wrenmq's auth hooks are Python)")
            self.errors.append(f"{line.where}: {name}: {why}; wrenmq cannot enforce it, so it will not start")
        elif name in IGNORED:
            self._warn(line, f"{IGNORED[name]}; ignored")
        elif name in MATCHING:
            behaves_as, why = MATCHING[name]
            if line.word != behaves_as:
                self._warn(line, f"{why}; ignored")
        elif name in SECURITY:
            self._security(line)
        elif name in LISTENER_KEYS:
            self._listener_setting(line)
        elif name in GLOBAL_INTS:
            self._global_int(line)
        elif name in GLOBAL_BOOLS:
            value = self._bool(line)
            if value is not None:
                self._set(GLOBAL_BOOLS[name], value, line)
        elif name == "listener":
            self._listener_line(line)
        elif name in ("port", "bind_address"):
            listener = self.default or _Listener(line)
            self.default = listener
            if name == "bind_address":
                listener.host = line.word
            elif (port := self._int(line, 1)) is not None:
                listener.port = port
        elif name == "protocol":
            if line.word not in ("mqtt", "websockets"):
                self.errors.append(f"{line.where}: protocol must be mqtt or websockets, not {line.word!r}")
            self._listener(line).protocol = line.word
        elif name == "socket_domain":
            if line.word not in ("ipv4", "ipv6"):
                self.errors.append(f"{line.where}: socket_domain must be ipv4 or ipv6, not {line.word!r}")
            self._listener(line).socket_domain = line.word
        elif name == "tls_version":
            self._tls_version(line)
        elif name == "per_listener_settings":
            pass  # read before the other lines
        elif name == "persistence":
            value = self._bool(line)
            if value is not None:
                self._set("storage", "sqlite" if value else "memory", line)
        elif name == "persistence_location":
            self._set("data_dir", line.rest, line)
        elif name == "persistent_client_expiration":
            self._expiration(line)
        elif name == "log_type":
            self._log_type(line)
        elif name == "log_dest":
            self._log_dest(line)
        elif name == "log_facility":
            if (facility := self._int(line)) is not None and facility <= 7:
                self._set("syslog_facility", f"local{facility}", line)
            elif facility is not None:
                self.errors.append(f"{line.where}: log_facility must be 0 to 7 (LOG_LOCAL0 to LOG_LOCAL7)")
        else:
            hint = difflib.get_close_matches(name, sorted(KNOWN), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.errors.append(f"{line.where}: unknown directive {name!r}{suggestion}")

    def _security(self, line: _Line) -> None:
        value: Any = self._bool(line) if line.directive == "allow_anonymous" else line.rest
        if value is None:
            return
        if not self.per_listener:
            self._set(line.directive, value, line)
        elif self.current is not None:
            self.current.security[line.directive] = value
        else:
            self.pre_security[line.directive] = (value, line)

    def _listener_setting(self, line: _Line) -> None:
        key = LISTENER_KEYS[line.directive]
        value: Any
        if key in ("require_certificate", "use_identity_as_username"):
            value = self._bool(line)
        elif key == "max_connections":
            try:
                value = max(int(line.word), 0)  # Mosquitto: -1, no limit; wrenmq: 0
            except ValueError:
                self.errors.append(f"{line.where}: max_connections needs a whole number")
                return
        else:
            value = line.rest
        if value is not None:
            self._listener(line).settings[key] = value

    def _global_int(self, line: _Line) -> None:
        name = line.directive
        value = self._int(line)
        if value is None:
            return
        if name == "max_inflight_messages" and value == 0:
            value = 65535  # Mosquitto: 0, no limit
        elif name == "max_queued_messages" and value == 0:
            value = MAX_QUEUE
        elif name in ("max_packet_size", "message_size_limit") and value == 0:
            value = MAX_PACKET
        elif name == "message_size_limit":
            if "max_packet_size" in self.out.values:
                return  # max_packet_size says it more exactly
            value = min(value, MAX_PACKET)
        self._set(GLOBAL_INTS[name], value, line)

    def _listener_line(self, line: _Line) -> None:
        words = line.rest.split()
        port = self._int(line) if words else None
        if port is None:
            if not words:
                self.errors.append(f"{line.where}: listener needs a port")
            self.current = _Listener(line)  # settings that follow belong to it, not the default one
            return
        self.current = _Listener(line, port, words[1] if len(words) > 1 else None)
        if port == 0 and len(words) < 2:
            self.errors.append(f"{line.where}: listener 0 needs the Unix socket's path (listener 0 /path/to/socket)")
            return
        self.listeners.append(self.current)

    def _tls_version(self, line: _Line) -> None:
        version = {"tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3", "tlsv1.1": "TLSv1.2"}.get(line.word)
        if version is None:
            self.errors.append(f"{line.where}: tls_version must be tlsv1.3, tlsv1.2 or tlsv1.1, not {line.word!r}")
            return
        if line.word == "tlsv1.1":
            self._warn(line, "wrenmq accepts TLS 1.2 and later only")
        self._listener(line).settings["tls_version"] = version

    def _expiration(self, line: _Line) -> None:
        match = re.fullmatch(r"(\d+)([hdwmy])", line.word)
        if match is None:
            self.errors.append(f"{line.where}: persistent_client_expiration needs a number and h, d, w, m or y")
            return
        seconds = int(match.group(1)) * DURATION[match.group(2)]
        self._set("max_session_expiry_interval", min(seconds, 4294967295), line)

    def _log_type(self, line: _Line) -> None:
        if line.word in LOG_LEVELS:
            self.log_levels.append(LOG_LEVELS[line.word])
            self.out.origins["log_level"] = f"{line.where} (log_type)"
        elif line.word not in ("subscribe", "unsubscribe", "websockets"):
            self.errors.append(f"{line.where}: unknown log_type {line.word!r}")

    def _log_dest(self, line: _Line) -> None:
        """Each ``log_dest`` line adds a destination; the first replaces the default (stderr)."""
        dests: list[str] = self.out.values.setdefault("log_dest", [])
        self.out.origins["log_dest"] = f"{line.where} (log_dest)"
        kind = line.word
        if kind in ("stderr", "stdout", "syslog"):
            dests.append(kind)
        elif kind == "file":
            path = line.rest[len("file") :].strip()
            if not path:
                self.errors.append(f"{line.where}: log_dest file needs a path")
                return
            dests.append("file")
            self._set("log_file", path, line)
        elif kind == "none":
            dests.clear()
        elif kind in ("topic", "dlt"):
            self._warn(line, f"log_dest {kind} is not supported by wrenmq; ignored")
        else:
            self.errors.append(f"{line.where}: log_dest must be stdout, stderr, file <path>, syslog, topic or none")

    # -- bridges ----------------------------------------------------------------------------------

    def _connection(self, line: _Line) -> None:
        name = line.word
        if not name:
            self.errors.append(f"{line.where}: connection needs a name")
            return
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", name)
        if not NAME_OK.match(safe) or safe == "internal":
            safe = "bridge-" + safe
        if safe != name:
            self._warn(line, f"the connection is named {safe!r} in wrenmq (letters, digits, '_', '.', '-')")
        self.bridge = _Bridge(line, safe)
        self.bridges.append(self.bridge)

    def _bridge_line(self, line: _Line) -> None:
        bridge, name = self.bridge, line.directive
        if bridge is None:
            self.errors.append(f"{line.where}: {name} belongs in a bridge (after a connection line)")
            return
        if name in BRIDGE_REFUSED:
            self.errors.append(f"{line.where}: {name}: {BRIDGE_REFUSED[name]}; the bridge cannot be carried over")
        elif name in BRIDGE_IGNORED:
            self._warn(line, f"{BRIDGE_IGNORED[name]}; ignored")
        elif name == "bridge_require_ocsp":
            if self._bool(line):
                self.errors.append(
                    f"{line.where}: bridge_require_ocsp: OCSP is not supported, so wrenmq cannot check the"
                    " remote's certificate as asked; the bridge cannot be carried over"
                )
        elif name == "start_type":
            self._start_type(bridge, line)
        elif name == "bridge_tls_version":
            tls = {"tlsv1.3": "TLSv1.3", "tlsv1.2": "TLSv1.2", "tlsv1.1": "TLSv1.2"}.get(line.word)
            if tls is None:
                self.errors.append(f"{line.where}: bridge_tls_version must be tlsv1.3, tlsv1.2 or tlsv1.1")
                return
            if line.word == "tlsv1.1":
                self._warn(line, "wrenmq connects with TLS 1.2 or later only")
            bridge.settings["tls_version"] = tls
        elif name == "round_robin":
            if (flag := self._bool(line)) is not None:
                bridge.round_robin = flag
        elif name in ("address", "addresses"):
            self._address(bridge, line)
        elif name == "topic":
            from .bridge_lines import parse_bridge  # Mosquitto's own syntax: wrenmq's bridge lines copy it

            try:
                parse_bridge("topic " + line.rest)
            except ValueError as exc:
                self.errors.append(f"{line.where}: {exc}")
                return
            bridge.topics.append("topic " + line.rest)
        elif name in ("remote_username", "username"):
            bridge.settings["username"] = line.rest
        elif name in ("remote_password", "password"):
            bridge.settings["password"] = line.rest
        elif name in ("remote_clientid", "clientid"):
            bridge.settings["client_id"] = line.rest
        elif name == "bridge_cafile":
            bridge.settings["cafile"] = line.rest
            bridge.tls = True
        elif name in BRIDGE_SETTINGS:
            key, kind = BRIDGE_SETTINGS[name]
            value: Any = line.rest
            if kind == "bool":
                value = self._bool(line)
            elif kind == "int":
                value = self._int(line)
            if value is None:
                return
            bridge.settings[key] = value  # (TLS, as in Mosquitto, comes from bridge_cafile alone)
        elif name == "restart_timeout":
            words = line.rest.split()
            try:
                seconds = [float(int(word)) for word in words]
            except ValueError:
                seconds = []
            if len(seconds) not in (1, 2) or min(seconds) <= 0:
                self.errors.append(f"{line.where}: restart_timeout needs one or two whole numbers of seconds")
                return
            # `restart_timeout 20`: 20 (with jitter); `restart_timeout 10 60`: a backoff from 10 up to 60.
            bridge.settings["reconnect_min"], bridge.settings["reconnect_max"] = seconds[0], seconds[-1]
        elif name == "bridge_protocol_version":
            version = {"mqttv311": 4, "mqttv31": 4, "mqttv50": 5}.get(line.word)
            if version is None:
                self.errors.append(f"{line.where}: bridge_protocol_version must be mqttv50, mqttv311 or mqttv31")
                return
            if line.word == "mqttv31":
                self._warn(line, "wrenmq's bridges speak MQTT 3.1.1 or 5; using 3.1.1")
            bridge.settings["version"] = version

    def _start_type(self, bridge: _Bridge, line: _Line) -> None:
        if line.word == "once":
            bridge.settings["reconnect"] = False  # started with the broker, not restarted
        elif line.word == "lazy":
            self._warn(line, "wrenmq starts the bridge at once and restarts it when it fails (automatic)")
        elif line.word != "automatic":
            self.errors.append(f"{line.where}: start_type must be automatic, lazy or once, not {line.word!r}")

    def _address(self, bridge: _Bridge, line: _Line) -> None:
        addresses = line.rest.split()
        if not addresses:
            self.errors.append(f"{line.where}: {line.directive} needs host[:port]")
            return
        from .config.listeners import split_address

        try:
            found = [split_address(address, 1883) for address in addresses]
        except ValueError as exc:
            self.errors.append(f"{line.where}: {exc}")
            return
        bridge.address = found[0]
        if len(found) > 1:  # the others, tried in turn (Mosquitto's round_robin decides the order)
            bridge.settings["addresses"] = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in found[1:]]

    # -- the result -------------------------------------------------------------------------------

    def _finish(self) -> None:
        out = self.out
        listeners = self.listeners if self.default is None else [self.default, *self.listeners]
        if self.per_listener:
            self._finish_per_listener(listeners)
        elif listeners and "allow_anonymous" not in out.values:
            out.values["allow_anonymous"] = False  # Mosquitto 2: off once listeners are configured
        for found in listeners:
            tls = set(found.settings) - {"max_connections"}
            if found.port == 0 and found.line is not None and (found.protocol != "mqtt" or tls):
                self.errors.append(f"{found.line.where}: a Unix socket listener takes no TLS or WebSockets in wrenmq")
        if listeners:
            out.values["port"] = "off"  # every listener below, as Mosquitto has them
            out.values["listeners"] = [found.as_toml() for found in listeners]
            for index, found in enumerate(listeners):
                if found.line is not None:
                    out.origins[f"listeners[{index}]"] = f"{found.line.where} ({found.line.directive})"
            out.origins["listeners"] = out.origins.get("listeners[0]", "mosquitto.conf listeners")
        out.values["ws_port"] = "off"  # only the listeners the file has
        out.values.setdefault("storage", "memory")  # Mosquitto keeps nothing unless `persistence true`
        if self.log_levels:
            out.values["log_level"] = LEVEL_NAMES[min(self.log_levels)]
        brokers = [self._broker(bridge) for bridge in self.bridges]
        if brokers:
            out.values["brokers"] = [found for found in brokers if found is not None]
            for index, bridge in enumerate(self.bridges):
                out.origins[f"brokers[{index}]"] = f"{bridge.line.where} (connection {bridge.line.word})"
            out.origins["brokers"] = out.origins["brokers[0]"]

    def _finish_per_listener(self, listeners: list[_Listener]) -> None:
        """Each listener has its own security settings; those before any listener go to the
        default listener, or else are inherited by listeners that set none."""
        pre = self.pre_security
        if self.default is not None:
            self.default.security.update({key: value for key, (value, _) in pre.items()})
            pre = {}
        for key, (value, line) in pre.items():
            if key != "allow_anonymous":
                self._set(key, value, line)
        for found in listeners:
            if "allow_anonymous" not in found.security:
                inherited = pre.get("allow_anonymous")
                found.security["allow_anonymous"] = inherited[0] if inherited else False

    def _broker(self, bridge: _Bridge) -> dict[str, Any] | None:
        if bridge.address is None:
            self.errors.append(f"{bridge.line.where}: connection {bridge.line.word} has no address")
            return None
        if not bridge.topics:
            self.errors.append(f"{bridge.line.where}: connection {bridge.line.word} has no topic lines")
            return None
        host, port = bridge.address
        scheme = "mqtts" if bridge.tls else "mqtt"
        if ":" in host:
            host = f"[{host}]"
        found: dict[str, Any] = {"name": bridge.name, "url": f"{scheme}://{host}:{port}"}
        found.update(bridge.settings)
        if bridge.round_robin:
            found["round_robin"] = True
        if not bridge.tls:  # as Mosquitto: TLS settings without bridge_cafile do nothing
            for key in ("tls_version", "alpn"):
                if found.pop(key, None) is not None:
                    self.out.warnings.append(
                        f"{bridge.line.where}: connection {bridge.line.word}: {key} without bridge_cafile"
                        " (no TLS); ignored"
                    )
        found["bridges"] = bridge.topics
        return found
