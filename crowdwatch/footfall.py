"""Hourly footfall counts from a city's counter CSV: what the evaluations and the backtest read.

The shared sets (Auckland, Dublin) and another city's files come in one of two shapes:

- wide, the shared sets' own: ``ts_local`` and a column of counts per sensor (direction columns,
  whose names end in `` IN`` or `` OUT``, and Auckland's ``src_date`` and ``src_hour`` are
  skipped; a file of direction columns only gets each sensor's total as their sum);
- long, as many open-data portals publish counts: ``ts_local``, ``sensor`` and ``count``, one
  row per sensor and hour (other columns are ignored).

``ts_local`` is the local time without an offset: ``2023-03-26 01:00`` or
``2023-03-26T01:00:00``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crowdwatch.settings import Settings

SKIPPED_COLUMNS = frozenset({"ts_local", "src_date", "src_hour"})
DIRECTIONS = (" IN", " OUT")
LONG_COLUMNS = ("sensor", "count")
MAX_ODD_SHARE = 0.01
"""Share of rows that may repeat a sensor's hour or fall off the hour, and are then one-offs.

The hour the clocks go back comes twice a year; a file with more is in another shape."""
MAX_HOURLY_COUNT = 60 * int(Settings.model_fields["max_station_per_min"].default)
"""The most people one counter can count in an hour: what a whole station passes at the most
(`Settings.max_station_per_min`, the gate pipeline's bound, for an hour). More is a sensor's
error code or a corrupt cell (1e15), not a crowd."""


def local_time(text: pl.Expr) -> pl.Expr:
    """Naive local ``YYYY-MM-DD HH:MM[:SS]`` text → datetime, null where it is no such time.

    A ``T`` or a space may stand between the date and the time; spaces around are ignored.
    """
    clean = text.str.strip_chars().str.replace("T", " ", literal=True)
    return pl.coalesce(
        clean.str.to_datetime(fmt, strict=False, exact=True, time_unit="ms")
        for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")
    )


def read_counts(path: Path | str, *, now: datetime | None = None) -> pl.DataFrame:
    """A footfall CSV's counts, long: ``sensor`` (its name, stripped), ``ts_local``, ``value``.

    ``value`` is null where the cell is no count (text, empty, a negative error code, infinity,
    more than `MAX_HOURLY_COUNT`): a missing hour. A row whose time is unreadable or after
    ``now`` (UTC, the present by default; a day's margin for the time zone) is left out: a row
    dated 2199 is no count. So is a stray row off the hour (12:30 in an hourly file).
    Within a sensor the rows keep the file's order, so the hour the clocks go back stays
    twice, as the file has it.

    Raises:
        ValueError: If the file has no ``ts_local`` column or no sensor, fewer than half of its
            times are readable, its times are not hourly, or a sensor's times repeat (a long
            file needs ``sensor`` and ``count`` columns; one that splits a sensor's hours
            further, by direction say, needs them summed first).
    """
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:  # empty, binary, ragged beyond repair
        raise ValueError(f"{path}: not a CSV file of counts ({exc})") from exc
    if "ts_local" not in raw.columns:
        header = raw.columns[0] if len(raw.columns) == 1 else ""
        other = [sep for sep in ";\t|" if sep in header]
        hint = f"; its header is split by {other[0]!r}, not by commas" if other else ""
        raise ValueError(
            f"{path}: no ts_local column (a footfall CSV has ts_local, the local hour, and "
            f"either a column of counts per sensor or the columns sensor and count){hint}"
        )
    times = raw.select(local_time(pl.col("ts_local")))["ts_local"]
    readable = int(times.is_not_null().sum())
    if readable < len(raw) / 2:
        example = raw["ts_local"].filter(times.is_null())[0]
        raise ValueError(
            f"{path}: {len(raw) - readable} of {len(raw)} rows have no readable ts_local "
            f"(such as {example!r}; expected the local hour, as 2023-03-26 01:00)"
        )
    off_hour = times.dt.truncate("1h") != times
    odd = int(off_hour.sum())
    if odd > MAX_ODD_SHARE * readable:
        raise ValueError(
            f"{path}: {odd} of {readable} rows are not on the hour (such as "
            f"{raw['ts_local'].filter(off_hour)[0]!r}): the counts must be hourly; sum them to "
            "the hour first"
        )
    raw = raw.with_columns(pl.when(~off_hour).then(times).alias("ts_local"))
    if all(name in raw.columns for name in LONG_COLUMNS):
        long = raw.select("ts_local", pl.col("sensor").str.strip_chars(), _count(pl.col("count")))
    else:
        long = _wide_counts(raw, path).unpivot(
            index="ts_local", variable_name="sensor", value_name="count"
        )
        long = long.with_columns(pl.col("sensor").str.strip_chars())
    # local times: a day ahead of UTC's present is ahead of every time zone's
    latest = (now or datetime.now(UTC)).replace(tzinfo=None) + timedelta(days=1)
    frame = long.filter(pl.col("ts_local").is_not_null() & (pl.col("ts_local") <= latest)).select(
        "sensor", "ts_local", pl.col("count").alias("value")
    )
    repeats = len(frame) - frame.select("sensor", "ts_local").n_unique()
    if repeats > MAX_ODD_SHARE * len(frame):
        raise ValueError(
            f"{path}: {repeats} of {len(frame)} rows repeat a sensor's hour. A file with a row "
            "per sensor and hour needs the columns ts_local, sensor and count; sum a sensor's "
            "rows of one hour (by direction, say) first"
        )
    return frame


def _count(cell: pl.Expr) -> pl.Expr:
    """A text cell → its count, null where it is no count (`read_counts`)."""
    value = cell.str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(value.is_finite() & value.is_between(0, MAX_HOURLY_COUNT)).then(value)


def _wide_counts(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    """``ts_local`` and a column of counts per sensor, from a wide file's text columns.

    A sensor's total column is taken and its direction columns are skipped. A file of
    direction columns only gets each sensor's total as the sum of its directions (null where
    one of them is no count).
    """
    columns = [c for c in raw.columns if c not in SKIPPED_COLUMNS]
    totals = [c for c in columns if not c.endswith(DIRECTIONS)]
    if totals:
        return raw.select("ts_local", *(_count(pl.col(c)) for c in totals))
    if not columns:
        raise ValueError(f"{path}: no column of counts beside ts_local")
    directions: dict[str, list[pl.Expr]] = {}
    for column in columns:
        base = next(column.removesuffix(d) for d in DIRECTIONS if column.endswith(d))
        directions.setdefault(base, []).append(_count(pl.col(column)))
    return raw.select(
        "ts_local",
        *(
            pl.when(pl.all_horizontal(part.is_not_null() for part in parts))
            .then(pl.sum_horizontal(parts))
            .alias(base)
            for base, parts in directions.items()
        ),
    )


LABEL_COLUMNS = ("event_id", "start_local", "end_local", "sensor_or_area", "kind")


def read_labels(path: Path | str) -> pl.DataFrame:
    """A footfall set's ``labels.csv``, one row per labelled window, in the file's order.

    Columns: ``event_id``, ``kind``, ``start_local`` and ``end_local`` (naive local datetimes;
    the end hour is part of the window), ``sensor_or_area`` and ``areas``, its parts split at
    ``;`` and stripped. Other columns (``source_note``) are kept as they are.

    Raises:
        ValueError: If a column is missing, or a row's start or end is no time or the end comes
            before the start: it names the row, since a label left out would change a score.
    """
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{path}: not a CSV file of labels ({exc})") from exc
    missing = [name for name in LABEL_COLUMNS if name not in raw.columns]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(missing)} (a labels file has the columns "
            f"{','.join(LABEL_COLUMNS)},source_note)"
        )
    frame = raw.with_columns(
        local_time(pl.col("start_local")).alias("start"),
        local_time(pl.col("end_local")).alias("end"),
        pl.col("sensor_or_area")
        .fill_null("")
        .str.split(";")
        .list.eval(pl.element().str.strip_chars())
        .alias("areas"),
    )
    bad = frame.filter(
        pl.col("start").is_null() | pl.col("end").is_null() | (pl.col("end") < pl.col("start"))
    )
    if not bad.is_empty():
        row = bad.row(0, named=True)
        raise ValueError(
            f"{path}: label {row['event_id']!r} runs from {row['start_local'] or ''!r} to "
            f"{row['end_local'] or ''!r}: expected two local times, as 2023-03-17 12:00, the "
            "end not before the start"
        )
    return frame.drop("start_local", "end_local").rename(
        {"start": "start_local", "end": "end_local"}
    )
