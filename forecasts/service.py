"""Training, forecasting and early warning against the warehouse, fit for a scheduler.

- `train`: hourly history per zone from ClickHouse (the fused headcount of ``zone_state``, or
  where a zone has none — a gate-only pipeline such as ``gate_flow`` — the occupancy of
  ``zone_metrics``; or the gate inflow of ``zone_metrics``), fitted with the site's calendar
  (`forecast_config`: country, subdivision, event days and event windows) in parallel
  processes; each model is saved as
  Prophet JSON under ``<data_dir>/models/<database>/<target>/<zone>.json`` with a small
  metadata file.
  Incremental: a zone is refitted only when it has no model or its history has grown by
  ``retrain_after_h`` hours since the model was fitted.
- `predict`: every saved model forecasts the next ``horizon_h`` hours after its history; rows go
  to ``forecasts`` with the model version and training time.
- `warn`: forecasts for the next two hours become predicted-big-crowd alerts
  (`forecasts.early_warning`), stored in ``alerts`` and handled as the risk engine's are:
  recorded in the workflow store (acknowledgement asked per the site's policy, with links)
  and sent through the durable outbox in the site's language (sent unless
  ``CROWDWATCH_NOTIFY`` says ``log`` or ``off``: a warning about the coming hours is never a
  replay); an alert already stored is not sent again, and one whose predicted hour is over
  is ended (lifted for the people told, no more reminders).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from crowdwatch.risk.engine import alert_rows
from crowdwatch.risk.levels import RANK
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.settings import Settings
from crowdwatch.site import Site
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.workflow.loop import Responder
from forecasts.early_warning import (
    KIND,
    early_warnings,
    ended_warnings,
    standing_levels,
    warning_events,
)
from forecasts.model import WEEK, EventWindow, ForecastConfig, Forecaster, day_windows, fit_many

GATE_HOURS_SQL = """
    SELECT zone_id, toDateTime64(toStartOfHour(ts), 3, 'UTC') AS hour, {y} AS y
    FROM zone_metrics FINAL
    WHERE scope = 'zone'
    GROUP BY zone_id, hour
    ORDER BY zone_id, hour
