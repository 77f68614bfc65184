"""Redis Streams source against the real Redis at 127.0.0.1:6379, through the real pipelines.

Every test writes to streams under a prefix of its own and deletes them afterwards.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import polars as pl
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import TestingSink, run_main

from app.cli import main as cli
from crowdwatch.batches import RawBatch
from crowdwatch.flow import default_source
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.sources.redis_streams import (
    BrokerError,
    RedisStream,
    RedisStreamSource,
    StreamCursor,
    connect,
    entry_payload,
    partition_streams,
    publish,
    stream_key,
)
from crowdwatch.video.messages import CameraMessage, RoiCount
from crowdwatch.warehouse.client import Warehouse
from pipelines import calls, gate_flow, video_headcount
from tests.conftest import EXAMPLE_SITE
from tests.crowdwatch.sources.brokers import file_replay

URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
SITE = load_site(EXAMPLE_SITE)
SAMPLES = Path(__file__).parents[2] / "detectors" / "samples"
TOTALS_SQL = (
    "SELECT zone_id, toInt64(sum(entries)) AS entries, toInt64(sum(exits)) AS exits "
    "FROM zone_metrics FINAL WHERE scope = 'zone' GROUP BY zone_id ORDER BY zone_id"
)
REJECTED_SQL = (
    "SELECT source, position, reason, payload FROM rejected_events FINAL ORDER BY position"
)


@pytest.fixture
def client() -> redis.Redis:
    try:
        return connect(URL)
    except BrokerError as exc:
        pytest.fail(f"these tests need the Redis that runs here: {exc}")


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A stream prefix of this test's own; its keys are deleted afterwards."""
    name = f"cwtest-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)


def redis_settings(engine_dir: Path, database: str, prefix: str, **more: Any) -> Settings:
    return Settings(
        data_dir=engine_dir,
        site_file=EXAMPLE_SITE,
        clickhouse_database=database,
        source="redis",
        redis_stream_prefix=prefix,
        source_until_drained=True,
        batch_rows=more.pop("batch_rows", 700),
        **more,
    )


def passages(n: int, gate: str, start: datetime = T0, step_s: float = 0.5) -> list[dict[str, str]]:
    return [
        {
            "ts": (start + timedelta(seconds=i * step_s)).isoformat(),
            "gate_id": gate,
            "direction": "out" if i % 3 == 0 else "in",
        }
        for i in range(n)
    ]


BAD = [
    "not json at all",
    '["an", "array"]',
    json.dumps({"ts": "yesterday", "gate_id": "RVS-G01", "direction": "in"}),
    json.dumps({"ts": "2026-05-04T08:01:00+00:00", "gate_id": "NO-SUCH-GATE", "direction": "in"}),
    json.dumps({"ts": "2026-05-04T08:01:00+00:00", "gate_id": "RVS-G01"}),
    json.dumps({"ts": "2026-05-04T08:01:00+00:00", "gate_id": "RVS-G01", "direction": "sideways"}),
]


def mixed_feed(good: list[dict[str, str]], every: int = 150) -> tuple[list[str], set[int]]:
    """Good records as JSON with the bad ones spread through; and the bad ones' ordinals."""
    lines: list[str] = []
    bad_at: set[int] = set()
    pending = list(BAD)
    for i, record in enumerate(good):
        if i % every == every - 1 and pending:
            bad_at.add(len(lines))
            lines.append(pending.pop())
        lines.append(json.dumps(record))
    return lines, bad_at


def test_entries_of_every_layout_become_json_lines() -> None:
    assert entry_payload({b"payload": b'{"a": 1}'}) == '{"a": 1}'
    # the DeepStream Redis adapter's default payload key, and NVIDIA Metropolis' value field
    assert entry_payload({b"metadata": b'{"sensorId": "C1"}'}) == '{"sensorId": "C1"}'
    assert entry_payload({b"key": b"C1", b"value": b"{}", b"headers": b"{}"}) == "{}"
    # flat field/value pairs are the record itself, as strings
    flat = entry_payload({b"ts": b"2026-05-04T08:00:00Z", b"gate_id": b"RVS-G01"})
    assert json.loads(flat) == {"ts": "2026-05-04T08:00:00Z", "gate_id": "RVS-G01"}
    # and as Redis sends them, a flat list of fields and values
    assert entry_payload([b"payload", b'{"a": 1}']) == '{"a": 1}'
    assert entry_payload([b"metadata", b"{}"]) == "{}"
    assert json.loads(entry_payload([b"ts", b"now", b"gate_id", b"G"])) == {
        "ts": "now",
        "gate_id": "G",
    }
    # bytes that are not UTF-8 cannot stop the pipeline: the parser rejects what is left
    assert entry_payload({b"payload": b"\xff{"}) == "\ufffd{"


