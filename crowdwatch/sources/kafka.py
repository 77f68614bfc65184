"""Kafka as a source: one topic per signal, read partition by partition as `RawBatch`es.

Topics are named ``<prefix>.<kind>`` (``crowdwatch.passage``, ``crowdwatch.video`` …); a
message's value is one JSON record, its key the station it came from. Records of one station
must land in one Kafka partition: produce to partition ``CRC-32(station_id) mod n``
(`crowdwatch.sources.partition`, as `publish` does). A process can be given a subset of the
partitions; within it, Bytewax spreads them over its workers.

`KafkaRecordSource` reads each partition with its own consumer, ``assign``-ed at an explicit
offset (no consumer group: the resume state is the offset, kept in Bytewax's snapshots), and
turns each poll of up to ``batch_rows`` messages into `RawBatch`es of JSON lines. Each batch's
``first_row`` is the Kafka offset of its first message, and a batch never spans a gap in the
offsets (transaction markers, compaction), so a rejected message is stored under its own offset.

Records deleted by the broker before they were read are an error, not a silent jump: a fresh
start reads from offset 0 and a restart from its snapshot's offset, and when the broker no
longer holds that offset (retention deleted it while the pipeline was behind or stopped) the
read fails naming the records lost. ``skip_deleted`` opts in to going on from the oldest record
kept instead. Connection failures are not errors: librdkafka reconnects and the read resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient

from crowdwatch.batches import RawBatch, RecordKind
from crowdwatch.sources.redis_streams import BrokerError

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 10.0
POLL_S = 0.05
"""How long one poll waits for messages (Bytewax sources must not block for long)."""

TRANSIENT = frozenset(
    {
        RdKafkaError._TRANSPORT,
        RdKafkaError._ALL_BROKERS_DOWN,
        RdKafkaError._RESOLVE,
        RdKafkaError._TIMED_OUT,
        RdKafkaError._MSG_TIMED_OUT,
    }
)
"""Consumer errors librdkafka recovers from by itself (it reconnects and fetches again)."""


def topic_name(prefix: str, kind: RecordKind) -> str:
    """The topic of one signal: ``<prefix>.<kind>``."""
    return f"{prefix}.{kind}"


def _text(value: bytes | str | None) -> str:
    # A payload that is not UTF-8 keeps its readable parts; the parser rejects what is left.
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def offset_runs(offsets: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, end)`` index ranges of ``offsets`` that are consecutive."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(offsets) + 1):
        if i == len(offsets) or offsets[i] != offsets[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def batches_of(
    source: str, kind: RecordKind, offsets: Sequence[int], values: Sequence[bytes | str | None]
) -> list[RawBatch]:
    """One `RawBatch` of JSON lines per run of consecutive offsets, positioned at its first."""
    return [
        RawBatch(
            source,
            kind,
            pl.DataFrame(
                {"payload": [_text(v) for v in values[start:end]]}, schema={"payload": pl.String}
            ),
            offsets[start],
        )
        for start, end in offset_runs(offsets)
    ]


def publish(
    brokers: str,
    topic: str,
    records: Sequence[str],
    *,
    keys: Sequence[str | None] | None = None,
    partitions: Sequence[int] | None = None,
    add_config: Mapping[str, Any] | None = None,
) -> int:
    """Produce JSON records to ``topic``, each keyed by its station and in its partition.

    ``keys[i]`` is record i's key (its station), ``partitions[i]`` its partition (None: the
    client's partitioner). Batches are compressed (zstd), the producer is idempotent, and every
    record is acknowledged by the broker before this returns. Returns how many were produced.

    Raises:
        BrokerError: a record could not be delivered, with the broker's reason.
    """
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "compression.type": "zstd",
            "linger.ms": 20,
            "enable.idempotence": True,
            **(add_config or {}),
        }
    )
    failures: list[str] = []

    def delivered(error: RdKafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    for i, record in enumerate(records):
        key = None if keys is None or keys[i] is None else str(keys[i]).encode()
        partition = -1 if partitions is None else partitions[i]  # -1: the partitioner's
        while True:
            try:
                producer.produce(
                    topic, record.encode(), key, partition=partition, on_delivery=delivered
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if failures or left:
        reason = failures[0] if failures else f"{left} still queued after 60 s"
        raise BrokerError(
            f"cannot produce to Kafka topic {topic!r} at {brokers}: "
            f"{len(failures) + left} of {len(records)} records not delivered ({reason})"
        )
    return len(records)


@dataclass(frozen=True)
class _Options:
    brokers: str
    batch_rows: int
    until_drained: bool
    skip_deleted: bool
    add_config: Mapping[str, str]


class _KafkaPartition(StatefulSourcePartition[RawBatch, int]):
    """One Kafka partition; its resume state is the offset of the next message to read."""

    def __init__(
        self, topic: str, index: int, kind: RecordKind, start: int | None, options: _Options
    ) -> None:
        self.topic = topic
        self.index = index
        self.kind = kind
        self.source = f"kafka:{topic}:{index}"
        self.options = options
        self.eof = False
        # Read from offset 0, not "the beginning": records deleted before a first read must
        # show up as an out-of-range offset rather than as a silently later beginning.
        self.next_offset = start if start is not None else 0
        begin = OFFSET_BEGINNING if start is None and options.skip_deleted else self.next_offset
        self.consumer = Consumer(
            {
                "bootstrap.servers": options.brokers,
                "group.id": "crowdwatch",  # required by the client; offsets are never committed
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": options.until_drained,
                "auto.offset.reset": "earliest" if options.skip_deleted else "error",
                **options.add_config,
            }
        )
        self.consumer.assign([TopicPartition(topic, index, begin)])

    def _deleted(self) -> BrokerError:
        kept = ""
        try:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, self.index), timeout=LIST_TIMEOUT_S
            )
            kept = f" (the broker keeps offsets {low:,}…{high - 1:,})"
        except KafkaException:
            pass
        return BrokerError(
            f"{self.source}: the records from offset {self.next_offset:,} on were deleted by "
            f"the broker before they were read{kept}, probably by its retention; raise the "
            "topic's retention, or set CROWDWATCH_KAFKA_SKIP_DELETED=true to go on from the "
            "oldest record kept and lose them"
        )

    def _check(self, error: RdKafkaError) -> None:
        code = error.code()
        if code == RdKafkaError._AUTO_OFFSET_RESET or code == RdKafkaError.OFFSET_OUT_OF_RANGE:
            raise self._deleted()
        if code in TRANSIENT and not error.fatal():
            log.info("%s: %s (the client reconnects)", self.source, error.str())
            return
        raise BrokerError(f"cannot read {self.source} at {self.options.brokers}: {error.str()}")

    def next_batch(self) -> list[RawBatch]:
        if self.eof:
            raise StopIteration
        offsets: list[int] = []
        values: list[bytes | str | None] = []
        messages: list[Message] = self.consumer.consume(self.options.batch_rows, POLL_S)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == RdKafkaError._PARTITION_EOF:
                    self.eof = True
                    continue
                self._check(error)
                continue
            offset = message.offset()
            if offset is None:  # pragma: no cover - a message without error has an offset
                continue
            if not offsets and offset > self.next_offset and self.options.skip_deleted:
                log.warning(
                    "%s: offsets %d…%d were deleted before they were read; skipped them",
                    self.source,
                    self.next_offset,
                    offset - 1,
                )
            offsets.append(offset)
            values.append(message.value())
        if offsets:
            self.next_offset = offsets[-1] + 1
        return batches_of(self.source, self.kind, offsets, values)

    def snapshot(self) -> int:
        return self.next_offset

    def close(self) -> None:
        self.consumer.close()


class KafkaRecordSource(FixedPartitionedSource[RawBatch, int]):
    """Read Kafka topics as `RawBatch` micro-batches, one Bytewax partition per Kafka partition.

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        topics: topic → the kind of record it carries.
        partitions: the Kafka partition numbers this process reads; None: all of them.
        batch_rows: messages per poll at most.
        until_drained: stop each partition at its end (replays and tests); otherwise tail it.
        skip_deleted: when records were deleted before they were read, go on from the oldest
            kept (losing them) instead of failing.
        add_config: more librdkafka settings (security, timeouts …).
    """

    def __init__(
        self,
        brokers: Sequence[str],
        topics: Mapping[str, RecordKind],
        *,
        partitions: Iterable[int] | None = None,
        batch_rows: int = 10_000,
        until_drained: bool = False,
        skip_deleted: bool = False,
        add_config: Mapping[str, str] | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("no Kafka brokers given: set CROWDWATCH_KAFKA_BROKERS=host:port,…")
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self.brokers = list(brokers)
        self.topics = dict(topics)
        self.partitions = None if partitions is None else set(partitions)
        self.options = _Options(
            ",".join(self.brokers), batch_rows, until_drained, skip_deleted, dict(add_config or {})
        )

    def list_parts(self) -> list[str]:
        """``<partition>-<topic>`` of every chosen partition.

        Raises:
            BrokerError: the brokers do not answer, or a topic does not exist.
        """
        config: dict[str, Any] = {"bootstrap.servers": self.options.brokers}
        client = AdminClient({**config, **self.options.add_config})
        parts = []
        for topic in self.topics:
            try:
                metadata = client.list_topics(topic, timeout=LIST_TIMEOUT_S)
            except KafkaException as exc:
                raise BrokerError(
                    f"cannot list Kafka topic {topic!r} at {self.options.brokers}: {exc}; "
                    "check CROWDWATCH_KAFKA_BROKERS"
                ) from exc
            found = metadata.topics.get(topic)
            error = None if found is None else found.error
            if found is None or error is not None:
                raise BrokerError(
                    f"Kafka topic {topic!r} is not available at {self.options.brokers}"
                    + (f": {error.str()}" if error is not None else "")
                    + "; create it (one per signal) or check CROWDWATCH_KAFKA_TOPIC_PREFIX"
                )
            parts += [
                f"{i}-{topic}"
                for i in sorted(found.partitions)
                if self.partitions is None or i in self.partitions
            ]
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        """Resume a partition at the offset after the last message delivered."""
        index, topic = for_part.split("-", 1)
        if resume_state is not None and resume_state < 0:
            resume_state = None  # a logical offset (the beginning) from an older snapshot
        return _KafkaPartition(topic, int(index), self.topics[topic], resume_state, self.options)
