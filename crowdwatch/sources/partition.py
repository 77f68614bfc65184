"""Split input by station so that processes scale out without exchanging items.

Every stateful step of the pipelines is keyed by station (a station's zones, gates and cameras
share one state), so a process that reads all the records of its stations never needs records
from another process. Bytewax's keyed exchange between processes pickles every item, which made
a 2-process cluster several times slower than one process; splitting the *input* by station
instead lets N independent processes (or N Bytewax workers each owning whole partitions) run
side by side, all writing to one ClickHouse server.

The split is ``CRC-32(station_id as UTF-8) mod n``: the IEEE CRC-32 that zlib, Java's
``java.util.zip.CRC32``, Go's ``hash/crc32`` and ClickHouse's ``CRC32()`` compute alike, so a
producer in any language, or a query, puts a station in the same partition:

* Kafka: give the topic ``n`` partitions and produce each record to partition
  ``station_partition(station_id, n)`` (not the client's default key hash, which differs
  between clients); a process then consumes whole partitions.
* Redis Streams: write to stream ``<name>:<station_partition(station_id, n)>``, one per process.
* Files: `split_frame` writes ``n`` files, one per process.
* SQL: ``CRC32(station_id) % n`` gives the same partition.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import polars as pl

from crowdwatch.batches import RecordKind
from crowdwatch.site import Site


def station_partition(station_id: str, n: int) -> int:
    """The partition, in ``0 … n-1``, that holds every record of ``station_id``.

    Stable across processes, machines, languages and Python's hash seed.

    Raises:
        ValueError: ``n`` is not positive.
    """
    if n < 1:
        raise ValueError(f"partitions must be at least 1, got {n}")
    return zlib.crc32(station_id.encode("utf-8")) % n


def split_frame(frame: pl.DataFrame, n: int, column: str = "station_id") -> list[pl.DataFrame]:
    """Split records into ``n`` frames by `station_partition` of ``column``; order is kept.

    Rows whose station is null go to partition 0 (they are rejected downstream either way).
    """
    stations = frame.get_column(column).unique().drop_nulls().to_list()
    mapping = {str(s): station_partition(str(s), n) for s in stations}
    part = (
        frame.get_column(column)
        .cast(pl.String)
        .replace_strict(mapping, default=0, return_dtype=pl.UInt32)
    )
    return [frame.filter(part == i) for i in range(n)]


# Where each kind names its station, or the gate or camera that belongs to one (JSON paths).
_STATION_FIELDS: dict[RecordKind, tuple[str, str]] = {
    "passage": ("station_id", "gate_id"),
    "count": ("station_id", "gate_id"),
    "video": ("station_id", "camera_id"),
    "deepstream_full": ("station_id", "sensor.id"),
    "deepstream_minimal": ("station_id", "sensorId"),
    "call": ("district", "district"),
}


def record_stations(frame: pl.DataFrame, kind: RecordKind, site: Site) -> pl.Series:
    """The station of each record, to key and partition it by when publishing to a broker.

    A record's own ``station_id`` wins; otherwise its gate's or camera's station in the site.
    Calls have no station before they are placed: they are keyed by district. Records with
    none of these are null (they go to partition 0 and are rejected downstream).
    """
    station_field, device_field = _STATION_FIELDS[kind]
    if frame.columns == ["payload"]:
        text = pl.col("payload")
        own = text.str.json_path_match(f"$.{station_field}")
        device = text.str.json_path_match(f"$.{device_field}")
    else:
        missing = pl.lit(None, pl.String)
        own = pl.col(station_field).cast(pl.String) if station_field in frame.columns else missing
        column = device_field.split(".")[0]
        device = pl.col(column).cast(pl.String) if column in frame.columns else missing
    devices = {g.id: g.station for g in site.gates} | {c.id: c.station for c in site.cameras}
    via_device = device.replace_strict(devices, default=None, return_dtype=pl.String)
    fallback = device if kind == "call" else via_device
    return frame.select(pl.coalesce(own, fallback).alias("station_id")).to_series()


def chosen_partitions(count: int, partitions: Iterable[int] | None) -> list[int | None]:
    """The partitions a process reads: ``[None]`` when records are not split, else its share.

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
    return [None] if count == 1 else list(chosen)
