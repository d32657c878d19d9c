"""``wrenmq ctl``: what ``mosquitto_ctrl`` and ``emqx ctl`` users do from a shell, over the HTTP API.

Every action is one or a few API requests, so ``ctl`` works against a broker on another machine
and is held to the same keys and ACLs as any API caller. The API's address comes from ``--url``,
or from the same settings ``wrenmq serve`` reads (``--config``, ``WRENMQ_CONFIG``, ``WRENMQ_*``:
``api_host``, ``api_port``, ``api_certfile``); the key from ``--key`` or ``WRENMQ_KEY``.
Only the standard library is used: ``ctl`` must work where only the broker is installed.

Exit status: 0 done, 1 the API refused or is unreachable, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CtlError", "add_parser", "api_url"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PAGE = 1000  # the API's largest page
TIMEOUT = 10.0


class CtlError(Exception):
    """The API refused a request or could not be reached; the message says which and why."""


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "ctl",
        help="inspect and manage a running broker over its HTTP API",
        description="Inspect and manage a running broker over its HTTP API. The address comes from --url "
        "or the broker's own settings (--config, WRENMQ_CONFIG, WRENMQ_API_HOST, WRENMQ_API_PORT); the API "
        "key from --key or WRENMQ_KEY (health needs none).",
    )
    _add_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)  # the same options after the action, too
    _add_options(common, argparse.SUPPRESS)
    areas = parser.add_subparsers(title="commands", metavar="COMMAND", dest="area", required=True)

    areas.add_parser("health", parents=[common], help="exit 0 if the broker answers /healthz (no key needed)")
    areas.add_parser(
        "ready", parents=[common], help="exit 0 if every listener is bound and the store writable (/readyz)"
    )
    areas.add_parser("status", parents=[common], help="version, uptime, listeners and counters")

    clients = areas.add_parser("clients", help="connected clients and their sessions").add_subparsers(
        metavar="ACTION", dest="action", required=True
    )
    listing = clients.add_parser("list", parents=[common], help="list clients (connected ones, or --all)")
    listing.add_argument("--prefix", help="only client ids starting with this")
    listing.add_argument("--username", help="only clients logged in as this user")
    listing.add_argument("--all", action="store_true", help="offline sessions too")
    clients.add_parser("show", parents=[common], help="one client, with its subscriptions").add_argument(
        "client_id", metavar="CLIENT_ID"
    )
    kick = clients.add_parser(
        "kick", parents=[common], help="disconnect a client (MQTT 5: DISCONNECT 0x98); its will is published"
    )
    kick.add_argument("client_id", metavar="CLIENT_ID")
    kick.add_argument("--discard-session", action="store_true", help="also end its session")

    sessions = areas.add_parser("sessions", help="sessions, connected or not").add_subparsers(
        metavar="ACTION", dest="action", required=True
    )
    listing = sessions.add_parser("list", parents=[common], help="list sessions")
    listing.add_argument("--prefix", help="only client ids starting with this")
    listing.add_argument("--offline", action="store_true", help="only sessions without a connection")
    discard = sessions.add_parser("discard", parents=[common], help="end a session (and its connection, if any)")
    discard.add_argument("client_id", metavar="CLIENT_ID")

    subscriptions = areas.add_parser("subscriptions", help="subscriptions").add_subparsers(
        metavar="ACTION", dest="action", required=True
    )
    listing = subscriptions.add_parser("list", parents=[common], help="list subscriptions")
    listing.add_argument("--client-id", help="only this client's")
    listing.add_argument("--prefix", help="only topic filters starting with this")

    retained = areas.add_parser("retained", help="retained messages").add_subparsers(
        metavar="ACTION", dest="action", required=True
    )
    listing = retained.add_parser("list", parents=[common], help="list retained messages matching a topic filter")
    listing.add_argument("filter", nargs="?", default="#", metavar="FILTER", help="topic filter (default: #)")
    show = retained.add_parser("show", parents=[common], help="print one retained message's payload")
    show.add_argument("topic", metavar="TOPIC")
    clear = retained.add_parser(
        "clear", parents=[common], help="clear retained messages: TOPIC..., or every one under --filter"
    )
    clear.add_argument("topics", nargs="*", metavar="TOPIC")
    clear.add_argument("--filter", dest="clear_filter", metavar="FILTER", help="every retained message it matches")
    parser.set_defaults(run=run)


def _add_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """The connection and output options; ``default`` SUPPRESS on an action's parser, so that
    ``wrenmq ctl --json clients list`` and ``wrenmq ctl clients list --json`` mean the same."""
    flag = {"action": "store_true"} if default is None else {"action": "store_true", "default": default}
    parser.add_argument("--url", metavar="URL", default=default, help="the API's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", metavar="KEY", default=default, help="API key (default: $WRENMQ_KEY)")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", default=default, help="the broker's config file (for the API address)"
    )
    parser.add_argument("--json", help="print the API's JSON instead of a table", **flag)
    parser.add_argument("--insecure", help="do not verify the API's TLS certificate", **flag)


def run(args: argparse.Namespace) -> int:
    try:
        api = Api(args.url or api_url(args.config), args.key or os.environ.get("WRENMQ_KEY"), args.insecure)
    except ValueError as exc:
        print(f"wrenmq ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    action = f"{args.area} {getattr(args, 'action', '')}".strip()
    try:
        return _ACTIONS[action](api, args)
    except CtlError as exc:
        print(f"wrenmq ctl: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def api_url(config_file: Path | None) -> str:
    """The API's base URL from the broker's settings, as ``wrenmq serve`` would read them."""
    from wrenmq.config import ConfigError, load_config

    if config_file is None and os.environ.get("WRENMQ_CONFIG"):
        config_file = Path(os.environ["WRENMQ_CONFIG"])
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        raise ValueError(f"configuration error (or pass --url): {exc}") from None
    if config.api.port is None:
        raise ValueError("the API is off in this configuration (api_port); pass --url")
    host = config.api.host
    if host in ("", "0.0.0.0", "::"):  # every interface: this machine answers on loopback
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.api.certfile is not None else "http"
    return f"{scheme}://{host}:{config.api.port}"


class Api:
    """Requests to one broker's API, with its key; errors become ``CtlError`` with the API's detail."""

    def __init__(self, url: str, key: str | None, insecure: bool = False) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--url {url!r}: expected http(s)://host:port")
        self.base = url.rstrip("/")
        self.key = key
        self.context = ssl._create_unverified_context() if insecure else None

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, auth: bool = True) -> Any:
        params = {name: value for name, value in (query or {}).items() if value is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = {"accept": "application/json"}
        if auth:
            if not self.key:
                raise CtlError("an API key is needed: --key or WRENMQ_KEY (wrenmq apikey create NAME)")
            headers["authorization"] = f"Bearer {self.key}"
        # Imported here: urllib.request and http.client would sit in every `wrenmq serve` (0.7 MB).
        from urllib.error import HTTPError, URLError
        from urllib.request import Request, urlopen

        request = Request(url, method=method, headers=headers)
        try:
            with urlopen(request, timeout=TIMEOUT, context=self.context) as response:
                body = response.read()
        except HTTPError as exc:
            raise CtlError(f"{method} {path}: {exc.code} {_detail(exc.read()) or exc.reason}") from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CtlError(f"cannot reach the API at {self.base}: {reason}") from None
        return json.loads(body) if body else None

    def items(self, path: str, query: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing, page by page."""
        offset = 0
        while True:
            page = self.request("GET", path, {**(query or {}), "limit": PAGE, "offset": offset})
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return


