"""One zone in detail: headcount against capacity and forecast, density, flows, scores, alerts."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, statetimeline, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.panels import (
    DATASOURCE,
    LEVEL_MAPPINGS,
    LEVELS,
    annotation,
    level_cells,
    level_thresholds,
    sql,
    table_panel,
    timeseries_panel,
)

UID = "crowdwatch-zone"
ZONE = "zone_id = ${zone:singlequote}"
LEVEL_NAMES = ", ".join(f"'{level}'" for level in LEVELS)
"""The levels as SQL strings, lowest first: a level's rank is its place in this list."""
NEARBY_M = 500
"""Calls within this distance of the zone's centre are shown as nearby."""


def _variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query.strip())
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def _series(title: str, query: str) -> timeseries.Panel:
    """A time series of the zone; its query takes the peak of each ``$__timeInterval``.

    Peaks, not means: over a long range the highest headcount of an interval is what matters
    for safety, and a month of 10-second states stays a thousand points per series.
    """
    return timeseries_panel(title, query, height=8, span=12).unit("none").fill_opacity(10)


def zone_detail() -> dashboard.Dashboard:
    """One zone of one station, chosen by the ``station`` and ``zone`` variables."""
    headcount = (
        _series(
            "Headcount against capacity and forecast",
            f"""
SELECT
    $__timeInterval(ts) AS time,
    max(headcount) AS headcount,
    toFloat64((SELECT any(capacity) FROM site_zones FINAL WHERE {ZONE})) AS capacity
FROM zone_state FINAL
WHERE {ZONE} AND $__timeFilter(ts)
GROUP BY time
ORDER BY time
""",
        )
        .span(24)
        .with_target(
            sql(
                f"""
SELECT ts AS time, yhat AS forecast, yhat_lower AS forecast_lower, yhat_upper AS forecast_upper
FROM forecasts FINAL
WHERE {ZONE} AND target = 'headcount' AND $__timeFilter(ts)
ORDER BY time
""",
                ref_id="B",
            )
        )
        .override_by_name(
            "forecast_lower",
            [
                model.DynamicConfigValue(id_val="custom.fillBelowTo", value="forecast_upper"),
                model.DynamicConfigValue(id_val="custom.lineWidth", value=0),
            ],
        )
        .override_by_name(
            "forecast_upper", [model.DynamicConfigValue(id_val="custom.lineWidth", value=0)]
        )
        .override_by_name(
            "capacity",
            [
                model.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                ),
                model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ],
        )
    )
    density = _series(
        "Density",
        f"""
SELECT $__timeInterval(ts) AS time, max(density) AS density
FROM zone_state FINAL
WHERE {ZONE} AND $__timeFilter(ts)
GROUP BY time
ORDER BY time
""",
    ).description("Persons per m².")
    service = (
        statetimeline.Panel()
        .title("Level of service and warning level")
        .description("Fruin level of service (A-F) and the zone's warning level.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                f"""
SELECT
    $__timeInterval(ts) AS time,
    max(level_of_service) AS level_of_service,
    ['none', {LEVEL_NAMES}][1 + max(indexOf([{LEVEL_NAMES}], ifNull(level, '')))] AS level
FROM zone_state FINAL
WHERE {ZONE} AND $__timeFilter(ts)
GROUP BY time
ORDER BY time
""",
                table=True,
            )
        )
        .mappings(LEVEL_MAPPINGS)
        .height(8)
        .span(12)
    )
    flows = _series(
        "Inflow and outflow",
        f"""
SELECT
    $__timeInterval(ts) AS time,
    max(inflow_per_min) AS inflow,
    max(outflow_per_min) AS outflow
FROM zone_metrics FINAL
WHERE {ZONE} AND scope = 'zone' AND $__timeFilter(ts)
GROUP BY time
ORDER BY time
""",
    ).description("Gate entries and exits per minute.")
    scores = (
        _series(
            "Anomaly scores",
            f"""
SELECT
    $__timeInterval(ts) AS time,
    max(anomaly_score) AS anomaly_score,
    max(surge_score) AS surge_score,
    max(burst_score) AS burst_score
FROM zone_state FINAL
WHERE {ZONE} AND $__timeFilter(ts)
GROUP BY time
ORDER BY time
""",
        )
        .description("1 and above: a strong anomaly, a sudden change or a burst of calls.")
        .thresholds(level_thresholds((1.0, 2.0, 3.0, 4.0)))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    )
    alerts = (
        table_panel(
            "Alerts",
            f"""
SELECT ts, event, level, previous_level, kind, reason, alert_id
FROM alerts FINAL
WHERE {ZONE} AND $__timeFilter(ts)
ORDER BY ts DESC
""",
            height=8,
            span=24,
        )
        .override_by_name("level", level_cells())
        .override_by_name("previous_level", level_cells())
    )
    calls = table_panel(
        "110 calls nearby",
        f"""
SELECT
    received_at,
    group,
    category_text,
    round(greatCircleDistance(lon, lat, z.lon, z.lat)) AS distance_m,
    has(zones, z.zone_id) AS in_zone,
    district
FROM calls FINAL
CROSS JOIN (SELECT zone_id, lat, lon FROM site_zones FINAL WHERE {ZONE}) AS z
WHERE $__timeFilter(received_at)
    AND lat IS NOT NULL AND z.lat IS NOT NULL
    AND greatCircleDistance(lon, lat, z.lon, z.lat) <= {NEARBY_M}
ORDER BY received_at DESC
""",
        height=8,
        span=24,
    ).description(
        f"Calls within {NEARBY_M} m of the zone's centre, newest first; in_zone: placed "
        "in the zone itself."
    )
    return (
        dashboard.Dashboard("Crowdwatch: zone detail")
        .uid(UID)
        .tags(["crowdwatch"])
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(
            _variable("station", "Station", "SELECT DISTINCT station_id FROM site_zones FINAL")
        )
        .with_variable(
            _variable(
                "zone",
                "Zone",
                "SELECT zone_id FROM site_zones FINAL WHERE station_id = ${station:singlequote}",
            )
        )
        .with_panel(headcount)
        .with_panel(density)
        .with_panel(service)
        .with_panel(flows)
        .with_panel(scores)
        .with_panel(alerts)
        .with_panel(calls)
        .annotation(
            annotation(
                "Alerts",
                f"""
SELECT
    ts AS time,
    concat(event, ' ', upper(level), ': ', reason) AS text,
    arrayStringConcat(['alert', level, event], ',') AS tags
FROM alerts FINAL
WHERE {ZONE} AND $__timeFilter(ts)
ORDER BY time
""",
            )
        )
    )
