"""Recorded files as a stream: read CSV, JSON lines or Parquet and replay them as micro-batches.

`FileSource` is a Bytewax source with one partition per file. It emits `RawBatch` items of up
to ``batch_rows`` rows, as fast as possible or paced by the records' own times at N× speed.
Its resume state is the next row, so a restarted dataflow with recovery neither skips nor
repeats a batch.

Known layouts are recognised by their columns: the canonical passage and count fields of
`crowdwatch.batches`, and the Hangzhou metro 10-minute flows of ``../shared/data``
(``timestamp,station_idx,inflow,outflow``), which become station counts of stations ``HZ00``…
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from crowdwatch.batches import COUNT_FIELDS, PASSAGE_FIELDS, READ_COLUMNS, RawBatch, RecordKind
from crowdwatch.isotime import epoch_ms

READ_ERROR, READ_TEXT = READ_COLUMNS
KIND_COLUMN = "_kind"
HANGZHOU_FIELDS = ("timestamp", "station_idx", "inflow", "outflow")
HANGZHOU_INTERVAL = "10m"
SEATTLE_FIELDS = ("Address", "Type", "Datetime", "Latitude", "Longitude", "Incident Number")
TIME_FIELD: dict[RecordKind, str] = {
    "passage": "ts",
    "count": "start",
    "video": "ts",
    "deepstream_full": "@timestamp",
    "deepstream_minimal": "@timestamp",
    "call": "received_at",
}
PACE_TICK_S = 0.25

Progress = Callable[[str, int, int], None]
"""Called as ``progress(file_name, rows_emitted, rows_in_file)`` after every batch."""


class ReplayError(ValueError):
    """A file that cannot be replayed; the message names the file and what is wrong."""


def hangzhou_to_counts(frame: pl.DataFrame) -> pl.DataFrame:
    """Turn Hangzhou 10-minute station flows into canonical count records (string columns)."""
    start = pl.col("timestamp").str.strip_chars()
    end = (
        start.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
        .dt.offset_by(HANGZHOU_INTERVAL)
        .dt.strftime("%Y-%m-%d %H:%M:%S")
    )
    return frame.select(
        start.alias("start"),
        end.alias("end"),
        pl.lit(None, pl.String).alias("gate_id"),
        ("HZ" + pl.col("station_idx").str.strip_chars().str.zfill(2)).alias("station_id"),
        pl.col("inflow").alias("entries"),
        pl.col("outflow").alias("exits"),
    )


def seattle_to_calls(frame: pl.DataFrame) -> pl.DataFrame:
    """Turn Seattle Fire 911 records into canonical call records (string columns).

    Their time is US text (``11/09/2011 10:04:00 PM +0000``), or, in a dozen records, ISO text
    with hour 24 for the hour after midnight; it becomes ISO 8601. Rows whose time does not
    parse keep the original text, so that they are rejected with it.
    """
    text = pl.col("Datetime").str.strip_chars()
    us = text.str.to_datetime("%m/%d/%Y %I:%M:%S %p %z", strict=False, time_unit="ms")
    # a few records are ISO with hour 24 for the hour after midnight: 2011-10-24T24:22 is
    # 2011-10-25T00:22
    past_midnight = (
        text.str.replace(r"T24:", "T00:")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%z", strict=False, time_unit="ms")
        .dt.offset_by("1d")
    )
    iso = (
        pl.when(text.str.contains(r"^\d{4}-\d{2}-\d{2}T24:"))
        .then(past_midnight)
        .otherwise(us)
        .dt.convert_time_zone("UTC")
        .dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    )
    return frame.select(
        pl.col("Incident Number").alias("call_id"),
        pl.coalesce(iso, text).alias("received_at"),
        pl.col("Latitude").alias("lat"),
        pl.col("Longitude").alias("lon"),
        pl.col("Address").alias("address"),
        pl.col("Type").alias("category_text"),
    )


def detect_kind(columns: list[str], path: Path) -> RecordKind | None:
    """The record kind of a layout, or None for layouts converted on reading."""
    names = set(columns)
    if names >= set(HANGZHOU_FIELDS) or names >= set(SEATTLE_FIELDS):
        return None
    if {"camera_id", "rois"} <= names:
        return "video"
    if {"call_id", "received_at"} <= names:
        return "call"
    if {"sensorId", "objects"} <= names:
        return "deepstream_minimal"
    if {"sensor", "object", "@timestamp"} <= names:
        return "deepstream_full"
    if "ts" in names and "direction" in names:
        return "passage"
    if {"start", "end"} <= names:
        return "count"
    raise ReplayError(
        f"{path}: cannot tell the record kind from columns {sorted(names)}; expected passage "
        f"fields {list(PASSAGE_FIELDS)}, count fields {list(COUNT_FIELDS)}, Hangzhou flows "
        f"{list(HANGZHOU_FIELDS)}, camera messages (JSON lines with camera_id and rois) or "
        "DeepStream nvmsgconv payloads (full: sensor, object; minimal: sensorId, objects)"
    )


KIND_KEYS: dict[RecordKind, str] = {
    "video": '"camera_id"',
    "call": '"call_id"',
    "deepstream_minimal": '"sensorId"',
    "deepstream_full": '"sensor"',
    "passage": '"direction"',
    "count": '"start"',
}
"""A key that every JSON record of a kind has (and records of the kinds before it lack)."""


def _bad_line(raw: bytes, csv: bool) -> str | None:
    """Why a line cannot be read as a record, or None when it can."""
    if b"\x00" in raw:
        return "NUL byte"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    if csv and text.count('"') % 2:
        return "unclosed quote"
    return None


def _resync(data: bytes, csv: bool) -> tuple[list[int], list[bytes], pl.DataFrame]:
    """Read a text file line by line: the good lines (and their line numbers) and the bad ones.

    Only runs when the fast, whole-file read failed or cannot be trusted: Python per line. A
    bad line costs itself only: ``_read_error`` says which line and why, ``_read_text`` keeps
    its readable part (NUL bytes and undecodable bytes left out).
    """
    good_lines: list[int] = []
    good: list[bytes] = []
    bad: dict[str, list[object]] = {"_line": [], READ_ERROR: [], READ_TEXT: []}
    for number, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        reason = _bad_line(raw, csv)
        if reason is None:
            good_lines.append(number)
            good.append(raw)
            continue
        bad["_line"].append(number)
        bad[READ_ERROR].append(f"line {number + 1}: {reason}")
        text = raw.replace(b"\x00", b"").decode("utf-8", errors="ignore").rstrip("\r")
        bad[READ_TEXT].append(text)
    schema = {"_line": pl.Int64, READ_ERROR: pl.String, READ_TEXT: pl.String}
    return good_lines, good, pl.DataFrame(bad, schema=schema)


def _with_bad_lines(frame: pl.DataFrame, lines: list[int], bad: pl.DataFrame) -> pl.DataFrame:
    """The records read and the bad lines in file order (a bad line has only its error)."""
    if bad.is_empty():
        return frame
    if frame.height != len(lines):
        raise ReplayError(f"{frame.height} records read from {len(lines)} lines")
    return (
        pl.concat(
            [
                frame.with_columns(pl.Series("_line", lines, dtype=pl.Int64)),
                bad.with_columns(pl.lit(None, pl.String).alias(c) for c in frame.columns),
            ],
            how="diagonal_relaxed",
        )
        .sort("_line")
        .drop("_line")
    )


def read_csv_text(path: Path) -> pl.DataFrame:
    """A CSV file as string columns; lines that cannot be read become `READ_ERROR` rows.

    The whole file is read natively when it is clean (no NUL byte, valid UTF-8, every quote
    closed on its line); otherwise line by line, and only the bad lines are lost.
    """
    data = path.read_bytes()
    if b"\x00" not in data and (b'"' not in data or not _odd_quotes(data)):
        try:
            return pl.read_csv(data, infer_schema=False, truncate_ragged_lines=True)
        except pl.exceptions.ComputeError:
            pass  # invalid UTF-8 somewhere: find the lines
    lines, good, bad = _resync(data, csv=True)
    if not lines or (not bad.is_empty() and bad["_line"][0] < lines[0]):
        why = bad[READ_ERROR][0] if not bad.is_empty() else "the file is empty"
        raise ReplayError(f"{path}: the header line cannot be read ({why})")
    header, *rows = good
    frame = pl.read_csv(
        b"\n".join([header, *rows]) + b"\n", infer_schema=False, truncate_ragged_lines=True
    )
    return _with_bad_lines(frame, lines[1:], bad)


def _odd_quotes(data: bytes) -> bool:
    """Whether some line of ``data`` has an odd number of ``"`` (an unclosed quote)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    line = np.cumsum(raw == ord("\n"))
    return bool((np.bincount(line[raw == ord('"')]) % 2).any())