"""
HISTORY_SQL = {
    # the peak headcount of each hour: warnings compare it with the zone's capacity
    "headcount": """
        SELECT zone_id, toDateTime64(toStartOfHour(ts), 3, 'UTC') AS hour, max(headcount) AS y
        FROM zone_state FINAL
        WHERE headcount IS NOT NULL
        GROUP BY zone_id, hour
        ORDER BY zone_id, hour
    """,
    # hours of a zone without zone state: the peak occupancy of the gate metrics
    "occupancy": GATE_HOURS_SQL.format(y="toFloat64(max(occupancy))"),
    "inflow": GATE_HOURS_SQL.format(y="toFloat64(sum(entries))"),
}


@dataclass(frozen=True)
class Trained:
    """One zone's training outcome: fitted (``method``), failed (``error``) or ``skipped``.

    ``fallback_reason`` says why a fitted zone has the seasonal-naive forecast.
    """

    zone_id: str
    method: str | None
    seconds: float
    error: str | None
    skipped: str | None = None
    fallback_reason: str | None = None


def forecast_config(site: Site, **changes: Any) -> ForecastConfig:
    """The forecast settings for ``site``: its calendar, and ``changes`` to the defaults.

    The site's country and subdivision give the public holidays and working days (none without
    a country); its event windows and event days (whole days, kind ``event_day``) are the
    forecasts' event windows.
    """
    info = site.site
    events = tuple(
        EventWindow(e.start, e.end, e.kind, float(e.attendance) if e.attendance else None)
        for e in info.events
    )
    return replace(
        ForecastConfig(),
        country=info.country,
        subdivision=info.subdivision,
        events=events + day_windows(info.event_days),
        **changes,
    )


def history(
    warehouse: Warehouse, site: Site, target: str, *, until: datetime | None = None
) -> dict[str, pd.DataFrame]:
    """Hourly ``ds`` (local time, naive) and ``y`` per zone of the site, before ``until``.

    ``headcount`` is the hour's peak fused headcount of ``zone_state``; hours without zone
    state take the peak occupancy of ``zone_metrics`` (gate-only pipelines write no zone
    state). ``inflow`` is the hour's gate entries.
    """
    rows = warehouse.query(HISTORY_SQL[target])
    if target == "headcount":
        # hours without zone state (a gate-only pipeline, or history loaded as gate metrics)
        # take the occupancy of the gate metrics
        occupancy = warehouse.query(HISTORY_SQL["occupancy"])
        rows = pl.concat(
            [
                rows.with_columns(pl.lit(0).alias("source")),
                occupancy.with_columns(pl.lit(1).alias("source")),
            ],
            how="vertical_relaxed",
        )
        rows = (
            rows.sort("zone_id", "hour", "source")
            .unique(["zone_id", "hour"], keep="first", maintain_order=True)
            .drop("source")
        )
    if until is not None:
        cut = pl.lit(until.astimezone(UTC)).cast(pl.Datetime("ms", "UTC"))
        rows = rows.filter(pl.col("hour").cast(pl.Datetime("ms", "UTC")) < cut)
    series = {}
    for (zone_id,), frame in rows.partition_by("zone_id", as_dict=True).items():
        if zone_id not in site.zone_by_id:
            continue
        local = (
            frame.select(
                pl.col("hour")
                .cast(pl.Datetime("ms", "UTC"))
                .dt.convert_time_zone(site.site.timezone)
                .dt.replace_time_zone(None)
                .alias("ds"),
                pl.col("y").cast(pl.Float64),
            )
            # the hour the clocks go back comes twice in local time: the larger of the two
            .group_by("ds")
            .agg(pl.col("y").max())
            .sort("ds")
        )
        series[str(zone_id)] = local.to_pandas()
    return series


def _model_dir(settings: Settings, target: str) -> Path:
    return settings.data_dir / "models" / settings.clickhouse_database / target


def train(
    settings: Settings,
    warehouse: Warehouse,
    site: Site,
    target: str = "headcount",
    *,
    retrain_after_h: int = 24,
    processes: int = 2,
    config: ForecastConfig | None = None,
    until: datetime | None = None,
) -> list[Trained]:
    """Fit the zones whose model is missing or stale; save their models as JSON.

    A model is stale when the zone's history has grown by ``retrain_after_h`` hours since it
    was fitted, or it was fitted with other settings or an older model format. ``config``
    defaults to `forecast_config` of the site. Zones with less than a week of history are
    skipped (not even the seasonal-naive forecast is possible), with the reason.
    """
    config = config or forecast_config(site)
    fingerprint = hashlib.sha256(
        json.dumps(config.to_dict(), sort_keys=True).encode("utf-8")
    ).hexdigest()[:16]
    folder = _model_dir(settings, target)
    folder.mkdir(parents=True, exist_ok=True)
    stale = {}
    trained = []
    for zone_id, frame in history(warehouse, site, target, until=until).items():
        span = frame["ds"].max() - frame["ds"].min() + pd.Timedelta(config.freq)
        if span < WEEK:
            reason = f"history covers {span}, at least a week is needed"
            trained.append(Trained(zone_id, None, 0.0, None, skipped=reason))
            continue
        meta_file = folder / f"{zone_id}.meta.json"
        last = str(frame["ds"].max())
        if meta_file.exists():
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            fitted_to = pd.Timestamp(meta["last_ds"])
            if (
                meta.get("config") == fingerprint
                and "effects" in meta  # the warning reads them (older meta files lack them)
                and pd.Timestamp(last) >= fitted_to
                and pd.Timestamp(last) < fitted_to + pd.Timedelta(hours=retrain_after_h)
            ):
                continue
        stale[zone_id] = frame
    results = fit_many(stale, config, processes=processes) if stale else {}
    for zone_id, result in results.items():
        if result.model_json is not None:
            (folder / f"{zone_id}.json").write_text(result.model_json, encoding="utf-8")
            meta = {
                "last_ds": str(stale[zone_id]["ds"].max()),
                "trained_at_ms": int(time.time() * 1000),
                "method": result.method,
                "config": fingerprint,
                "effects": result.effects,
            }
            (folder / f"{zone_id}.meta.json").write_text(json.dumps(meta), encoding="utf-8")
        trained.append(
            Trained(
                zone_id,
                result.method,
                result.seconds,
                result.error,
                fallback_reason=result.fallback_reason,
            )
        )
    return sorted(trained, key=lambda t: t.zone_id)


def predict(
    settings: Settings,
    warehouse: Warehouse,
    site: Site,
    target: str = "headcount",
    *,
    horizon_h: int = 24,
) -> pl.DataFrame:
    """Forecast the next ``horizon_h`` hours with every saved model; store and return the rows."""
    folder = _model_dir(settings, target)
    frames = []
    version = time.time_ns()
    for model_file in sorted(folder.glob("*.json")):
        if model_file.name.endswith(".meta.json"):
            continue
        zone_id = model_file.stem
        meta = json.loads((folder / f"{zone_id}.meta.json").read_text(encoding="utf-8"))
        forecaster = Forecaster.from_json(model_file.read_text(encoding="utf-8"))
        # the next hours counted in UTC, then read on the site's clock: across a change of
        # the clocks a local hour is skipped or comes twice, never invented
        last = pd.Timestamp(meta["last_ds"]).tz_localize(
            site.site.timezone, ambiguous=False, nonexistent="shift_forward"
        )
        future = pd.date_range(last + pd.Timedelta(hours=1), periods=horizon_h, freq="1h")
        predicted = pl.from_pandas(
            forecaster.predict(future.tz_convert(site.site.timezone).tz_localize(None))
        ).with_columns(pl.Series("ts", future.tz_convert("UTC")))
        frames.append(
            predicted.select(
                pl.lit(zone_id).alias("zone_id"),
                pl.lit(target).alias("target"),
                pl.col("ts").cast(pl.Datetime("ms", "UTC")),
                pl.col("yhat").cast(pl.Float32),
                pl.col("yhat_lower").cast(pl.Float32),
                pl.col("yhat_upper").cast(pl.Float32),
                pl.col("method").cast(pl.String),
                pl.lit(forecaster.fallback_reason, pl.String).alias("fallback_reason"),
                pl.lit(f"{zone_id}@{meta['trained_at_ms']}").alias("model_version"),
                pl.lit(meta["trained_at_ms"]).cast(pl.Datetime("ms", "UTC")).alias("trained_at"),
                pl.lit(version, pl.UInt64).alias("version"),
            )
        )
    rows = pl.concat(frames) if frames else pl.DataFrame()
    warehouse.insert("forecasts", rows)
    return rows


def _warning_events(settings: Settings, site: Site) -> dict[str, list[EventWindow]]:
    """Per zone, the site's event windows of the kinds its headcount model found raising it."""
    calendar = forecast_config(site).events
    events = {}
    for meta_file in _model_dir(settings, "headcount").glob("*.meta.json"):
        effects = json.loads(meta_file.read_text(encoding="utf-8")).get("effects", {})
        events[meta_file.name.removesuffix(".meta.json")] = warning_events(calendar, effects)
    return events


