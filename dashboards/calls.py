"""110 calls: how many by group and zone, the bursts, and where the calls came from."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, geomap, timeseries
from grafana_foundation_sdk.models import common

from dashboards.panels import (
    DATASOURCE,
    absolute_thresholds,
    basemap,
    markers,
    sql,
    stat_panel,
    table_panel,
    timeseries_panel,
)

UID = "crowdwatch-calls"
BURST_THRESHOLD = 4.0
"""The default burst alert score (``Settings.burst_threshold``), drawn as a line."""

# Calls are versioned (an update rewrites the row): FINAL counts each call once.
CALLS = "FROM calls FINAL WHERE $__timeFilter(received_at)"


def _series(title: str, description: str, query: str) -> timeseries.Panel:
    return (
        timeseries_panel(title, query, height=8, span=12)
        .description(description)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    )


def call_overview() -> dashboard.Dashboard:
    """110 calls around the site: groups and zones over time, bursts, and a map."""
    total = stat_panel(
        "Calls",
        f"SELECT count() AS calls, countIf(weight >= 0.5) AS crowd_relevant {CALLS}",
        span=8,
        color_mode=common.BigValueColorMode.NONE,
    ).description("Calls received in the range, and those of crowd-relevant groups.")
    bursts_now = (
        stat_panel(
            "Places with a burst",
            """
SELECT uniqExactIf(key, level = 'zone') AS zones, uniqExactIf(key, level = 'station') AS stations
FROM call_bursts FINAL
WHERE alert = 1 AND $__timeFilter(ts)
""",
            span=16,
        )
        .description("Zones and stations whose crowd-relevant calls made a burst in the range.")
        .thresholds(absolute_thresholds("green", [(1, "red")]))
    )
    by_group = _series(
        "Calls by group",
        "Crowd-safety group of each call (infra/calls/categories.yaml).",
        f"""
SELECT $__timeInterval(received_at) AS time, group, count() AS calls
{CALLS}
GROUP BY time, group
ORDER BY time
""",
    )
    by_zone = _series(
        "Calls by zone",
        "Calls placed in a zone (inside its outline or radius); most calls are in none.",
        f"""
SELECT $__timeInterval(received_at) AS time, arrayJoin(zones) AS zone_id, count() AS calls
{CALLS}
GROUP BY time, zone_id
ORDER BY time
""",
    )
    scores = (
        timeseries_panel(
            "Burst scores",
            """
SELECT $__timeInterval(ts) AS time, concat(level, ' ', key) AS place, max(score) AS score
FROM call_bursts FINAL
WHERE level IN ('zone', 'station') AND $__timeFilter(ts)
GROUP BY time, place
ORDER BY time
""",
            height=8,
            span=12,
        )
        .description(
            "-log10 of the chance of so many crowd-relevant calls in 15 minutes under the "
            "usual background, per zone and station; a burst from 4."
        )
        .thresholds(absolute_thresholds("green", [(BURST_THRESHOLD, "red")]))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    )
    bursts = table_panel(
        "Bursts",
        """
SELECT
    key,
    level,
    min(ts) AS first,
    max(ts) AS last,
    max(observed_15m) AS calls_15m,
    min(expected_15m) AS expected_15m,
    max(score) AS score
FROM call_bursts FINAL
WHERE alert = 1 AND level IN ('zone', 'station') AND $__timeFilter(ts)
GROUP BY key, level
ORDER BY first DESC
""",
        height=8,
        span=12,
    ).description("Each zone or station with a burst: from, to, calls and peak score.")
    calls_map = (
        geomap.Panel()
        .title("Calls on the map")
        .description("Every call with a position; colour: the group's crowd relevance (weight).")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                f"""
SELECT received_at AS time, lat, lon, group, weight, category_text, district, zones
{CALLS} AND lat IS NOT NULL AND lon IS NOT NULL
ORDER BY time
""",
                table=True,
            )
        )
        .view(geomap.MapViewConfig().id("fit").zoom(12))
        .basemap(basemap())
        .layers([markers("Calls", color_field="weight")])
        .thresholds(absolute_thresholds("green", [(0.5, "orange"), (1.0, "red")]))
        .height(12)
        .span(24)
    )
    return (
        dashboard.Dashboard("Crowdwatch: 110 calls")
        .uid(UID)
        .tags(["crowdwatch"])
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("1m")
        .with_panel(total)
        .with_panel(bursts_now)
        .with_panel(by_group)
        .with_panel(by_zone)
        .with_panel(scores)
        .with_panel(bursts)
        .with_panel(calls_map)
    )
