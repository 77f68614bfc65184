"""Gate event schemas and their strict, vectorised parsers.

Two record shapes come from metro automatic fare collection (AFC):

* a **passage**: one record per person through a gate —
  ``ts, gate_id, station_id (optional), direction (in/out or 1/0), ticket_type (optional)``;
* a **count**: counts per interval for a gate or a whole station —
  ``start, end, gate_id or station_id, entries, exits``.

Records arrive in micro-batches (`RawBatch`): a polars frame of *string* columns, or a single
``payload`` column of JSON lines. Parsing validates every row at once and returns two frames
(`Parsed`): the good rows reduced to per-window counts per zone, and the rejected rows with
their source, raw payload and reason. Nothing is dropped silently.

Timestamps with an offset (``2026-05-01T08:00:00+08:00``, ``…Z``) are honoured; naive ones are
read in the site's time zone. Internally time is epoch milliseconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from crowdwatch.batches import Check, RawBatch, TimeBounds, record_fields, split_rows
from crowdwatch.isotime import epoch_ms
from crowdwatch.site import Site

FLOW_SCHEMA = pl.Schema(
    {
        "station_id": pl.String(),
        "zone_id": pl.String(),
        "window": pl.Int64(),
        "entries": pl.Int64(),
        "exits": pl.Int64(),
    }
)
MAX_INTERVAL_MS = 24 * 3600 * 1000

DIRECTIONS = {
    **dict.fromkeys(("in", "IN", "In", "1", "entry", "ENTRY"), "in"),
    **dict.fromkeys(("out", "OUT", "Out", "0", "exit", "EXIT"), "out"),
}
"""Accepted spellings of a passage's direction (AFC status 1 = in, 0 = out)."""


@dataclass(frozen=True)
class Parsed:
    """The outcome of parsing one batch.

    Attributes:
        flows: ``station_id, zone_id, window, entries, exits`` summed per window; ``window`` is
            the window start in epoch milliseconds.
        rejected: ``received_at, source, position, reason, payload`` (`REJECTED_SCHEMA`).
    """

    flows: pl.DataFrame
    rejected: pl.DataFrame


@dataclass(frozen=True)
class GateDirectory:
    """What parsing needs from the site, as plain mappings built once per pipeline."""

    gate_station: dict[str, str]
    gate_zone: dict[str, str]
    gate_direction: dict[str, str]
    entry_zone: dict[str, str | None]
    timezone: str
    bounds: TimeBounds | None = None
    max_gate_per_min: int = 120
    max_station_per_min: int = 20_000

    @classmethod
    def from_site(
        cls,
        site: Site,
        bounds: TimeBounds | None = None,
        *,
        max_gate_per_min: int = 120,
        max_station_per_min: int = 20_000,
    ) -> GateDirectory:
        """Build the mappings for a site, with the plausibility bounds of the settings.

        Without ``bounds`` any event time from 1970 to 2199 is taken (tests of parsing alone).
        """
        return cls(
            gate_station={g.id: g.station for g in site.gates},
            gate_zone={g.id: g.zone for g in site.gates},
            gate_direction={g.id: g.direction for g in site.gates},
            entry_zone={s.id: site.entry_zone_of(s.id) for s in site.stations},
            timezone=site.site.timezone,
            bounds=bounds,
            max_gate_per_min=max_gate_per_min,
            max_station_per_min=max_station_per_min,
        )

    def time_checks(self, ts: str, batch: RawBatch, now_ms: int) -> list[Check]:
        """Event-time bounds on column ``ts`` (none without bounds)."""
        return [] if self.bounds is None else self.bounds.checks(pl.col(ts), batch, now_ms)


