"""Forecast-based early warning: lead times, levels, one alert per predicted crowd."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from crowdwatch.site import load_site
from forecasts.early_warning import early_warnings
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
NOW = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)  # 21:00 in Shanghai
NOW_MS = int(NOW.timestamp() * 1000)


def forecast(zone: str, uppers: list[float], step_min: int = 15) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "zone_id": zone,
            "ts": [NOW + timedelta(minutes=step_min * (i + 1)) for i in range(len(uppers))],
            "yhat": [u * 0.8 for u in uppers],
            "yhat_upper": uppers,
        }
    )


def test_a_crossing_45_minutes_ahead_gives_one_warning_with_its_lead_time() -> None:
    # STD-concourse holds 1750: 80 % is 1400; the forecast's upper bound passes it at +45 min
    rows = forecast("STD-concourse", [900, 1100, 1450, 1500, 1300, 1000, 800, 700])
    events = early_warnings(rows, SITE, NOW_MS)
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.event, event.level, event.zone_id) == (
        "predicted_big_crowd",
        "opened",
        "yellow",
        "STD-concourse",
    )
    assert event.lead_time_s == 45 * 60
    assert event.values["horizon_min"] == 60
    assert "in 45 min" in event.reason and "21:45" in event.reason


def test_the_highest_predicted_level_wins_and_quiet_zones_stay_quiet() -> None:
    rows = pl.concat(
        [
            forecast(
                "STD-concourse", [1450, 1600, 1800, 1900]
            ),  # yellow at 15, orange at 30, red at 45
            forecast("RVS-concourse", [500, 600, 700, 650]),  # at most 51 %: no warning
        ]
    )
    events = early_warnings(rows, SITE, NOW_MS)
    assert [(e.zone_id, e.level, e.lead_time_s) for e in events] == [
        ("STD-concourse", "red", 45 * 60)
    ]


def test_only_the_horizon_counts_and_the_id_is_stable() -> None:
    late = forecast("STD-concourse", [1000] * 9 + [1800])  # only at +150 min
    assert early_warnings(late, SITE, NOW_MS) == []
    first = early_warnings(forecast("STD-concourse", [1000, 1800]), SITE, NOW_MS)
    again = early_warnings(forecast("STD-concourse", [1000, 1800]), SITE, NOW_MS + 60_000)
    assert first[0].alert_id == again[0].alert_id