def test_streams_per_signal_and_partition() -> None:
    assert stream_key("cw", "passage") == "cw:passage"
    one = partition_streams("cw", ["passage", "video"], 1)
    assert [s.key for s in one] == ["cw:passage", "cw:video"]
    some = partition_streams("cw", ["call"], 4, [3, 1])
    assert [(s.key, s.kind) for s in some] == [("cw:call:1", "call"), ("cw:call:3", "call")]
    with pytest.raises(ValueError, match=r"source partitions \[4\] are outside 0…3"):
        partition_streams("cw", ["call"], 4, [4])


def test_an_unreachable_redis_says_where_and_what_to_set(engine_dir: Path) -> None:
    with pytest.raises(
        BrokerError, match=r"cannot reach Redis at redis://:\*\*\*@127\.0\.0\.1:1/0"
    ):
        connect("redis://:secret@127.0.0.1:1/0")
    settings = Settings(data_dir=engine_dir, source="redis", redis_url="redis://127.0.0.1:1/0")  # type: ignore[arg-type]
    source = default_source(settings, "UTC")
    assert isinstance(source, RedisStreamSource)
    with pytest.raises(BrokerError, match="CROWDWATCH_REDIS_URL"):
        source.build_part("records", source.list_parts()[0], None)


def test_a_key_that_is_not_a_stream_is_named(client: redis.Redis, prefix: str) -> None:
    client.set(f"{prefix}:passage", "hello")
    part = RedisStreamSource(URL, [RedisStream(f"{prefix}:passage", "passage")]).build_part(
        "records", f"{prefix}:passage", None
    )
    with pytest.raises(BrokerError, match="is not a stream"):
        part.next_batch()


