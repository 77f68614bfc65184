"""The demo's early warning: weeks of history, forecasts of the event day, warnings ahead of it.

The demo's event day needs history before it for the forecasts: `HISTORY_WEEKS` weeks are
simulated cheaply (`app.simulate.simulate_history`: hourly gate counts and peak occupancy
per zone, not passage by passage) and written to ``zone_metrics``, with the same event at the
stadium `MATCH_WEEKS` weeks before the day. The site's calendar gets those match nights and the
event day's as event windows of kind ``match``. The forecasts are trained on the history before
the event day's midnight, forecast its 24 hours, and the warning runs as the scheduler would,
every 15 minutes through the day, so each predicted-big-crowd alert has the lead time it would
have had.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl
from rich.console import Console

from app.simulate import Surge, simulate_history
from crowdwatch.settings import Settings
from crowdwatch.site import EventWindow, Site
from crowdwatch.warehouse.client import Warehouse
from forecasts import service
from forecasts.early_warning import KIND

HISTORY_WEEKS = 6
#: The same event at the stadium this many weeks before the demo day (the same weekday).
MATCH_WEEKS = (1, 3, 5)
WARN_EVERY = timedelta(minutes=15)
TARGET = "headcount"


@dataclass(frozen=True)
class EarlyWarning:
    """What the forecasts of the demo day did: fits, rows written, the alerts and when."""

    history_days: int
    match_days: tuple[date, ...]
    trained: list[service.Trained]
    forecast_rows: int
    #: The day's predicted-big-crowd alerts as stored (``ts, zone_id, level, reason``): a demo
    #: run again on the same day raises none anew, but shows these.
    alerts: pl.DataFrame


def match_window(day: date, surge: Surge) -> EventWindow:
    """The event window of a match ending with ``surge``: its hours and the hour after."""
    start = datetime.combine(day, surge.start).replace(minute=0)
    end = datetime.combine(day, surge.start) + timedelta(minutes=surge.minutes + 60)
    return EventWindow(
        name=f"match at {surge.station_id}", start=start, end=end.replace(minute=0), kind="match"
    )


def with_matches(site: Site, days: list[date], surge: Surge) -> Site:
    """``site`` with the match nights of ``days`` added to its calendar."""
    info = site.site.model_copy(
        update={"events": [*site.site.events, *(match_window(d, surge) for d in days)]}
    )
    return site.model_copy(update={"site": info})


def history_rows(site: Site, day: date, surge: Surge, *, seed: int = 10) -> pl.DataFrame:
    """`HISTORY_WEEKS` weeks of hourly ``zone_metrics`` rows before ``day``, matches included."""
    days = [day - timedelta(days=k) for k in range(HISTORY_WEEKS * 7, 0, -1)]
    matches = frozenset(day - timedelta(weeks=k) for k in MATCH_WEEKS)
    hours = simulate_history(site, days, seed=seed, surge_days=matches, surge=surge)
    capacity = pl.col("zone_id").replace_strict({z.id: z.capacity for z in site.zones})
    area = pl.col("zone_id").replace_strict({z.id: z.area_m2 for z in site.zones})
    return hours.select(
        "zone_id",
        "station_id",
        pl.lit("zone").alias("scope"),
        "ts",
        pl.lit(3600, pl.UInt32).alias("window_s"),
        pl.col("entries").cast(pl.UInt32),
        pl.col("exits").cast(pl.UInt32),
        (pl.col("entries") / 60).cast(pl.Float32).alias("inflow_per_min"),
        (pl.col("exits") / 60).cast(pl.Float32).alias("outflow_per_min"),
        pl.col("occupancy").cast(pl.UInt32),
        capacity.cast(pl.UInt32).alias("capacity"),
        (pl.col("occupancy") / capacity).cast(pl.Float32).alias("capacity_use"),
        (pl.col("occupancy") / area).cast(pl.Float32).alias("density"),
        pl.lit(1, pl.UInt64).alias("version"),
    )


def early_warning(
    settings: Settings, warehouse: Warehouse, site: Site, day: date, surge: Surge
) -> EarlyWarning:
    """Load the history, train on it, forecast ``day`` and warn through it every 15 minutes.

    Warnings are stored in ``alerts`` and sent to nobody, whatever ``CROWDWATCH_NOTIFY`` says:
    they warn of a simulated day. Returns the alerts with their lead times.
    """
    rows = history_rows(site, day, surge)
    warehouse.insert("zone_metrics", rows)
    matches = [day - timedelta(weeks=k) for k in MATCH_WEEKS]
    calendar = with_matches(site, [*sorted(matches), day], surge)
    # the day in real time: 23 or 25 hours when the clocks change
    midnight, end = site.day_bounds(day)
    trained = service.train(settings, warehouse, calendar, TARGET, until=midnight)
    hours = (end - midnight) // timedelta(hours=1)
    forecast = service.predict(settings, warehouse, calendar, TARGET, horizon_h=hours)
    now = midnight
    while now < end:
        now_ms = int(now.timestamp() * 1000)
        service.warn(settings, warehouse, calendar, now_ms, notify=False)
        now += WARN_EVERY
    alerts = warehouse.query(
        "SELECT ts, zone_id, level, reason FROM alerts FINAL WHERE kind = {kind:String} "
        "AND event = 'opened' AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)} "
        "ORDER BY ts, zone_id",
        {"kind": KIND, "start": midnight, "end": end},
    )
    return EarlyWarning(HISTORY_WEEKS * 7, tuple(sorted(matches)), trained, forecast.height, alerts)


def print_early_warning(
    result: EarlyWarning, peaks: pl.DataFrame, site: Site, console: Console
) -> None:
    """What was trained and forecast, and every predicted-big-crowd alert with its lead time.

    ``peaks`` are the demo's zone peaks (`app.demo.zone_peaks`): the lead time is from the
    alert to the first window the zone's occupancy reached 80 % of its capacity.
    """
    console.rule("early warning (forecasts)")
    fitted = [t for t in result.trained if t.method]
    methods = sorted({str(t.method) for t in fitted})
    skipped = [t.zone_id for t in result.trained if t.skipped]
    trained = (
        f"{len(fitted)} zone model(s) trained ({', '.join(methods)}), in "
        f"{max((t.seconds for t in fitted), default=0.0):.1f} s at most"
        if fitted
        else "the zone models were up to date (trained by an earlier run)"
    )
    console.print(
        f"history: {result.history_days} simulated days before the event day (hourly gate "
        f"counts, in zone_metrics), the same event on "
        + ", ".join(f"{d:%a %d %b}" for d in result.match_days)
        + f"; {trained}"
        + (f"; skipped (no history): {', '.join(skipped)}" if skipped else "")
    )
    console.print(f"forecast of the event day: {result.forecast_rows} hourly rows (forecasts)")
    console.print(
        "the match nights are event windows of this run only, not in the site file: a later "
        "`crowdwatch forecast train` fits without them unless they are added under `events:`"
    )
    first_80 = {
        row["zone_id"]: row["first_80"]
        for row in peaks.iter_rows(named=True)
        if row["first_80"] is not None
    }
    if result.alerts.height == 0:
        console.print("no predicted-big-crowd alert")
    for alert in result.alerts.iter_rows(named=True):
        raised = alert["ts"].astimezone(site.tz)
        crossed = first_80.get(alert["zone_id"])
        lead = (
            f"; occupancy reached 80 % at {crossed.astimezone(site.tz):%H:%M}, "
            f"[bold]{(crossed - raised).total_seconds() / 60:.0f} min after the alert[/bold]"
            if crossed is not None
            else "; occupancy never reached 80 %"
        )
        console.print(
            f"{raised:%H:%M}  {alert['zone_id']:<15} predicted big crowd "
            f"{alert['level'].upper()}: {alert['reason']}{lead}",
            highlight=False,
        )
