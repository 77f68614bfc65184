"""Kafka source against librdkafka's mock cluster: real Kafka-protocol brokers on loopback.

``CROWDWATCH_TEST_KAFKA_BROKERS=host:port,…`` runs the same tests against a real cluster
instead (topics are created with the partitions each test needs). Every test uses topics of
its own.
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from confluent_kafka import Consumer, TopicPartition

from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.sources.kafka import (
    KafkaRecordSource,
    batches_of,
    offset_runs,
    publish,
    topic_name,
)
from crowdwatch.sources.partition import record_stations, station_partition
from crowdwatch.sources.redis_streams import BrokerError
from crowdwatch.warehouse.client import Warehouse
from pipelines import gate_flow
from tests.commands import crowdwatch
from tests.conftest import EXAMPLE_SITE
from tests.crowdwatch.sources.brokers import (
    BAD,
    METRICS_SQL,
    REJECTED_SQL,
    TOTALS_SQL,
    KafkaProxy,
    broker_settings,
    create_topic,
    cutting,
    file_replay,
    kafka_brokers,
    passages,
    pipeline_env,
    query,
    run_killed,
    start_run,
    with_bad,
)

SITE = load_site(EXAMPLE_SITE)
REAL_BROKER = bool(os.environ.get("CROWDWATCH_TEST_KAFKA_BROKERS"))


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """Bootstrap brokers: the real cluster named by the environment, or a mock cluster."""
    brokers, mock = kafka_brokers()
    yield brokers
    del mock


@pytest.fixture
def prefix() -> str:
    return f"cwtest-{uuid.uuid4().hex[:12]}"


def kafka_settings(
    engine_dir: Path, database: str, brokers: str, prefix: str, **more: Any
) -> Settings:
    return broker_settings(
        engine_dir,
        database,
        source="kafka",
        kafka_brokers=brokers,
        kafka_topic_prefix=prefix,
        **more,
    )


def keyed(lines: list[str], partitions: int) -> tuple[list[str | None], list[int]]:
    """Each record's station (its key) and partition, as `crowdwatch publish kafka` sends it."""
    frame = pl.DataFrame({"payload": lines})
    stations = record_stations(frame, "passage", SITE).to_list()
    return stations, [0 if s is None else station_partition(s, partitions) for s in stations]


def one_partition_feed(
    brokers: str, prefix: str, n: int, every: int
) -> tuple[str, list[str], list[int], list[str | None]]:
    """A passage topic of one partition to fill: its name, the lines, bad lines' offsets, keys."""
    topic = topic_name(prefix, "passage")
    create_topic(brokers, topic, 1)
    lines, bad_at = with_bad(passages(n), every=every)
    stations, _ = keyed(lines, 1)
    return topic, lines, bad_at, stations


def watermarks(brokers: str, topic: str, partition: int = 0) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "cwtest"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def test_batches_never_span_a_gap_in_the_offsets() -> None:
    assert offset_runs([5, 6, 7, 9, 10, 12]) == [(0, 3), (3, 5), (5, 6)]
    assert offset_runs([]) == []
    batches = batches_of("kafka:t:0", "passage", [7, 8, 10], [b'{"a": 1}', None, b"\xff"])
    assert [(b.source, b.kind, b.first_row, b.frame["payload"].to_list()) for b in batches] == [
        ("kafka:t:0", "passage", 7, ['{"a": 1}', ""]),
        ("kafka:t:0", "passage", 10, ["\ufffd"]),
    ]


def test_topics_are_named_per_signal() -> None:
    assert topic_name("crowdwatch", "passage") == "crowdwatch.passage"
    with pytest.raises(ValueError, match="CROWDWATCH_KAFKA_BROKERS"):
        KafkaRecordSource([], {"crowdwatch.passage": "passage"})


def test_records_are_keyed_by_their_station() -> None:
    lines = [*passages(4), json.dumps({"gate_id": "NPK-G02", "station_id": "CTR"}), "junk"]
    stations, parts = keyed(lines, 2)
    # the gate's station from the site, a record's own station_id first, None for junk
    assert stations == ["RVS", "CTR", "RVS", "CTR", "CTR", None]
    assert parts == [zlib.crc32(b"RVS") % 2, zlib.crc32(b"CTR") % 2] * 2 + [
        zlib.crc32(b"CTR") % 2,
        0,
    ]


def test_an_unreachable_broker_is_named() -> None:
    source = KafkaRecordSource(["127.0.0.1:1"], {"t.passage": "passage"})
    with pytest.raises(
        BrokerError, match=r"cannot list Kafka topic 't\.passage' at 127\.0\.0\.1:1"
    ):
        source.list_parts()


