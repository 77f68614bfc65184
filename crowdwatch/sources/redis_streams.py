"""Redis Streams as a source: one stream per signal and partition, read as `RawBatch` micro-batches.

Streams are named ``<prefix>:<kind>`` (``crowdwatch:passage``, ``crowdwatch:video``,
``crowdwatch:call`` …), or ``<prefix>:<kind>:<k>`` when records are split into ``n``
partitions by station (``k = CRC-32(station_id) mod n``, as `crowdwatch.sources.partition`
computes it).
Every stateful step is keyed by station, so a process given a subset of the partitions owns whole
stations and needs nothing from the others; within a process, Bytewax spreads the streams over
its workers. One stream is one Bytewax partition: it is read in order by one worker.

`RedisStreamSource` reads each stream with ``XREAD COUNT batch_rows`` (never blocking: Bytewax
sources must not block, so an empty read waits ``idle_s`` through ``next_awake``) and emits one
`RawBatch` of JSON lines (a ``payload`` column) per read; the parsers validate them and reject
bad ones, as they do for a JSON lines file. An entry's JSON is its first field among
``payload`` (ours), ``metadata`` (the DeepStream Redis adapter's default ``payloadkey``) and
``value`` (NVIDIA's Metropolis services); an entry with none of them is taken as flat
field/value pairs (``XADD s * ts … gate_id … direction in``), i.e. string fields.

Positions: a rejected row is stored under ``row N``, N being the entry's ordinal in its stream
(how many entries were ever added before it: Redis 7's ``entries-added`` counter, less the
stream's length, gives the first entry's, and each read counts on from there; before Redis 7.0
the first entry present is 0). Stream ids are not dense, and rows of a batch are numbered
``first_row + i``, so the ordinal is the position that stays the same whichever batch an entry
arrives in. It assumes entries are only ever trimmed from the front (``MAXLEN``/``MINID``),
never ``XDEL``-ed from the middle, and that a reader keeps ahead of the trimming.

The resume state is a `StreamCursor`, the id of the last entry delivered and the ordinal of the
next, so a dataflow restarted with Bytewax recovery reads on exactly after the last snapshot.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import polars as pl
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from crowdwatch.batches import RawBatch, RecordKind
from crowdwatch.warehouse.client import describe_dsn

PAYLOAD_FIELDS = ("payload", "metadata", "value")
"""Entry fields that hold a record's JSON, first found wins."""

PUBLISH_CHUNK = 10_000
IDLE_S = 0.05
START_ID = "0-0"


class BrokerError(RuntimeError):
    """A broker (Redis, Kafka) cannot be reached or holds something unexpected."""


def stream_key(prefix: str, kind: RecordKind, partition: int | None = None) -> str:
    """The stream of one signal: ``<prefix>:<kind>``, or ``<prefix>:<kind>:<k>`` for partition k."""
    return f"{prefix}:{kind}" if partition is None else f"{prefix}:{kind}:{partition}"


def partition_streams(
    prefix: str, kinds: Iterable[RecordKind], count: int, partitions: Iterable[int] | None = None
) -> list[RedisStream]:
    """The streams a process reads: every kind × its partitions (all of ``0 … count-1`` if None).

    Raises:
        ValueError: a partition outside ``0 … count-1``.
    """
    chosen = list(range(count)) if partitions is None else sorted(set(partitions))
    wrong = [p for p in chosen if not 0 <= p < count]
    if wrong:
        raise ValueError(
            f"source partitions {wrong} are outside 0…{count - 1} "
            f"(CROWDWATCH_SOURCE_PARTITION_COUNT is {count})"
        )
    return [
        RedisStream(stream_key(prefix, kind, None if count == 1 else p), kind)
        for kind in kinds
        for p in chosen
    ]


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that has answered a PING.

    Raises:
        BrokerError: Redis is not reachable there, with what to check.
    """
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        raise BrokerError(
            f"cannot reach Redis at {describe_dsn(url)}: {exc}; start Redis there or set "
            "CROWDWATCH_REDIS_URL (redis://[user:password@]host:port/db)"
        ) from exc
    except ValueError as exc:
        raise BrokerError(
            f"bad Redis URL {describe_dsn(url)!r}: {exc}; expected redis://host:port/db"
        ) from exc
    return client


def _text(value: bytes | str) -> str:
    # A payload that is not UTF-8 keeps its readable parts; the parser rejects what is left.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def entry_payload(
    fields: Mapping[Any, Any] | Sequence[Any], payload_fields: Sequence[str] = PAYLOAD_FIELDS
) -> str:
    """The record of one stream entry as a JSON line.

    ``fields`` is a mapping, or the flat ``[field, value, …]`` list Redis sends. The first of
    ``payload_fields`` present is the record; otherwise the entry's field/value pairs are the
    record, as a JSON object of strings.
    """
    if not isinstance(fields, Mapping):
        if len(fields) == 2 and _text(fields[0]) == payload_fields[0]:
            return _text(fields[1])  # the common case, quickly
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    named = {_text(k): v for k, v in fields.items()}
    for name in payload_fields:
        if name in named:
            return _text(named[name])
    return json.dumps({k: _text(v) for k, v in named.items()}, ensure_ascii=False)


_PUBLISH_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  if ARGV[4] ~= '' then
    return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*',
                      'payload', ARGV[1], 'mid', ARGV[2])
  end
  return redis.call('XADD', KEYS[1], '*', 'payload', ARGV[1], 'mid', ARGV[2])
end
return false
"""
"""Append a record unless its message id was appended within the dedup window (atomic)."""