def read_lines(path: Path) -> pl.DataFrame:
    """The non-blank lines of a text file as one ``payload`` column (read natively).

    Lines with a NUL byte or invalid UTF-8 become `READ_ERROR` rows; the rest are kept.
    """
    data = path.read_bytes()
    if b"\x00" not in data:
        try:
            lines = pl.read_csv(
                data,
                has_header=False,
                separator="\x00",
                quote_char=None,
                new_columns=["payload"],
                schema_overrides={"payload": pl.String},
                infer_schema=False,
            )
            return lines.filter(pl.col("payload").str.strip_chars() != "")
        except pl.exceptions.ComputeError:
            pass
    numbers, good, bad = _resync(data, csv=False)
    frame = pl.DataFrame({"payload": [g.decode() for g in good]}, schema={"payload": pl.String})
    return _with_bad_lines(frame, numbers, bad)


def json_kinds(payload: pl.Series, main: RecordKind) -> pl.Series:
    """The kind of each JSON record, by the keys it has; ``main`` where none fits.

    One literal search per line when every record is of the ``main`` kind; the others are
    told apart by the keys of each kind, in `KIND_KEYS` order.
    """
    ours = payload.str.contains(KIND_KEYS[main], literal=True).fill_null(True)
    kinds = pl.Series(payload.name, [main] * payload.len(), dtype=pl.String)
    if ours.all():
        return kinds
    others = (
        payload.filter(~ours)
        .to_frame("p")
        .select(
            pl.coalesce(
                *(
                    pl.when(pl.col("p").str.contains(key, literal=True)).then(pl.lit(kind))
                    for kind, key in KIND_KEYS.items()
                ),
                pl.lit(main),
            )
        )
    )
    return kinds.scatter(np.flatnonzero(~ours.to_numpy()), others.to_series())


