"""The backtest on another city's footfall: its own CSV, calendar, labels and origins."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.cli import main as cli_main
from forecasts.backtest import (
    footfall_series,
    load_footfall,
    main,
    origin_ratios,
    spread_origins,
)
from tests.conftest import SHARED_DATA

DUBLIN = SHARED_DATA / "footfall" / "dublin_2023" / "dublin_footfall_2023_hourly.csv"
SENSOR = "Grafton st/Monsoon"


def city(folder: Path, days: int, labels: str | None = None) -> Path:
    """A folder like another city's: ``days`` of one real Dublin sensor from 1 February."""
    folder.mkdir()
    raw = pd.read_csv(DUBLIN, usecols=["ts_local", SENSOR])
    start = raw.index[raw["ts_local"] == "2023-02-01 00:00"][0]
    path = folder / "counts.csv"
    raw.iloc[start : start + 24 * days].to_csv(path, index=False)
    if labels is not None:
        (folder / "labels.csv").write_text(labels)
    return path


def with_gappy_sensor(path: Path) -> Path:
    """``path`` with a second sensor, ``gappy``, that counted every other hour only."""
    frame = pd.read_csv(path)
    frame["gappy"] = frame[SENSOR].where(frame.index % 2 == 0)
    frame.to_csv(path, index=False)
    return path


pytestmark = pytest.mark.skipif(not DUBLIN.exists(), reason=f"Dublin data not found at {DUBLIN}")


def test_origins_come_closer_when_the_data_is_short_and_never_leave_less_than_two_weeks() -> None:
    first, last = pd.Timestamp("2023-03-01 00:00"), pd.Timestamp("2023-06-30 23:00")
    origins = spread_origins(last, 21, 17, first)
    gaps = set(np.diff(np.array(origins, dtype="datetime64[D]")).astype(int))
    assert len(origins) == 21 and len(gaps) == 1 and gaps.pop() % 7 != 0
    assert origins[0] >= first + pd.Timedelta(days=14)
    assert origins[-1] == pd.Timestamp("2023-06-23")
    assert {o.day_of_week for o in origins} == set(range(7))
    daily = spread_origins(pd.Timestamp("2023-03-31 23:00"), 21, 17, first)
    assert daily[0] == pd.Timestamp("2023-03-15") and len(daily) == 10
    with pytest.raises(ValueError, match="needs 22 days"):
        spread_origins(pd.Timestamp("2023-03-15 23:00"), 21, 17, first)


def test_another_citys_folder_brings_its_calendar_and_event_windows(tmp_path: Path) -> None:
    labels = (
        "event_id,start_local,end_local,sensor_or_area,kind,source_note\n"
        f"X-1,2023-03-17 12:00,2023-03-17 14:30,{SENSOR},parade,a parade\n"
        f"X-2,2023-03-20 09:00,2023-03-20 18:00,{SENSOR},storm,a storm\n"
    )
    data = load_footfall(city(tmp_path / "testcity", 60, labels), country="IE", origins=5)
    assert data.name == "testcity" and list(data.series) == [SENSOR.strip()]
    assert data.config.country == "IE"
    # the parade was announced; a storm is not in a site's calendar
    assert [(e.kind, e.start.day) for e in data.config.events] == [("parade", 17)]
    assert len(data.origins) == 5
    assert data.origins[0] >= pd.Timestamp("2023-02-15")


def test_an_announced_label_of_months_is_refused_and_a_long_lockdown_is_not(tmp_path: Path) -> None:
    labels = (
        "event_id,start_local,end_local,sensor_or_area,kind,source_note\n"
        f"X-1,2023-03-20 09:00,2023-06-20 18:00,{SENSOR},lockdown,three months of it\n"
        f"X-2,2023-03-17 12:00,2024-03-17 14:30,{SENSOR},parade,the end year mistyped\n"
    )
    with pytest.raises(ValueError, match=r"label 'X-2' \(parade\) runs from 2023-03-17 12:00:00"):
        load_footfall(city(tmp_path / "testcity", 60, labels), country="IE")
    (tmp_path / "testcity" / "labels.csv").write_text(labels.replace("2024-03-17", "2023-03-17"))
    data = load_footfall(tmp_path / "testcity" / "counts.csv", country="IE")
    assert [e.kind for e in data.config.events] == ["parade"]


