"""110 calls: how many by group and zone, the bursts, and where the calls came from."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, geomap, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.panels import DATASOURCE, basemap, markers, sql

UID = "crowdwatch-calls"
BURST_THRESHOLD = 4.0
"""The default burst alert score (``Settings.burst_threshold``), drawn as a line."""

# Calls are versioned (an update rewrites the row): FINAL counts each call once.
CALLS = "FROM calls FINAL WHERE $__timeFilter(received_at)"


def _series(title: str, description: str, query: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(sql(query))
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        .height(8)
        .span(12)
    )


def call_overview() -> dashboard.Dashboard:
    """110 calls around the site: groups and zones over time, bursts, and a map."""
    total = (
        stat.Panel()
        .title("Calls")
        .description("Calls received in the range, and those of crowd-relevant groups.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                f"SELECT count() AS calls, countIf(weight >= 0.5) AS crowd_relevant {CALLS}",
                table=True,
            )
        )
        .color_mode(common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(4)
        .span(8)
    )
    bursts_now = (
        stat.Panel()
        .title("Places with a burst")
        .description("Zones and stations whose crowd-relevant calls made a burst in the range.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT uniqExactIf(key, level = 'zone') AS zones, uniqExactIf(key, level = 'station') AS stations
FROM call_bursts FINAL
WHERE alert = 1 AND $__timeFilter(ts)
""",
                table=True,
            )
        )
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps(
                [model.Threshold(value=None, color="green"), model.Threshold(value=1, color="red")]
            )
        )
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(4)
        .span(16)
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
        timeseries.Panel()
        .title("Burst scores")
        .description(
            "-log10 of the chance of so many crowd-relevant calls in 15 minutes under the "
            "usual background, per zone and station; a burst from 4."
        )
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT $__timeInterval(ts) AS time, concat(level, ' ', key) AS place, max(score) AS score
FROM call_bursts FINAL
WHERE level IN ('zone', 'station') AND $__timeFilter(ts)
GROUP BY time, place
ORDER BY time
"""
            )
        )
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    model.Threshold(value=None, color="green"),
                    model.Threshold(value=BURST_THRESHOLD, color="red"),
                ]
            )
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
        .height(8)
        .span(12)
    )
    bursts = (
        table.Panel()
        .title("Bursts")
        .description("Each zone or station with a burst: from, to, calls and peak score.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
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
                table=True,
            )
        )
        .height(8)
        .span(12)
    )
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
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    model.Threshold(value=None, color="green"),
                    model.Threshold(value=0.5, color="orange"),
                    model.Threshold(value=1.0, color="red"),
                ]
            )
        )
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