def _lookup(frame: pl.DataFrame, directory: GateDirectory) -> pl.DataFrame:
    """Resolve each row's station and zone from its gate, or from its station alone."""

    def mapped(column: str, mapping: dict[str, str]) -> pl.Expr:
        return pl.col(column).replace_strict(mapping, default=None, return_dtype=pl.String)

    frame = frame.with_columns(
        mapped("gate_id", directory.gate_station).alias("_gate_station"),
        mapped("gate_id", directory.gate_zone).alias("_gate_zone"),
        mapped("gate_id", directory.gate_direction).alias("_gate_direction"),
        pl.col("station_id").is_in(list(directory.entry_zone)).alias("_station_known"),
    )
    entry_zones = {k: v for k, v in directory.entry_zone.items() if v is not None}
    return frame.with_columns(
        pl.coalesce("_gate_station", "station_id").alias("_station"),
        pl.when(pl.col("gate_id").is_not_null())
        .then(pl.col("_gate_zone"))
        .otherwise(mapped("station_id", entry_zones))
        .alias("_zone"),
    )


def _lookup_errors() -> list[Check]:
    gate, station = pl.col("gate_id"), pl.col("station_id")
    return [
        (gate.is_null() & station.is_null(), "neither gate_id nor station_id given"),
        (
            gate.is_not_null() & pl.col("_gate_station").is_null(),
            pl.format("unknown gate '{}'", gate),
        ),
        (
            gate.is_not_null() & station.is_not_null() & (station != pl.col("_gate_station")),
            pl.format(
                "gate '{}' belongs to station '{}', not '{}'", gate, "_gate_station", station
            ),
        ),
        (
            gate.is_null() & ~pl.col("_station_known"),
            pl.format("unknown station '{}'", station),
        ),
        (
            pl.col("_zone").is_null(),
            pl.format(
                "station '{}' has several zones and no entry_zone for station-level counts",
                station,
            ),
        ),
    ]


