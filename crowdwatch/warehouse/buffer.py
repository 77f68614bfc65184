"""Rows for the warehouse kept on disk while it is unreachable, and sent when it returns.

`DiskBuffer` is a bounded, ordered queue of ``(table, frame)`` batches: one Arrow IPC file per
batch, named by a sequence number and the table, written to a temporary name and renamed, so a
crash leaves whole files only. `OutageBuffer` puts it in front of an insert function: a batch
that cannot be inserted (the warehouse is down, a table is away) goes to the disk buffer, the
insert is retried with exponential backoff, and the buffered batches of a table are sent in
order, before any newer batch of that table, once it works again. When the buffer is full the
writer holds the caller (the dataflow) and retries, so rows are never dropped. The buffer lives
on disk, so a restart sends what the last run could not.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"^(\d{12})\.([A-Za-z_][A-Za-z0-9_]*)\.arrow$")
MB = 1024 * 1024

Insert = Callable[[str, pl.DataFrame], None]
"""Insert a frame into a table; raises one of the outage exceptions when it cannot."""


@dataclass(frozen=True, order=True)
class Entry:
    """One buffered batch: its place in the queue, its table and its file."""

    seq: int
    table: str
    path: Path


class BufferInUseError(RuntimeError):
    """Another process holds this buffer directory; the message says how to give each its own."""


class DiskBuffer:
    """A bounded, ordered queue of ``(table, frame)`` batches in one directory.

    Only one writer may use a directory at a time: it holds an exclusive lock on the file
    ``<directory>.lock`` beside it for as long as it is open (the kernel frees it when the process
    ends, however it ends), and a second writer is refused with `BufferInUseError`.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._lock: int | None = None
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(
            directory.with_name(directory.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644
        )
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise BufferInUseError(
                f"the outage buffer {directory} is in use by another process: give each "
                "pipeline process its own data directory (CROWDWATCH_DATA_DIR)"
            ) from None
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()  # a write cut short by a crash; its batch was never acknowledged
        self._entries = sorted(self._scan())
        self._sizes = {e.path: e.path.stat().st_size for e in self._entries}
        self._next = self._entries[-1].seq + 1 if self._entries else 0

    def _scan(self) -> Iterable[Entry]:
        for path in self.directory.iterdir():
            match = _ENTRY.match(path.name)
            if match:
                yield Entry(int(match[1]), match[2], path)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the batches held."""
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._entries)

    def pending(self, table: str | None = None) -> list[Entry]:
        """Batches held, oldest first (of one table, or of all)."""
        return [e for e in self._entries if table is None or e.table == table]

    def append(self, table: str, frame: pl.DataFrame) -> bool:
        """Keep a batch at the end of the queue; False (and nothing kept) when it does not fit."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise ValueError(f"table name {table!r}: expected letters, digits and _")
        entry = Entry(self._next, table, self.directory / f"{self._next:012d}.{table}.arrow")
        tmp = entry.path.with_name(entry.path.name + ".tmp")
        frame.write_ipc(tmp, compression="zstd")
        size = tmp.stat().st_size
        if self.size_bytes + size > self.max_bytes:
            tmp.unlink()
            return False
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        tmp.replace(entry.path)
        self._entries.append(entry)
        self._sizes[entry.path] = size
        self._next += 1
        return True

    def read(self, entry: Entry) -> pl.DataFrame:
        """The rows of a held batch."""
        return pl.read_ipc(entry.path)

    def remove(self, entry: Entry) -> None:
        """Forget a batch once it is in the warehouse."""
        entry.path.unlink(missing_ok=True)
        self._entries.remove(entry)
        self._sizes.pop(entry.path, None)

    def close(self) -> None:
        """Let another process use the directory."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __del__(self) -> None:
        self.close()


@dataclass
class Backoff:
    """Exponential backoff between attempts: ``initial_s`` doubling up to ``max_s``."""

    initial_s: float = 0.5
    max_s: float = 30.0
    delay_s: float = 0.0

    def fail(self) -> float:
        """Record a failure; return the wait before the next attempt."""
        self.delay_s = min(self.max_s, self.delay_s * 2 if self.delay_s else self.initial_s)
        return self.delay_s

    def reset(self) -> None:
        """Record a success."""
        self.delay_s = 0.0


class OutageBuffer:
    """Insert batches, keeping those that fail on disk and sending them when inserts work.

    Args:
        insert: inserts a frame into a table.
        own: this writer's buffer; new batches go here.
        adopted: buffers left by earlier runs (e.g. of a worker that no longer exists); they
            are sent first and never grow.
        outage: exceptions that mean "the warehouse cannot take rows now"; anything else is a
            fault and propagates.
        where: the warehouse, as it may be printed (no password), for log messages.
        clock, sleep: monotonic seconds and a sleep, injected for tests.
    """

    def __init__(
        self,
        insert: Insert,
        own: DiskBuffer,
        *,
        adopted: list[DiskBuffer] | None = None,
        outage: tuple[type[BaseException], ...],
        where: str,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.insert = insert
        self.own = own
        self.buffers = [*(adopted or []), own]
        self.outage = outage
        self.where = where
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.sleep = sleep
        self.retry_at = 0.0
        self.down = False
        self.full = False
        if any(len(b) for b in self.buffers):
            log.warning(
                "%d batch(es) of an earlier run are waiting in %s; sending them to %s first",
                sum(len(b) for b in self.buffers),
                own.directory,
                where,
            )
            self.flush(force=True)

    def held(self, table: str | None = None) -> int:
        """Batches on disk (of one table, or of all)."""
        return sum(len(b.pending(table)) for b in self.buffers)

    def write(self, tables: dict[str, pl.DataFrame]) -> None:
        """Insert one batch per table, or keep it on disk behind the table's older batches."""
        if self.held():
            self.flush()
        for table, frame in tables.items():
            if (
                not self.held(table)
                and self.clock() >= self.retry_at
                and self._try_insert(table, frame)
            ):
                continue
            self._keep(table, frame)

    def flush(self, *, force: bool = False) -> bool:
        """Send held batches in order (once the backoff allows); True when none are left."""
        if not force and self.clock() < self.retry_at:
            return not self.held()
        sent = 0
        for buffer in self.buffers:
            for entry in buffer.pending():
                try:
                    self.insert(entry.table, buffer.read(entry))
                except self.outage as exc:
                    self._failed(exc)
                    return False
                buffer.remove(entry)
                sent += 1
        if sent:
            log.warning("sent %d held batch(es) to %s; the disk buffer is empty", sent, self.where)
        self._worked()
        return True

    def close(self) -> None:
        """Try once more to send what is held; say what is left on disk; release the buffers."""
        if self.held() and not self.flush(force=True):
            log.warning(
                "%d batch(es) (%.1f MB) could not be sent to %s and stay in %s; they are sent "
                "when the pipeline next starts",
                self.held(),
                sum(b.size_bytes for b in self.buffers) / MB,
                self.where,
                self.own.directory,
            )
        for buffer in self.buffers:
            buffer.close()

    def _keep(self, table: str, frame: pl.DataFrame) -> None:
        """Put a batch on disk; when full, hold the caller until it fits or is sent."""
        while not self.own.append(table, frame):
            if not self.full:
                self.full = True
                log.warning(
                    "disk buffer %s is full (%.1f of %.1f MB); holding the pipeline until %s "
                    "takes rows again",
                    self.own.directory,
                    self.own.size_bytes / MB,
                    self.own.max_bytes / MB,
                    self.where,
                )
            self.sleep(max(0.0, self.retry_at - self.clock()))
            if self.flush() and not self.held(table) and self._try_insert(table, frame):
                return
        self.full = False

    def _try_insert(self, table: str, frame: pl.DataFrame) -> bool:
        """Insert a batch now; on an outage note the failure (and back off) and return False."""
        try:
            self.insert(table, frame)
        except self.outage as exc:
            self._failed(exc)
            return False
        self._worked()
        return True

    def _failed(self, exc: BaseException) -> None:
        wait = self.backoff.fail()
        self.retry_at = self.clock() + wait
        if not self.down:
            self.down = True
            text = str(exc).strip().splitlines()
            log.warning(
                "the warehouse at %s takes no rows (%s: %s); keeping them in %s and retrying "
                "with backoff",
                self.where,
                type(exc).__name__,
                text[0] if text else "",
                self.own.directory,
            )

    def _worked(self) -> None:
        if self.down and not self.held():
            log.warning("the warehouse at %s takes rows again", self.where)
            self.down = False
        self.backoff.reset()
        self.retry_at = 0.0
        self.full = self.full and bool(self.held())
