"""AMQP 0-9-1 source against the real RabbitMQ at 127.0.0.1:5672, through the real pipelines.

Every test uses routing keys and queues of its own and deletes its queues afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from bytewax.testing import run_main

from crowdwatch.batches import FIELDS
from crowdwatch.settings import Settings
from crowdwatch.sources.amqp import AmqpRecordSource, publish, routing_key
from crowdwatch.sources.redis_streams import BrokerError
from crowdwatch.warehouse.client import Warehouse
from pipelines import gate_flow, video_headcount
from tests.commands import crowdwatch
from tests.crowdwatch.sources.brokers import (
    BAD,
    REJECTED_SQL,
    TOTALS_SQL,
    VIDEO_SQL,
    TcpProxy,
    broker_settings,
    camera_feed,
    cutting,
    file_replay,
    passages,
    pipeline_env,
    query,
    run_killed,
    with_bad,
)

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXCHANGE = "amq.topic"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A routing key and queue prefix of this test's own; its queues are deleted afterwards."""
    name = f"cwtest-{uuid.uuid4().hex[:12]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    for kind in FIELDS:
        channel.queue_delete(routing_key(name, kind))
    connection.close()


def amqp_settings(engine_dir: Path, database: str, prefix: str, **more: Any) -> Settings:
    return broker_settings(
        engine_dir,
        database,
        source="amqp",
        amqp_url=more.pop("url", URL),
        amqp_routing_prefix=prefix,
        amqp_queue_prefix=prefix,
        **more,
    )


def send(prefix: str, lines: list[str]) -> None:
    """Publish to amq.topic with the passage routing key, declaring the pipeline's queue."""
    key = routing_key(prefix, "passage")
    publish(URL, EXCHANGE, [key] * len(lines), lines, {key: key})


def queued(prefix: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        declared = connection.channel().queue_declare(routing_key(prefix, "passage"), passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def test_a_wrong_login_or_exchange_is_named(tmp_path: Path) -> None:
    def source(url: str, exchange: str = EXCHANGE) -> AmqpRecordSource:
        return AmqpRecordSource(
            url, exchange, {"q": ("k", "passage")}, spool_dir=tmp_path, spool_max_bytes=1 << 20
        )

    with pytest.raises(BrokerError, match="refused the login"):
        source("amqp://guest:wrong@127.0.0.1:5672/%2F").build_part("records", "q", None)
    with pytest.raises(BrokerError, match="exchange 'no-such-exchange'"):
        source(URL, "no-such-exchange").build_part("records", "q", None)
    with pytest.raises(BrokerError, match=r"cannot reach the AMQP broker at amqp://127\.0\.0\.1:1"):
        source("amqp://guest:guest@127.0.0.1:1/%2F").build_part("records", "q", None)


def test_published_records_equal_the_file_replay_and_rejects_keep_their_positions(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, bad_at = with_bad(passages(5000), every=900)
    send(prefix, lines)
    settings = amqp_settings(engine_dir, "amqp_gate", prefix, data_dir=tmp_path)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(gate_flow.build(settings))
        totals = warehouse.query(TOTALS_SQL)
        rejected = warehouse.query(REJECTED_SQL)
    with file_replay(engine_dir, "amqp_gate_file", tmp_path, lines) as replayed:
        assert totals.equals(replayed.query(TOTALS_SQL))
    assert totals["entries"].sum() + totals["exits"].sum() == 5000
    assert rejected["source"].unique().to_list() == [f"amqp:{routing_key(prefix, 'passage')}"]
    assert sorted(rejected["position"]) == sorted(f"row {i}" for i in bad_at)
    assert len(rejected) == len(BAD)
    assert queued(prefix) == 0  # every message was acknowledged


def test_killed_twice_mid_stream_the_counts_are_exact(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, _ = with_bad(passages(30_000, step_s=0.3), every=6000)
    send(prefix, lines)
    data = tmp_path / "killed"
    env = pipeline_env(
        data,
        CROWDWATCH_SOURCE="amqp",
        CROWDWATCH_AMQP_URL=URL,
        CROWDWATCH_AMQP_ROUTING_PREFIX=prefix,
        CROWDWATCH_AMQP_QUEUE_PREFIX=prefix,
        CROWDWATCH_SOURCE_UNTIL_DRAINED="1",
        CROWDWATCH_SOURCE_DRAIN_IDLE_S="3",
        CROWDWATCH_BATCH_ROWS="500",
        CROWDWATCH_RECOVERY_DIR=str(data / "recovery"),
        CROWDWATCH_SNAPSHOT_INTERVAL_S="0.2",
    )
    crowdwatch("db", "migrate", env=env)
    log = tmp_path / "run.log"
    at, done = run_killed(env, routing_key(prefix, "passage"), (5000, 18_000), log)
    assert done.wait(timeout=300) == 0, log.read_text()
    assert 5000 <= at[0] < at[1] < len(lines)

    with file_replay(engine_dir, "amqp_killed_file", tmp_path, lines) as replayed:
        expected = replayed.query(TOTALS_SQL)
    assert query(TOTALS_SQL, env).rows() == expected.rows()
    assert query(REJECTED_SQL, env).height == len(BAD)
    assert queued(prefix) == 0


def test_cut_connections_mid_stream_keep_the_counts_exact(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, bad_at = with_bad(passages(20_000), every=4000)
    send(prefix, lines)
    proxy = TcpProxy(("127.0.0.1", 5672))
    settings = amqp_settings(
        engine_dir,
        "amqp_cut",
        prefix,
        data_dir=tmp_path,
        url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
        batch_rows=200,
    )
    try:
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            with cutting(proxy, 0.5, 3) as dropped:
                run_main(gate_flow.build(settings))
            totals = warehouse.query(TOTALS_SQL)
            rejected = warehouse.query(REJECTED_SQL)
    finally:
        proxy.close()
    assert sum(dropped) >= 2 and proxy.accepted >= 3  # cut while connected; it came back
    with file_replay(engine_dir, "amqp_cut_file", tmp_path, lines) as replayed:
        assert totals.equals(replayed.query(TOTALS_SQL))
    assert totals["entries"].sum() + totals["exits"].sum() == 20_000
    assert len(rejected) == len(bad_at) == len(BAD)
    assert queued(prefix) == 0


def test_camera_messages_and_deepstream_payloads_on_deepstreams_exchange(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, deepstream, expected = camera_feed()
    video, minimal = routing_key(prefix, "video"), routing_key(prefix, "deepstream_minimal")
    publish(URL, EXCHANGE, [video] * len(lines), lines, {video: video})
    # as DeepStream's AMQP adapter sends it: amq.topic, its `topic` as the routing key
    publish(URL, EXCHANGE, [minimal], [deepstream], {minimal: minimal})
    settings = amqp_settings(engine_dir, "amqp_video", prefix, data_dir=tmp_path, batch_rows=50)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(video_headcount.build(settings))
        stored = warehouse.query(VIDEO_SQL)
        rejected = warehouse.query(REJECTED_SQL)
    assert stored.rows() == expected
    assert rejected.select("source", "position").rows() == [(f"amqp:{video}", "row 50")]
