"""What every pipeline's ``build`` shares: its default source and sink, and the wall clock.

Rows reach the warehouse through `warehouse_output`: each table's rows are held for up to
``settings.sink_hold_s`` of wall-clock time and written in one insert. An embedded warehouse
insert takes 10–20 ms whatever its size, so one insert per table per batch (every 20 ms on a
busy live source) kept the worker writing most of the time and alert decisions waited behind
it (bench/alert_latency.py). Held rows are part of the step's Bytewax snapshot, so a restart
neither loses nor repeats them.

The default source follows ``settings.source``: a recorded file replayed, Redis Streams or Kafka
topics. The same pipeline code runs on all three; only which signals (record kinds) a
broker source subscribes to depends on the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import polars as pl
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from crowdwatch.batches import FIELDS, RawBatch, RecordKind
from crowdwatch.settings import Settings
from crowdwatch.site import Site, load_site
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.warehouse.client import TableRows, WarehouseSink


class PipelineConfigError(ValueError):
    """A pipeline cannot be built from these settings; the message says what to set."""


ALL_KINDS: tuple[RecordKind, ...] = tuple(FIELDS)


def default_source(
    settings: Settings, timezone: str, kinds: tuple[RecordKind, ...] = ALL_KINDS
) -> Source[RawBatch]:
    """The source a pipeline reads when none is passed, as ``settings.source`` says.

    ``file``: ``settings.input_path`` replayed. ``redis``, ``kafka``, ``mqtt``, ``amqp``: one
    stream, topic or queue per signal in ``settings.source_kinds`` (default ``kinds``, the
    pipeline's own) and, with ``source_partition_count`` > 1, only the partitions in
    ``source_partitions``.
    """
    if settings.source == "redis":
        return redis_source(settings, settings.source_kinds or kinds)
    if settings.source == "kafka":
        return kafka_source(settings, settings.source_kinds or kinds)
    if settings.source == "mqtt":
        return mqtt_source(settings, settings.source_kinds or kinds)
    if settings.source == "amqp":
        return amqp_source(settings, settings.source_kinds or kinds)
    if settings.input_path is None:
        raise PipelineConfigError(
            "no input: set CROWDWATCH_INPUT_PATH to a recorded file (CSV, JSONL or Parquet), "
            "or use `crowdwatch replay FILE`"
        )
    spec = ReplayFile(settings.input_path, timezone, settings.batch_rows, settings.replay_speed)
    return FileSource([spec])


def redis_source(settings: Settings, kinds: tuple[RecordKind, ...]) -> Source[RawBatch]:
    """Redis Streams ``<prefix>:<kind>[:<k>]`` of the settings."""
    from crowdwatch.sources.redis_streams import RedisStreamSource, partition_streams

    streams = partition_streams(
        settings.redis_stream_prefix,
        kinds,
        settings.source_partition_count,
        settings.source_partitions,
    )
    return RedisStreamSource(
        settings.redis_url.get_secret_value(),
        streams,
        batch_rows=settings.batch_rows,
        until_drained=settings.source_until_drained,
    )


def kafka_source(settings: Settings, kinds: tuple[RecordKind, ...]) -> Source[RawBatch]:
    """Kafka topics ``<prefix>.<kind>`` of the settings."""
    from crowdwatch.sources.kafka import KafkaRecordSource, topic_name

    brokers = [b.strip() for b in settings.kafka_brokers.split(",") if b.strip()]
    return KafkaRecordSource(
        brokers,
        {topic_name(settings.kafka_topic_prefix, kind): kind for kind in kinds},
        partitions=settings.source_partitions,
        batch_rows=settings.batch_rows,
        until_drained=settings.source_until_drained,
        skip_deleted=settings.kafka_skip_deleted,
    )


def mqtt_source(settings: Settings, kinds: tuple[RecordKind, ...]) -> Source[RawBatch]:
    """MQTT topics ``<prefix>/<kind>[/<k>]``, QoS 1 persistent sessions, spooled under data_dir."""
    from crowdwatch.sources.mqtt import MqttRecordSource, topic_name
    from crowdwatch.sources.partition import chosen_partitions

    parts = chosen_partitions(settings.source_partition_count, settings.source_partitions)
    return MqttRecordSource(
        settings.mqtt_url.get_secret_value(),
        {topic_name(settings.mqtt_topic_prefix, k, p): k for k in kinds for p in parts},
        client_id=settings.mqtt_client_id,
        spool_dir=settings.data_dir / "spool" / "mqtt",
        spool_max_bytes=int(settings.spool_max_mb * 2**20),
        batch_rows=settings.batch_rows,
        until_drained=settings.source_until_drained,
        drain_idle_s=settings.source_drain_idle_s,
    )


def amqp_source(settings: Settings, kinds: tuple[RecordKind, ...]) -> Source[RawBatch]:
    """Durable AMQP queues ``<queue prefix>.<kind>[.<k>]`` bound to the settings' exchange."""
    from crowdwatch.sources.amqp import AmqpRecordSource, routing_key
    from crowdwatch.sources.partition import chosen_partitions

    parts = chosen_partitions(settings.source_partition_count, settings.source_partitions)
    bindings = {
        routing_key(settings.amqp_queue_prefix, k, p): (
            routing_key(settings.amqp_routing_prefix, k, p),
            k,
        )
        for k in kinds
        for p in parts
    }
    return AmqpRecordSource(
        settings.amqp_url.get_secret_value(),
        settings.amqp_exchange,
        bindings,
        spool_dir=settings.data_dir / "spool" / "amqp",
        spool_max_bytes=int(settings.spool_max_mb * 2**20),
        batch_rows=settings.batch_rows,
        until_drained=settings.source_until_drained,
        drain_idle_s=settings.source_drain_idle_s,
    )


def default_sink(settings: Settings) -> WarehouseSink:
    """The warehouse named by the settings' DSN, with its on-disk outage buffer."""
    return WarehouseSink.from_settings(settings)


def now_ms() -> int:
    """The wall clock in epoch milliseconds (UTC)."""
    return time.time_ns() // 1_000_000


HOLD_MAX_ROWS = 100_000
"""A table's held rows are written at once when they reach this many (a fast replay)."""


class HeldRows(StatefulBatchLogic[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]):
    """One table's rows, held from the first one for ``hold_s`` seconds, then one frame.

    Its snapshot is the frames held, so rows held at a snapshot are written after a resume.
    """

    def __init__(self, hold_s: float, frames: list[pl.DataFrame] | None) -> None:
        self.hold = timedelta(seconds=hold_s)
        self.frames = frames or []
        self.due: datetime | None = datetime.now(UTC) + self.hold if self.frames else None

    def _written(self) -> tuple[Iterable[pl.DataFrame], bool]:
        out = [pl.concat(self.frames, how="vertical_relaxed")] if self.frames else []
        return out, StatefulBatchLogic.DISCARD

    def on_batch(self, values: list[pl.DataFrame]) -> tuple[Iterable[pl.DataFrame], bool]:
        """Hold the frames; write them all once there are enough rows or nothing is to wait."""
        self.frames += [frame for frame in values if frame.height]
        if not self.frames:
            return [], StatefulBatchLogic.DISCARD
        if not self.hold or sum(frame.height for frame in self.frames) >= HOLD_MAX_ROWS:
            return self._written()
        self.due = self.due or datetime.now(UTC) + self.hold
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[pl.DataFrame], bool]:
        """The first held row has waited ``hold_s``: write what is held."""
        return self._written()

    def on_eof(self) -> tuple[Iterable[pl.DataFrame], bool]:
        """The input ended: write what is held."""
        return self._written()

    def notify_at(self) -> datetime | None:
        """When the first held row has waited long enough."""
        return self.due

    def snapshot(self) -> list[pl.DataFrame]:
        """The held frames (frames are not changed in place, so the list is copied only)."""
        return list(self.frames)