def _detail(body: bytes) -> str:
    try:
        problem = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    return str(problem.get("detail") or problem.get("title") or "") if isinstance(problem, dict) else ""


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="/")


# --- actions ---------------------------------------------------------------------------------------


def _health(api: Api, args: argparse.Namespace) -> int:
    print(api.request("GET", "/healthz", auth=False)["status"])
    return EXIT_OK


def _ready(api: Api, args: argparse.Namespace) -> int:
    try:
        found = api.request("GET", "/readyz", auth=False)
    except CtlError as exc:  # 503 carries the problems
        print(f"wrenmq ctl: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(found["status"])
    return EXIT_OK


def _status(api: Api, args: argparse.Namespace) -> int:
    status = api.request("GET", "/api/v1/broker/status")
    if args.json:
        return _print_json(status)
    state = "running" if status["running"] else "stopped"
    print(f"wrenmq {status['version']} {state}, up {status['uptime']:.0f} s, hot path: {status['hot_path']}")
    for listener in status["listeners"]:
        print(f"listener {listener['name']}: {listener['url']}, {listener['connections']} connections")
    for name, value in status["counts"].items():
        print(f"{name}: {value}")
    return EXIT_OK


_CLIENT_COLUMNS = ("client_id", "connected", "username", "address", "protocol", "subscription_count", "queued")


def _clients_list(api: Api, args: argparse.Namespace) -> int:
    query = {"prefix": args.prefix, "username": args.username, "connected": None if args.all else "true"}
    return _table(args, api.items("/api/v1/clients", query), _CLIENT_COLUMNS)


def _clients_show(api: Api, args: argparse.Namespace) -> int:
    client = api.request("GET", f"/api/v1/clients/{_quote(args.client_id)}")
    if args.json:
        return _print_json(client)
    for name, value in client.items():
        if name != "subscriptions":
            print(f"{name}: {_cell(value)}")
    for sub in client["subscriptions"]:
        print(f"subscription: {sub['topic_filter']} qos {sub['qos']}")
    return EXIT_OK


def _clients_kick(api: Api, args: argparse.Namespace) -> int:
    query = {"discard_session": "true" if args.discard_session else None}
    api.request("DELETE", f"/api/v1/clients/{_quote(args.client_id)}", query)
    print(f"disconnected {args.client_id}" + (" and ended its session" if args.discard_session else ""))
    return EXIT_OK


def _sessions_list(api: Api, args: argparse.Namespace) -> int:
    query = {"prefix": args.prefix, "connected": "false" if args.offline else None}
    columns = ("client_id", "connected", "subscription_count", "inflight", "queued")
    return _table(args, api.items("/api/v1/clients", query), columns)


def _sessions_discard(api: Api, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/api/v1/clients/{_quote(args.client_id)}", {"discard_session": "true"})
    print(f"ended the session of {args.client_id}")
    return EXIT_OK


def _subscriptions_list(api: Api, args: argparse.Namespace) -> int:
    query = {"client_id": args.client_id, "prefix": args.prefix}
    columns = ("client_id", "topic_filter", "qos", "connected", "share_group")
    return _table(args, api.items("/api/v1/subscriptions", query), columns)


def _retained_list(api: Api, args: argparse.Namespace) -> int:
    columns = ("topic", "qos", "payload_size", "content_type", "message_expiry_interval")
    return _table(args, api.items("/api/v1/retained", {"filter": args.filter}), columns)


def _retained_show(api: Api, args: argparse.Namespace) -> int:
    message = api.request("GET", f"/api/v1/retained/{_quote(args.topic)}")
    if args.json:
        return _print_json(message)
    if message["payload"] is not None:
        print(message["payload"])
    else:
        import base64

        sys.stdout.buffer.write(base64.b64decode(message["payload_base64"]))
    return EXIT_OK


def _retained_clear(api: Api, args: argparse.Namespace) -> int:
    topics: list[str] = list(args.topics)
    if args.clear_filter is not None:
        topics += [item["topic"] for item in api.items("/api/v1/retained", {"filter": args.clear_filter})]
    if not topics:
        print("wrenmq ctl: name TOPIC... or --filter FILTER", file=sys.stderr)
        return EXIT_USAGE
    for topic in topics:
        api.request("DELETE", f"/api/v1/retained/{_quote(topic)}")
        print(f"cleared {topic}")
    return EXIT_OK


def _table(args: argparse.Namespace, items: Iterator[dict[str, Any]], columns: Sequence[str]) -> int:
    rows = list(items)
    if args.json:
        return _print_json(rows)
    cells = [list(columns)] + [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(columns))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2))
    return EXIT_OK


_ACTIONS = {
    "health": _health,
    "ready": _ready,
    "status": _status,
    "clients list": _clients_list,
    "clients show": _clients_show,
    "clients kick": _clients_kick,
    "sessions list": _sessions_list,
    "sessions discard": _sessions_discard,
    "subscriptions list": _subscriptions_list,
    "retained list": _retained_list,
    "retained show": _retained_show,
    "retained clear": _retained_clear,
}