def test_the_backtest_runs_on_another_citys_csv_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_gappy_sensor(city(tmp_path / "testcity_far_away", 35))
    argv = ["--footfall", str(path), "--country", "ie", "--origins", "2", "--processes", "1"]
    main([*argv, "--per-origin"])
    out = capsys.readouterr().out
    assert "testcity_far_away: 1 sensors, 2 origins from 2023-02-15 to 2023-02-28" in out
    assert (
        "testcity_far_away: left out (a sensor needs 90 % of the last year's hours and counts "
        "that vary): gappy (50% of the hours)"
    ) in out
    rows = [
        line.split()
        for line in out.splitlines()
        if line.startswith(("testcity_far_away ", "hangzhou"))
    ]
    assert [row[:3] for row in rows] == [["testcity_far_away", "1", "2"]]
    # a set name longer than the column still leaves each figure under its heading
    header = next(line for line in out.splitlines() if line.startswith("set "))
    row = next(line for line in out.splitlines() if line.startswith("testcity_far_away "))
    assert row.index(rows[0][3]) + len(rows[0][3]) == header.index("MAE ratio") + len("MAE ratio")
    worst = r"^worst MAE ratio \(set, weekday\): ([\d.]+) \(testcity_far_away, \w{3}\)$"
    ratio = re.search(worst, out, re.M)
    assert ratio and 0 < float(ratio.group(1)) < 5
    assert re.search(r"^80% coverage range: [\d.]+-[\d.]+ %$", out, re.M)
    # one origin a weekday: the worst weekday is the worse of the two origin days
    days = re.findall(r"^(2023-02-\d\d)\s+(\w{3})\s+([\d.]+)\s+[\d.]+$", out, re.M)
    assert [day[:2] for day in days] == [("2023-02-15", "Wed"), ("2023-02-28", "Tue")]
    assert max(float(day[2]) for day in days) == pytest.approx(float(ratio.group(1)), abs=1e-3)


def test_an_origin_days_ratio_pools_its_sensors_and_leaves_failed_fits_out() -> None:
    rows = pd.DataFrame(
        {
            "origin": pd.to_datetime(["2023-02-15"] * 3 + ["2023-02-18"]),
            "error": [None, None, "history covers 3 days", None],
            "mae": [10.0, 30.0, 1000.0, 5.0],
            "naive_mae": [40.0, 20.0, 1.0, 4.0],
            "coverage": [0.5, 1.0, 0.0, 0.75],
        }
    )
    days = origin_ratios(rows)
    assert days.index.tolist() == ["2023-02-15", "2023-02-18"]
    assert days["weekday"].tolist() == ["Wed", "Sat"]
    # (10 + 30) / (40 + 20), not the mean of 0.25 and 1.5, and without the failed fit's 1000
    assert days["mae_ratio"].tolist() == pytest.approx([2 / 3, 1.25])
    assert days["coverage"].tolist() == [0.75, 0.75]


@pytest.mark.parametrize(
    ("country", "header", "days", "message"),
    [
        ("XX", "ts_local", 35, "unknown country or subdivision 'XX'"),
        (None, "ts_local", 35, "--footfall needs --country"),
        ("IE", "time", 35, "no ts_local column"),
        ("IE", "ts_local", 10, "a backtest needs 22 days"),
    ],
)
def test_a_footfall_set_that_cannot_be_backtested_is_refused_with_the_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    country: str | None,
    header: str,
    days: int,
    message: str,
) -> None:
    path = city(tmp_path / "testcity", days)
    path.write_text(path.read_text().replace("ts_local", header, 1))
    argv = ["--footfall", str(path)] + (["--country", country] if country else [])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "auckland", "--country", "AU"], "--country and --subdivision go with"),
        (["--origins", "0"], "--origins and --every-days must be at least 1"),
    ],
)
def test_options_that_mean_nothing_are_refused_before_any_fit(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_crowdwatch_command_passes_the_backtest_options_on_and_no_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = city(tmp_path / "testcity", 35)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["forecast", "backtest", "--footfall", str(path), "--country", "XX"])
    assert exit_info.value.code == 2
    assert "crowdwatch forecast backtest: error: unknown country" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["forecast", "train", "--country", "XX"])
    assert "unrecognized arguments: --country XX" in capsys.readouterr().err


