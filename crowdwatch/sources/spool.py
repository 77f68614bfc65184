"""A local, fsynced log between a broker that forgets (MQTT, AMQP) and the pipeline.

MQTT and AMQP hand a message over once: when the client acknowledges it, the broker deletes it.
Acknowledging only after the pipeline has *snapshotted* the record would hold thousands of
messages unacknowledged for a snapshot interval and tie the broker's redelivery to Bytewax's
epochs. Instead a receiver appends each batch of messages to this spool, ``fsync``s it, and only
then acknowledges them; the pipeline reads the spool by ordinal (a record's position, stored
with rejects) and Bytewax snapshots that ordinal. After a crash a run resumes at its
snapshot's ordinal: records acknowledged since are still in the spool, records not yet
acknowledged are redelivered by the broker.

The spool is bounded. Segments are deleted once every record in them is older than the
position of the snapshot two snapshots back (the last one may not have been committed when the
process died); when the spool holds ``max_bytes``, the receiver stops acknowledging and the
broker keeps the messages. A crash between the ``fsync`` and the acknowledgement makes the
broker send the last messages again (flagged as redelivered): the spool remembers the keys of
its most recent records so that such a copy is dropped, not counted twice.

Records are framed ``>II`` (key length, payload length), key, payload, in segment files named by
the ordinal of their first record. A record torn by a crash (never acknowledged, so sent again)
is cut off when the spool is opened.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from crowdwatch.batches import RawBatch, RecordKind
from crowdwatch.sources.redis_streams import BrokerError

HEADER = struct.Struct(">II")
SEGMENT_BYTES = 8 << 20
SUFFIX = ".spool"
IDLE_S = 0.02
KEEP_SNAPSHOTS = 3
"""Segments are kept back to the third newest snapshot (the newest may not be committed)."""


@dataclass(frozen=True)
class SpoolCursor:
    """Where reading stands: the ordinal of the next record, its segment and byte offset."""

    ordinal: int
    segment: int
    offset: int


def _read_from(path: Path, offset: int) -> bytes:
    """The bytes of a segment from ``offset``, at least one whole record if there is one."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(SEGMENT_BYTES)
        if len(data) >= HEADER.size:
            key_len, size = HEADER.unpack_from(data)
            whole = HEADER.size + key_len + size
            if whole > len(data):  # one record larger than a read
                data += f.read(whole - len(data))
    return data


def _segment_name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def _scan(path: Path) -> tuple[int, int, list[bytes]]:
    """Complete records in a segment: their count, the bytes they take, and their keys."""
    data = path.read_bytes()
    pos = count = 0
    keys: list[bytes] = []
    while pos + HEADER.size <= len(data):
        key_len, size = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + key_len + size
        if end > len(data):
            break
        keys.append(data[pos + HEADER.size : pos + HEADER.size + key_len])
        pos = end
        count += 1
    return count, pos, keys


