"""Pre-encoded PUBLISH frames and a byte-stream reader that keeps up with a broker.

The load generator must not be the bottleneck, so per-message Python work is avoided on both ends:

* :class:`FrameTemplate` encodes one PUBLISH with the project's codec and then writes batches of
  it by slice assignment: packet identifiers and the send timestamp are patched in whole columns
  (``batch[offset::frame_len] = ...``), which runs at C speed whatever the batch size.
* :class:`Inbox` splits what a subscriber reads into packets. Runs of the expected fixed-size
  PUBLISH frame are checked column by column (every frame's header bytes, compared as one ``bytes``)
  and counted and acknowledged in bulk; anything else goes through the codec's :class:`Parser`.

Both speak MQTT 3.1.1, whose acknowledgements are exactly four bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..mqtt import packets as p
from ..mqtt.codec import Parser, encode, encode_publish

__all__ = ["VERSION", "AckCounter", "FrameTemplate", "Inbox", "packet_length", "stamp"]

VERSION = p.MQTT_3_1_1
TIMESTAMP_BYTES = 8  # time.monotonic_ns(), big-endian, at the start of every payload

# Packet identifiers 1..65535, twice over, so that any run of up to 65535 consecutive ids is one slice.
_PIDS = [(i % 65535) + 1 for i in range(2 * 65535)]
PID_HI = bytes(i >> 8 for i in _PIDS)
PID_LO = bytes(i & 0xFF for i in _PIDS)


def packet_length(buf: bytes, pos: int) -> int | None:
    """Total length of the packet starting at ``pos``, or None if its fixed header is incomplete."""
    value = 0
    shift = 0
    i = pos + 1
    size = len(buf)
    while True:
        if i >= size:
            return None
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return i - pos + value
        shift += 7
        if shift > 21:
            raise ValueError("remaining length longer than four bytes")


class FrameTemplate:
    """One PUBLISH encoded by the codec, with the offsets of the fields a batch patches."""

    def __init__(self, topic: str, payload_size: int, qos: int, retain: bool = False) -> None:
        if payload_size < TIMESTAMP_BYTES:
            raise ValueError(f"payload must hold the {TIMESTAMP_BYTES}-byte timestamp")
        frame = encode_publish(p.Publish(topic, bytes(payload_size), qos, retain, 1 if qos else None), VERSION)
        self.frame = frame
        self.length = len(frame)
        self.qos = qos
        self.ts_offset = self.length - payload_size
        # First byte, Remaining Length and topic length: what every frame of this shape starts with.
        header_end = self.length - payload_size - len(topic.encode()) - (2 if qos else 0)
        self.header = frame[:header_end]
        self.topic_offset = header_end
        self.pid_offset = self.ts_offset - 2 if qos else None

    def batch(self, count: int, first_pid_index: int = 0, timestamp: int | None = None) -> bytearray:
        """``count`` frames with packet ids from ``_PIDS[first_pid_index]`` on and one send timestamp."""
        length = self.length
        out = bytearray(self.frame * count)
        if self.pid_offset is not None:
            po = self.pid_offset
            out[po::length] = PID_HI[first_pid_index : first_pid_index + count]
            out[po + 1 :: length] = PID_LO[first_pid_index : first_pid_index + count]
        stamp(out, self.ts_offset, length, count, timestamp)
        return out

    def with_topic(self, topic: bytes, pid: int | None, timestamp: int) -> bytes:
        """One frame on another topic of the same length (the retained scenario's many topics)."""
        start = self.topic_offset
        end = start + len(topic)
        frame = bytearray(self.frame)
        frame[start:end] = topic
        if pid is not None:
            frame[end : end + 2] = pid.to_bytes(2, "big")
        frame[self.ts_offset : self.ts_offset + TIMESTAMP_BYTES] = timestamp.to_bytes(TIMESTAMP_BYTES, "big")
        return bytes(frame)


def stamp(out: bytearray, offset: int, stride: int, count: int, timestamp: int | None = None) -> None:
    """Write one send timestamp into every frame of ``out``."""
    ts = (time.monotonic_ns() if timestamp is None else timestamp).to_bytes(TIMESTAMP_BYTES, "big")
    for j in range(TIMESTAMP_BYTES):
        out[offset + j :: stride] = ts[j : j + 1] * count


class Inbox:
    """Counts, acknowledges and samples the PUBLISH frames of one connection's byte stream.

    ``template`` describes the PUBLISH the broker is expected to deliver (topic length, QoS,
    retain flag, payload size); QoS 1 and 2 frames are answered with PUBACK or PUBREC in bulk,
    written to :attr:`out` for the caller to send. Other packets (CONNACK, SUBACK, PUBREL, a
    PUBLISH of another shape) are decoded by the codec and handed to ``on_packet``, whose return
    value is sent back; an unexpected packet without a handler raises.
    """

    def __init__(
        self,
        template: FrameTemplate,
        on_packet: Callable[[p.AnyPacket], bytes | None] | None = None,
        sample_all: bool = False,
    ) -> None:
        self.header = template.header
        self.length = template.length
        self.pid_offset = template.pid_offset
        self.ack_type = {0: 0, 1: 0x40, 2: 0x50}[template.qos]
        self.ts_offset = template.ts_offset
        self.on_packet = on_packet
        self.sample_all = sample_all
        self.sampling = False  # record latencies only while the coordinator measures
        self.samples: list[int] = []  # end-to-end latencies in ns
        self.out = bytearray()
        self.count = 0  # PUBLISH packets received
        self.parser = Parser(protocol_level=VERSION)
        self._buf = b""
        self._checked = False

    def feed(self, data: bytes) -> int:
        """Consume ``data``; returns how many PUBLISH packets it completed."""
        buf = self._buf + data if self._buf else data
        size = len(buf)
        pos = 0
        before = self.count
        header, length = self.header, self.length
        hlen = len(header)
        while pos < size:
            frames = (size - pos) // length
            if frames and buf[pos : pos + hlen] == header:
                frames = self._run_length(buf, pos, frames)
                self._take_run(buf, pos, frames)
                pos += frames * length
                continue
            plen = packet_length(buf, pos)
            if plen is None or pos + plen > size:
                break
            self._other(buf[pos : pos + plen])
            pos += plen
        self._buf = buf[pos:] if pos < size else b""
        return self.count - before

    def _run_length(self, buf: bytes, pos: int, frames: int) -> int:
        """How many of the next ``frames`` frame-sized slices start with the expected header."""
        length = self.length
        end = pos + frames * length
        for j, byte in enumerate(self.header):
            column = buf[pos + j : end : length]
            if column.count(byte) != len(column):
                frames = next(i for i, b in enumerate(column) if b != byte)
                end = pos + frames * length
        return frames

    def _take_run(self, buf: bytes, pos: int, frames: int) -> None:
        length = self.length
        end = pos + frames * length
        if not self._checked:  # the first frame also goes through the codec, to prove the template right
            packet = self.parser.feed(bytes(buf[pos : pos + length]))[0]
            assert isinstance(packet, p.Publish), packet
            self._checked = True
        if self.ack_type:
            po = self.pid_offset
            assert po is not None
            acks = bytearray(4 * frames)
            acks[0::4] = bytes((self.ack_type,)) * frames
            acks[1::4] = b"\x02" * frames
            acks[2::4] = buf[pos + po : end : length]
            acks[3::4] = buf[pos + po + 1 : end : length]
            self.out += acks
        self.count += frames
        if self.sampling:
            now = time.monotonic_ns()
            to = self.ts_offset + pos
            tsb = TIMESTAMP_BYTES
            starts: Iterable[int]
            if self.sample_all:
                starts = range(to, end, length)
            else:  # the oldest and the newest frame of this read
                starts = (to, to + (frames - 1) * length) if frames > 1 else (to,)
            self.samples.extend(now - int.from_bytes(buf[s : s + tsb], "big") for s in starts)

    def _other(self, data: bytes) -> None:
        packets = self.parser.feed(bytes(data))
        for packet in packets:
            if isinstance(packet, p.Publish):
                self.count += 1
                if packet.qos and packet.packet_id is not None:
                    ack = p.Puback if packet.qos == 1 else p.Pubrec
                    self.out += encode(ack(packet.packet_id), VERSION)
                if self.sampling and len(packet.payload) >= TIMESTAMP_BYTES:
                    sent = int.from_bytes(packet.payload[:TIMESTAMP_BYTES], "big")
                    self.samples.append(time.monotonic_ns() - sent)
                continue
            if isinstance(packet, p.Pubrel):  # second half of an inbound QoS 2 flow
                self.out += encode(p.Pubcomp(packet.packet_id), VERSION)
                continue
            reply = self.on_packet(packet) if self.on_packet is not None else None
            if reply is None and self.on_packet is None:
                raise RuntimeError(f"unexpected packet from the broker: {packet!r}")
            if reply:
                self.out += reply


class AckCounter:
    """A publisher's inbound stream in MQTT 3.1.1: only four-byte PUBACK, PUBREC and PUBCOMP.

    PUBREC is answered with PUBREL (written to :attr:`out`); ``done`` counts completed flows
    (PUBACK for QoS 1, PUBCOMP for QoS 2).
    """

    def __init__(self) -> None:
        self.done = 0
        self.out = bytearray()
        self._buf = b""

    def feed(self, data: bytes) -> int:
        buf = self._buf + data if self._buf else data
        usable = len(buf) - len(buf) % 4
        self._buf = buf[usable:]
        if not usable:
            return 0
        frames = usable // 4
        if buf[1:usable:4].count(2) != frames:
            raise RuntimeError(f"unexpected packet from the broker: {bytes(buf[:16])!r}")
        types = buf[0:usable:4]
        done = types.count(0x40) + types.count(0x70)
        recs = types.count(0x50)
        if done + recs != frames:
            raise RuntimeError(f"unexpected packet from the broker: {bytes(buf[:16])!r}")
        if recs:
            out = self.out
            for k in range(0, usable, 4):
                if buf[k] == 0x50:
                    out += b"\x62\x02"
                    out += buf[k + 2 : k + 4]
        self.done += done
        return done