def publish(
    client: redis.Redis,
    stream: str,
    records: Iterable[str | Mapping[str, Any]],
    *,
    maxlen: int | None = None,
    message_ids: Sequence[str] | None = None,
    dedup_s: int = 24 * 3600,
) -> list[str]:
    """Append records to a stream with pipelined ``XADD``s, as ``{"payload": json}`` entries.

    Records are JSON text or mappings (encoded here). ``maxlen`` trims the stream to about that
    many entries (``MAXLEN ~``). Returns the new entry ids, in order.

    With ``message_ids`` (one stable id per record, e.g. its file, position and content) the
    append is idempotent: a record whose id was appended to this stream within ``dedup_s``
    seconds is skipped (a Redis key per id, set with the entry in one script), so publishing
    a file twice does not count its records twice. Only the records appended now have ids in
    the result.

    Raises:
        BrokerError: Redis is not reachable or the key holds something other than a stream.
    """
    ids: list[str] = []
    chunk: list[tuple[str, str | None]] = []
    once = client.register_script(_PUBLISH_ONCE) if message_ids is not None else None

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for text, mid in chunk:
            if once is None or mid is None:
                pipe.xadd(stream, {"payload": text}, maxlen=maxlen, approximate=True)
            else:
                once(
                    keys=[stream, f"{stream}:published:{mid}"],
                    args=[text, mid, dedup_s, "" if maxlen is None else maxlen],
                    client=pipe,
                )
        try:
            ids.extend(_text(i) for i in pipe.execute() if i)
        except redis.RedisError as exc:
            raise BrokerError(f"cannot append to Redis stream {stream!r}: {exc}") from exc
        chunk.clear()

    mids: Iterable[str | None] = message_ids if message_ids is not None else itertools.repeat(None)
    for record, mid in zip(records, mids, strict=False):
        text = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)
        chunk.append((text, mid))
        if len(chunk) >= PUBLISH_CHUNK:
            flush()
    if chunk:
        flush()
    return ids


@dataclass(frozen=True)
class RedisStream:
    """One stream to read, and the kind of record it carries."""

    key: str
    kind: RecordKind


@dataclass(frozen=True)
class StreamCursor:
    """Where a stream's reading stands: the last entry delivered and the next entry's ordinal."""

    last_id: str
    next_position: int


Entries = list[tuple[bytes, list[bytes]]]
"""Stream entries as Redis sends them: ``(id, [field, value, …])``."""


def _unparsed(response: Any, **options: Any) -> Any:
    return response