class Spool:
    """An append-only log of ``(key, payload)`` records in ``folder``, safe on disk when appended.

    One writer (the broker receiver) and one reader (the Bytewax partition) may use it from two
    threads of one process.

    Args:
        folder: created if missing; a spool left by an earlier run is opened and read on.
        max_bytes: `full` is true beyond this many bytes on disk.
        recent: how many of the newest records' keys `seen` remembers.
    """

    def __init__(self, folder: Path, max_bytes: int, recent: int = 4096) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._recent: deque[bytes] = deque(maxlen=recent)
        self._recent_set: dict[bytes, int] = {}
        segments = self._segments()
        if not segments:
            segments = [0]
            (folder / _segment_name(0)).touch()
        last = folder / _segment_name(segments[-1])
        count, size, keys = _scan(last)
        with last.open("r+b") as f:  # cut a record torn by a crash: it was never acknowledged
            f.truncate(size)
        for key in keys[-recent:]:
            self._remember(key)
        self._first = segments[0]
        self._segment = segments[-1]
        self.end = segments[-1] + count
        self._file = last.open("ab")
        self._size = sum((folder / _segment_name(s)).stat().st_size for s in segments)
        self._trimmed: deque[int] = deque(maxlen=KEEP_SNAPSHOTS)

    def _segments(self) -> list[int]:
        return sorted(int(p.name.removesuffix(SUFFIX)) for p in self.folder.glob(f"*{SUFFIX}"))

    def _remember(self, key: bytes) -> None:
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            if self._recent_set.get(old, 0) <= 1:
                self._recent_set.pop(old, None)
            else:
                self._recent_set[old] -= 1
        self._recent.append(key)
        self._recent_set[key] = self._recent_set.get(key, 0) + 1

    def seen(self, key: bytes) -> bool:
        """Whether one of the newest records has this key (a redelivered copy of it)."""
        with self._lock:
            return key in self._recent_set

    @property
    def full(self) -> bool:
        """True when the spool holds ``max_bytes`` or more: stop acknowledging."""
        with self._lock:
            return self._size >= self.max_bytes

    @property
    def start(self) -> SpoolCursor:
        """The oldest record still kept."""
        with self._lock:
            return SpoolCursor(self._first, self._first, 0)

    def append(self, records: Sequence[tuple[bytes, bytes]]) -> int:
        """Write records, flush and ``fsync`` them; then they may be acknowledged.

        Returns the ordinal after the last record.
        """
        if not records:
            return self.end
        if self._file.tell() >= SEGMENT_BYTES:
            self._file.close()
            self._segment = self.end
            self._file = (self.folder / _segment_name(self._segment)).open("ab")
        chunk = b"".join(HEADER.pack(len(k), len(v)) + k + v for k, v in records)
        self._file.write(chunk)
        self._file.flush()
        os.fsync(self._file.fileno())
        with self._lock:
            for key, _ in records:
                self._remember(key)
            self._size += len(chunk)
            self.end += len(records)
            return self.end

    def read(self, cursor: SpoolCursor, limit: int) -> tuple[list[bytes], SpoolCursor]:
        """Up to ``limit`` records from ``cursor`` on, and the cursor after them."""
        with self._lock:
            end = self.end
        payloads: list[bytes] = []
        ordinal, segment, offset = cursor.ordinal, cursor.segment, cursor.offset
        while ordinal < end and len(payloads) < limit:
            path = self.folder / _segment_name(segment)
            data = _read_from(path, offset)
            pos = 0
            while ordinal < end and len(payloads) < limit and pos + HEADER.size <= len(data):
                key_len, size = HEADER.unpack_from(data, pos)
                stop = pos + HEADER.size + key_len + size
                if stop > len(data):
                    break
                payloads.append(data[pos + HEADER.size + key_len : stop])
                pos = stop
                ordinal += 1
            offset += pos
            if ordinal < end and len(payloads) < limit and pos == len(data):
                nxt = self.folder / _segment_name(ordinal)
                if nxt.exists():  # this segment is done, the next starts at this ordinal
                    segment, offset = ordinal, 0
                    continue
            if pos == 0:
                break
        return payloads, SpoolCursor(ordinal, segment, offset)

    def trim(self, snapshotted: int) -> None:
        """Note a snapshot at ordinal ``snapshotted``; delete segments older than two back."""
        self._trimmed.append(snapshotted)
        if len(self._trimmed) < KEEP_SNAPSHOTS:
            return
        keep_from = self._trimmed[0]
        segments = self._segments()
        for first, following in itertools.pairwise(segments):
            if following > keep_from or first == self._segment:
                break
            path = self.folder / _segment_name(first)
            size = path.stat().st_size
            path.unlink()
            with self._lock:
                self._size -= size
                self._first = following

    def close(self) -> None:
        """Close the segment being written."""
        self._file.close()


def count(folder: Path) -> int:
    """How many records a spool in ``folder`` has ever taken (the next ordinal), from disk."""
    segments = sorted(int(p.name.removesuffix(SUFFIX)) for p in folder.glob(f"*{SUFFIX}"))
    if not segments:
        return 0
    return segments[-1] + _scan(folder / _segment_name(segments[-1]))[0]


class Receiver(Protocol):
    """A broker client that appends what it receives to a `Spool` and then acknowledges it."""

    error: BaseException | None
    """A fault it cannot recover from (refused credentials, a missing exchange)."""

    def idle_s(self) -> float:
        """Seconds since the last message arrived, or since it subscribed."""

    def pending(self) -> int:
        """Messages received but not yet in the spool."""

    def close(self) -> None:
        """Disconnect; unacknowledged messages stay with the broker."""


