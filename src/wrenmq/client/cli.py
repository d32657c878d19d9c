"""``wrenmq pub`` and ``wrenmq sub``: mosquitto_pub and mosquitto_sub work-alikes on :mod:`wrenmq.client`.

The flags are mosquitto's (``-h -p -t -m -q -r -u -P -i -k -V -L --cafile -C -W -v -F ...``), so
are the exit codes: 0 on success, the CONNACK reason code when the broker refuses the connection,
27 when ``sub -W`` times out, 1 for other errors; bad flags exit 2, as every wrenmq command does.
Not supported: ``-D`` properties, ``--proxy``, ``--psk``, ``-S`` SRV lookups, ``--unix``,
``--remove-retained`` and ``--random-filter``.

This module is imported whenever ``wrenmq`` builds its parser, so it imports only argparse at the
top; the client is imported when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import ssl

    from . import Client, Message
    from .output import Formatter

__all__ = ["add_pub_parser", "add_sub_parser", "run_pub", "run_sub"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 27

_VERSIONS = {"5": 5, "mqttv5": 5, "311": 4, "mqttv311": 4, "31": 3, "mqttv31": 3}
_TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")
_FORMAT_HELP = (
    "print with this format: %%t topic, %%p payload, %%q QoS, %%r retain, %%l payload length, %%m packet id, "
    "%%x/%%X hex payload, %%j/%%J JSON object, %%I ISO 8601 time, %%U Unix time, %%C %%D %%E %%F %%R %%S %%P "
    "MQTT 5 properties, %%%% a %%; widths like %%-10t; @X strftime; \\n \\t \\e escapes (as mosquitto_sub -F)"
)


# --- parsers -----------------------------------------------------------------------------------------


def add_pub_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "pub",
        add_help=False,  # -h is the host, as in mosquitto_pub
        help="publish a message (like mosquitto_pub)",
        description="Publish one message (or one per line of stdin with -l) and exit once its QoS flow "
        "completes. Flags as mosquitto_pub's; exit status 0, the CONNACK reason code if refused, 1 on errors.",
    )
    _add_connection_flags(parser)
    parser.add_argument("-t", "--topic", help="topic to publish to")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-m", "--message", help="the message payload")
    source.add_argument("-f", "--file", metavar="FILE", help="send the contents of FILE as the message")
    source.add_argument("-s", "--stdin-file", action="store_true", help="send all of stdin as one message")
    source.add_argument("-l", "--stdin-line", action="store_true", help="send each line of stdin as a message")
    source.add_argument("-n", "--null-message", action="store_true", help="send a zero-length message")
    parser.add_argument("-r", "--retain", action="store_true", help="retain the message")
    parser.add_argument("--repeat", type=_positive_int, default=1, metavar="N", help="publish the message N times")
    parser.add_argument(
        "--repeat-delay", type=float, default=0.0, metavar="S", help="seconds between repeated messages"
    )
    parser.set_defaults(run=run_pub)


def add_sub_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "sub",
        add_help=False,
        help="subscribe and print messages (like mosquitto_sub)",
        description="Subscribe and print the messages received, reconnecting (and resubscribing) if the "
        "connection drops. Flags as mosquitto_sub's; exit status 0, the CONNACK reason code if refused, "
        "27 when -W times out, 1 on errors.",
    )
    _add_connection_flags(parser)
    parser.add_argument("-t", "--topic", action="append", default=[], help="topic filter (repeatable)")
    parser.add_argument("-T", "--filter-out", action="append", default=[], help="do not print topics matching this")
    parser.add_argument("-U", "--unsubscribe", action="append", default=[], help="topic filter to unsubscribe from")
    parser.add_argument("-C", dest="count", type=_positive_int, help="exit after printing this many messages")
    parser.add_argument("-W", dest="timeout", type=_positive_int, metavar="SECONDS", help="exit (status 27) after this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print 'topic payload'")
    parser.add_argument("-F", dest="format", metavar="FORMAT", help=_FORMAT_HELP)
    parser.add_argument("-N", dest="no_eol", action="store_true", help="no newline after each message")
    parser.add_argument("--pretty", action="store_true", help="indent JSON: %%j/%%J output, and JSON payloads")
    parser.add_argument("-R", dest="no_retained", action="store_true", help="do not print retained messages")
    parser.add_argument("--retained-only", action="store_true", help="print only retained messages, then exit")
    parser.add_argument("-E", dest="exit_after_subscribe", action="store_true", help="exit once subscribed")
    parser.add_argument("--retain-as-published", action="store_true", help="MQTT 5 Retain As Published option")
    parser.add_argument("--no-local", action="store_true", help="MQTT 5 No Local option")
    parser.set_defaults(run=run_sub)


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", "--host", help="broker host (default: localhost)")
    parser.add_argument("-p", "--port", type=int, help="broker port (default: 1883, 8883 with TLS)")
    parser.add_argument(
        "-L", "--url", help="broker URL: mqtt(s)://[user[:password]@]host[:port]/topic or ws(s)://host[:port]/path"
    )
    parser.add_argument(
        "-V", "--protocol-version", type=_protocol_version, default=4, metavar="VERSION",
        help="5, 311 or 31 (or mqttv5, mqttv311, mqttv31; default 311)",
    )  # fmt: skip
    parser.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0, help="QoS (default 0)")
    parser.add_argument("-i", "--id", help="client id (default: generated)")
    parser.add_argument("-I", "--id-prefix", help="client id prefix; the process id is appended")
    parser.add_argument("-k", "--keepalive", type=int, default=60, help="keep alive seconds (default 60)")
    parser.add_argument("-u", "--username", help="username")
    parser.add_argument("-P", "--pw", dest="password", help="password")
    parser.add_argument("-c", "--disable-clean-session", action="store_true", help="keep the session (needs -i)")
    parser.add_argument("-x", dest="session_expiry", type=int, metavar="S", help="MQTT 5 session expiry (-1: never)")
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--cafile", help="CA certificates (PEM) to trust; enables TLS")
    tls.add_argument("--capath", help="directory of CA certificates to trust; enables TLS")
    tls.add_argument("--cert", help="client certificate (PEM)")
    tls.add_argument("--key", help="client private key (PEM)")
    tls.add_argument("--insecure", action="store_true", help="do not check the server's host name")
    tls.add_argument("--tls-use-os-certs", action="store_true", help="trust the system's CAs; enables TLS")
    tls.add_argument("--tls-version", choices=_TLS_VERSIONS, help="use exactly this TLS version")
    will = parser.add_argument_group("will")
    will.add_argument("--will-topic", help="topic of the will message")
    will.add_argument("--will-payload", default="", help="payload of the will message")
    will.add_argument("--will-qos", type=int, choices=(0, 1, 2), default=0, help="QoS of the will message")
    will.add_argument("--will-retain", action="store_true", help="retain the will message")
    parser.add_argument("-d", "--debug", action="store_true", help="log the packets sent and received to stderr")
    parser.add_argument("--quiet", action="store_true", help="print no runtime errors")


def _protocol_version(text: str) -> int:
    try:
        return _VERSIONS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown protocol version {text!r}: use 5, 311 or 31") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# --- shared -----------------------------------------------------------------------------------------


class UsageError(Exception):
    """Flags that do not fit together; exits 2 with the message."""


class _Failure(Exception):
    """A runtime error with the exit status it calls for."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def _client(args: argparse.Namespace, **extra: Any) -> tuple[Client, str | None]:
    """The Client the flags describe, and the topic a mqtt:// URL carried (if any)."""
    from . import Client, Will
    from .url import parse_url

    host, port, ws_path, url_topic = args.host, args.port, "/mqtt", None
    transport: Literal["tcp", "ws"] = "tcp"
    username, password = args.username, args.password
    url_tls = False
    if args.url:
        if args.host or args.port:
            raise UsageError("use either -L or -h/-p")
        try:
            url = parse_url(args.url)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        host, port, transport, url_tls = url.host, url.port, url.transport, url.tls
        if url.transport == "ws":
            ws_path = url.path or "/mqtt"
        elif url.path.strip("/"):
            url_topic = url.path[1:]
        username = username if username is not None else url.username
        password = password if password is not None else url.password
    version = args.protocol_version
    if password is not None and username is None and version < 5:
        raise UsageError("a password (-P) needs a username (-u) before MQTT 5")
    client_id = args.id
    if client_id is None and args.id_prefix:
        client_id = f"{args.id_prefix}{os.getpid()}"
    session_expiry = args.session_expiry
    if session_expiry == -1:
        session_expiry = 0xFFFFFFFF
    if session_expiry is None:
        session_expiry = 0xFFFFFFFF if args.disable_clean_session and version == 5 else 0
    if not 0 <= session_expiry <= 0xFFFFFFFF:
        raise UsageError("-x must be -1 or 0 to 4294967295")
    if (args.disable_clean_session or session_expiry) and not client_id:
        raise UsageError("a persistent session (-c or -x) needs a client id (-i)")
    will = None
    if args.will_topic:
        will = Will(args.will_topic, os.fsencode(args.will_payload), args.will_qos, args.will_retain)
    tls = _tls_context(args, url_tls or (port == 8883 and not args.url))
    try:
        client = Client(
            host or "localhost",
            port,
            client_id=client_id,
            version=version,
            clean_start=not args.disable_clean_session,
            session_expiry=session_expiry if version == 5 else 0,
            keepalive=args.keepalive,
            username=username,
            password=password,
            will=will,
            tls=tls,
            transport=transport,
            ws_path=ws_path,
            **extra,
        )
    except ValueError as exc:  # e.g. -k out of range
        raise UsageError(str(exc)) from None
    return client, url_topic


