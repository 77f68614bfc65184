"""110 emergency-call records: strict parsing, privacy, categories and geo-assignment to zones.

A dispatch (CAD) feed sends each call several times as it is updated (accepted, dispatched,
closed …). Records carry ``call_id, received_at, updated_at, lat, lon, district, address,
category_code, category_text, priority, status, caller_phone, caller_name, caller_id_number,
description``. Parsing a batch:

- checks every row (a call id, a valid time with a zone offset, coordinates in range and given
  as a pair) and rejects the rest with a reason;
- applies the privacy rules before anything is stored: caller names and ID numbers are dropped;
  the phone number becomes a keyed hash when a key is configured (to link repeat callers) and is
  dropped otherwise; free text (address, description) is scrubbed of phone and ID numbers and
  of the caller's own name where it repeats it (other names in free text cannot be found by a
  pattern and are not removed). A rejected row's payload is stored in the same scrubbed form,
  never raw;
- maps the dispatch category to a crowd-safety group with its weight;
- assigns each call to every zone whose polygon contains it or whose radius reaches it (shapely,
  in a local metric projection), to those zones' stations, and to its district (from the
  record; ``unknown`` when it has none), so calls far from every zone still count.

A record's version is its ``updated_at`` (else ``received_at``): the warehouse and the counting
state keep the newest version of each call, so an update never adds a second call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import shapely

from crowdwatch.batches import FIELDS, Check, RawBatch, TimeBounds, record_fields, split_rows
from crowdwatch.calls.categories import Categories
from crowdwatch.isotime import epoch_ms
from crowdwatch.privacy import CALLER_FIELDS, keyed_hash, scrub_text, without_name
from crowdwatch.site import Circle, Polygon, Site

TEXT_FIELDS = ("address", "description", "category_text")
CODE_FIELDS = ("district", "category_code", "status")
"""Short codes that are stored as they come unless they hold a personal number."""
EARTH_M_PER_DEG_LAT = 110_540.0
EARTH_M_PER_DEG_LON_AT_EQUATOR = 111_320.0

CALL_SCHEMA = pl.Schema(
    {
        "call_id": pl.String(),
        "version": pl.UInt64(),
        "received_at": pl.Datetime("ms", "UTC"),
        "updated_at": pl.Datetime("ms", "UTC"),
        "lat": pl.Float64(),
        "lon": pl.Float64(),
        "district": pl.String(),
        "address": pl.String(),
        "category_code": pl.String(),
        "category_text": pl.String(),
        "group": pl.String(),
        "weight": pl.Float64(),
        "priority": pl.Int32(),
        "status": pl.String(),
        "description": pl.String(),
        "caller_hash": pl.String(),
        "zones": pl.List(pl.String()),
        "stations": pl.List(pl.String()),
        "source": pl.String(),
    }
)


class CallZones:
    """The site's zone shapes in a local metric projection, for point-in-zone queries."""

    def __init__(self, site: Site) -> None:
        shaped = [z for z in site.zones if z.geometry is not None]
        points = [
            p
            for z in shaped
            for p in (
                z.geometry.polygon if isinstance(z.geometry, Polygon) else [z.geometry.centre]  # type: ignore[union-attr]
            )
        ]
        self.lat0 = float(np.mean([p[0] for p in points])) if points else 0.0
        self.lon0 = float(np.mean([p[1] for p in points])) if points else 0.0
        self.lon_scale = EARTH_M_PER_DEG_LON_AT_EQUATOR * math.cos(math.radians(self.lat0))
        geometries = []
        for zone in shaped:
            if isinstance(zone.geometry, Circle):
                x, y = self.project(
                    np.array([zone.geometry.centre[0]]), np.array([zone.geometry.centre[1]])
                )
                geometries.append(shapely.Point(x[0], y[0]).buffer(zone.geometry.radius_m, 64))
            elif isinstance(zone.geometry, Polygon):
                lat = np.array([p[0] for p in zone.geometry.polygon])
                lon = np.array([p[1] for p in zone.geometry.polygon])
                geometries.append(shapely.Polygon(np.column_stack(self.project(lat, lon))))
        self.zone_ids = [z.id for z in shaped]
        self.stations = [z.station for z in shaped]
        self.tree = shapely.STRtree(geometries)

    def project(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metres east and north of the site's centre (equirectangular; fine within a city)."""
        return (lon - self.lon0) * self.lon_scale, (lat - self.lat0) * EARTH_M_PER_DEG_LAT

    def assign(self, lat: np.ndarray, lon: np.ndarray) -> pl.DataFrame:
        """The zones containing each point (edges count) and their stations.

        Returns ``row`` (the point's index), ``zones`` and ``stations`` lists; points in no zone
        have no row.
        """
        known = ~(np.isnan(lat) | np.isnan(lon))
        x, y = self.project(lat[known], lon[known])
        point_index, zone_index = (
            self.tree.query(shapely.points(x, y), predicate="intersects")
            if known.any() and self.zone_ids
            else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        )
        pairs = pl.DataFrame(
            {
                "row": np.flatnonzero(known)[point_index],
                "zone": np.array(self.zone_ids, dtype=object)[zone_index].astype(str)
                if zone_index.size
                else np.zeros(0, dtype=str),
                "station": np.array(self.stations, dtype=object)[zone_index].astype(str)
                if zone_index.size
                else np.zeros(0, dtype=str),
            },
            schema={"row": pl.Int64, "zone": pl.String, "station": pl.String},
        )
        return (
            pairs.sort("row", "zone")
            .group_by("row", maintain_order=True)
            .agg(
                pl.col("zone").alias("zones"),
                pl.col("station").unique(maintain_order=True).alias("stations"),
            )
        )


@dataclass(frozen=True)
class CallDirectory:
    """What parsing calls needs: zones, categories, the caller-hash key and the time zone."""

    zones: CallZones
    categories: Categories
    hash_key: bytes | None
    timezone: str
    bounds: TimeBounds | None = None


def _without_caller_name(frame: pl.DataFrame) -> pl.DataFrame:
    """Replace the caller's own name where the record's free text repeats it, however spaced.

    Per row in Python (polars cannot replace a per-row pattern); only rows that name a caller
    pay for it, and call feeds are thousands of records a day.
    """
    names = frame["caller_name"].str.strip_chars().to_list()
    if not any(names):
        return frame

    def scrubbed(field: str) -> pl.Series:
        return pl.Series(
            field,
            [
                without_name(text, name)
                for text, name in zip(frame[field].to_list(), names, strict=True)
            ],
            dtype=pl.String,
        )

    return frame.with_columns(scrubbed(field) for field in (*TEXT_FIELDS, *CODE_FIELDS))


def _call_ids(ids: pl.Series, received_ms: pl.Series, key: bytes | None) -> pl.Series:
    """Call ids as they come, unless one holds a personal number: then keyed, or scrubbed.

    A dispatch system that numbers calls by the caller's phone would otherwise put the number
    into the warehouse. Keyed (with ``CROWDWATCH_CALLER_HASH_KEY``) the id still identifies
    the call; without a key it becomes the scrubbed id and the time the call was received
    (``[phone]@1763646000000``), which every update of the call repeats.
    """
    ids = ids.str.strip_chars()
    scrubbed = scrub_text(ids)
    personal = (scrubbed != ids).fill_null(False)
    if not personal.any():
        return ids
    if key:
        return ids.zip_with(~personal, keyed_hash(ids, key))
    timed = pl.DataFrame({"id": scrubbed, "ms": received_ms}).select(pl.format("{}@{}", "id", "ms"))
    return ids.zip_with(~personal, timed.to_series())


def _number(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)


def parse_calls(
    batch: RawBatch, directory: CallDirectory, received_at_ms: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate, scrub, categorise and place a batch of call records.

    Returns:
        The calls (`CALL_SCHEMA`) and the rejected rows (their payloads scrubbed).
    """
    if batch.kind != "call":
        frame, payload = record_fields(batch)
        checks: list[Check] = [(pl.lit(True), f"a {batch.kind} record, not a call record")]
        _, rejected = split_rows(frame, checks, payload, batch, received_at_ms)
        return pl.DataFrame(schema=CALL_SCHEMA), rejected
    frame, _ = record_fields(batch)
    frame = _without_caller_name(frame)
    frame = frame.with_columns(
        *(scrub_text(frame[name]).alias(name) for name in (*TEXT_FIELDS, *CODE_FIELDS)),
        epoch_ms(frame["received_at"], directory.timezone).alias("_received"),
        epoch_ms(frame["updated_at"], directory.timezone).alias("_updated"),
        _number("lat").alias("_lat"),
        _number("lon").alias("_lon"),
        pl.col("priority").str.strip_chars().cast(pl.Int32, strict=False).alias("_priority"),
    )
    checks = [
        (pl.col("_json_error").is_not_null(), pl.col("_json_error")),
        (
            pl.col("call_id").is_null() | (pl.col("call_id").str.strip_chars() == ""),
            "call_id missing",
        ),
        (pl.col("received_at").is_null(), "received_at missing"),
        (
            pl.col("_received").is_null(),
            "received_at is not an ISO 8601 time",
        ),
        (
            pl.col("updated_at").is_not_null() & pl.col("_updated").is_null(),
            "updated_at is not an ISO 8601 time",
        ),
        *(
            []
            if directory.bounds is None
            else directory.bounds.checks(pl.col("_received"), batch, received_at_ms)
        ),
        (pl.col("lat").is_null() != pl.col("lon").is_null(), "lat and lon must come together"),
        (
            # null-safe: a number that does not parse is null, and null must fail, not pass
            pl.col("lat").is_not_null()
            & (
                pl.col("_lat").is_null()
                | pl.col("_lon").is_null()
                | (pl.col("_lat").abs() > 90).fill_null(True)
                | (pl.col("_lon").abs() > 180).fill_null(True)
            ),
            "lat/lon are not coordinates",
        ),
        (
            pl.col("priority").is_not_null() & pl.col("_priority").is_null(),
            "priority is not an integer",
        ),
    ]
    kept = [c for c in frame.columns if c in FIELDS_STORED_IN_REJECTS]
    scrubbed_payload = pl.struct(kept).struct.json_encode()
    good, rejected = split_rows(frame, checks, scrubbed_payload, batch, received_at_ms)
    groups = directory.categories.assign(good["category_code"], good["category_text"])
    placed = directory.zones.assign(
        good["_lat"].fill_null(float("nan")).to_numpy(),
        good["_lon"].fill_null(float("nan")).to_numpy(),
    )
    good = good.with_row_index("_at", offset=0).join(
        placed.rename({"row": "_at"}).cast({"_at": pl.UInt32}),
        on="_at",
        how="left",
        maintain_order="left",
    )
    caller_hash = (
        keyed_hash(good["caller_phone"], directory.hash_key)
        if directory.hash_key
        else pl.Series([None] * good.height, dtype=pl.String)
    )
    calls = good.select(
        pl.lit(_call_ids(good["call_id"], good["_received"], directory.hash_key)).alias("call_id"),
        pl.coalesce("_updated", "_received").cast(pl.UInt64).alias("version"),
        pl.col("_received").cast(pl.Datetime("ms", "UTC")).alias("received_at"),
        pl.coalesce("_updated", "_received").cast(pl.Datetime("ms", "UTC")).alias("updated_at"),
        pl.col("_lat").alias("lat"),
        pl.col("_lon").alias("lon"),
        pl.col("district").str.strip_chars().fill_null("unknown").alias("district"),
        "address",
        "category_code",
        "category_text",
        pl.lit(groups["group"]).alias("group"),
        pl.lit(groups["weight"]).alias("weight"),
        pl.col("_priority").alias("priority"),
        "status",
        "description",
        pl.lit(caller_hash).alias("caller_hash"),
        pl.col("zones").fill_null([]),
        pl.col("stations").fill_null([]),
        pl.lit(batch.source).alias("source"),
    ).cast(CALL_SCHEMA)
    return calls, rejected


FIELDS_STORED_IN_REJECTS = tuple(f for f in FIELDS["call"] if f not in CALLER_FIELDS)
"""What a rejected call's stored payload keeps: no caller fields, text already scrubbed."""