def read_records(path: Path) -> tuple[RecordKind, pl.DataFrame]:
    """Read a recorded file into string columns (or JSON ``payload`` lines) and its kind.

    A line that cannot be read (a NUL byte, invalid UTF-8, an unclosed quote) costs only
    itself: it becomes a row with `READ_ERROR` set, rejected by the parsers with its line
    number. In JSON lines the kind is decided per record (`json_kinds`): the file's kind is
    its most common one, and when records of other kinds are mixed in, a ``_kind`` column
    says which (`split_kinds` turns a slice into one batch per kind).

    Raises:
        ReplayError: the file is missing, of an unknown format, or of an unknown layout.
    """
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = read_csv_text(path)
        elif suffix in (".jsonl", ".ndjson"):
            return _json_records(path, read_lines(path))
        elif suffix == ".parquet":
            frame = pl.read_parquet(path)
            frame = frame.select(pl.col(c).cast(pl.String) for c in frame.columns)
        else:
            raise ReplayError(f"{path}: unsupported file type; use .csv, .jsonl or .parquet")
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()
        raise ReplayError(f"{path}: cannot read: {first[0] if first else exc}") from exc
    kind = detect_kind([c for c in frame.columns if c not in READ_COLUMNS], path)
    if kind is not None:
        return kind, frame
    if set(HANGZHOU_FIELDS) <= set(frame.columns):
        return "count", hangzhou_to_counts(frame)
    return "call", seattle_to_calls(frame)


