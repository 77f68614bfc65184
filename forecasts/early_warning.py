"""Forecast-based early warning: a big crowd predicted within the next 30, 60 or 120 minutes.

For each zone, the forecast over the coming ``horizon_min`` minutes is turned into the level it
would reach (`crowdwatch.risk.levels`: share of capacity and density): the 80 % band's upper
bound inside the site's declared event windows of the kinds that raised the zone's crowd before
(`warning_events`), the forecast itself elsewhere (`warning_values`). When that level is at
least ``min_level`` (default yellow), one "predicted big crowd" alert is raised: a distinct
alert kind with its lead time — the time until the first forecast point at that level — and
the horizon it falls in (30, 60 or 120 minutes). It goes through the same alert path and
routing as the risk engine's alerts.

Why two rules: the upper bound says a crowd is possible (about one chance in ten), the forecast
that it is expected. On ordinary days, warning on the upper bound sent people a warning in vain
on 1.8-3.9 days a sensor-week on the shared data (the backtest), on the forecast 0.06-1.0; in a
declared event window, where a crowd is what the site expects, the upper bound caught 41 of 49
labelled big crowds in Auckland (the forecast 29) with 8 warnings in vain over 19 quiet ones.

The alert id is stable for a zone, level and predicted hour, so running the warning again on a
newer forecast of the same crowd does not raise a second alert; and while a zone's warning
stands (`standing_levels`), the next hours at its level or below raise none either. Once the
predicted hour is
over, `ended_warnings` ends the alert (the live headcount decides from then on): the people
told hear that it is lifted, and nobody is asked or reminded any more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import polars as pl

from crowdwatch.risk.levels import RANK, Thresholds, ZoneInputs, target_level
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.site import Level, Site
from forecasts.model import EventWindow, in_event_windows

HORIZONS_MIN = (30, 60, 120)
HOUR_MS = 3_600_000
KIND = "predicted_big_crowd"


def warning_values(
    yhat: npt.ArrayLike, yhat_upper: npt.ArrayLike, in_event: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """What a predicted-big-crowd warning compares with the levels.

    The band's upper bound in a declared event window (``in_event``), the forecast elsewhere.
    """
    return np.where(in_event, np.asarray(yhat_upper, float), np.asarray(yhat, float))


def warning_events(
    events: Sequence[EventWindow], effects: Mapping[str, float]
) -> list[EventWindow]:
    """The event windows in which a zone's warning takes the upper bound.

    Those of the kinds that raised this zone's crowd before (a positive fitted effect,
    `forecasts.model.Forecaster.effects`): an event window is the site's, and a match at the
    stadium is no event at a station across town. On Auckland's labelled event windows, at
    every sensor, this kept 92 of 94 warned big crowds and cut the warnings in vain from 60 to
    43 of 98 windows without one.
    """
    return [e for e in events if effects.get(e.kind, 0.0) > 0]


def early_warnings(
    forecast: pl.DataFrame,
    site: Site,
    now_ms: int,
    *,
    events: Mapping[str, Sequence[EventWindow]] | None = None,
    horizon_min: int = 120,
    min_level: Level = "yellow",
    thresholds: Thresholds | None = None,
) -> list[AlertEvent]:
    """Predicted-big-crowd alerts from forecast rows (``zone_id, ts, yhat, yhat_upper``).

    Args:
        forecast: hourly forecast rows of headcount per zone; ``ts`` is a UTC datetime.
        site: the zones' capacities and areas, and the stations for routing.
        now_ms: the present (epoch ms); only forecast points after it count.
        events: each zone's event windows in which the upper bound counts (`warning_events`);
            elsewhere, and for a zone not in it, the forecast (`warning_values`).
        horizon_min: how far ahead to look.
        min_level: the lowest predicted level that raises a warning.
        thresholds: the level thresholds (defaults as for the risk engine).
    """
    thresholds = thresholds or Thresholds()
    ahead = forecast.with_columns(pl.col("ts").dt.epoch("ms").alias("at")).filter(
        (pl.col("at") > now_ms) & (pl.col("at") <= now_ms + horizon_min * 60_000)
    )
    alerts = []
    for zone_id, rows in sorted(ahead.partition_by("zone_id", as_dict=True).items()):
        zone = site.zone_by_id.get(str(zone_id[0]))
        if zone is None:
            continue
        rows = rows.sort("at")
        local = pd.to_datetime(rows["at"].to_numpy(), unit="ms", utc=True)
        windows = (events or {}).get(zone.id, ())
        in_event = in_event_windows(local.tz_convert(site.tz).tz_localize(None), windows)
        values = warning_values(rows["yhat"].to_numpy(), rows["yhat_upper"].to_numpy(), in_event)
        best: tuple[Level, int, float, bool] | None = None
        for at, value, eventful in zip(rows["at"], values, in_event, strict=True):
            level = target_level(
                ZoneInputs(capacity_share=value / zone.capacity, density=value / zone.area_m2),
                thresholds,
            )
            warns = level is not None and RANK[level] >= RANK[min_level]
            if warns and (best is None or RANK[level] > RANK[best[0]]):
                best = (level, at, float(value), bool(eventful))  # type: ignore[assignment]
        if best is None:
            continue
        level, at, value, eventful = best
        bound = "yhat_upper (event window)" if eventful else "yhat"
        lead_s = (at - now_ms) / 1000
        horizon = (
            next(h for h in HORIZONS_MIN if lead_s <= h * 60) if lead_s <= 120 * 60 else horizon_min
        )
        when = datetime.fromtimestamp(at / 1000, UTC).astimezone(site.tz)
        alerts.append(
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
                    "lead_min": round(lead_s / 60, 1),
                    "upper_bound": float(eventful),  # 1: the band's upper bound decided
                },
                lead_time_s=lead_s,
            )
        )
    return alerts


def standing_levels(alerts: pl.DataFrame, now_ms: int) -> dict[str, int]:
    """Each zone's highest level (`RANK`) among its predicted-big-crowd warnings that stand.

    ``alerts`` are rows of the ``alerts`` table of this kind (``alert_id, event, zone_id,
    level, ts, values``). A warning stands from when it was raised until an hour after its
    predicted point (``values["lead_min"]`` after ``ts``), unless it was ended before. While one
    stands, a warning of the same zone at its level or below says nothing new: the crowd of
    the next hour is the same crowd.
    """
    ended = set(alerts.filter(pl.col("event") == "resolved")["alert_id"])
    opened = alerts.filter((pl.col("event") == "opened") & ~pl.col("alert_id").is_in(ended))
    levels: dict[str, int] = {}
    rows = opened.select("zone_id", "level", pl.col("ts").dt.epoch("ms"), "values")
    for zone_id, level, ts_ms, values in rows.iter_rows():
        predicted_ms = ts_ms + json.loads(values).get("lead_min", 0.0) * 60_000
        if now_ms < predicted_ms + HOUR_MS:
            levels[zone_id] = max(levels.get(zone_id, 0), RANK[level])
    return levels


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
