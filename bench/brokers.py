"""Benchmark: records/s into gate_flow per process, from a file and from every broker.

The same simulated gate passages (JSON lines) go through gate_flow into the embedded warehouse,
read from a JSON lines file, Redis Streams (127.0.0.1:6379), Kafka (librdkafka's mock cluster,
in this process), RabbitMQ (127.0.0.1:5672, amq.topic, durable queue) and Mosquitto
(127.0.0.1:1883, QoS 1). Records are published before the timed read, except for MQTT: a
Mosquitto session keeps at most 1000 messages for its subscriber, so they are published while
the pipeline reads (as fast as it takes them) and the figure includes publishing. MQTT and AMQP
records go through the fsynced spool. Each line is ``<broker>: <records/s>``; the last line is
the slowest broker's figure.

    .venv/bin/python bench/brokers.py [--records 50000] [--mqtt-records 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
from bytewax.testing import run_main
from confluent_kafka import Producer

from crowdwatch.settings import DEFAULT_SITE_FILE, Settings
from crowdwatch.sources import amqp, kafka, mqtt, redis_streams
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.sources.spool import count
from crowdwatch.warehouse.client import Warehouse
from pipelines import gate_flow

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
GATES = ("RVS-G01", "CTR-G03", "NPK-G02", "STD-G04")
SUM_SQL = "SELECT toInt64(sum(entries + exits)) AS n FROM zone_metrics FINAL WHERE scope = 'zone'"


def passages(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "ts": (T0 + timedelta(seconds=i * 0.2)).isoformat(),
                "gate_id": GATES[i % len(GATES)],
                "direction": "out" if i % 3 == 0 else "in",
            }
        )
        for i in range(n)
    ]


def timed(
    settings: Settings, n: int, source: object = None, during: Callable[[], None] | None = None
) -> float:
    """Run gate_flow until drained; records/s, after checking every record was counted."""
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        thread = threading.Thread(target=during, daemon=True) if during else None
        start = time.perf_counter()
        if thread:
            thread.start()
        run_main(gate_flow.build(settings, source=source))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
        if thread:
            thread.join()
        got = warehouse.query(SUM_SQL)["n"][0]
    assert got == n, f"{settings.source}: counted {got} of {n}"
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--mqtt-records", type=int, default=20_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()
    lines = passages(args.records)
    name = f"cwbench-{uuid.uuid4().hex[:8]}"
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)

        def settings(source: str, **more: object) -> Settings:
            return Settings(
                data_dir=data,
                site_file=DEFAULT_SITE_FILE,
                clickhouse_database=f"bench_{source}",
                source=source,  # type: ignore[arg-type]
                source_until_drained=True,
                source_drain_idle_s=0.3,  # MQTT, AMQP: the wait for more that ends a drained run
                batch_rows=args.batch_rows,
                **more,  # type: ignore[arg-type]
            )

        path = data / "passages.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        file_source = FileSource([ReplayFile(path, "UTC", args.batch_rows)])
        rates["file"] = timed(settings("file"), args.records, file_source)

        client = redis_streams.connect("redis://127.0.0.1:6379/0")
        redis_streams.publish(client, f"{name}:passage", lines)
        try:
            rates["redis"] = timed(settings("redis", redis_stream_prefix=name), args.records)
        finally:
            client.delete(f"{name}:passage")

        holder = Producer({"test.mock.num.brokers": 1, "log_level": 3})
        brokers = ",".join(
            f"{b.host}:{b.port}" for b in holder.list_topics(timeout=10).brokers.values()
        )
        kafka.publish(brokers, f"{name}.passage", lines, partitions=[0] * len(lines))
        rates["kafka (mock cluster)"] = timed(
            settings("kafka", kafka_brokers=brokers, kafka_topic_prefix=name), args.records
        )

        url = "amqp://guest:guest@127.0.0.1:5672/%2F"
        key = amqp.routing_key(name, "passage")
        amqp.publish(url, "amq.topic", [key] * len(lines), lines, {key: key})
        try:
            rates["amqp (RabbitMQ)"] = timed(
                settings("amqp", amqp_routing_prefix=name, amqp_queue_prefix=name), args.records
            )
        finally:
            connection = pika.BlockingConnection(pika.URLParameters(url))
            connection.channel().queue_delete(key)
            connection.close()

        mqtt_url = "mqtt://127.0.0.1:1883"
        topic = mqtt.topic_name(name, "passage")
        session = mqtt.session_id(name, topic)
        mqtt.subscribe_sessions(mqtt_url, [(session, topic)])
        few = lines[: args.mqtt_records]
        folder = data / "spool" / "mqtt" / session

        def feed() -> None:
            for start in range(0, len(few), 500):  # at most ~1000 waiting in the session
                while not folder.exists() or count(folder) < start:
                    time.sleep(0.005)
                part = few[start : start + 500]
                mqtt.publish(mqtt_url, [topic] * len(part), part, f"{name}-pub")

        try:
            rates["mqtt (Mosquitto, published while read)"] = timed(
                settings("mqtt", mqtt_topic_prefix=name, mqtt_client_id=name),
                len(few),
                during=feed,
            )
        finally:
            broker = mqtt.Broker.from_url(mqtt_url)
            ender = broker.client(session)
            ender.connect(broker.host, broker.port, clean_start=True)
            ender.disconnect()
        del holder

    for broker_name, rate in rates.items():
        print(f"{broker_name}: {rate:,.0f} records/s")
    slowest = min(rates, key=lambda b: rates[b])
    print(f"slowest broker throughput ({slowest.split()[0]}): {rates[slowest]:.0f} records/s")


if __name__ == "__main__":
    main()
