"""Kafka as a source: one topic per signal, read through Bytewax's Kafka connector as `RawBatch`es.

Topics are named ``<prefix>.<kind>`` (``crowdwatch.passage``, ``crowdwatch.video.messages`` …); a
message's value is one JSON record, its key the camera, gate or station it came from. Records of
one station must land in one Kafka partition: produce to partition
``CRC-32(station_id) mod n`` (`crowdwatch.sources.partition`), or key by station and keep one
producer client kind. A process can be given a subset of the partitions; within it, Bytewax
spreads them over its workers.

`KafkaRecordSource` wraps `bytewax.connectors.kafka.KafkaSource` (offsets as resume state,
``assign`` rather than consumer groups, errors raised, consumer-lag metrics) and turns each
poll of up to ``batch_rows`` messages into `RawBatch`es of JSON lines. Each batch's
``first_row`` is the Kafka offset of its first message, and a batch never spans a gap in the
offsets (transaction markers, compaction), so a rejected message is stored under its own offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from crowdwatch.batches import RawBatch, RecordKind
from crowdwatch.sources.redis_streams import BrokerError

LIST_TIMEOUT_S = 10.0

Message = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]


def topic_name(prefix: str, kind: RecordKind) -> str:
    """The topic of one signal: ``<prefix>.<kind>``."""
    return f"{prefix}.{kind}"


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


def offset_runs(messages: Sequence[KafkaSourceMessage[Any, bytes | None]]) -> list[tuple[int, int]]:
    """``(start, end)`` index ranges of ``messages`` whose offsets are consecutive."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(messages) + 1):
        if i == len(messages) or messages[i].offset != (messages[i - 1].offset or 0) + 1:
            runs.append((start, i))
            start = i
    return runs


class _BatchPartition(StatefulSourcePartition[RawBatch, int | None]):
    def __init__(
        self, inner: StatefulSourcePartition[Message, int | None], kind: RecordKind, source: str
    ):
        self.inner = inner
        self.kind = kind
        self.source = source

    def next_batch(self) -> list[RawBatch]:
        messages: list[KafkaSourceMessage[Any, bytes | None]] = []
        for message in self.inner.next_batch():
            if isinstance(message, KafkaError):
                raise BrokerError(f"error consuming {self.source}: {message.err}")
            messages.append(message)
        batches = []
        for start, end in offset_runs(messages):
            run = messages[start:end]
            frame = pl.DataFrame(
                {"payload": [_text(m.value) for m in run]}, schema={"payload": pl.String}
            )
            batches.append(RawBatch(self.source, self.kind, frame, run[0].offset))
        return batches

    def snapshot(self) -> int | None:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class KafkaRecordSource(FixedPartitionedSource[RawBatch, int | None]):
    """Read Kafka topics as `RawBatch` micro-batches, one Bytewax partition per Kafka partition.

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        topics: topic → the kind of record it carries.
        partitions: the Kafka partition numbers this process reads; None: all of them.
        batch_rows: messages per poll at most (Bytewax's ``batch_size``).
        until_drained: stop each partition at its end (replays and tests); otherwise tail it.
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
        add_config: Mapping[str, str] | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("no Kafka brokers given: set CROWDWATCH_KAFKA_BROKERS=host:port,…")
        self.brokers = list(brokers)
        self.topics = dict(topics)
        self.partitions = None if partitions is None else set(partitions)
        self.add_config = dict(add_config or {})
        self.inner = KafkaSource(
            self.brokers,
            list(self.topics),
            tail=not until_drained,
            batch_size=batch_rows,
            add_config=self.add_config,
        )

    def list_parts(self) -> list[str]:
        """``<partition>-<topic>`` of every chosen partition (Bytewax's Kafka part names).

        Raises:
            BrokerError: the brokers do not answer, or a topic does not exist.
        """
        client = AdminClient({"bootstrap.servers": ",".join(self.brokers), **self.add_config})
        parts = []
        for topic in self.topics:
            try:
                metadata = client.list_topics(topic, timeout=LIST_TIMEOUT_S)
            except KafkaException as exc:
                raise BrokerError(
                    f"cannot list Kafka topic {topic!r} at {','.join(self.brokers)}: {exc}; "
                    "check CROWDWATCH_KAFKA_BROKERS"
                ) from exc
            found = metadata.topics.get(topic)
            error = None if found is None else found.error
            if found is None or error is not None:
                raise BrokerError(
                    f"Kafka topic {topic!r} is not available at {','.join(self.brokers)}"
                    + (f": {error.str()}" if error is not None else "")
                    + "; create it (one per signal) or check CROWDWATCH_KAFKA_TOPIC_PREFIX"
                )
            parts += [
                f"{i}-{topic}"
                for i in sorted(found.partitions)
                if self.partitions is None or i in self.partitions
            ]
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition:
        """Resume a partition at the offset after the last message delivered."""
        index, topic = for_part.split("-", 1)
        inner = self.inner.build_part(step_id, for_part, resume_state)
        return _BatchPartition(inner, self.topics[topic], f"kafka:{topic}:{index}")