def _json_records(path: Path, lines: pl.DataFrame) -> tuple[RecordKind, pl.DataFrame]:
    """JSON lines with their kind; a ``_kind`` column when several kinds are mixed."""
    payload = lines["payload"]
    head = (
        payload.head(1000)
        .to_frame("p")
        .select(
            pl.coalesce(
                *(
                    pl.when(pl.col("p").str.contains(key, literal=True)).then(pl.lit(kind))
                    for kind, key in KIND_KEYS.items()
                )
            )
        )
    )
    seen = head.to_series().drop_nulls()
    if seen.is_empty():
        raise ReplayError(
            f"{path}: cannot tell the record kind of any of its first {head.height} JSON "
            f"lines; expected keys {sorted(KIND_KEYS.values())} (passage fields "
            f"{list(PASSAGE_FIELDS)}, count fields {list(COUNT_FIELDS)}, camera messages, "
            "110 calls or DeepStream nvmsgconv payloads)"
        )
    main: RecordKind = seen.mode().sort()[0]
    kinds = json_kinds(payload, main)
    if (kinds == main).all():
        return main, lines
    return main, lines.with_columns(kinds.alias(KIND_COLUMN))


def split_kinds(
    source: str, kind: RecordKind, frame: pl.DataFrame, first_row: int, **more: Any
) -> list[RawBatch]:
    """A slice of a file as batches: one, or one per record kind when kinds are mixed.

    Rows of another kind than the file's go in a batch of their own, source
    ``file:<name>#<kind>``, keeping their file positions. Read-error columns are dropped from
    a slice that has none.
    """
    if READ_ERROR in frame.columns and frame[READ_ERROR].null_count() == frame.height:
        frame = frame.drop(READ_COLUMNS)
    if KIND_COLUMN not in frame.columns:
        return [RawBatch(source, kind, frame, first_row, **more)]
    batches = []
    positions = pl.int_range(first_row, first_row + frame.height, dtype=pl.Int64, eager=True)
    for (other,), part in frame.with_columns(positions.alias("_position")).group_by(
        KIND_COLUMN, maintain_order=True
    ):
        rows = part["_position"]
        part = part.drop(KIND_COLUMN, "_position")
        name = source if other == kind else f"{source}#{other}"
        batches.append(RawBatch(name, other, part, int(rows[0]), rows=rows, **more))
    return batches


def event_times(kind: RecordKind, frame: pl.DataFrame, timezone: str) -> npt.NDArray[np.int64]:
    """Event time of every row in ms, for pacing; unparseable times borrow the previous one."""
    field = TIME_FIELD[kind]
    if field in frame.columns:
        text = frame[field]
    else:
        text = frame["payload"].str.json_path_match(f"$.{field}")
    times = epoch_ms(text, timezone)
    times = times.fill_null(strategy="forward").fill_null(strategy="backward").fill_null(0)
    return times.to_numpy().astype(np.int64)


SPAN_SAMPLE_ROWS = 4_001
SPAN_GAP_MS = 7 * 86_400_000
SPAN_MIN_SHARE = 0.01


def event_span(kind: RecordKind, frame: pl.DataFrame, timezone: str) -> tuple[int, int] | None:
    """The event-time span of a file (epoch ms, first and last), from an even sample of rows.

    Robust to a few wild times: the sample's times are cut into runs wherever a week passes
    without a record, and runs holding fewer than 1 % of the sample (and a lone time) are
    left out, so a stray record years away does not stretch the span. None when no time in
    the sample parses.
    """
    if frame.height == 0:
        return None
    index = np.unique(np.linspace(0, frame.height - 1, SPAN_SAMPLE_ROWS).astype(np.int64))
    sample = frame[pl.Series(index)]
    field = TIME_FIELD[kind]
    if field in sample.columns:
        text = sample[field]
    elif "payload" in sample.columns:
        text = sample["payload"].str.json_path_match(f"$.{field}")
    else:
        return None
    times = np.sort(epoch_ms(text, timezone).drop_nulls().to_numpy())
    if times.size == 0:
        return None
    run = np.concatenate(([0], np.cumsum(np.diff(times) > SPAN_GAP_MS)))
    sizes = np.bincount(run)
    kept = times[(sizes[run] >= SPAN_MIN_SHARE * times.size) & (sizes[run] > 1)]
    if kept.size == 0:
        kept = times
    return int(kept[0]), int(kept[-1])


