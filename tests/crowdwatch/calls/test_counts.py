"""Rolling call counts and burst scores: exact Poisson tails, bursts that end, calls too old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import poisson

from crowdwatch.calls.counts import CallWindows, poisson_surprise
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
        int(ts.timestamp() // 60) - minute: a for ts, a in later["ts", "alert"].iter_rows()
    }
    # the calls leave the 15-minute window at minutes 15…23 and the 60-minute one at 60…68,
    # and every leaving minute is written; the alert holds while the hour's count is unusual
    # and ends at minute 64, when 4 calls are left against about 0.4 expected (the young
    # stream's background is its 9 calls spread over at least a day)
    assert sorted(by_minute) == [*range(15, 24), *range(60, 69)]
    assert [m for m, a in sorted(by_minute.items()) if not a] == [64, 65, 66, 67, 68]
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