def _tls_context(args: argparse.Namespace, implied: bool) -> ssl.SSLContext | None:
    """TLS as mosquitto's clients set it up: on with --cafile/--capath/--tls-use-os-certs or mqtts://."""
    if not (args.cafile or args.capath or args.tls_use_os_certs or implied):
        if args.cert or args.key or args.insecure or args.tls_version:
            raise UsageError("TLS options need --cafile, --capath or --tls-use-os-certs")
        return None
    import ssl

    try:
        if args.cafile or args.capath:
            context = ssl.create_default_context(cafile=args.cafile, capath=args.capath)
            if args.tls_use_os_certs:
                context.load_default_certs()
        else:
            context = ssl.create_default_context()
        if args.cert or args.key:
            if not (args.cert and args.key):
                raise UsageError("--cert and --key go together")
            context.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        raise _Failure(f"problem setting TLS options: {exc}") from None
    if args.insecure:
        context.check_hostname = False
    if args.tls_version:
        version = ssl.TLSVersion.TLSv1_2 if args.tls_version == "tlsv1.2" else ssl.TLSVersion.TLSv1_3
        context.minimum_version = context.maximum_version = version
    return context


def _run(args: argparse.Namespace, command: str, main: Any) -> int:
    """Run ``main(args)`` on uvloop (if installed), turning errors into messages and exit codes."""
    if args.debug:
        import logging

        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(message)s")
        logging.getLogger("wrenmq.client").setLevel(logging.DEBUG)
    try:
        status: int = _run_loop(main(args))
    except UsageError as exc:
        print(f"wrenmq {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Failure as exc:
        if not args.quiet:
            print(f"wrenmq {command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EXIT_OK
    return status


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def _connect(client: Client) -> None:
    from .errors import ConnectError

    try:
        await client.connect()
    except ConnectError as exc:
        status = exc.reason_code if exc.reason_code else EXIT_ERROR  # as mosquitto: the CONNACK code
        raise _Failure(str(exc), status) from None


def _cancel_on_sigterm() -> None:
    """SIGTERM stops like SIGINT: the current task is cancelled, so the client disconnects cleanly."""
    task = asyncio.current_task()
    if task is not None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        except (NotImplementedError, RuntimeError):  # Windows
            pass


# --- pub ---------------------------------------------------------------------------------------------


def run_pub(args: argparse.Namespace) -> int:
    return _run(args, "pub", _pub)


async def _pub(args: argparse.Namespace) -> int:
    from .errors import ClientError

    if not (args.message is not None or args.file or args.stdin_file or args.stdin_line or args.null_message):
        raise UsageError("give the message with -m, -f, -s, -l or -n")
    payload = b""
    if args.message is not None:
        payload = os.fsencode(args.message)
    elif args.file:
        try:
            with open(args.file, "rb") as file:
                payload = file.read()
        except OSError as exc:
            raise _Failure(f"cannot read {args.file}: {exc.strerror}") from None
    elif args.stdin_file:
        payload = sys.stdin.buffer.read()
    client, url_topic = _client(args, reconnect=False)
    topic = args.topic or url_topic
    if not topic:
        raise UsageError("give the topic with -t (or in the -L URL)")
    if "+" in topic or "#" in topic:
        raise UsageError(f"invalid publish topic {topic!r}: no wildcards")
    await _connect(client)
    try:
        if args.stdin_line:
            async for line in _stdin_lines():
                await client.publish(topic, line, args.qos, args.retain)
        else:
            for i in range(args.repeat):
                if i and args.repeat_delay:
                    await asyncio.sleep(args.repeat_delay)
                await client.publish(topic, payload, args.qos, args.retain)
    except ClientError as exc:
        raise _Failure(str(exc)) from None
    finally:
        await client.disconnect()
    return EXIT_OK


async def _stdin_lines() -> AsyncIterator[bytes]:
    """Lines of stdin as they arrive (a pipe or terminal), without their line ends."""
    stdin = sys.stdin.buffer
    if not _watchable(stdin.fileno()):  # a regular file: reading it does not block
        for line in stdin:
            yield line.rstrip(b"\r\n")
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 28)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    try:
        while line := await reader.readline():
            yield line.rstrip(b"\r\n")
    finally:
        transport.close()
        os.set_blocking(stdin.fileno(), True)  # leave the terminal as we found it


def _watchable(fd: int) -> bool:
    import stat

    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


# --- sub ---------------------------------------------------------------------------------------------


def run_sub(args: argparse.Namespace) -> int:
    return _run(args, "sub", _sub)


async def _sub(args: argparse.Namespace) -> int:
    from .errors import ClientError
    from .output import FormatError, Formatter

    try:
        formatter = Formatter(args.format, args.verbose, args.pretty)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    client, url_topic = _client(args, reconnect=True)
    topics = list(args.topic) + ([url_topic] if url_topic else [])
    if not topics and not args.unsubscribe:
        raise UsageError("give at least one topic filter with -t (or in the -L URL)")
    await _connect(client)
    stream = client.messages()  # before subscribing: retained messages arrive right after SUBACK
    _cancel_on_sigterm()
    try:
        async with asyncio.timeout(args.timeout):  # -W counts from the connection, as in mosquitto_sub
            if topics:
                await _subscribe(client, topics, args)
            if args.unsubscribe:
                await client.unsubscribe(args.unsubscribe)
            if args.exit_after_subscribe:
                return EXIT_OK
            return await _print_messages(stream, formatter, args)
    except TimeoutError:
        if not args.quiet:
            print("Timed out", file=sys.stderr)
        return EXIT_TIMEOUT
    except asyncio.CancelledError:  # SIGTERM, or SIGINT (asyncio.run's): stop cleanly
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return EXIT_OK
    except ClientError as exc:
        raise _Failure(str(exc)) from None
    except ValueError as exc:  # an invalid topic filter
        raise UsageError(str(exc)) from None
    finally:
        stream.close()
        await client.disconnect()


async def _subscribe(client: Client, topics: list[str], args: argparse.Namespace) -> None:
    from .errors import describe_reason

    codes = await client.subscribe(
        topics, args.qos, no_local=args.no_local, retain_as_published=args.retain_as_published
    )
    denied = [(topic, code) for topic, code in zip(topics, codes, strict=True) if code >= 0x80]
    if not args.quiet:
        for topic, code in denied:
            print(f"Warning: subscription to {topic!r} denied: {describe_reason(code)}", file=sys.stderr)
    if len(denied) == len(topics):
        raise _Failure("all subscription requests were denied")


async def _print_messages(stream: AsyncIterator[Message], formatter: Formatter, args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    end = b"" if args.no_eol else b"\n"
    printed = 0
    async for message in stream:
        if any(message.matches(topic_filter) for topic_filter in args.filter_out):
            continue
        if args.retained_only and not message.retain:
            return EXIT_OK
        if args.no_retained and message.retain:
            continue
        out.write(formatter(message) + end)
        out.flush()
        printed += 1
        if args.count and printed >= args.count:
            return EXIT_OK
    return EXIT_OK