def batch_bounds(
    times_ms: npt.NDArray[np.int64] | None, batch_rows: int, speed: float | None
) -> list[int]:
    """Row offsets where batches start.

    Every ``batch_rows`` rows, and, when paced, at every tick of event time (``PACE_TICK_S``
    wall seconds × speed).
    """
    n = 0 if times_ms is None else times_ms.size
    bounds = set(range(0, n, batch_rows))
    if speed is not None and times_ms is not None and n:
        tick = np.int64(PACE_TICK_S * 1000 * speed) or np.int64(1)
        bucket = (times_ms - times_ms[0]) // tick
        bounds |= {0, *(np.flatnonzero(np.diff(bucket)) + 1).tolist()}
    return sorted(bounds)


@dataclass(frozen=True)
class ReplayFile:
    """One file to replay and how."""

    path: Path
    timezone: str
    batch_rows: int = 100_000
    speed: float | None = None


class _FilePartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, spec: ReplayFile, resume_row: int | None, progress: Progress | None):
        self.spec = spec
        self.kind, self.frame = read_records(spec.path)
        self.source = f"file:{spec.path.name}"
        self.span = event_span(self.kind, self.frame, spec.timezone)
        times = (
            event_times(self.kind, self.frame, spec.timezone) if spec.speed is not None else None
        )
        self.times = times
        if times is None:
            self.bounds = list(range(0, self.frame.height, spec.batch_rows))
        else:
            self.bounds = batch_bounds(times, spec.batch_rows, spec.speed)
        self.bounds.append(self.frame.height)
        self.row = resume_row or 0
        self.progress = progress
        self.started = time.monotonic()
        self.first_ms = int(times[self.row]) if times is not None and self.row < times.size else 0

    def _next_bound(self) -> int:
        index = int(np.searchsorted(self.bounds, self.row, side="right"))
        return self.bounds[min(index, len(self.bounds) - 1)]

    def next_batch(self) -> list[RawBatch]:
        if self.row >= self.frame.height:
            raise StopIteration
        end = self._next_bound()
        frame = self.frame.slice(self.row, end - self.row)
        batches = split_kinds(self.source, self.kind, frame, self.row, span_ms=self.span)
        self.row = end
        if self.progress is not None:
            self.progress(self.spec.path.name, self.row, self.frame.height)
        return batches

    def next_awake(self) -> datetime | None:
        if self.times is None or self.spec.speed is None or self.row >= self.frame.height:
            return None
        due_s = (int(self.times[self.row]) - self.first_ms) / 1000 / self.spec.speed
        wait_s = due_s - (time.monotonic() - self.started)
        return datetime.now(UTC) + timedelta(seconds=wait_s) if wait_s > 0 else None

    def snapshot(self) -> int:
        return self.row


MERGE_SLICE_S = 300
"""Event time per slice of a merged replay: every file's records of a slice go before the next."""
KIND_ORDER: dict[RecordKind, int] = {
    "passage": 0,
    "count": 0,
    "video": 1,
    "deepstream_full": 1,
    "deepstream_minimal": 1,
    "call": 2,
}
"""Within a slice: gate records, then camera messages, then calls, whatever the files' order."""


Run = tuple[int, int, int]
"""A merged replay's batch: which input, its first row, how many rows."""


