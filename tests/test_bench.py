"""`wrenmq bench`: the load generator's stream handling, and a tiny run against real brokers.

These check the tool, not the broker's speed: no figure is asserted, only that every message is
accounted for and that the table and the JSON have the documented shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import wrenmq
from wrenmq.bench.attribution import attribute, table
from wrenmq.bench.brokers import find_mosquitto, start_broker
from wrenmq.bench.fleet import churn, footprint, idle_memory, wide_fan_out
from wrenmq.bench.frames import AckCounter, FrameTemplate, Inbox
from wrenmq.bench.generator import open_client
from wrenmq.bench.measure import Run, Settings
from wrenmq.bench.runner import broker_options
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
    command += ["--scenarios", "fanin_qos1,fanin_qos1_pp,backlog", "--json", str(out)]
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
        (s, b) for s in ("fanin_qos1", "fanin_qos1_pp", "backlog") for b in brokers
    }
    for m in measurements:
        assert m["error"] is None, m
        metrics = m["metrics"]
        assert metrics["lost"] == 0 and metrics["received"] > 0, m
        assert metrics["broker_cpu"] >= 0 and metrics["generator_cpu"] >= 0
        if m["scenario"] != "backlog":  # streams: deliveries per second of the broker's CPU time
            assert metrics["msgs_per_cpu_s"] >= metrics["msgs_per_s"] * 0.5, m
    backlog = next(m["metrics"] for m in measurements if m["scenario"] == "backlog" and m["broker"] == "wrenmq")
    assert backlog["received"] == backlog["published"] == 2_000
    summary = {(row["scenario"], row["key"]): row for row in record["summary"]}
    assert summary[("fanin_qos1", "msgs_per_s")]["better"] == "higher"
    assert summary[("backlog", "drain_s")]["better"] == "lower"


def test_bench_api_flag_starts_wrenmq_with_its_http_api(tmp_path: Path):
    """``wrenmq bench --api`` (a wrenmq feature): the broker under test serves its HTTP API,
    realtime and streams, so a run measures what they cost per message; without it, none."""
    for api in (False, True):
        broker = start_broker("wrenmq", tmp_path / f"api-{api}", set(), 0, broker_options(Settings(api=api)))
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


# --- the fleet scenarios at tiny sizes, against each broker -----------------------------------------

FLEET_BROKERS = ["wrenmq"] + (["mosquitto"] if find_mosquitto() else [])


@pytest.fixture(params=FLEET_BROKERS)
def fleet_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Run]:
    settings = Settings(idle_connections=30, churn=60, wide_subscribers=25, wide_rounds=2)
    broker = start_broker(request.param, tmp_path / request.param, set())
    try:
        yield Run(broker, settings, lambda message: None, workdir=tmp_path)
    finally:
        broker.stop()


def test_fanout_10k_times_every_round_until_the_last_subscriber(fleet_run: Run):  # [MQTT-3.3.5-1] one copy each
    metrics = wide_fan_out(fleet_run)
    assert metrics["subscribers"] == 25 and metrics["lost"] == 0, metrics
    for qos in (0, 1):
        rounds = metrics[f"qos{qos}_rounds"]
        assert len(rounds) == 2 and all(0 < ms < 30_000 for ms in rounds), metrics
        assert metrics[f"qos{qos}_max_ms"] == max(rounds)


def test_idle_memory_holds_mqtt5_connections_each_subscribed(fleet_run: Run):  # [MQTT-3.9.3-1] SUBACK granted
    rss_start = fleet_run.broker.rss_kib()
    result = idle_memory(fleet_run)
    assert result["connected"] == 30 and result["errors"] == 0, result
    assert rss_start > 0 and result["rss_before_kib"] > 0 and result["rss_after_kib"] > 0
    assert result["rss_per_conn_kib"] == (result["rss_after_kib"] - result["rss_before_kib"]) / 30
    # What each connection cost each side in CPU time (the broker's accept, CONNECT and SUBSCRIBE;
    # the generator's connect and reads), from the same CPU readings as the percentages (10 ms ticks:
    # 30 connections may take none).
    for side in ("broker", "generator"):
        assert 0 <= result[f"{side}_us_per_conn"] < 1e6, result
        assert (result[f"{side}_us_per_conn"] > 0) == (result[f"{side}_cpu"] > 0), result


def test_churn_cycles_connect_subscribe_disconnect(fleet_run: Run):  # [MQTT-3.2.2-3] (3.1.1) no session: 0
    result = churn(fleet_run)
    assert result["cycles"] == 60 and result["errors"] == 0, result
    assert result["growth_kib"] == result["rss_end_kib"] - result["rss_warm_kib"]
    assert fleet_run.broker.alive()
    # Every churned client went away with its session (MQTT 5, no session expiry): a new
    # connection under one of their client ids finds no session to resume.
    sock, connack = open_client("127.0.0.1", fleet_run.broker.port, "churn0-000001", clean=False)
    sock.close()
    assert connack.reason_code == 0 and connack.session_present is False


def test_footprint_reads_the_idle_broker_and_wrenmq_with_its_api(fleet_run: Run):
    result = footprint(fleet_run)
    assert result["rss_idle_kib"] > 0
    if fleet_run.broker.name == "wrenmq":
        assert result["rss_api_kib"] > result["rss_idle_kib"], result  # FastAPI and the console are loaded
        assert result["rss_socketio_kib"] > result["rss_api_kib"], result  # and then python-socketio
    else:
        assert result["rss_api_kib"] == result["rss_socketio_kib"] == result["rss_idle_kib"] and fleet_run.notes


def test_memory_sites_charge_every_traced_byte_to_a_site():
    result = attribute(40, warmup=20)
    assert result["connections"] == 40 and result["traced_bytes"] > 0
    sites = result["sites"]
    assert sum(sites.values()) == result["traced_bytes"]
    if wrenmq.hot_path() == "pure Python":  # compiled classes allocate with no Python frame of their own
        # (an idle session allocates nothing of its own since its containers are shared stand-ins
        # and its one subscription needs no dict: the Session object is charged to admission's call)
        assert any(site.startswith("broker/admission.py:") and size > 0 for site, size in sites.items()), sites
        assert any(site.startswith("broker/connection.py:") and size > 0 for site, size in sites.items()), sites
    text = table(result)
    assert text.startswith("40 idle MQTT 5 connections") and "| concept | bytes/connection | share |" in text