def warehouse_output(
    rows: Stream[TableRows], sink: Sink[TableRows] | None, settings: Settings
) -> None:
    """Write ``(table, frame)`` rows to ``sink`` (the settings' warehouse), held per table.

    See the module docstring: each table's rows wait up to ``settings.sink_hold_s``.
    """
    hold_s = settings.sink_hold_s
    held = op.stateful_batch("hold_rows", rows, lambda frames: HeldRows(hold_s, frames))
    # (table, frame): at most one per table every hold_s
    op.output("warehouse", held, sink or default_sink(settings))


RowsStep = Callable[[str, Stream[RawBatch], Site, Settings], Stream[TableRows]]
"""A pipeline's steps as one operator: records in, ``(table, frame)`` rows out."""


def one_source_flow(
    name: str,
    steps: RowsStep,
    settings: Settings | None,
    source: Source[RawBatch] | None,
    sink: Sink[TableRows] | None,
    kinds: tuple[RecordKind, ...],
) -> Dataflow:
    """A dataflow that reads one source, runs ``steps`` and writes the rows to the warehouse.

    Settings default to ``Settings()`` from the environment, the source to `default_source`
    reading the signals ``kinds`` (replaying ``settings.input_path`` unless ``settings.source``
    names a broker), the sink to the warehouse of the settings.
    """
    config = settings or Settings()
    site = load_site(config.site_file)
    flow = Dataflow(name)
    raw = op.input("records", flow, source or default_source(config, site.site.timezone, kinds))
    # RawBatch
    rows = steps("steps", raw, site, config)
    # (table, frame)
    warehouse_output(rows, sink, config)
    return flow
