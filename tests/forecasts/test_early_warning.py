"""Forecast-based early warning: lead times, levels, one alert per predicted crowd."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl

from crowdwatch.risk.levels import RANK
from crowdwatch.site import load_site
from forecasts.early_warning import early_warnings, standing_levels, warning_events
from forecasts.model import EventWindow
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
NOW = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)  # 21:00 in Shanghai
NOW_MS = int(NOW.timestamp() * 1000)


def forecast(zone: str, yhats: list[float], step_min: int = 15) -> pl.DataFrame:
    """Forecast rows from now on, ``step_min`` apart, the upper bound a quarter above."""
    return pl.DataFrame(
        {
            "zone_id": zone,
            "ts": [NOW + timedelta(minutes=step_min * (i + 1)) for i in range(len(yhats))],
            "yhat": yhats,
            "yhat_upper": [y * 1.25 for y in yhats],
        }
    )


def test_a_crossing_45_minutes_ahead_gives_one_warning_with_its_lead_time() -> None:
    # STD-concourse holds 1750: 80 % is 1400; the forecast passes it at +45 min
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


def test_the_upper_bound_warns_only_inside_a_declared_event_window() -> None:
    # the forecast stays at 69 % of STD-concourse's 1750; its upper bound reaches 86 % (yellow)
    rows = forecast("STD-concourse", [1200] * 4, step_min=60)  # 22:00 to 01:00 local
    assert early_warnings(rows, SITE, NOW_MS) == []
    local = NOW.astimezone(SITE.tz).replace(tzinfo=None)  # 21:00 local
    match = EventWindow(local + timedelta(hours=2), local + timedelta(hours=4), "match")
    (event,) = early_warnings(rows, SITE, NOW_MS, events={"STD-concourse": [match]})
    assert event.level == "yellow"
    # the 22:00 hour ends as the match begins: the 23:00 hour is the first inside it
    assert event.lead_time_s == 120 * 60
    assert "yhat_upper (event window) 1500 people" in event.reason
    # a window that is over changes nothing
    over = EventWindow(local - timedelta(hours=3), local, "match")
    assert early_warnings(rows, SITE, NOW_MS, events={"STD-concourse": [over]}) == []
    # nor does a window of another zone's
    assert early_warnings(rows, SITE, NOW_MS, events={"CTR-concourse": [match]}) == []


def test_a_zone_takes_the_upper_bound_only_in_windows_of_kinds_that_raised_it() -> None:
    local = NOW.astimezone(SITE.tz).replace(tzinfo=None)
    match, parade, fair = (
        EventWindow(local, local + timedelta(hours=2), kind) for kind in ("match", "parade", "fair")
    )
    effects = {"match": 12.5, "parade": -3.0}  # a parade empties this zone; no fair seen yet
    assert warning_events([match, parade, fair], effects) == [match]


def test_a_warning_stands_until_an_hour_after_its_point_unless_ended() -> None:
    def row(alert_id: str, event: str, zone: str, level: str, lead_min: float) -> dict:
        values = json.dumps({"lead_min": lead_min})
        return {
            "alert_id": alert_id,
            "event": event,
            "zone_id": zone,
            "level": level,
            "ts": NOW,
            "values": values,
        }

    alerts = pl.DataFrame(
        [
            row("a", "opened", "STD-concourse", "orange", 45),
            row("b", "opened", "STD-concourse", "yellow", 15),
            row("c", "opened", "RVS-concourse", "red", 30),
            row("c", "resolved", "RVS-concourse", "red", 30),
        ]
    )
    assert standing_levels(alerts, NOW_MS) == {"STD-concourse": RANK["orange"]}
    # 13:45 is orange's point: it stands until 14:45, yellow's until 14:15
    assert standing_levels(alerts, NOW_MS + 104 * 60_000) == {"STD-concourse": RANK["orange"]}
    assert standing_levels(alerts, NOW_MS + 105 * 60_000) == {}
    # the early warning leaves a lead for the next run to read
    (event,) = early_warnings(forecast("STD-concourse", [1000, 1450]), SITE, NOW_MS)
    assert event.values["lead_min"] == 30
