"""Kafka source: offsets as positions here; end to end against a broker named by the environment.

The end-to-end tests run when ``CROWDWATCH_TEST_KAFKA_BROKERS`` (``host:port,…``) points at a
Kafka broker that allows creating topics; each test creates topics of its own and deletes them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from crowdwatch.settings import Settings
from crowdwatch.sources.kafka import KafkaRecordSource, _BatchPartition, offset_runs, topic_name
from crowdwatch.sources.redis_streams import BrokerError
from crowdwatch.warehouse.client import Warehouse
from pipelines import gate_flow
from tests.conftest import EXAMPLE_SITE

BROKERS = os.environ.get("CROWDWATCH_TEST_KAFKA_BROKERS", "")
needs_kafka = pytest.mark.skipif(
    not BROKERS, reason="no Kafka broker: set CROWDWATCH_TEST_KAFKA_BROKERS=host:port to run"
)
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
TOTALS_SQL = (
    "SELECT zone_id, toInt64(sum(entries)) AS entries, toInt64(sum(exits)) AS exits "
    "FROM zone_metrics FINAL WHERE scope = 'zone' GROUP BY zone_id ORDER BY zone_id"
)


def message(offset: int) -> KafkaSourceMessage[bytes | None, bytes | None]:
    return KafkaSourceMessage(key=None, value=b"{}", offset=offset)


def test_batches_never_span_a_gap_in_the_offsets() -> None:
    runs = offset_runs([message(o) for o in (5, 6, 7, 9, 10, 12)])
    assert runs == [(0, 3), (3, 5), (5, 6)]
    assert offset_runs([]) == []


class Polls(StatefulSourcePartition[Any, int | None]):
    """Stands in for Bytewax's Kafka partition: hands out fixed polls of messages."""

    def __init__(self, polls: list[list[Any]]) -> None:
        self.polls = polls

    def next_batch(self) -> list[Any]:
        if not self.polls:
            raise StopIteration
        return self.polls.pop(0)

    def snapshot(self) -> int | None:
        return 42


def test_each_poll_becomes_batches_positioned_at_their_offsets() -> None:
    values = [b'{"a": 1}', None, b"\xff"]
    poll = [
        KafkaSourceMessage(key=b"RVS", value=v, offset=o)
        for v, o in zip(values, (7, 8, 10), strict=True)
    ]
    part = _BatchPartition(Polls([poll]), "passage", "kafka:t:0")
    batches = part.next_batch()
    assert [(b.source, b.kind, b.first_row, b.frame["payload"].to_list()) for b in batches] == [
        ("kafka:t:0", "passage", 7, ['{"a": 1}', ""]),
        ("kafka:t:0", "passage", 10, ["\ufffd"]),
    ]
    assert part.snapshot() == 42
    with pytest.raises(StopIteration):
        part.next_batch()


def test_topics_are_named_per_signal() -> None:
    assert topic_name("crowdwatch", "passage") == "crowdwatch.passage"
    with pytest.raises(ValueError, match="CROWDWATCH_KAFKA_BROKERS"):
        KafkaRecordSource([], {"crowdwatch.passage": "passage"})


@pytest.fixture
def kafka_prefix() -> Iterator[str]:
    from confluent_kafka.admin import AdminClient

    prefix = f"cwtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    admin = AdminClient({"bootstrap.servers": BROKERS})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if topics:
        for future in admin.delete_topics(topics).values():
            future.result()


def create_topic(name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BROKERS})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result()


def produce(topic: str, lines: list[str], partition: int = 0) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": BROKERS})
    for line in lines:
        producer.produce(topic, value=line.encode(), key=b"RVS", partition=partition)
    assert producer.flush(30) == 0


def passages(n: int, gate: str = "RVS-G01") -> list[str]:
    return [
        json.dumps(
            {
                "ts": (T0 + timedelta(seconds=i * 0.5)).isoformat(),
                "gate_id": gate,
                "direction": "out" if i % 3 == 0 else "in",
            }
        )
        for i in range(n)
    ]


@needs_kafka
def test_a_missing_topic_is_named(kafka_prefix: str) -> None:
    source = KafkaRecordSource(BROKERS.split(","), {f"{kafka_prefix}.passage": "passage"})
    with pytest.raises(BrokerError, match="is not available"):
        source.list_parts()


@needs_kafka
def test_passages_from_kafka_land_once_across_a_restart(
    kafka_prefix: str, engine_dir: Path, tmp_path: Path
) -> None:
    topic = topic_name(kafka_prefix, "passage")
    create_topic(topic, 1)
    lines = passages(3000)
    lines.insert(1000, "not json")
    settings = Settings(
        data_dir=engine_dir,
        site_file=EXAMPLE_SITE,
        clickhouse_database="kafka_restart",
        source="kafka",
        kafka_brokers=BROKERS,
        kafka_topic_prefix=kafka_prefix,
        source_until_drained=True,
        batch_rows=500,
    )
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        produce(topic, lines[:1800])
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        produce(topic, lines[1800:])
        run_main(gate_flow.build(settings), recovery_config=RecoveryConfig(recovery))
        totals = warehouse.query(TOTALS_SQL)
        rejected = warehouse.query("SELECT source, position FROM rejected_events FINAL")
    ins = sum(json.loads(line)["direction"] == "in" for line in lines if line != "not json")
    assert totals.rows() == [("RVS-concourse", ins, 3000 - ins)]
    assert rejected.rows() == [(f"kafka:{topic}:0", "row 1000")]
