"""MQTT source against the real Mosquitto at 127.0.0.1:1883, through the real pipelines.

Every test uses topics and session ids of its own and ends its sessions afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main

from crowdwatch.batches import FIELDS
from crowdwatch.settings import Settings
from crowdwatch.sources.mqtt import (
    Broker,
    MqttRecordSource,
    publish,
    session_id,
    subscribe_sessions,
    topic_name,
)
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
    in_thread,
    paced,
    passages,
    pipeline_env,
    query,
    run_killed,
    with_bad,
)

URL = "mqtt://127.0.0.1:1883"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A topic prefix and client id of this test's own; its sessions are ended afterwards."""
    name = f"cwtest-{uuid.uuid4().hex[:12]}"
    yield name
    broker = Broker.from_url(URL)
    for kind in FIELDS:
        client = broker.client(session_id(name, topic_name(name, kind)))
        client.connect(broker.host, broker.port, clean_start=True)  # a clean start ends it
        client.disconnect()


def mqtt_settings(engine_dir: Path, database: str, prefix: str, **more: Any) -> Settings:
    return broker_settings(
        engine_dir,
        database,
        source="mqtt",
        mqtt_url=more.pop("url", URL),
        mqtt_topic_prefix=prefix,
        mqtt_client_id=prefix,
        **more,
    )


def feeder(prefix: str, lines: list[str], data_dir: Path) -> Any:
    """Publish ``lines`` to the passage topic, paced by the pipeline's spool under data_dir."""
    topic = topic_name(prefix, "passage")
    folder = data_dir / "spool" / "mqtt" / session_id(prefix, topic)
    subscribe_sessions(URL, [(session_id(prefix, topic), topic)])
    return lambda: paced(
        lambda part: publish(URL, [topic] * len(part), part, f"{prefix}-pub"), lines, folder
    )


def test_an_unreachable_broker_is_named(tmp_path: Path) -> None:
    source = MqttRecordSource(
        "mqtt://127.0.0.1:1",
        {"t/passage": "passage"},
        client_id="cwtest",
        spool_dir=tmp_path,
        spool_max_bytes=1 << 20,
    )
    with pytest.raises(BrokerError, match=r"cannot reach the MQTT broker at mqtt://127\.0\.0\.1:1"):
        source.build_part("records", "t/passage", None)
    with pytest.raises(BrokerError, match="expected mqtt://"):
        Broker.from_url("http://127.0.0.1:1883")


def test_published_records_equal_the_file_replay_and_rejects_keep_their_positions(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, bad_at = with_bad(passages(4000), every=700)
    settings = mqtt_settings(engine_dir, "mqtt_gate", prefix, data_dir=tmp_path)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        with in_thread(feeder(prefix, lines, tmp_path)):
            run_main(gate_flow.build(settings))
        totals = warehouse.query(TOTALS_SQL)
        rejected = warehouse.query(REJECTED_SQL)
    with file_replay(engine_dir, "mqtt_gate_file", tmp_path, lines) as replayed:
        assert totals.equals(replayed.query(TOTALS_SQL))
    assert totals["entries"].sum() + totals["exits"].sum() == 4000
    topic = topic_name(prefix, "passage")
    assert rejected["source"].unique().to_list() == [f"mqtt:{topic}"]
    # a record's position is its place in the spool: here, in the order published
    assert sorted(rejected["position"]) == sorted(f"row {i}" for i in bad_at)
    assert len(rejected) == len(BAD)


def test_killed_twice_mid_stream_the_counts_are_exact(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, _ = with_bad(passages(12_000, step_s=0.7), every=2500)
    data = tmp_path / "killed"
    env = pipeline_env(
        data,
        CROWDWATCH_SOURCE="mqtt",
        CROWDWATCH_MQTT_URL=URL,
        CROWDWATCH_MQTT_TOPIC_PREFIX=prefix,
        CROWDWATCH_MQTT_CLIENT_ID=prefix,
        CROWDWATCH_SOURCE_UNTIL_DRAINED="1",
        CROWDWATCH_SOURCE_DRAIN_IDLE_S="5",
        CROWDWATCH_BATCH_ROWS="300",
        CROWDWATCH_RECOVERY_DIR=str(data / "recovery"),
        CROWDWATCH_SNAPSHOT_INTERVAL_S="0.2",
    )
    crowdwatch("db", "migrate", env=env)
    log = tmp_path / "run.log"
    with in_thread(feeder(prefix, lines, data)):
        at, done = run_killed(env, topic_name(prefix, "passage"), (2500, 7000), log)
    assert done.wait(timeout=300) == 0, log.read_text()
    assert 2500 <= at[0] < at[1] < len(lines)

    with file_replay(engine_dir, "mqtt_killed_file", tmp_path, lines) as replayed:
        expected = replayed.query(TOTALS_SQL)
    got = query(TOTALS_SQL, env)
    assert got.rows() == expected.rows()
    assert query(REJECTED_SQL, env).height == len(BAD)


def test_cut_connections_mid_stream_keep_the_counts_exact(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, bad_at = with_bad(passages(8000), every=1500)
    proxy = TcpProxy(("127.0.0.1", 1883))
    settings = mqtt_settings(
        engine_dir, "mqtt_cut", prefix, data_dir=tmp_path, url=f"mqtt://127.0.0.1:{proxy.port}"
    )
    try:
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            with in_thread(feeder(prefix, lines, tmp_path)), cutting(proxy, 0.8, 3) as dropped:
                run_main(gate_flow.build(settings))
            totals = warehouse.query(TOTALS_SQL)
            rejected = warehouse.query(REJECTED_SQL)
    finally:
        proxy.close()
    assert sum(dropped) >= 2 and proxy.accepted >= 3  # cut while connected; it came back
    with file_replay(engine_dir, "mqtt_cut_file", tmp_path, lines) as replayed:
        assert totals.equals(replayed.query(TOTALS_SQL))
    assert totals["entries"].sum() + totals["exits"].sum() == 8000
    assert len(rejected) == len(bad_at) == len(BAD)


def test_camera_messages_and_deepstream_payloads_on_their_topics(
    prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    lines, deepstream, expected = camera_feed()
    video, minimal = topic_name(prefix, "video"), topic_name(prefix, "deepstream_minimal")
    subscribe_sessions(URL, [(session_id(prefix, t), t) for t in (video, minimal)])
    publish(URL, [video] * len(lines), lines, f"{prefix}-pub")
    # as DeepStream's MQTT adapter sends it: to the topic its nvmsgbroker `topic` names
    publish(URL, [minimal], [deepstream], f"{prefix}-pub")
    settings = mqtt_settings(engine_dir, "mqtt_video", prefix, data_dir=tmp_path, batch_rows=50)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(video_headcount.build(settings))
        stored = warehouse.query(VIDEO_SQL)
        rejected = warehouse.query(REJECTED_SQL)
    assert stored.rows() == expected
    assert rejected.select("source", "position").rows() == [(f"mqtt:{video}", "row 50")]
