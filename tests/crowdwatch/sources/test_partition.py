"""Input split by station: stable, the same as ClickHouse's CRC32, every row exactly once."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.simulate import simulate_day
from crowdwatch.settings import DEFAULT_SITE_FILE
from crowdwatch.site import load_site
from crowdwatch.sources.partition import split_frame, station_partition
from crowdwatch.warehouse.client import Warehouse


def test_partitions_match_clickhouse_crc32(warehouse: Warehouse) -> None:
    stations = ["CTR", "RVS", "NPK", "STD", "WLK", "HZ07", "站点-1"]
    for n in (1, 2, 3, 8):
        expected = warehouse.query(
            "SELECT toInt64(CRC32(s) % {n:UInt32}) AS p FROM "
            "(SELECT arrayJoin({stations:Array(String)}) AS s)",
            {"n": n, "stations": stations},
        )["p"].to_list()
        assert [station_partition(s, n) for s in stations] == expected
    # fixed values: a change of hash would move every station to other processes
    assert [station_partition(s, 2) for s in ("CTR", "RVS", "NPK", "STD", "WLK")] == [
        int(x) for x in "10000"
    ]


@given(st.text(min_size=1, max_size=20), st.integers(min_value=1, max_value=64))
def test_partition_is_in_range(station: str, n: int) -> None:
    assert 0 <= station_partition(station, n) < n


def test_zero_partitions_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        station_partition("CTR", 0)


def test_split_keeps_every_row_once_and_each_station_whole() -> None:
    records = simulate_day(load_site(DEFAULT_SITE_FILE), date(2026, 11, 20), seed=0, scale=0.05)
    no_station = records.head(3).with_columns(pl.lit(None, pl.String).alias("station_id"))
    records = pl.concat([records, no_station]).with_row_index("row")
    parts = split_frame(records, 3)
    assert sum(p.height for p in parts) == records.height
    for i, part in enumerate(parts):
        stations = part["station_id"].drop_nulls().unique().to_list()
        assert all(station_partition(s, 3) == i for s in stations)
        assert part["row"].is_sorted()
    assert parts[0]["station_id"].null_count() == 3
