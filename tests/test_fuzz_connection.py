"""Property-based fuzzing of a live broker's connection handler (hypothesis): random bytes and
mutated valid packet streams, sent over real sockets. Whatever arrives, no exception escapes the
connection handler (the broker counts those as internal errors and would answer 0x83), the broker
only ever answers with well-formed packets, a refusal or DISCONNECT carries an error reason code,
the connection ends cleanly, and the broker goes on serving others.

[MQTT-4.13.1-1]: on a Malformed Packet or Protocol Error the server closes the connection, sending
a DISCONNECT with the reason code first (MQTT 5) where it can. Example counts are bounded.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttraw import RawClient
from wrenmq.mqtt import Parser, ProtocolError, encode
from wrenmq.mqtt import packets as p

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# A valid MQTT 5 session to mutate: CONNECT, SUBSCRIBE, PUBLISH at each QoS, PUBREL, PINGREQ, DISCONNECT.
VALID_V5 = [
    encode(p.Connect("fuzz", 5, True, 30), 5),
    encode(p.Subscribe(1, [p.Subscription("fuzz/#", 2)]), 5),
    encode(p.Publish("fuzz/a", b"zero", 0), 5),
    encode(p.Publish("fuzz/b", b"one", 1, False, 2), 5),
    encode(p.Publish("fuzz/c", b"two", 2, True, 3), 5),
    encode(p.Pubrel(3), 5),
    encode(p.Pingreq(), 5),
    encode(p.Disconnect(), 5),
]
VALID_V4 = [encode(p.Connect("fuzz4", 4, True, 30), 4), *(encode(p.Publish("fuzz/d", b"x", 1, False, 5), 4),)]


@st.composite
def mutated_stream(draw: st.DrawFn) -> bytes:
    """A valid stream with a few bytes flipped, inserted or deleted, or cut short."""
    packets = draw(st.sampled_from([VALID_V5, VALID_V4]))
    data = bytearray(b"".join(packets[: draw(st.integers(1, len(packets)))]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and len(data) > 1:
            del data[at]
        elif action == "truncate" and at > 0:
            del data[at:]
    return bytes(data)


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and collect everything until the broker closes the socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # end of input: an incomplete packet cannot wait forever
        except OSError:
            return b""  # the broker already closed on what it read
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)


def _check_answer(answer: bytes) -> None:
    """The broker's bytes parse as MQTT 5 / 3.1.1 packets; any refusal carries an error code."""
    for level in (5, 4):
        try:
            packets = Parser(protocol_level=level).feed(answer)
        except ProtocolError:
            continue
        for packet in packets:
            if isinstance(packet, p.Disconnect):
                assert packet.reason_code != 0x83, "internal error (0x83) sent to a client"
                assert packet.reason_code >= 0x80 or packet.reason_code == 0
        return
    raise AssertionError(f"the broker sent bytes that are not MQTT: {answer[:64]!r}")


@pytest.fixture(scope="module")
def fuzz_server(wrenmq_server_factory_module):  # type: ignore[no-untyped-def]
    return wrenmq_server_factory_module(max_packet_size=4096)


@pytest.fixture(scope="module")
def wrenmq_server_factory_module(tmp_path_factory):  # type: ignore[no-untyped-def]
    from wrenmq.pytest_plugin import WrenmqServer, server_config

    servers: list[WrenmqServer] = []

    def start(**overrides):  # type: ignore[no-untyped-def]
        server = WrenmqServer(server_config(tmp_path_factory.mktemp("fuzz"), **overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@FUZZ
@given(data=st.binary(min_size=1, max_size=600))
def test_random_bytes_close_cleanly(fuzz_server, data):  # [MQTT-4.13.1-1]
    _check_answer(_exchange(fuzz_server.port, data))
    assert fuzz_server.broker.stats.internal_errors == 0


@FUZZ
@given(data=mutated_stream())
def test_mutated_packets_close_cleanly(fuzz_server, data):  # [MQTT-4.13.1-1], [MQTT-4.8.0-1]
    _check_answer(_exchange(fuzz_server.port, data))
    assert fuzz_server.broker.stats.internal_errors == 0


def test_broker_serves_after_fuzzing(fuzz_server):
    """Runs after the fuzz tests in this module: the broker still works for a well-behaved client."""
    with RawClient(fuzz_server.port, 5) as client:
        assert client.connect("after-fuzz").reason_code == 0
        client.subscribe("after/#", 1)
        client.publish("after/x", b"ok", 0)
        assert client.expect(p.Publish).payload == b"ok"
    assert fuzz_server.broker.stats.internal_errors == 0
