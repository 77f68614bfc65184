"""Rolling call counts and burst scores: exact Poisson tails, bursts that end, calls too old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import poisson

from crowdwatch.calls.counts import (
    BurstParams,
    CallWindows,
    area_chain,
    expected_rate,
    parent_areas,
    poisson_surprise,
)
from crowdwatch.calls.records import CALL_SCHEMA

T0 = datetime(2026, 11, 20, 21, 40, tzinfo=UTC)


def calls(
    minutes: list[float], *, zone: str = "STD-plaza", group: str = "crowding"
) -> pl.DataFrame:
    """Parsed crowd calls at ``zone``, ``minutes`` after T0 (may be negative)."""
    n = len(minutes)
    given = {
        "call_id": [f"C{i}-{m}" for i, m in enumerate(minutes)],
        "version": [1] * n,
        "received_at": [T0 + timedelta(minutes=m) for m in minutes],
        "district": ["D1"] * n,
        "group": [group] * n,
        "weight": [1.0] * n,
        "zones": [[zone]] * n,
        "stations": [["STD"]] * n,
        "source": ["test"] * n,
    }
    return pl.DataFrame(
        {name: given.get(name, [None] * n) for name in CALL_SCHEMA}, schema=CALL_SCHEMA
    )


def test_the_tail_is_exact_where_one_minus_the_cdf_underflows() -> None:
    lam = np.full(4, 0.05)
    observed = np.array([0, 3, 9, 110])
    score = poisson_surprise(observed, lam)
    assert score[0] == 0
    # 9 calls against 0.05: P = 1.9e-18 (the demo's burst), not the 1e-300 clip of old
    assert abs(score[2] - 17.29) < 0.01
    # the series beyond scipy's range continues the tail: log10 P(X >= 110) ≈ log10 pmf(110)
    pmf = -poisson.logpmf(110, 0.05) / np.log(10)
    assert 0 < pmf - score[3] < 1e-3 and np.isfinite(score[3])


@given(st.integers(1, 400), st.floats(0.01, 300))
def test_the_score_is_minus_log10_of_the_tail(k: int, lam: float) -> None:
    score = poisson_surprise(np.array([k]), np.array([lam]))[0]
    tail = poisson.sf(k - 1, lam)
    if tail > 1e-200:
        assert abs(score + np.log10(tail)) < 1e-6 * max(1.0, score)
    else:  # tails that underflow in scipy are still finite and larger than the last exact one
        assert np.isfinite(score) and score > 199


def test_a_burst_decays_as_the_clock_passes_without_more_calls() -> None:
    windows = CallWindows("UTC")
    # nine crowd calls in nine minutes, then silence
    tables = windows.update(calls([float(m) for m in range(9)]), 1)
    bursts = tables["call_bursts"].filter(pl.col("key") == "STD-plaza").sort("ts")
    assert bursts["alert"].to_list()[-1] == 1
    # the 15-minute window's tail (17.29) less log10(2) for looking at two windows (15, 60)
    assert abs(bursts["score"].max() - (17.29 - np.log10(2))) < 0.01  # type: ignore[operator]
    minute = int(T0.timestamp() // 60)
    # nothing happens before the clock moves
    assert windows.advance(minute + 8, 2) == {}
    later = windows.advance(minute + 70, 3)["call_bursts"].filter(pl.col("key") == "STD-plaza")
    by_minute = {
        int(ts.timestamp() // 60) - minute: (a, s)
        for ts, a, s in later["ts", "alert", "score"].iter_rows()
    }
    # every minute where something changes is written: the quiet 10 minutes after each call
    # (10…18), the calls leaving the 15-minute window (15…23) and the 60-minute one (60…68)
    assert sorted(by_minute) == [*range(10, 24), *range(60, 69)]
    # the alert ends 10 minutes after the last call (minute 8), although the hour still holds
    # all nine calls against about 0.1 expected: longer windows open bursts, they do not hold them
    assert [m for m, (a, _) in sorted(by_minute.items()) if a] == list(range(10, 18))
    assert by_minute[18][1] > 10 and by_minute[60][1] > 4
    assert later.filter(pl.col("ts") == later["ts"].max())["observed_15m"][0] == 0


def test_a_call_older_than_the_baseline_is_rejected_with_its_reason_in_any_batch() -> None:
    windows = CallWindows("UTC")
    eight_weeks = 8 * 7 * 24 * 60
    batch = calls([0.0, 1.0, -eight_weeks - 61.0, 2.0])
    tables = windows.update(batch, 5)
    rejected = tables["rejected_events"]
    assert rejected["reason"].to_list() == [
        "older than the 8-week baseline behind the newest call: not counted"
    ]
    assert rejected["position"].to_list() == [f"call C2-{-eight_weeks - 61.0} v1"]
    # the three good calls are counted where they belong
    zone = tables["call_counts"].filter(pl.col("key") == "STD-plaza")
    assert zone["calls_15m"].max() == 3
    # an update of a call into another group: its old group's counts drop to 0, no KeyError
    moved = calls([0.0], group="medical")
    tables = windows.update(moved, 6)
    old_group = tables["call_counts"].filter(
        (pl.col("key") == "STD-plaza") & (pl.col("group") == "crowding")
    )
    assert old_group.height and old_group["calls_5m"].min() == 0


def test_live_the_wall_clock_ends_a_burst_when_no_call_comes() -> None:
    from pipelines.calls import CallLogic

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = [(now - T0).total_seconds() / 60 - 80 + m for m in range(9)]
    logic = CallLogic(lambda: CallWindows("UTC"), True, None)
    (rows,), _ = logic.on_batch([calls(minutes)])
    bursts = dict(rows)["call_bursts"].filter(pl.col("key") == "STD-plaza").sort("ts")
    assert bursts["alert"].to_list()[-1] == 1
    assert logic.notify_at() is not None  # live: it wakes every minute
    (rows,), _ = logic.on_notify()
    after = dict(rows)["call_bursts"].filter(pl.col("key") == "STD-plaza").sort("ts")
    # 80 minutes on, every call has left the 15- and 60-minute windows: the newest row says so
    assert after["observed_15m"][-1] == 0 and after["alert"][-1] == 0
    assert CallLogic(lambda: CallWindows("UTC"), False, None).notify_at() is None


def test_a_sparse_zone_borrows_its_hours_from_its_station() -> None:
    weeks = 8 * 168
    params = BurstParams()
    # the station: 20 calls an hour from 18:00 to 20:00, 1 an hour otherwise
    station = np.ones(weeks, dtype=np.int64)
    station[(np.arange(weeks) % 24 >= 18) & (np.arange(weeks) % 24 < 20)] = 20
    # the zone: 30 calls in 8 weeks at random hours, about 1 % of the station's
    zone = np.zeros(weeks, dtype=np.int64)
    zone[np.random.default_rng(7).choice(weeks, 30, replace=False)] = 1
    evening, night = np.array([weeks + 18]), np.array([weeks + 3])
    on_its_own = expected_rate([zone], evening, params)[0], expected_rate([zone], night, params)[0]
    borrowed = expected_rate([station, zone], evening, params)[0]
    at_night = expected_rate([station, zone], night, params)[0]
    share = 31 / (station.sum() + 1)
    # its own weekly slots see no evening rush; through the station it expects one
    assert abs(on_its_own[0] - on_its_own[1]) < 0.2 * max(on_its_own)
    assert borrowed > 5 * at_night
    # about its share of the station's evening, less a little for its own quiet weeks there
    assert 0.5 * share * 20 < borrowed < share * 20


def test_a_busy_series_rests_on_its_own_slots() -> None:
    weeks = 8 * 168
    hours = np.arange(weeks)
    parent = np.full(weeks, 40, dtype=np.int64)  # flat
    child = np.where(hours % 24 == 3, 30, 1).astype(np.int64)  # its own 3 o'clock peak
    rate = expected_rate([parent, child], np.array([weeks + 3, weeks + 12]), BurstParams())
    # 30 calls an hour in each of 7 kept weeks outweigh a prior worth 4 calls
    assert 28 < rate[0] < 30.5 and rate[1] < 2


def test_a_zones_parent_is_the_station_of_most_of_its_calls() -> None:
    windows = CallWindows("UTC")
    batch = calls([0.0, 1.0, 2.0])
    other = calls([3.0], zone="STD-concourse").with_columns(pl.lit(["XYZ"]).alias("stations"))
    tables = windows.update(pl.concat([batch, other]), 1)
    assert tables["call_bursts"].height
    crowd = windows._exploded(windows.calls.filter(pl.col("crowd")))
    parents = parent_areas(crowd, {("STD-plaza", "zone"), ("STD-concourse", "zone")})
    assert parents[("STD-plaza", "zone")] == ("STD", "station")
    assert parents[("STD-concourse", "zone")] == ("XYZ", "station")
    assert parents[("STD", "station")] == ("D1", "district")
    assert area_chain(("STD-plaza", "zone"), parents) == [
        ("STD", "station"),
        ("D1", "district"),
        ("site", "site"),
    ]
    assert area_chain(("mass_incident", "site"), parents) == []


def test_a_quiet_zone_expects_more_calls_in_its_stations_rush_hour() -> None:
    windows = CallWindows("UTC")
    day0 = datetime(2026, 10, 1, tzinfo=UTC)

    def at(day: int, hour: int, minute: int) -> float:
        moment = day0 + timedelta(days=day, hours=hour, minutes=minute)
        return (moment - T0).total_seconds() / 60

    # four weeks: the concourse (station STD) has 20 calls every evening from 18:00, the plaza
    # one call every third night at 03:00
    rush = [at(d, 18, 3 * i) for d in range(28) for i in range(20)]
    nights = [at(d, 3, 0) for d in range(0, 28, 3)]
    windows.update(pl.concat([calls(rush, zone="STD-concourse"), calls(nights)]), 1)
    # then one plaza call at 18:30 and one at 10:00 of the next days
    evening = windows.update(calls([at(28, 18, 30)]), 2)["call_bursts"]
    morning = windows.update(calls([at(29, 10, 0)]), 3)["call_bursts"]

    def expected(rows: pl.DataFrame, minute: float) -> float:
        at_call = rows.filter(
            (pl.col("key") == "STD-plaza")
            & (pl.col("ts") == T0.replace(second=0) + timedelta(minutes=minute))
        )
        return float(at_call["expected_15m"][0])

    # its own evenings never saw a call; its station's share of them does
    assert expected(evening, at(28, 18, 30)) > 0.06
    assert expected(morning, at(29, 10, 0)) == pytest.approx(0.05)  # the floor