def test_records_deleted_before_they_were_read_stop_the_run_naming_them(
    kafka: str, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    if REAL_BROKER:
        pytest.skip("a real broker deletes by retention on its own schedule, not at once")
    topic = topic_name(prefix, "passage")
    lines = passages(60_000)
    # uncompressed, one partition: more than the mock's 5 MiB, so its oldest records go
    publish(
        kafka, topic, lines, partitions=[0] * len(lines), add_config={"compression.type": "none"}
    )
    low, high = watermarks(kafka, topic)
    assert high == len(lines) and 0 < low < high // 2

    strict = kafka_settings(engine_dir, "kafka_deleted", kafka, prefix)
    with Warehouse.connect(strict.dsn(), strict.clickhouse_database) as warehouse:
        warehouse.migrate()
        with pytest.raises(Exception) as failed:
            run_main(gate_flow.build(strict))
        chain = []
        seen: BaseException | None = failed.value
        while seen is not None:
            chain.append(str(seen))
            seen = seen.__cause__
        text = " ".join(chain)
        assert f"kafka:{topic}:0: the records from offset 0 on were deleted" in text
        assert f"keeps offsets {low:,}…{high - 1:,}" in text
        assert "CROWDWATCH_KAFKA_SKIP_DELETED" in text
        assert warehouse.query(TOTALS_SQL).is_empty()  # nothing of the later records either

    skipping = strict.model_copy(
        update={"clickhouse_database": "kafka_skipped", "kafka_skip_deleted": True}
    )
    with Warehouse.connect(skipping.dsn(), skipping.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(gate_flow.build(skipping))
        kept = warehouse.query(TOTALS_SQL)
    with file_replay(engine_dir, "kafka_kept_file", tmp_path, lines[low:]) as replayed:
        assert kept.equals(replayed.query(TOTALS_SQL))
    assert kept["entries"].sum() + kept["exits"].sum() == high - low


def test_passages_from_kafka_equal_the_file_replay_and_rejects_keep_their_offsets(
    kafka: str, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    topic, lines, bad_at, stations = one_partition_feed(kafka, prefix, 3000, every=500)
    cut = 1800
    publish(kafka, topic, lines[:cut], keys=stations[:cut], partitions=[0] * cut)
    settings = kafka_settings(engine_dir, "kafka_restart", kafka, prefix)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        halfway = warehouse.query(TOTALS_SQL)
        rest = len(lines) - cut
        publish(kafka, topic, lines[cut:], keys=stations[cut:], partitions=[0] * rest)
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        totals = warehouse.query(TOTALS_SQL)
        rejected = warehouse.query(REJECTED_SQL)
    with file_replay(engine_dir, "kafka_restart_file", tmp_path, lines) as replayed:
        expected = replayed.query(TOTALS_SQL)
        expected_reasons = sorted(replayed.query(REJECTED_SQL)["reason"])

    assert 0 < halfway["entries"].sum() + halfway["exits"].sum() < 3000
    assert totals.equals(expected)
    assert totals["entries"].sum() + totals["exits"].sum() == 3000
    # a rejected message is stored once, under its own offset
    assert rejected["source"].unique().to_list() == [f"kafka:{topic}:0"]
    assert sorted(rejected["position"]) == sorted(f"row {i}" for i in bad_at)
    assert sorted(rejected["reason"]) == expected_reasons and len(rejected) == len(BAD)


def test_killed_mid_stream_the_run_resumes_from_the_snapshot_offsets(
    kafka: str, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    topic = topic_name(prefix, "passage")
    create_topic(kafka, topic, 1)
    lines, _ = with_bad(passages(40_000, step_s=0.3), every=7000)
    stations, _ = keyed(lines, 1)
    publish(kafka, topic, lines, keys=stations, partitions=[0] * len(lines))
    assert watermarks(kafka, topic) == (0, len(lines))  # compressed, the mock keeps them all

    data = tmp_path / "killed"
    env = pipeline_env(
        data,
        CROWDWATCH_SOURCE="kafka",
        CROWDWATCH_KAFKA_BROKERS=kafka,
        CROWDWATCH_KAFKA_TOPIC_PREFIX=prefix,
        CROWDWATCH_SOURCE_UNTIL_DRAINED="1",
        CROWDWATCH_BATCH_ROWS="500",
        CROWDWATCH_RECOVERY_DIR=str(data / "recovery"),
        CROWDWATCH_SNAPSHOT_INTERVAL_S="0.2",
    )
    crowdwatch("db", "migrate", env=env)
    log = tmp_path / "run.log"
    offsets, done = run_killed(env, f"0-{topic}", (len(lines) // 4, len(lines) * 2 // 3), log)
    assert done.wait(timeout=300) == 0, log.read_text()
    assert 0 < offsets[0] < offsets[1] < len(lines)

    with file_replay(engine_dir, "kafka_killed_file", tmp_path, lines) as replayed:
        expected = replayed.query(METRICS_SQL)
        expected_rejects = replayed.query(REJECTED_SQL)["reason"].sort()
    got = query(METRICS_SQL, env)
    assert got.height == expected.height > 0
    assert got.equals(expected)
    rejects = query(REJECTED_SQL, env)
    assert rejects["reason"].sort().equals(expected_rejects) and rejects.height == len(BAD)


def test_two_processes_on_two_partitions_each_read_their_stations(
    kafka: str, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    topic = topic_name(prefix, "passage")
    create_topic(kafka, topic, 2)
    lines = passages(6000, gates=("RVS-G01", "CTR-G03", "NPK-G02"))
    stations, parts = keyed(lines, 2)
    assert sorted(set(parts)) == [0, 1]
    publish(kafka, topic, lines, keys=stations, partitions=parts)

    by_station = (
        "SELECT splitByChar('-', zone_id)[1] AS station, toInt64(sum(entries + exits)) AS n "
        "FROM zone_metrics FINAL WHERE scope = 'zone' GROUP BY station ORDER BY station"
    )
    envs = [
        pipeline_env(
            tmp_path / f"process{k}",
            CROWDWATCH_SOURCE="kafka",
            CROWDWATCH_KAFKA_BROKERS=kafka,
            CROWDWATCH_KAFKA_TOPIC_PREFIX=prefix,
            CROWDWATCH_SOURCE_UNTIL_DRAINED="1",
            CROWDWATCH_SOURCE_PARTITION_COUNT="2",
            CROWDWATCH_SOURCE_PARTITIONS=str(k),
        )
        for k in (0, 1)
    ]
    for env in envs:
        crowdwatch("db", "migrate", env=env)
    runs = [start_run("gate_flow", env, tmp_path / f"run{k}.log") for k, env in enumerate(envs)]
    assert [r.wait(timeout=300) for r in runs] == [0, 0]
    each = [query(by_station, env) for env in envs]

    whole = kafka_settings(engine_dir, "kafka_one_process", kafka, prefix)
    with Warehouse.connect(whole.dsn(), whole.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(gate_flow.build(whole))
        one = warehouse.query(by_station)

    expected = {s: stations.count(s) for s in ("CTR", "NPK", "RVS")}
    assert dict(one.rows()) == expected
    for k, got in enumerate(each):
        assert set(got["station"]) == {s for s in expected if station_partition(s, 2) == k}
    together = pl.concat(each).sort("station")
    assert together.rows() == one.rows()


def test_cut_connections_mid_stream_keep_the_counts_exact(
    kafka: str, prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    topic, lines, _, stations = one_partition_feed(kafka, prefix, 20_000, every=4000)
    publish(kafka, topic, lines, keys=stations, partitions=[0] * len(lines))
    proxy = KafkaProxy(kafka)
    try:
        settings = kafka_settings(engine_dir, "kafka_cut", proxy.brokers, prefix, batch_rows=200)
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            with cutting(proxy, every_s=0.5, times=4) as dropped:
                run_main(gate_flow.build(settings))
            totals = warehouse.query(TOTALS_SQL)
            rejects = warehouse.query(REJECTED_SQL)
    finally:
        proxy.close()
    # connections were open and were cut while the run read, and the client came back
    assert sum(dropped) >= 2 and proxy.accepted > len(proxy.proxies)
    with file_replay(engine_dir, "kafka_cut_file", tmp_path, lines) as replayed:
        assert totals.equals(replayed.query(TOTALS_SQL))
    assert totals["entries"].sum() + totals["exits"].sum() == 20_000
    assert rejects.height == len(BAD)


def test_the_mock_cluster_keeps_a_compressed_day(kafka: str, prefix: str) -> None:
    if REAL_BROKER:
        pytest.skip("a check of the mock cluster's retention")
    topic = topic_name(prefix, "passage")
    lines = passages(250_000, step_s=0.1)
    publish(kafka, topic, lines, partitions=[0] * len(lines))
    assert watermarks(kafka, topic) == (0, len(lines))


def test_publish_command_keys_and_partitions_by_station(
    kafka: str, prefix: str, tmp_path: Path
) -> None:
    topic = topic_name(prefix, "passage")
    create_topic(kafka, topic, 2)
    path = tmp_path / "passages.jsonl"
    lines = passages(900, gates=("RVS-G01", "CTR-G03", "NPK-G02"))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    env = pipeline_env(tmp_path, CROWDWATCH_KAFKA_TOPIC_PREFIX=prefix)
    done = crowdwatch(
        "publish", "kafka", str(path), "--brokers", kafka, "--partitions", "2", env=env
    )
    assert f"published 900 passage records of {path} to Kafka topic {topic}" in " ".join(
        done.stdout.split()
    )
    stations, parts = keyed(lines, 2)
    for k in (0, 1):
        assert watermarks(kafka, topic, k) == (0, parts.count(k))
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "cwtest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = consumer.consume(parts.count(0), 10)
    finally:
        consumer.close()
    mine = [(s, line) for s, line, p in zip(stations, lines, parts, strict=True) if p == 0]
    assert [(m.key().decode(), m.value().decode()) for m in got] == mine
