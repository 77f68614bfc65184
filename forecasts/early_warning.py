"""Forecast-based early warning: a big crowd predicted within the next 30, 60 or 120 minutes.

For each zone, the forecast's upper bound (or its mean, ``bound="yhat"``) over the coming
``horizon_min`` minutes is turned into the level it would reach (`crowdwatch.risk.levels`: share of
capacity and density). When that level is at least ``min_level`` (default yellow), one
"predicted big crowd" alert is raised: a distinct alert kind with its lead time — the time
until the first forecast point at that level — and the horizon it falls in (30, 60 or 120
minutes). It goes through the same alert path and routing as the risk engine's alerts.

The alert id is stable for a zone, level and predicted hour, so running the warning again on a
newer forecast of the same crowd does not raise a second alert. Once the predicted hour is
over, `ended_warnings` ends the alert (the live headcount decides from then on): the people
told hear that it is lifted, and nobody is asked or reminded any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl

from crowdwatch.risk.levels import RANK, Thresholds, ZoneInputs, target_level
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.site import Level, Site

HORIZONS_MIN = (30, 60, 120)
HOUR_MS = 3_600_000
KIND = "predicted_big_crowd"


def early_warnings(
    forecast: pl.DataFrame,
    site: Site,
    now_ms: int,
    *,
    bound: str = "yhat_upper",
    horizon_min: int = 120,
    min_level: Level = "yellow",
    thresholds: Thresholds | None = None,
) -> list[AlertEvent]:
    """Predicted-big-crowd alerts from forecast rows (``zone_id, ts, yhat, yhat_upper``).

    Args:
        forecast: forecast rows of headcount per zone; ``ts`` is a UTC datetime.
        site: the zones' capacities and areas, and the stations for routing.
        now_ms: the present (epoch ms); only forecast points after it count.
        bound: which forecast column to compare: the upper bound (early, more warnings) or yhat.
        horizon_min: how far ahead to look.
        min_level: the lowest predicted level that raises a warning.
        thresholds: the level thresholds (defaults as for the risk engine).
    """
    thresholds = thresholds or Thresholds()
    ahead = forecast.with_columns(pl.col("ts").dt.epoch("ms").alias("at")).filter(
        (pl.col("at") > now_ms) & (pl.col("at") <= now_ms + horizon_min * 60_000)
    )
    events = []
    for zone_id, rows in sorted(ahead.partition_by("zone_id", as_dict=True).items()):
        zone = site.zone_by_id.get(str(zone_id[0]))
        if zone is None:
            continue
        best: tuple[Level, int, float] | None = None
        for at, value in rows.sort("at").select("at", bound).iter_rows():
            level = target_level(
                ZoneInputs(capacity_share=value / zone.capacity, density=value / zone.area_m2),
                thresholds,
            )
            warns = level is not None and RANK[level] >= RANK[min_level]
            if warns and (best is None or RANK[level] > RANK[best[0]]):
                best = (level, at, value)  # type: ignore[assignment]
        if best is None:
            continue
        level, at, value = best
        lead_s = (at - now_ms) / 1000
        horizon = (
            next(h for h in HORIZONS_MIN if lead_s <= h * 60) if lead_s <= 120 * 60 else horizon_min
        )
        when = datetime.fromtimestamp(at / 1000, UTC).astimezone(site.tz)
        events.append(
            AlertEvent(
                alert_id=f"{zone.id}:predicted:{level}:{at // HOUR_MS * HOUR_MS}",
                event="opened",
                kind=KIND,
                zone_id=zone.id,
                station_id=zone.station,
                level=level,
                previous_level=None,
                ts_ms=now_ms,
                reason=(
                    f"forecast {bound} {value:.0f} people ({value / zone.capacity:.0%} of "
                    f"capacity) at {when:%H:%M}, in {lead_s / 60:.0f} min (within {horizon} min)"
                ),
                values={
                    "forecast": round(value, 1),
                    "capacity": float(zone.capacity),
                    "capacity_share": round(value / zone.capacity, 4),
                    "horizon_min": float(horizon),
                },
                lead_time_s=lead_s,
            )
        )
    return events


def ended_warnings(open_alerts: Iterable[AlertEvent], now_ms: int) -> list[AlertEvent]:
    """``resolved`` events for the predicted-big-crowd alerts whose predicted hour is over.

    ``open_alerts`` are the latest events of open alerts (other kinds are left alone); the
    hour is over an hour after the predicted point (raised at ``ts_ms``, ``lead_time_s`` ahead).
    """
    ended = []
    for alert in open_alerts:
        if alert.kind != KIND:
            continue
        predicted_ms = alert.ts_ms + round((alert.lead_time_s or 0.0) * 1000)
        if now_ms >= predicted_ms + HOUR_MS:
            ended.append(
                replace(
                    alert,
                    event="resolved",
                    previous_level=alert.level,
                    ts_ms=now_ms,
                    reason="the predicted hour is over: the live headcount decides from here",
                    values={},
                    lead_time_s=None,
                    causes=("forecast_over",),
                )
            )
    return ended