class SpooledPartition(StatefulSourcePartition[RawBatch, SpoolCursor]):
    """A Bytewax partition that reads a spool filled by a broker receiver.

    Its resume state is a `SpoolCursor`; each batch's ``first_row`` is the spool ordinal of its
    first record. With ``until_drained`` it stops once it has read everything, nothing is
    waiting to be spooled and no message came for ``drain_idle_s``.
    """

    def __init__(
        self,
        spool: Spool,
        receiver: Receiver,
        source: str,
        kind: RecordKind,
        resume: SpoolCursor | None,
        *,
        batch_rows: int,
        until_drained: bool,
        drain_idle_s: float = 1.0,
    ) -> None:
        self.spool = spool
        self.receiver = receiver
        self.source = source
        self.kind = kind
        self.cursor = resume or spool.start
        if not (spool.folder / _segment_name(self.cursor.segment)).exists():
            raise BrokerError(
                f"{source}: the spool in {spool.folder} no longer holds record "
                f"{self.cursor.ordinal:,} of the snapshot; was it deleted? Remove the recovery "
                "directory to start over"
            )
        self.batch_rows = batch_rows
        self.until_drained = until_drained
        self.drain_idle_s = drain_idle_s
        self.awake: datetime | None = None

    def next_batch(self) -> list[RawBatch]:
        """The next records in the spool, or none yet (then wait for `next_awake`)."""
        if self.receiver.error is not None:
            raise BrokerError(f"{self.source}: {self.receiver.error}") from self.receiver.error
        payloads, cursor = self.spool.read(self.cursor, self.batch_rows)
        if not payloads:
            idle = self.receiver.idle_s()
            if self.until_drained and idle >= self.drain_idle_s and not self.receiver.pending():
                raise StopIteration
            self.awake = datetime.now(UTC) + timedelta(seconds=IDLE_S)
            return []
        self.awake = None
        frame = pl.DataFrame(
            {"payload": [p.decode("utf-8", errors="replace") for p in payloads]},
            schema={"payload": pl.String},
        )
        batch = RawBatch(self.source, self.kind, frame, self.cursor.ordinal)
        self.cursor = cursor
        return [batch]

    def next_awake(self) -> datetime | None:
        """When to read again after an empty read."""
        return self.awake

    def snapshot(self) -> SpoolCursor:
        """The cursor after the last record delivered; older spool segments may go."""
        self.spool.trim(self.cursor.ordinal)
        return self.cursor

    def close(self) -> None:
        """Disconnect the receiver and close the spool."""
        self.receiver.close()
        self.spool.close()


class SpooledSource(FixedPartitionedSource[RawBatch, SpoolCursor]):
    """A source of named parts (topics, queues), each received into a spool of its own.

    Subclasses say which parts there are (`list_parts`), what kind each carries and how to
    start a part's receiver; the spool and the partition that reads it are built here.

    Args:
        kinds: part → the kind of record it carries.
        spool_dir: each part's spool goes in a folder of its own under it.
        spool_max_bytes: how much each spool holds before acknowledgements wait.
        batch_rows: records per batch at most.
        until_drained: stop once all was read and nothing arrived for ``drain_idle_s``.
    """

    scheme = "spool"

    def __init__(
        self,
        kinds: dict[str, RecordKind],
        *,
        spool_dir: Path,
        spool_max_bytes: int,
        batch_rows: int = 10_000,
        until_drained: bool = False,
        drain_idle_s: float = 1.0,
    ) -> None:
        self.kinds = dict(kinds)
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.batch_rows = batch_rows
        self.until_drained = until_drained
        self.drain_idle_s = drain_idle_s

    def list_parts(self) -> list[str]:
        """One partition per topic or queue."""
        return list(self.kinds)

    def spool_name(self, part: str) -> str:
        """The folder of a part's spool under ``spool_dir``."""
        return part

    def receiver(self, part: str, spool: Spool) -> Receiver:
        """Connect and start receiving ``part`` into ``spool``.

        Raises:
            BrokerError: the broker cannot be reached or refuses.
        """
        raise NotImplementedError

    def build_part(
        self, step_id: str, for_part: str, resume_state: SpoolCursor | None
    ) -> SpooledPartition:
        """Open the part's spool, start its receiver and read on from ``resume_state``."""
        spool = Spool(self.spool_dir / self.spool_name(for_part), self.spool_max_bytes)
        try:
            receiver = self.receiver(for_part, spool)
        except BrokerError:
            spool.close()
            raise
        return SpooledPartition(
            spool,
            receiver,
            f"{self.scheme}:{for_part}",
            self.kinds[for_part],
            resume_state,
            batch_rows=self.batch_rows,
            until_drained=self.until_drained,
            drain_idle_s=self.drain_idle_s,
        )