def parse_passages(
    batch: RawBatch, directory: GateDirectory, window_ms: int, received_at_ms: int
) -> Parsed:
    """Parse one-record-per-passage rows into per-window entries and exits per zone."""
    frame, payload = record_fields(batch)
    frame = _lookup(frame, directory)
    frame = frame.with_columns(
        epoch_ms(frame["ts"], directory.timezone).alias("_ts"),
        pl.col("direction")
        .replace_strict(DIRECTIONS, default=None, return_dtype=pl.String)
        .alias("_direction"),
    )
    checks: list[Check] = [
        (pl.col("_json_error").is_not_null(), pl.col("_json_error")),
        (pl.col("ts").is_null(), "ts missing"),
        (pl.col("_ts").is_null(), pl.format("ts '{}' is not an ISO 8601 time", "ts")),
        (pl.col("direction").is_null(), "direction missing"),
        (
            pl.col("_direction").is_null(),
            pl.format("direction '{}' is not in/out (or 1/0)", "direction"),
        ),
        *directory.time_checks("_ts", batch, received_at_ms),
        *_lookup_errors(),
        (
            pl.col("_gate_direction").is_in(["in", "out"])
            & (pl.col("_gate_direction") != pl.col("_direction")),
            pl.format(
                "gate '{}' only lets people {}, got '{}'",
                "gate_id",
                "_gate_direction",
                "_direction",
            ),
        ),
    ]
    good, rejected = split_rows(frame, checks, payload, batch, received_at_ms)
    flows = (
        good.group_by(
            pl.col("_station").alias("station_id"),
            pl.col("_zone").alias("zone_id"),
            (pl.col("_ts") // window_ms * window_ms).alias("window"),
        )
        .agg(
            (pl.col("_direction") == "in").sum().cast(pl.Int64).alias("entries"),
            (pl.col("_direction") == "out").sum().cast(pl.Int64).alias("exits"),
        )
        .select(FLOW_SCHEMA.names())
    )
    return Parsed(flows=flows, rejected=rejected)


def parse_counts(
    batch: RawBatch, directory: GateDirectory, window_ms: int, received_at_ms: int
) -> Parsed:
    """Parse interval counts and spread each interval over the windows it overlaps.

    An interval that spans several windows is split in proportion to the overlap, rounded so
    that the parts add up to the interval's count exactly.
    """
    frame, payload = record_fields(batch)
    frame = _lookup(frame, directory)
    frame = frame.with_columns(
        epoch_ms(frame["start"], directory.timezone).alias("_start"),
        epoch_ms(frame["end"], directory.timezone).alias("_end"),
        *(
            pl.col(name).str.strip_chars().cast(pl.Int64, strict=False).alias(f"_{name}")
            for name in ("entries", "exits")
        ),
    )
    checks: list[Check] = [(pl.col("_json_error").is_not_null(), pl.col("_json_error"))]
    for name in ("start", "end"):
        checks += [
            (pl.col(name).is_null(), f"{name} missing"),
            (
                pl.col(f"_{name}").is_null(),
                pl.format(f"{name} '{{}}' is not an ISO 8601 time", name),
            ),
        ]
    checks += [
        (pl.col("_end") <= pl.col("_start"), "end is not after start"),
        (pl.col("_end") - pl.col("_start") > MAX_INTERVAL_MS, "interval longer than 24 h"),
    ]
    checks += directory.time_checks("_start", batch, received_at_ms)
    # what a gate (or a whole station) can pass in the interval: also keeps the spreading
    # arithmetic below far from overflow (counts x milliseconds)
    per_min = (
        pl.when(pl.col("gate_id").is_null())
        .then(directory.max_station_per_min)
        .otherwise(directory.max_gate_per_min)
    )
    most = per_min * (pl.col("_end") - pl.col("_start")) / 60_000
    for name in ("entries", "exits"):
        checks += [
            (pl.col(name).is_null(), f"{name} missing"),
            (
                pl.col(f"_{name}").is_null() | (pl.col(f"_{name}") < 0),
                pl.format(f"{name} '{{}}' is not a non-negative integer", name),
            ),
            (
                pl.col(f"_{name}") > most,
                pl.format(
                    f"{name} {{}} are more than the {{}} per minute a "
                    f"{{}} can pass in the interval",
                    f"_{name}",
                    per_min,
                    pl.when(pl.col("gate_id").is_null())
                    .then(pl.lit("station"))
                    .otherwise(pl.lit("gate")),
                ),
            ),
        ]
    good, rejected = split_rows(frame, [*checks, *_lookup_errors()], payload, batch, received_at_ms)
    flows = (
        _spread(good, window_ms)
        .group_by("station_id", "zone_id", "window")
        .agg(pl.col("entries").sum(), pl.col("exits").sum())
        .select(FLOW_SCHEMA.names())
    )
    return Parsed(flows=flows, rejected=rejected)


def _spread(good: pl.DataFrame, window_ms: int) -> pl.DataFrame:
    """Split each interval's counts over the windows it overlaps, exactly (largest remainder)."""
    start, end = pl.col("_start"), pl.col("_end")
    exploded = good.select(
        "_row",
        pl.col("_station").alias("station_id"),
        pl.col("_zone").alias("zone_id"),
        "_start",
        "_end",
        "_entries",
        "_exits",
        pl.int_ranges(start // window_ms, (end - 1) // window_ms + 1).alias("_k"),
    ).explode("_k")
    window = pl.col("_k") * window_ms
    overlap = pl.min_horizontal(end, window + window_ms) - pl.max_horizontal(start, window)
    covered = overlap.cum_sum().over("_row")
    duration = end - start
    parts = {}
    for name in ("entries", "exits"):
        total = pl.col(f"_{name}")
        upto = total * covered // duration
        parts[name] = upto - (total * (covered - overlap) // duration)
    return exploded.select(
        "station_id", "zone_id", window.alias("window"), *(v.alias(k) for k, v in parts.items())
    )


def parse_batch(
    batch: RawBatch, directory: GateDirectory, window_ms: int, received_at_ms: int
) -> Parsed:
    """Parse a batch of gate records of either kind; other kinds are rejected whole."""
    if batch.kind == "passage":
        return parse_passages(batch, directory, window_ms, received_at_ms)
    if batch.kind == "count":
        return parse_counts(batch, directory, window_ms, received_at_ms)
    frame, payload = record_fields(batch)
    checks: list[Check] = [(pl.lit(True), f"a {batch.kind} record, not a gate record")]
    _, rejected = split_rows(frame, checks, payload, batch, received_at_ms)
    return Parsed(flows=pl.DataFrame(schema=FLOW_SCHEMA), rejected=rejected)