def test_batches_resume_after_the_last_entry_with_dense_positions(
    client: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:passage"
    ids = publish(client, key, [{"n": i} for i in range(25)])
    source = RedisStreamSource(URL, [RedisStream(key, "passage")], batch_rows=10)
    part = source.build_part("records", key, None)
    first = part.next_batch()
    assert [(b.first_row, b.frame.height) for b in first] == [(0, 10)]
    assert part.snapshot() == StreamCursor(ids[9], 10)
    # a new partition built from the snapshot reads on from entry 10, and nothing twice
    again = source.build_part("records", key, part.snapshot())
    seen = []
    while batch := again.next_batch():
        seen += [(b.first_row, json.loads(b.frame["payload"][0])["n"]) for b in batch]
    assert seen == [(10, 10), (20, 20)]
    # live, an empty read waits a little instead of ending
    assert again.next_batch() == [] and again.next_awake() is not None
    drained = RedisStreamSource(URL, [RedisStream(key, "passage")], until_drained=True)
    end = drained.build_part("records", key, again.snapshot())
    with pytest.raises(StopIteration):
        end.next_batch()


def test_positions_count_entries_trimmed_away(client: redis.Redis, prefix: str) -> None:
    key = f"{prefix}:call"
    publish(client, key, [{"n": i} for i in range(30)])
    client.xtrim(key, maxlen=12, approximate=False)
    part = RedisStreamSource(URL, [RedisStream(key, "call")]).build_part("records", key, None)
    (batch,) = part.next_batch()
    # the first entry left is the 19th ever added: a reader that started before the trim
    # numbered it the same
    assert batch.first_row == 18 and json.loads(batch.frame["payload"][0]) == {"n": 18}


def test_passages_from_redis_land_once_and_equal_the_file_replay(
    client: redis.Redis, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    good = passages(1500, "RVS-G01") + passages(900, "CTR-G03", step_s=0.8)
    lines, bad_at = mixed_feed(good)
    key = stream_key(prefix, "passage")
    publish(client, key, lines)
    # one producer writes flat field/value entries rather than JSON
    flat = {"ts": "2026-05-04T08:30:00+00:00", "gate_id": "CTR-G03", "direction": "in"}
    client.xadd(key, flat)
    lines.append(json.dumps(flat))

    settings = redis_settings(engine_dir, "redis_gate", prefix)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(gate_flow.build(settings))  # the source comes from the settings
        from_redis = warehouse.query(TOTALS_SQL)
        rejected = warehouse.query(REJECTED_SQL)
    with file_replay(engine_dir, "file_gate", tmp_path, lines) as replayed:
        from_file = replayed.query(TOTALS_SQL)
        file_rejected = replayed.query(REJECTED_SQL)

    ins = sum(r["direction"] == "in" for r in good) + 1
    assert from_redis["entries"].sum() == ins and from_redis["exits"].sum() == len(good) + 1 - ins
    assert from_redis.equals(from_file)
    assert rejected["source"].unique().to_list() == [f"redis:{key}"]
    assert set(rejected["position"]) == {f"row {i}" for i in bad_at}
    assert len(rejected) == len(BAD)
    # the same reasons for the same payloads as when they come from a file
    assert sorted(rejected.select("reason", "payload").rows()) == sorted(
        file_rejected.select("reason", "payload").rows()
    )


def test_exactly_once_across_a_restart_with_recovery(
    client: redis.Redis, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    good = passages(2000, "RVS-G01", step_s=0.9) + passages(1200, "NPK-G02", step_s=1.1)
    good.sort(key=lambda r: r["ts"])
    lines, _ = mixed_feed(good, every=400)
    key = stream_key(prefix, "passage")
    cut = len(lines) * 3 // 5
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    settings = redis_settings(engine_dir, "redis_restart", prefix)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        publish(client, key, lines[:cut])
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        halfway = warehouse.query(TOTALS_SQL)
        publish(client, key, lines[cut:])
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        restarted = warehouse.query(TOTALS_SQL)
        restarted_rejects = warehouse.query(REJECTED_SQL).drop("payload")
        # and a third run with nothing new changes nothing
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        assert warehouse.query(TOTALS_SQL).equals(restarted)

    uninterrupted = redis_settings(engine_dir, "redis_whole", prefix)
    with Warehouse.connect(uninterrupted.dsn(), uninterrupted.clickhouse_database) as whole:
        whole.migrate()
        run_main(gate_flow.build(uninterrupted))
        expected = whole.query(TOTALS_SQL)
        expected_rejects = whole.query(REJECTED_SQL).drop("payload")

    assert halfway["entries"].sum() + halfway["exits"].sum() < len(good)
    assert expected["entries"].sum() + expected["exits"].sum() == len(good)
    assert restarted.equals(expected)
    assert restarted_rejects.equals(expected_rejects) and len(expected_rejects) == len(BAD)


def test_a_process_reads_only_its_partitions_and_two_workers_read_them_all(
    client: redis.Redis, prefix: str, engine_dir: Path
) -> None:
    stations = {"RVS": "RVS-G01", "CTR": "CTR-G03"}
    parts = {name: zlib.crc32(name.encode()) % 2 for name in stations}
    assert sorted(parts.values()) == [0, 1]  # the two stations fall in different partitions
    for name, gate in stations.items():
        publish(client, stream_key(prefix, "passage", parts[name]), passages(600, gate))

    def totals(database: str, workers: int, **more: Any) -> pl.DataFrame:
        settings = redis_settings(engine_dir, database, prefix, source_partition_count=2, **more)
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            cli_main(gate_flow.build(settings), workers_per_process=workers)
            return warehouse.query(
                "SELECT splitByChar('-', zone_id)[1] AS station, toInt64(sum(entries + exits)) "
                "AS n FROM zone_metrics FINAL WHERE scope = 'zone' GROUP BY station "
                "ORDER BY station"
            )

    only_ctr = totals("redis_part_ctr", 1, source_partitions=(parts["CTR"],))
    assert only_ctr.rows() == [("CTR", 600)]
    both = totals("redis_part_all", 2)
    assert both.rows() == [("CTR", 600), ("RVS", 600)]


def test_camera_messages_and_deepstream_payloads_from_redis(
    client: redis.Redis, prefix: str, engine_dir: Path
) -> None:
    t0_ms = 1_795_132_800_000  # 2026-11-20 08:00 in Shanghai
    messages = [
        CameraMessage(
            "CTR-CAM01", i, t0_ms + i * 1000, 10 + i % 7, (RoiCount("platform-L1", 10 + i % 7),)
        )
        for i in range(120)
    ]
    lines = [m.to_json(SITE.tz) for m in messages]
    lines.insert(50, '{"camera_id": "CAM-NOWHERE", "frame": 1, "ts": "2026-11-20T08:00:00+08:00"}')
    publish(client, stream_key(prefix, "video"), lines)
    # DeepStream's Redis adapter writes its JSON under the field "metadata"
    doc = json.loads((SAMPLES / "minimal_person_frame.json").read_text(encoding="utf-8"))
    doc["sensorId"], doc["@timestamp"] = "STD-CAM01", "2026-11-20T00:03:00.000Z"
    client.xadd(stream_key(prefix, "deepstream_minimal"), {"metadata": json.dumps(doc)})

    settings = redis_settings(engine_dir, "redis_video", prefix, batch_rows=50)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(video_headcount.build(settings))
        stored = warehouse.query(
            "SELECT camera_id, count() AS frames, toInt64(sum(persons)) AS persons "
            "FROM video_frames FINAL GROUP BY camera_id ORDER BY camera_id"
        )
        rejected = warehouse.query(REJECTED_SQL)
    assert stored.rows() == [
        ("CTR-CAM01", 120, sum(m.persons for m in messages)),
        ("STD-CAM01", 1, 2),  # the minimal frame holds two people and a bag
    ]
    assert rejected.select("source", "position").rows() == [(f"redis:{prefix}:video", "row 50")]


def test_calls_from_redis(client: redis.Redis, prefix: str, engine_dir: Path) -> None:
    records = [
        {
            "call_id": f"C{i}",
            "received_at": f"2026-11-20T21:{i % 60:02d}:00+08:00",
            "lat": "30.2310",
            "lon": "120.2310",
            "category_text": "fight 打架",
        }
        for i in range(40)
    ]
    records[7]["received_at"] = "not a time"
    publish(client, stream_key(prefix, "call"), records)
    settings = redis_settings(engine_dir, "redis_calls", prefix)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(calls.build(settings))
        stored = warehouse.query("SELECT count() AS n FROM calls FINAL")["n"][0]
        rejected = warehouse.query(REJECTED_SQL)
    assert stored == 39
    assert rejected.select("position", "reason").rows()[0][0] == "row 7"
    assert "not a time" in rejected["payload"][0]


def test_publish_command_appends_a_file(
    client: redis.Redis, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "passages.csv"
    pl.DataFrame(passages(30, "RVS-G01")).write_csv(path)
    monkeypatch.setenv("CROWDWATCH_REDIS_STREAM_PREFIX", prefix)
    assert cli(["publish", "redis", str(path), "--partition", "3"]) == 0
    entries = client.xrange(f"{prefix}:passage:3")
    assert len(entries) == 30
    assert json.loads(entries[4][1][b"payload"]) == passages(30, "RVS-G01")[4]


def test_sources_of_every_kind_read_the_same_batches(client: redis.Redis, prefix: str) -> None:
    out: list[RawBatch] = []
    for kind in ("passage", "call"):
        publish(client, stream_key(prefix, kind), [{"kind": kind, "i": i} for i in range(5)])
    settings = Settings(source="redis", redis_stream_prefix=prefix, source_until_drained=True)
    source = default_source(settings, "UTC", ("passage", "call", "video"))
    flow = Dataflow("read")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    assert sorted((b.source, b.kind, b.frame.height) for b in out) == [
        (f"redis:{prefix}:call", "call", 5),
        (f"redis:{prefix}:passage", "passage", 5),
    ]
