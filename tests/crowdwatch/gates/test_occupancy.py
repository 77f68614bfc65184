"""Window state and occupancy models against plain reference loops."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdwatch.gates.occupancy import StationWindows, ZoneSpec
from crowdwatch.site import BalanceModel, DwellModel

MINUTE_MS = 60_000
T0 = int(datetime(2026, 5, 4, 19, 0, tzinfo=UTC).timestamp() * 1000)  # 03:00 in Shanghai
DWELL = ZoneSpec("hall", 500, 250.0, DwellModel(entry_minutes=4, exit_minutes=2))
BALANCE = ZoneSpec("park", 900, 3000.0, BalanceModel(reset_at=time(4, 0)))


def station(horizon_s: int = 86_400) -> StationWindows:
    return StationWindows(
        "S",
        [DWELL, BALANCE],
        window_s=60,
        horizon_s=horizon_s,
        rate_minutes=5,
        timezone="Asia/Shanghai",
    )


def flows(zone: str, minutes: list[int], entries: list[int], exits: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "zone_id": [zone] * len(minutes),
            "window": [T0 + m * MINUTE_MS for m in minutes],
            "entries": entries,
            "exits": exits,
        },
        schema={"zone_id": pl.String, "window": pl.Int64, "entries": pl.Int64, "exits": pl.Int64},
    )


def latest(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """What the warehouse keeps: the highest version of each (zone, window)."""
    return (
        pl.concat(frames)
        .sort("version")
        .unique(["zone_id", "ts"], keep="last")
        .sort("zone_id", "ts")
    )


def dwell_reference(entries: np.ndarray, exits: np.ndarray, n: int, m: int) -> list[int]:
    return [
        int(entries[max(0, t - n + 1) : t + 1].sum() + exits[max(0, t - m + 1) : t + 1].sum())
        for t in range(entries.size)
    ]


def balance_reference(entries: np.ndarray, exits: np.ndarray) -> list[int]:
    out, inside, day = [], 0, None
    for t in range(entries.size):
        local = datetime.fromtimestamp((T0 + t * MINUTE_MS) / 1000, ZoneInfo("Asia/Shanghai"))
        period = (local - timedelta(hours=4)).date()
        if period != day:
            inside, day = 0, period
        inside = max(0, inside + int(entries[t]) - int(exits[t]))
        out.append(inside)
    return out


counts = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=180)


@settings(max_examples=60, deadline=None)
@given(
    data=counts,
    cuts=st.lists(st.integers(0, 179), max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_any_batching_and_order_gives_the_reference_occupancy(data, cuts, order) -> None:  # type: ignore[no-untyped-def]
    entries = np.array([e for e, _ in data])
    exits = np.array([x for _, x in data])
    minutes = list(range(len(data)))
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    batches = [minutes[a:b] for a, b in itertools.pairwise(bounds)]
    order.shuffle(batches)  # late batches arrive after later ones
    state = station()
    out = []
    for i, batch in enumerate(batches):
        for zone in ("hall", "park"):
            frame = flows(zone, batch, entries[batch].tolist(), exits[batch].tolist())
            rows, late = state.update(frame, now_ns=i)
            assert late.height == 0
            out.append(rows)
    rows = latest(out)
    hall = rows.filter(pl.col("zone_id") == "hall")
    park = rows.filter(pl.col("zone_id") == "park")
    assert hall["occupancy"].to_list() == dwell_reference(entries, exits, 4, 2)
    assert park["occupancy"].to_list() == balance_reference(entries, exits)
    assert hall["entries"].to_list() == entries.tolist()
    whole = rows.filter(pl.col("zone_id") == "S")
    assert whole["occupancy"].to_list() == [
        a + b for a, b in zip(hall["occupancy"], park["occupancy"], strict=True)
    ]
    assert whole["capacity"].unique().to_list() == [1400]


def test_balance_resets_at_local_reset_time() -> None:
    state = station()
    # 30 people in at 03:00 local who never tap out; the count restarts at 04:00 local
    rows, _ = state.update(flows("park", [0, 59, 60, 61], [30, 0, 5, 0], [0, 0, 0, 1]), now_ns=1)
    park = rows.filter(pl.col("zone_id") == "park").sort("ts")
    occupancy = dict(
        zip(
            park["ts"].dt.convert_time_zone("Asia/Shanghai").dt.strftime("%H:%M"),
            park["occupancy"],
            strict=True,
        )
    )
    assert occupancy["03:00"] == 30 and occupancy["03:59"] == 30
    assert occupancy["04:00"] == 5 and occupancy["04:01"] == 4


def test_windows_without_records_are_filled_and_rates_are_per_minute() -> None:
    state = station()
    state.update(flows("hall", [0], [10], [0]), now_ns=1)
    rows, _ = state.update(flows("hall", [6], [0], [0]), now_ns=2)
    hall = rows.filter(pl.col("zone_id") == "hall").sort("ts")
    # minutes 1..6 are emitted in the second update, the entries of minute 0 age out after 4
    assert hall["occupancy"].to_list() == [10, 10, 10, 0, 0, 0]
    assert hall["inflow_per_min"].to_list()[:4] == [2.0, 2.0, 2.0, 2.0]  # 10 over 5 minutes
    assert hall["inflow_per_min"].to_list()[4] == 0.0


def test_versions_only_grow_and_too_late_counts_come_back() -> None:
    state = station(horizon_s=600)
    first, _ = state.update(flows("hall", [100], [1], [0]), now_ns=50)
    second, late = state.update(
        flows("hall", [80, 95], [3, 4], [0, 0]), now_ns=10
    )  # clock went back
    assert second["version"].min() > first["version"].max()
    assert late["window"].to_list() == [T0 + 80 * MINUTE_MS]  # 20 min behind the newest: too late
    assert second.filter(pl.col("zone_id") == "hall")["ts"].min() == datetime.fromtimestamp(
        (T0 + 95 * MINUTE_MS) / 1000, UTC
    )


def test_state_stays_bounded_over_long_streams() -> None:
    state = station(horizon_s=3600)
    for day in range(20):
        state.update(
            flows("hall", list(range(day * 1440, (day + 1) * 1440, 7)), [1] * 206, [0] * 206),
            now_ns=day,
        )
    assert state.counts.shape[2] < 2 * state.keep
