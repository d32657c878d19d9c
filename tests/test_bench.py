"""`wrenmq bench`: the load generator's stream handling, and a tiny run against real brokers.

These check the tool, not the broker's speed: no figure is asserted, only that every message is
accounted for and that the table and the JSON have the documented shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from wrenmq.bench.brokers import find_mosquitto
from wrenmq.bench.frames import AckCounter, FrameTemplate, Inbox
from wrenmq.mqtt import packets as p
from wrenmq.mqtt.codec import Parser, encode


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_batch_frames_decode_with_consecutive_packet_ids():  # [MQTT-2.3.1-2] fresh ids for new PUBLISHes
    template = FrameTemplate("bench/in/00", 32, qos=1)
    packets = Parser(protocol_level=4).feed(bytes(template.batch(10, first_pid_index=65530)))
    assert [pk.packet_id for pk in packets] == [65531, 65532, 65533, 65534, 65535, 1, 2, 3, 4, 5]
    assert all(pk.topic == "bench/in/00" and pk.qos == 1 and len(pk.payload) == 32 for pk in packets)


def test_inbox_acknowledges_every_publish_with_its_packet_id():  # [MQTT-2.3.1-6] ack carries the PUBLISH's id
    template = FrameTemplate("bench/q2", 16, qos=2)
    frames = bytes(template.batch(50, first_pid_index=100))
    stream = encode(p.Suback(1, [2]), 4) + frames + encode(p.Pubrel(7), 4) + frames
    seen: list[p.AnyPacket] = []
    inbox = Inbox(template, lambda packet: seen.append(packet))
    inbox.sampling = True
    for chunk in _chunks(stream, 37):  # reads that split packets anywhere
        inbox.feed(chunk)
    assert inbox.count == 100
    assert [type(pk) for pk in seen] == [p.Suback]
    replies = Parser(protocol_level=4).feed(bytes(inbox.out))
    pubrecs = [r.packet_id for r in replies if isinstance(r, p.Pubrec)]
    assert pubrecs == list(range(101, 151)) * 2
    assert [r.packet_id for r in replies if isinstance(r, p.Pubcomp)] == [7]  # [MQTT-4.3.3-2] (3.1.1) PUBREL -> PUBCOMP
    assert inbox.samples and all(s >= 0 for s in inbox.samples)


def test_ack_counter_answers_pubrec_with_pubrel():  # [MQTT-4.3.3-1] (3.1.1) PUBREC -> PUBREL
    acks = AckCounter()
    stream = b"".join(encode(ack(pid), 4) for pid in (1, 2) for ack in (p.Pubrec, p.Pubcomp))
    assert sum(acks.feed(chunk) for chunk in _chunks(stream, 3)) == 2
    assert [(type(pk), pk.packet_id) for pk in Parser(protocol_level=4).feed(bytes(acks.out))] == [
        (p.Pubrel, 1),
        (p.Pubrel, 2),
    ]


def test_bench_smoke_table_and_json(tmp_path: Path):  # [MQTT-3.1.2-5] backlog: offline QoS 1 kept; none lost
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "wrenmq", "bench", "--quick", "--duration", "0.3", "--warmup", "0.1"]
    command += ["--scenarios", "fanin_qos1,backlog", "--json", str(out)]
    brokers = ["wrenmq"]
    if find_mosquitto():
        command += ["--compare", "mosquitto"]
        brokers.append("mosquitto")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    lines = proc.stdout.splitlines()
    header = ["scenario", "metric", "better", *brokers] + (["wrenmq/mosquitto"] if len(brokers) == 2 else [])
    assert lines[0] == "| " + " | ".join([*header, "notes"]) + " |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:] if line.startswith("|")]
    assert {r[1] for r in rows} >= {"delivered msg/s", "lost msgs", "drain time s", "broker CPU %"}
    assert all(len(r) == len(header) + 1 for r in rows)
    assert "fanin_qos1" in proc.stderr and "done" in proc.stderr  # progress goes to stderr

    record = json.loads(out.read_text())
    assert record["brokers"] == brokers
    assert {"nproc", "python", "mosquitto", "wrenmq"} <= record["machine"].keys()
    measurements = record["measurements"]
    assert {(m["scenario"], m["broker"]) for m in measurements} == {
        (s, b) for s in ("fanin_qos1", "backlog") for b in brokers
    }
    for m in measurements:
        assert m["error"] is None, m
        metrics = m["metrics"]
        assert metrics["lost"] == 0 and metrics["received"] > 0, m
        assert metrics["broker_cpu"] >= 0 and metrics["generator_cpu"] >= 0
    backlog = next(m["metrics"] for m in measurements if m["scenario"] == "backlog" and m["broker"] == "wrenmq")
    assert backlog["received"] == backlog["published"] == 2_000
    summary = {(row["scenario"], row["key"]): row for row in record["summary"]}
    assert summary[("fanin_qos1", "msgs_per_s")]["better"] == "higher"
    assert summary[("backlog", "drain_s")]["better"] == "lower"


def test_bench_api_flag_starts_wrenmq_with_its_http_api(tmp_path: Path):
    """``wrenmq bench --api`` (a wrenmq feature): the broker under test serves its HTTP API,
    realtime and streams, so a run measures what they cost per message; without it, none."""
    from wrenmq.bench.brokers import start_broker

    for api in (False, True):
        broker = start_broker("wrenmq", tmp_path / f"api-{api}", set(), 0, api)
        try:
            config = (tmp_path / f"api-{api}" / "wrenmq.toml").read_text()
            port_line = next(line for line in config.splitlines() if line.startswith("api_port"))
            if not api:
                assert port_line == 'api_port = "off"'
                continue
            url = f"http://127.0.0.1:{int(port_line.split('=')[1])}/healthz"
            deadline = time.monotonic() + 15
            while True:
                try:
                    assert httpx.get(url, timeout=2).status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the API did not come up"
                    time.sleep(0.1)
        finally:
            broker.stop()