@dataclass(frozen=True)
class Warned:
    """What one `warn` did: alerts raised, and alerts ended because their hour is over."""

    raised: list[AlertEvent]
    ended: list[AlertEvent]


def warn(
    settings: Settings, warehouse: Warehouse, site: Site, now_ms: int, *, notify: bool = True
) -> Warned:
    """Raise predicted-big-crowd alerts from the newest forecasts, each once; end passed ones.

    With ``notify`` the alerts go through the workflow and the outbox (a `Responder`, whose
    close waits up to ``settings.notify_drain_s`` for the receivers), and the open ones whose
    predicted hour is over are ended there and in ``alerts``; without, they are only stored.
    """
    forecast = warehouse.query(
        "SELECT zone_id, ts, yhat, yhat_upper FROM forecasts FINAL WHERE target = 'headcount'"
    )
    events = (
        early_warnings(forecast, site, now_ms, events=_warning_events(settings, site))
        if forecast.height
        else []
    )
    # the last warning hours: a warning stands until an hour after its point, at most 2 h ahead
    since = datetime.fromtimestamp(now_ms / 1000 - 4 * 3600, UTC)
    recent = warehouse.query(
        "SELECT alert_id, event, zone_id, level, ts, values FROM alerts FINAL "
        "WHERE kind = {kind:String} AND ts >= {since:DateTime64(3)}",
        {"kind": KIND, "since": since},
    )
    known = set(recent["alert_id"])
    standing = standing_levels(recent, now_ms)
    fresh = [
        e for e in events if e.alert_id not in known and RANK[e.level] > standing.get(e.zone_id, 0)
    ]
    if fresh:
        warehouse.insert("alerts", alert_rows(fresh))
    if not notify:
        return Warned(fresh, [])
    live = settings.model_copy(update={"notify": settings.notify or "on"})
    with Responder(live, site) as responder:
        ended = ended_warnings(responder.workflow.open_events(KIND), now_ms)
        if ended:
            warehouse.insert("alerts", alert_rows(ended))
        responder.raise_events([*fresh, *ended])
    return Warned(fresh, ended)