def merge_runs(
    times: list[npt.NDArray[np.int64]],
    order: list[int],
    batch_rows: int,
    slice_s: int = MERGE_SLICE_S,
) -> list[Run]:
    """Batches of several inputs in event-time order: slice by slice, input by input.

    ``times``: each input's event times (epoch ms) per row; ``order``: each input's rank within
    a slice. A file is read in its own order: its rows go with the newest slice it has reached
    (an out-of-order row is late, as it would be live), so a file sorted by time gives one run
    per slice and an unsorted one does not fall apart into single rows. Batches hold up to
    ``batch_rows``.
    """
    runs: list[tuple[int, int, int, int, int]] = []
    for index, ms in enumerate(times):
        if ms.size == 0:
            continue
        slices = np.maximum.accumulate(ms // (slice_s * 1000))
        starts = np.flatnonzero(np.diff(slices, prepend=slices[0] - 1))
        ends = np.append(starts[1:], ms.size)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            for first in range(start, end, batch_rows):
                size = min(batch_rows, end - first)
                runs.append((int(slices[start]), order[index], index, first, size))
    runs.sort(key=lambda r: r[:2])
    merged: list[Run] = []
    for _, _, index, first, size in runs:
        # consecutive runs of one file with nothing of another between them are one batch: a
        # sparse file (calls) does not become a batch per slice
        if merged and merged[-1][0] == index and sum(merged[-1][1:]) == first:
            last = merged[-1]
            if last[2] + size <= batch_rows:
                merged[-1] = (index, last[1], last[2] + size)
                continue
        merged.append((index, first, size))
    return merged


class _MergedPartition(StatefulSourcePartition[RawBatch, int]):
    """Several files as one stream in event-time order; resumes at the next batch."""

    def __init__(self, specs: list[ReplayFile], resume: int | None, progress: Progress | None):
        self.specs = specs
        read = [read_records(spec.path) for spec in specs]
        self.kinds = [kind for kind, _ in read]
        self.frames = [frame for _, frame in read]
        times = [
            event_times(kind, frame, spec.timezone)
            for spec, (kind, frame) in zip(specs, read, strict=True)
        ]
        self.starts = times
        self.spans = [
            event_span(kind, frame, spec.timezone)
            for spec, (kind, frame) in zip(specs, read, strict=True)
        ]
        ranks = [KIND_ORDER[kind] * len(specs) + i for i, kind in enumerate(self.kinds)]
        self.runs = merge_runs(times, ranks, min(spec.batch_rows for spec in specs))
        self.next = resume or 0
        self.emitted = [0] * len(specs)
        self.progress = progress
        self.speed = specs[0].speed
        self.started = time.monotonic()
        self.first_ms = self._run_ms(self.next)

    def _run_ms(self, index: int) -> int | None:
        if index >= len(self.runs):
            return None
        file, first, _ = self.runs[index]
        return int(self.starts[file][first])

    def next_batch(self) -> list[RawBatch]:
        if self.next >= len(self.runs):
            raise StopIteration
        file, first, size = self.runs[self.next]
        self.next += 1
        spec = self.specs[file]
        batches = split_kinds(
            f"file:{spec.path.name}",
            self.kinds[file],
            self.frames[file].slice(first, size),
            first,
            span_ms=self.spans[file],
        )
        self.emitted[file] += size
        if self.progress is not None:
            self.progress(spec.path.name, self.emitted[file], self.frames[file].height)
        return batches

    def next_awake(self) -> datetime | None:
        due_ms = self._run_ms(self.next)
        if self.speed is None or due_ms is None or self.first_ms is None:
            return None
        wait_s = (due_ms - self.first_ms) / 1000 / self.speed - (time.monotonic() - self.started)
        return datetime.now(UTC) + timedelta(seconds=wait_s) if wait_s > 0 else None

    def snapshot(self) -> int:
        return self.next


class FileSource(FixedPartitionedSource[RawBatch, int]):
    """Replay recorded files as `RawBatch` micro-batches.

    Several files are merged by event time into one stream (`merge_runs`: five-minute slices,
    every file's records of a slice before the next slice's), so sources replayed together
    stay in step whatever their order on the command line. ``merge=False`` reads each file as
    its own partition instead, in parallel on several workers.
    """

    def __init__(
        self, files: list[ReplayFile], progress: Progress | None = None, *, merge: bool = True
    ) -> None:
        names = [f.path.name for f in files]
        if len(set(names)) != len(names):
            raise ReplayError(f"replayed files need distinct names, got {names}")
        self.files = {f.path.name: f for f in files}
        self.progress = progress
        self.merge = merge and len(files) > 1

    def list_parts(self) -> list[str]:
        """One partition per file name, or one for all files merged."""
        if self.merge:
            return ["merged:" + ",".join(sorted(self.files))]
        return list(self.files)

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[RawBatch, int]:
        """Open a file (or all, merged), resuming after the last batch emitted."""
        if self.merge:
            specs = [self.files[name] for name in sorted(self.files)]
            return _MergedPartition(specs, resume_state, self.progress)
        return _FilePartition(self.files[for_part], resume_state, self.progress)