def test_a_sensor_left_out_is_named_and_a_file_of_such_sensors_refused(tmp_path: Path) -> None:
    path = with_gappy_sensor(city(tmp_path / "testcity", 30))
    data = load_footfall(path, country="IE", origins=2)
    assert list(data.series) == [SENSOR] and data.left_out == {"gappy": "50% of the hours"}
    path.write_text(pd.read_csv(path).drop(columns=SENSOR).to_csv(index=False))
    with pytest.raises(ValueError, match=r"no sensor has 90 % .* \(left out: gappy \(50% of"):
        load_footfall(path, country="IE", origins=2)


def test_a_flag_column_or_a_stuck_counter_is_no_sensor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Seattle's hourly 911 file has a flag column (in_source: 1, or 0 where the hour was
    # filled in): read as a sensor, its weekly naive error was 0 on the backtest's days and
    # the worst sensor's ratio infinite
    path = city(tmp_path / "testcity", 35)
    frame = pd.read_csv(path)
    frame["in_source"] = np.where(frame.index < 3, 0, 1)
    frame["frozen"] = 412.0  # a counter stuck at one reading
    frame.to_csv(path, index=False)
    data = load_footfall(path, country="IE", origins=2)
    assert sorted(data.series) == [SENSOR, "in_source"]
    assert data.left_out == {"frozen": "412 in every hour"}
    cli_main(["forecast", "backtest", "--footfall", str(path), "--country", "IE", "--origins", "1"])
    out = capsys.readouterr().out
    assert "left out (a sensor needs 90 % of the last year's hours and counts that vary): " in out
    assert "frozen (412 in every hour)" in out
    assert "the weekly naive forecast was exact on every day (no counts to compare): in_source" in (
        " ".join(out.split())
    )
    assert f"worst sensor {SENSOR} (" in out
    assert re.search(r"^testcity +1 +1 ", out, re.MULTILINE)


def test_values_that_are_no_counts_are_missing_hours(tmp_path: Path) -> None:
    path = city(tmp_path / "testcity", 30)
    lines = path.read_text().splitlines()
    for row, bad in ((5, "-1"), (6, "inf"), (7, "n/a"), (8, "")):
        lines[row] = lines[row].rsplit(",", 1)[0] + "," + bad
    path.write_text("\n".join(lines) + "\n")
    frame = footfall_series(path, min_coverage=0.5)[0][SENSOR]
    assert len(frame) == 30 * 24 - 4
    assert (frame["y"] >= 0).all() and np.isfinite(frame["y"]).all()
    assert pd.Timestamp("2023-02-01 04:00") not in set(frame["ds"])


def test_a_row_from_the_future_neither_stretches_the_file_nor_refuses_it(tmp_path: Path) -> None:
    path = city(tmp_path / "testcity", 60)
    with path.open("a") as handle:
        handle.write("2199-01-01 00:00,5\n")
    data = load_footfall(path, country="IE", origins=3)
    frame = data.series[SENSOR]
    assert frame["ds"].max() == pd.Timestamp("2023-04-01 23:00") and len(frame) == 60 * 24
    assert data.origins[-1] == pd.Timestamp("2023-03-25")


def test_a_long_file_backtests_the_same_series_as_its_wide_form(tmp_path: Path) -> None:
    sensors = [SENSOR, "Henry Street/Coles Lane/Dunnes"]
    wide = pd.read_csv(DUBLIN, usecols=["ts_local", *sensors], nrows=24 * 40)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    long = wide.melt(id_vars="ts_local", var_name="sensor", value_name="count")
    long.sort_values("ts_local", kind="stable").to_csv(tmp_path / "long.csv", index=False)
    from_wide, _ = footfall_series(tmp_path / "wide.csv")
    from_long, _ = footfall_series(tmp_path / "long.csv")
    assert list(from_long) == sorted(sensors)
    for sensor in sensors:
        pd.testing.assert_frame_equal(from_long[sensor], from_wide[sensor])
        assert len(from_long[sensor]) > 24 * 39
