"""Raw micro-batches of records, the record kinds and their fields, and row checks.

Every source (file replay, Redis Streams, Kafka) hands the pipelines `RawBatch` items: a polars
frame of *string* columns, or a single ``payload`` column of JSON lines, from one source and of
one kind. Every parser validates a batch with `Check` expressions and `split_rows`, which returns
the good rows and the rejected ones (`REJECTED_SCHEMA`, bound for ``rejected_events``). Nothing is
dropped silently.

This module sits at the core's root: the signal wings (gates, video, calls) and the sources all
build on it, and it imports nothing of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from crowdwatch.privacy import scrub_record, scrub_text

RecordKind = Literal["passage", "count", "video", "deepstream_full", "deepstream_minimal", "call"]

PASSAGE_FIELDS = ("ts", "gate_id", "station_id", "direction", "ticket_type")
COUNT_FIELDS = ("start", "end", "gate_id", "station_id", "entries", "exits")
VIDEO_FIELDS = ("camera_id", "frame", "ts", "persons", "rois", "lines")
CALL_FIELDS = (
    "call_id",
    "received_at",
    "updated_at",
    "lat",
    "lon",
    "district",
    "address",
    "category_code",
    "category_text",
    "priority",
    "status",
    "caller_phone",
    "caller_name",
    "caller_id_number",
    "description",
)
FIELDS: dict[RecordKind, tuple[str, ...]] = {
    "passage": PASSAGE_FIELDS,
    "count": COUNT_FIELDS,
    "video": VIDEO_FIELDS,
    "deepstream_full": ("@timestamp", "sensor", "object"),
    "deepstream_minimal": ("@timestamp", "sensorId", "objects"),
    "call": CALL_FIELDS,
}
REJECTED_SCHEMA = pl.Schema(
    {
        "received_at": pl.Datetime("ms", "UTC"),
        "source": pl.String(),
        "position": pl.String(),
        "reason": pl.String(),
        "payload": pl.String(),
    }
)


@dataclass(frozen=True)
class RawBatch:
    """A micro-batch of raw records from one source.

    Attributes:
        source: where the records came from, e.g. ``file:flows.csv`` (stored with rejects).
        kind: ``passage`` or ``count`` (gate records), ``video`` (camera messages),
            ``deepstream_full`` or ``deepstream_minimal`` (stock DeepStream nvmsgconv payloads),
            ``call`` (110 emergency-call records).
        frame: string columns named as in `FIELDS`, or one ``payload`` column of JSON lines.
        first_row: the position of the first row in its source (a file row, a stream offset),
            when the source has stable positions. A rejected row is stored under its position,
            so the same row delivered twice (a restart, a second replay) is stored once.
        span_ms: the event-time span of a recorded file being replayed (epoch ms, first and
            last); event times far outside it are rejected (`TimeBounds`). None for a broker,
            whose records are bounded by the wall clock instead.
        rows: the position of every row, when they are not ``first_row`` onwards (records of
            one kind picked out of a file that mixes kinds).

    A frame may carry ``_read_error`` and ``_read_text`` columns (`READ_COLUMNS`): a row whose
    ``_read_error`` is set is a line that could not be read (the reason, with its line
    number), ``_read_text`` what of it was readable; parsers reject it with that reason.
    """

    source: str
    kind: RecordKind
    frame: pl.DataFrame
    first_row: int | None = None
    span_ms: tuple[int, int] | None = None
    rows: pl.Series | None = None


READ_COLUMNS = ["_read_error", "_read_text"]
"""Columns of rows that could not be read (see `RawBatch`)."""


def payload_lines(frame: pl.DataFrame) -> bool:
    """Whether a batch's frame is JSON lines (one ``payload`` column, read errors aside)."""
    return [c for c in frame.columns if c not in READ_COLUMNS] == ["payload"]


def read_errors(frame: pl.DataFrame) -> pl.Expr:
    """Per row, why its line could not be read, or null."""
    return pl.col("_read_error") if "_read_error" in frame.columns else pl.lit(None, pl.String)


