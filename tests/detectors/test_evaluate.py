"""The evaluation harness: label reading, surge judging, and the whole run on the shared data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from detectors import evaluate
from detectors.evaluate import HOUR_MS, Label, SensorResult, local_ms, read_labels

SENSORS = ["297 Queen Street", "45 Queen Street", "61 Federal Street", "107 Quay Street"]


def test_labels_resolve_areas_to_sensors(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "event_id,start_local,end_local,sensor_or_area,kind,source_note\n"
        'A,2019-12-31 22:00,2020-01-01 01:00,"Queen Street sensors (esp. 45);61 Federal Street '
        '(Sky Tower)",surge_nye,x\n'
        "B,2020-03-26 00:00,2020-04-27 23:59,all sensors,quiet_lockdown,x\n"
        "C,2023-03-26 01:00,2023-03-26 01:59,107 quay street,timestamp_glitch,x\n",
        encoding="utf-8",
    )
    a, b, c = read_labels(path, "Europe/Dublin", SENSORS)
    assert a.sensors == {"297 Queen Street", "45 Queen Street", "61 Federal Street"}
    assert b.sensors == set(SENSORS)
    assert c.sensors == {"107 Quay Street"}
    # 01:00 on 2023-03-26 never happened in Dublin: read an hour later, 01:00 UTC
    assert c.start_ms == 1_679_792_400_000
    assert a.end_ms - a.start_ms == 4 * HOUR_MS - 1  # 22:00 to the end of the 01:00 hour


def test_local_times_in_a_dst_gap_are_null_unless_shifted() -> None:
    frame = pl.DataFrame({"t": ["2023-03-26 00:00", "2023-03-26 01:00", "2023-03-26 02:00"]})
    plain = frame.select(local_ms(pl.col("t"), "Europe/Dublin"))["t"].to_list()
    assert plain[1] is None and plain[2] - plain[0] == HOUR_MS  # 00:00 GMT, 02:00 IST
    shifted = frame.select(local_ms(pl.col("t"), "Europe/Dublin", skipped="1h"))["t"]
    assert shifted[1] == shifted[2]


def _sensor(name: str, alarms: list[int], peak_hour: int) -> SensorResult:
    ts = np.arange(0, 30 * 24, dtype=np.int64) * HOUR_MS
    values = np.full(ts.size, 100.0)
    values[peak_hour] = 900.0
    return SensorResult(
        name,
        ts,
        values,
        [(a * HOUR_MS, a * HOUR_MS) for a in alarms],
        np.array(alarms) * HOUR_MS,
        0,
    )


def test_surges_are_judged_on_their_own_sensors_with_the_lead_to_the_peak() -> None:
    day = 20 * 24
    labels = [
        Label("caught", "surge_march", (day + 10) * HOUR_MS, (day + 14) * HOUR_MS, frozenset("a")),
        Label("missed", "parade", (day + 10) * HOUR_MS, (day + 14) * HOUR_MS, frozenset("b")),
        Label("early", "riot", 2 * 24 * HOUR_MS, 2 * 24 * HOUR_MS + HOUR_MS, frozenset("a")),
        Label("quiet", "quiet_lockdown", 0, 10 * HOUR_MS, frozenset("ab")),
    ]
    # a alarms two hours into the march, which peaks at 13:00; b alarms only the day before
    results = [_sensor("a", [day + 12], day + 13), _sensor("b", [day - 10], day + 12)]
    judged = {e: (caught, lead) for e, caught, lead in evaluate._judge_surges(results, labels)}
    assert judged["caught"] == (True, 1.0)
    assert judged["missed"] == (False, None)
    assert judged["early"][0] is False and np.isnan(judged["early"][1])  # no week of history
    assert "quiet" not in judged


@pytest.mark.slow
def test_the_harness_prints_its_table_and_headline() -> None:
    if not evaluate.DATA_DIR.is_dir():
        pytest.skip(f"no shared data at {evaluate.DATA_DIR}")
    out = evaluate.table_lines(evaluate.Settings(), workers=2)
    assert re.fullmatch(r"surges caught: \d+ %", out[-3])
    assert re.fullmatch(r"false alarms per sensor-week: \d+\.\d\d", out[-2])
    assert re.fullmatch(r"call surge onset to alert: (\d+\.\d|never) h", out[-1])
    rows = "\n".join(out)
    # every labelled footfall surge gets a row, judged or not
    for event in ("AKL-E01", "AKL-NYE2025", "DUB-E01", "DUB-E02", "DUB-NYE2022"):
        assert event in rows
    assert "SEA-E01 (storm_wind)" in rows and "SEA-E02 (heat_wave)" in rows
    # each footfall set has its own false-alarm row, and they add up to the pooled one
    pooled = re.search(r"false-alarm episodes, ordinary time +(\d+) in", rows)
    per_set = re.findall(r"false alarms per sensor-week, (\w+) +[\d.]+ \((\d+) in", rows)
    assert pooled and [name for name, _ in per_set] == ["auckland", "dublin_2023"]
    assert sum(int(n) for _, n in per_set) == int(pooled.group(1))


def test_hourly_counts_spread_over_their_minutes() -> None:
    minutes = evaluate.hourly_to_minutes(
        np.array([0, HOUR_MS, 2 * HOUR_MS], dtype=np.int64), np.array([2, 0, 3])
    )
    assert minutes.tolist() == [15, 45, 130, 150, 170]


def test_a_storm_in_a_long_quiet_series_is_one_alert_episode() -> None:
    # ten weeks of exactly 6 calls an hour, then 4 hours at 30 an hour
    hours = 10 * 168 + 24
    calls = np.full(hours, 6)
    calls[10 * 168 + 10 : 10 * 168 + 14] = 30
    minutes = evaluate.hourly_to_minutes(np.arange(hours, dtype=np.int64) * HOUR_MS, calls)
    params = evaluate.BurstParams().for_level("site")
    # the series' very first hour has nothing to compare to (the floor): not counted here
    starts = [s for s in evaluate.burst_episodes(minutes, params) if s >= 24 * HOUR_MS]
    assert len(starts) == 1
    assert 10 * 168 + 10 <= starts[0] / HOUR_MS < 10 * 168 + 11  # within the storm's first hour


DUBLIN = evaluate.DATA_DIR / "footfall" / "dublin_2023" / "dublin_footfall_2023_hourly.csv"


@pytest.mark.skipif(not DUBLIN.exists(), reason=f"Dublin data not found at {DUBLIN}")
def test_another_citys_footfall_is_evaluated_alone_with_its_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "testcity"
    folder.mkdir()
    sensors = ["Grafton st/Monsoon", "Henry Street/Coles Lane/Dunnes"]
    pl.read_csv(DUBLIN, infer_schema_length=0).select("ts_local", *sensors).slice(
        0, 24 * 120
    ).write_csv(folder / "counts.csv")
    argv = ["--footfall", str(folder / "counts.csv"), "--timezone", "Europe/Dublin"]
    assert evaluate.main([*argv, "--country", "IE"]) == 0
    unlabelled = capsys.readouterr().out.splitlines()
    assert "footfall surges caught               0 of 0, median lead nan h" in unlabelled
    assert unlabelled[-2] == "surges caught: nan %"  # not 0 %: none was missed
    # the same counts as a long file (a row per sensor and hour) are the same hours
    pl.read_csv(folder / "counts.csv", infer_schema_length=0).unpivot(
        index="ts_local", variable_name="sensor", value_name="count"
    ).write_csv(tmp_path / "long.csv")
    wide = evaluate.read_footfall(evaluate.footfall_set(folder / "counts.csv", *argv[3:4], "IE"))
    long = evaluate.read_footfall(evaluate.footfall_set(tmp_path / "long.csv", *argv[3:4], "IE"))
    assert long.equals(wide) and wide["sensor"].unique().sort().to_list() == sensors
    (folder / "labels.csv").write_text(
        "event_id,start_local,end_local,sensor_or_area,kind,source_note\n"
        "X-1,2023-03-17 12:00,2023-03-17 14:30,Henry Street/Coles Lane/Dunnes,parade,a parade\n"
    )
    assert evaluate.main([*argv, "--country", "IE"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(re.match(r"  X-1 +(caught|missed)", line) for line in out)
    assert re.fullmatch(r"surges caught: (0|100) %", out[-2])
    assert re.fullmatch(r"false alarms per sensor-week: \d+\.\d\d", out[-1])
    assert not any("SEA-" in line or "Hangzhou" in line for line in out)
    with pytest.raises(SystemExit):
        evaluate.main([*argv[:2], "--timezone", "Mars/Olympus", "--country", "IE"])
    assert "unknown time zone 'Mars/Olympus'" in capsys.readouterr().err
    # a label that is no window is refused before any sensor runs, not a traceback in a worker
    (folder / "labels.csv").write_text(
        "event_id,start_local,end_local,sensor_or_area,kind,source_note\n"
        "X-1,2023-13-45 12:00,2023-03-17 14:30,Henry Street/Coles Lane/Dunnes,parade,a parade\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([*argv, "--country", "IE"])
    assert exit_info.value.code == 2
    assert "label 'X-1' runs from '2023-13-45 12:00'" in capsys.readouterr().err
