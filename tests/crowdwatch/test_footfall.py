"""A city's footfall CSV, wide or long, read to one long frame of counts."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from crowdwatch.footfall import MAX_HOURLY_COUNT, read_counts, read_labels
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


def test_a_file_of_directions_only_reads_each_sensors_total_as_their_sum(tmp_path: Path) -> None:
    month = wide_month()
    directions = [f"{SENSORS[0]} Pedestrian IN", f"{SENSORS[0]} Pedestrian OUT"]
    cells = month[directions[0]].to_list()
    cells[3] = "n/a"
    month.select("ts_local", *directions).with_columns(pl.Series(directions[0], cells)).write_csv(
        tmp_path / "directions.csv"
    )
    frame = read_counts(tmp_path / "directions.csv")
    assert frame["sensor"].unique().to_list() == [f"{SENSORS[0]} Pedestrian"]
    # Dublin's own total column is the sum of its two directions
    total = month[SENSORS[0]].cast(pl.Float64)
    assert frame["value"][3] is None and frame["value"].null_count() == 1
    assert frame["value"].fill_null(total[3]).equals(total, check_names=False)


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
    bad = {1: "-1", 2: "inf", 3: "n/a", 4: "", 5: "12\x003", 6: " 17 ", 10: "1e15", 11: "1200000"}
    cells = [bad.get(k, v) for k, v in enumerate(month[SENSORS[0]].to_list())]
    times = month["ts_local"].to_list()
    times[7], times[8] = "2023-13-45 25:61", "2199-01-01 00:00"
    pl.DataFrame({"ts_local": times, SENSORS[0]: cells}).write_csv(tmp_path / "counts.csv")
    frame = read_counts(tmp_path / "counts.csv")
    assert len(frame) == len(month) - 2
    assert frame["value"][1:6].null_count() == 5 and frame["value"][6] == 17
    assert frame["value"][7] == float(month[SENSORS[0]][9])
    assert frame["value"][8] is None and frame["value"][9] == MAX_HOURLY_COUNT
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


LABELS_HEADER = "event_id,start_local,end_local,sensor_or_area,kind,source_note\n"


def test_labels_read_with_their_times_and_areas(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        LABELS_HEADER + 'X-1,2023-03-17 12:00,2023-03-17T14:30:00, A st ;B st,parade,"a, b"\n'
    )
    label = read_labels(path).row(0, named=True)
    assert label["start_local"] == datetime(2023, 3, 17, 12)  # noqa: DTZ001 (local, naive)
    assert label["end_local"] == datetime(2023, 3, 17, 14, 30)  # noqa: DTZ001
    assert label["areas"] == ["A st", "B st"] and label["source_note"] == "a, b"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("X-1,2023-13-45 12:00,2023-03-17 14:30,all sensors,parade,", "label 'X-1' runs from"),
        ("X-2,2023-03-17 12:00,,all sensors,parade,", "label 'X-2' runs from"),
        ("X-3,2023-03-17 12:00,2023-03-16 12:00,all sensors,parade,", "the end not before"),
    ],
)
def test_a_label_that_is_no_window_is_refused_by_name(
    tmp_path: Path, row: str, message: str
) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(LABELS_HEADER + "X-0,2023-03-01 00:00,2023-03-01 01:00,a,parade,\n" + row)
    with pytest.raises(ValueError, match=message):
        read_labels(path)


def test_labels_without_their_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("event,start,end\nX,2023-02-01,2023-02-02\n")
    with pytest.raises(ValueError, match="no column event_id, start_local, end_local"):
        read_labels(path)


def test_counts_by_the_quarter_hour_are_refused_and_a_stray_row_off_the_hour_is_left_out(
    tmp_path: Path,
) -> None:
    month = wide_month().select("ts_local", SENSORS[0])
    quarters = month.with_columns(pl.col("ts_local").str.replace(":00$", ":15"))
    pl.concat([month, quarters]).write_csv(tmp_path / "quarters.csv")
    with pytest.raises(ValueError, match=r"are not on the hour \(such as '2023-03-01 00:15'\)"):
        read_counts(tmp_path / "quarters.csv")
    pl.concat([month, quarters.head(1)]).write_csv(tmp_path / "stray.csv")
    assert len(read_counts(tmp_path / "stray.csv")) == len(month)