def record_fields(batch: RawBatch) -> tuple[pl.DataFrame, pl.Expr]:
    """Every field of the batch's kind as a string column, and how to rebuild a row's payload.

    JSON lines are read field by field with a JSON path; their payload is the line itself.
    Columns are cast to strings; missing fields become null columns (rejected later as
    missing); the payload of a columnar row is its original columns as JSON.
    """
    fields = FIELDS[batch.kind]
    frame = batch.frame
    unread = read_errors(frame)
    row = pl.int_range(pl.len(), dtype=pl.Int64).alias("_row")
    if payload_lines(frame):
        payload = pl.col("payload").cast(pl.String)
        columns = frame.select(
            row,
            payload,
            pl.when(unread.is_not_null())
            .then(unread)
            .when(payload.str.json_path_match("$").is_null())
            .then(pl.lit("not valid JSON"))
            .when(~payload.str.strip_chars_start().str.starts_with("{"))
            .then(pl.lit("not a JSON object"))
            .alias("_json_error"),
            *(payload.str.json_path_match(f"$.{name}").alias(name) for name in fields),
        )
        return columns, pl.col("payload")
    read = [c for c in frame.columns if c in READ_COLUMNS]
    original = [f"_raw_{c}" for c in frame.columns if c not in READ_COLUMNS]
    columns = frame.select(
        row,
        *(
            pl.col(c).cast(pl.String).alias(f"_raw_{c}")
            for c in frame.columns
            if c not in READ_COLUMNS
        ),
        *read,
        unread.alias("_json_error"),
        *(
            (
                pl.col(name).cast(pl.String) if name in frame.columns else pl.lit(None, pl.String)
            ).alias(name)
            for name in fields
        ),
    )
    payload = pl.struct(pl.col(c).name.map(lambda n: n.removeprefix("_raw_")) for c in original)
    encoded = payload.struct.json_encode() if original else pl.lit("{}")
    if read:
        encoded = pl.when(pl.col("_read_error").is_null()).then(encoded).otherwise("_read_text")
    return columns, encoded


Check = tuple[pl.Expr, pl.Expr | str]
"""An expression true where a row fails, and the reason to store for it."""


@dataclass(frozen=True)
class TimeBounds:
    """Where a record's event time may lie, as checks on an epoch-ms column.

    A record from a broker may be at most ``skew_ms`` ahead of the wall clock (a clock that runs
    ahead by more is a fault, and one far-future record would drag its station's windows
    along). A replayed file may hold any day, but a record further than ``pad_ms`` outside
    the file's span (`RawBatch.span_ms`) is not part of that replay. How far *behind* a
    station's newest record a record may be is the window state's late horizon.
    """

    skew_ms: int
    pad_ms: int

    def checks(self, ts: pl.Expr, batch: RawBatch, now_ms: int) -> list[Check]:
        """The out-of-bound checks for ``ts`` in this batch (nulls pass: checked elsewhere)."""
        if batch.span_ms is None:
            ahead = f"from the future: more than {self.skew_ms // 1000} s ahead of the clock"
            return [(ts > now_ms + self.skew_ms, ahead)]
        first, last = batch.span_ms
        outside = f"more than {self.pad_ms // 1000} s outside the replayed span"
        return [((ts < first - self.pad_ms) | (ts > last + self.pad_ms), outside)]


def split_rows(
    frame: pl.DataFrame, checks: list[Check], payload: pl.Expr, batch: RawBatch, received_at_ms: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split rows into those that pass every check and the rejected rows (`REJECTED_SCHEMA`).

    Reasons and payloads are built for the rejected rows only: the first failing check names
    the reason. Both are scrubbed of personal data (`crowdwatch.privacy.scrub_record`): a
    record of any source may hold a phone number, whatever field it sits in.
    """
    failed = frame.select(
        pl.any_horizontal(check.fill_null(False) for check, _ in checks)
    ).to_series()
    # rechunk: polars 2.1 can panic evaluating format() on a filtered, multi-chunk frame
    good, bad = frame.filter(~failed), frame.filter(failed).rechunk()
    reason = pl.lit(None, pl.String)
    for check, message in reversed(checks):
        text = pl.lit(message) if isinstance(message, str) else message
        reason = pl.when(check.fill_null(False)).then(text).otherwise(reason)
    if batch.rows is not None:
        position = pl.format("row {}", pl.lit(batch.rows).gather(pl.col("_row")))
    elif batch.first_row is None:
        position = pl.format(f"received {received_at_ms} row {{}}", pl.col("_row"))
    else:
        position = pl.format("row {}", pl.col("_row") + batch.first_row)
    rejected = bad.select(
        pl.lit(received_at_ms).cast(pl.Datetime("ms", "UTC")).alias("received_at"),
        pl.lit(batch.source).alias("source"),
        position.alias("position"),
        reason.alias("reason"),
        payload.alias("payload"),
    )
    if rejected.height:
        rejected = rejected.with_columns(
            scrub_text(rejected["reason"]), scrub_record(rejected["payload"])
        )
    return good, rejected