class _StreamPartition(StatefulSourcePartition[RawBatch, StreamCursor]):
    def __init__(
        self,
        client: redis.Redis,
        url: str,
        stream: RedisStream,
        resume: StreamCursor | None,
        options: _Options,
    ) -> None:
        # XREAD replies as sent: redis-py's per-entry dicts cost more than reading the socket
        client.set_response_callback("XREAD", _unparsed)
        self.client = client
        self.url = url
        self.stream = stream
        self.source = f"redis:{stream.key}"
        self.cursor = resume
        self.options = options
        self.awake: datetime | None = None

    def _fail(self, exc: redis.RedisError) -> BrokerError:
        if isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc):
            return BrokerError(
                f"Redis key {self.stream.key!r} at {describe_dsn(self.url)} is not a stream; "
                "use another CROWDWATCH_REDIS_STREAM_PREFIX or remove the key"
            )
        return BrokerError(
            f"cannot read Redis stream {self.stream.key!r} at {describe_dsn(self.url)}: {exc}; "
            "check that Redis is running there (CROWDWATCH_REDIS_URL)"
        )

    def _first_read(self) -> tuple[int, Entries]:
        """The first entries and the ordinal of the first, read at once (MULTI)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xinfo_stream(self.stream.key)
        pipe.xread({self.stream.key: START_ID}, count=self.options.batch_rows)
        info, reply = pipe.execute(raise_on_error=False)
        if isinstance(reply, redis.RedisError):
            raise reply
        if isinstance(info, redis.ResponseError) and "no such key" in str(info).lower():
            return 0, []
        if isinstance(info, redis.RedisError):
            raise info
        # Redis before 7.0 keeps no entries-added: count from the first entry still there
        first = int(info.get("entries-added", info["length"])) - int(info["length"])
        return first, self._entries(reply)

    def _entries(self, reply: Any) -> Entries:
        if not reply:
            return []
        # RESP3: {stream: entries}; RESP2: [[stream, entries]]
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return cast(Entries, entries)

    def next_batch(self) -> list[RawBatch]:
        try:
            if self.cursor is None:
                position, entries = self._first_read()
            else:
                position = self.cursor.next_position
                reply = self.client.xread(
                    {self.stream.key: self.cursor.last_id}, count=self.options.batch_rows
                )
                entries = self._entries(reply)
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
        if not entries:
            if self.options.until_drained:
                raise StopIteration
            self.awake = datetime.now(UTC) + timedelta(seconds=self.options.idle_s)
            if self.cursor is None:
                self.cursor = StreamCursor(START_ID, position)
            return []
        self.awake = None
        fields = self.options.payload_fields
        frame = pl.DataFrame(
            {"payload": [entry_payload(values, fields) for _, values in entries]},
            schema={"payload": pl.String},
        )
        self.cursor = StreamCursor(_text(entries[-1][0]), position + len(entries))
        return [RawBatch(self.source, self.stream.kind, frame, position)]

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> StreamCursor:
        # Before the first read nothing was delivered: resume by reading from the start again.
        return self.cursor if self.cursor is not None else StreamCursor(START_ID, -1)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class _Options:
    batch_rows: int
    until_drained: bool
    idle_s: float
    payload_fields: tuple[str, ...]


class RedisStreamSource(FixedPartitionedSource[RawBatch, StreamCursor]):
    """Read Redis Streams as `RawBatch` micro-batches, one Bytewax partition per stream.

    Args:
        url: ``redis://[user:password@]host:port/db``.
        streams: the streams to read and their record kinds.
        batch_rows: entries per read at most (``XREAD COUNT``).
        until_drained: stop each stream when a read finds nothing new (replays and tests);
            otherwise wait for new entries forever.
        idle_s: how long to wait after an empty read before reading again.
        payload_fields: entry fields that hold the record's JSON, first found wins.
    """

    def __init__(
        self,
        url: str,
        streams: Sequence[RedisStream],
        *,
        batch_rows: int = 10_000,
        until_drained: bool = False,
        idle_s: float = IDLE_S,
        payload_fields: Sequence[str] = PAYLOAD_FIELDS,
    ) -> None:
        keys = [s.key for s in streams]
        if len(set(keys)) != len(keys):
            raise ValueError(f"each stream is read once, got {keys}")
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self.url = url
        self.streams = {s.key: s for s in streams}
        self.options = _Options(batch_rows, until_drained, idle_s, tuple(payload_fields))

    def list_parts(self) -> list[str]:
        """One partition per stream key."""
        return list(self.streams)

    def build_part(
        self, step_id: str, for_part: str, resume_state: StreamCursor | None
    ) -> _StreamPartition:
        """Connect and resume after the last entry delivered (or read from the start)."""
        if resume_state is not None and resume_state.next_position < 0:
            resume_state = None
        client = connect(self.url)
        return _StreamPartition(
            client, self.url, self.streams[for_part], resume_state, self.options
        )
