"""A city's footfall CSV, wide or long, read to one long frame of counts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from crowdwatch.footfall import read_counts
from tests.conftest import SHARED_DATA

DUBLIN = SHARED_DATA / "footfall" / "dublin_2023" / "dublin_footfall_2023_hourly.csv"
SENSORS = ["Grafton st/Monsoon", "Henry Street/Coles Lane/Dunnes"]

pytestmark = pytest.mark.skipif(not DUBLIN.exists(), reason=f"Dublin data not found at {DUBLIN}")


def wide_month() -> pl.DataFrame:
    """March 2023 of two real Dublin sensors (the clocks go forward on the 26th), as text."""
    wide = pl.read_csv(DUBLIN, infer_schema_length=0)
    return wide.select(
        "ts_local", *SENSORS, *(f"{SENSORS[0]} Pedestrian IN", f"{SENSORS[0]} Pedestrian OUT")
    ).filter(pl.col("ts_local").str.starts_with("2023-03"))


def test_a_long_file_reads_as_its_wide_form(tmp_path: Path) -> None:
    wide = wide_month()
    wide.write_csv(tmp_path / "wide.csv")
    long = wide.select("ts_local", *SENSORS).unpivot(
        index="ts_local", variable_name="sensor", value_name="count"
    )
    # as a portal publishes it: another column, rows by hour, times with a T and seconds
    long.with_columns(
        pl.lit("Dublin").alias("city"),
        pl.col("ts_local").str.replace(" ", "T") + ":00",
    ).sort("ts_local", maintain_order=True).write_csv(tmp_path / "long.csv")
    from_wide = read_counts(tmp_path / "wide.csv").sort("sensor", "ts_local")
    from_long = read_counts(tmp_path / "long.csv").sort("sensor", "ts_local")
    assert from_wide.equals(from_long)
    # the direction columns are not sensors
    assert from_wide["sensor"].unique().sort().to_list() == SENSORS
    assert len(from_wide) == 2 * len(wide) and from_wide["value"].null_count() == 0
    assert from_wide["ts_local"].min().date() == date(2023, 3, 1)


def test_a_long_file_without_its_column_names_is_refused_not_read_as_one_sensor(
    tmp_path: Path,
) -> None:
    # before, this file backtested as one sensor called "n", the first sensor's rows of each hour
    wide_month().select("ts_local", *SENSORS).unpivot(
        index="ts_local", variable_name="name", value_name="n"
    ).write_csv(tmp_path / "long.csv")
    with pytest.raises(ValueError, match="needs the columns ts_local, sensor and count"):
        read_counts(tmp_path / "long.csv")


def test_cells_that_are_no_counts_are_null_and_rows_without_a_time_are_left_out(
    tmp_path: Path,
) -> None:
    month = wide_month().select("ts_local", SENSORS[0])
    bad = {1: "-1", 2: "inf", 3: "n/a", 4: "", 5: "12\x003", 6: " 17 "}
    cells = [bad.get(k, v) for k, v in enumerate(month[SENSORS[0]].to_list())]
    times = month["ts_local"].to_list()
    times[7], times[8] = "2023-13-45 25:61", "2199-01-01 00:00"
    pl.DataFrame({"ts_local": times, SENSORS[0]: cells}).write_csv(tmp_path / "counts.csv")
    frame = read_counts(tmp_path / "counts.csv")
    assert len(frame) == len(month) - 2
    assert frame["value"][1:6].null_count() == 5 and frame["value"][6] == 17
    assert frame["value"][7] == float(month[SENSORS[0]][9])
    assert frame["ts_local"].max().date() < date(2023, 4, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,a\n2023-03-01 00:00,1\n", r"no ts_local column \(.*count\)$"),
        ("ts_local;a\n2023-03-01 00:00;1\n", "its header is split by ';', not by commas"),
        ("", "not a CSV file of counts"),
        ("ts_local,src_hour\n2023-03-01 00:00,0:00-0:59\n", "no column of counts"),
        ("ts_local,a\n01/03/2023 00:00,1\n01/03/2023 01:00,2\n", "such as '01/03/2023 00:00'"),
    ],
)
def test_a_file_in_neither_shape_says_what_it_lacks(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "counts.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_counts(path)
