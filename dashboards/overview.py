"""The network overview: totals, the zones nearest to capacity, open alerts, level per station."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, geomap, statetimeline
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.panels import (
    DATASOURCE,
    LEVEL_MAPPINGS,
    basemap,
    level_cells,
    level_thresholds,
    markers,
    sql,
    stat_panel,
    table_panel,
    timeseries_panel,
)

UID = "crowdwatch-overview"

# The newest state of every zone seen in the range. argMax over a one-element tuple keeps a
# newest NULL (no warning) instead of skipping to an older non-NULL value.
LATEST_ZONES = """
    SELECT
        zone_id,
        station_id,
        max(ts) AS updated,
        argMax(tuple(headcount), ts).1 AS headcount,
        argMax(tuple(capacity_share), ts).1 AS capacity_share,
        argMax(tuple(level), ts).1 AS level
    FROM zone_state FINAL
    WHERE $__timeFilter(ts)
    GROUP BY zone_id, station_id
"""

# Alerts whose newest event up to the end of the range is not "resolved".
OPEN_ALERTS = """
    SELECT
        alert_id,
        any(zone_id) AS zone_id,
        any(station_id) AS station_id,
        argMax(kind, ts) AS kind,
        argMax(level, ts) AS level,
        min(ts) AS opened,
        max(ts) AS updated,
        argMax(reason, ts) AS reason
    FROM alerts FINAL
    WHERE ts <= $__toTime
    GROUP BY alert_id
    HAVING argMax(event, ts) != 'resolved'
"""


def network_overview() -> dashboard.Dashboard:
    """The whole network at a glance: fullest zones, open alerts, each station's level."""
    people = stat_panel(
        "People in the network", f"SELECT sum(headcount) AS people FROM ({LATEST_ZONES})", span=6
    ).unit("none")
    warning = (
        stat_panel(
            "Zones with a warning",
            f"SELECT countIf(level IS NOT NULL) AS zones FROM ({LATEST_ZONES})",
            span=6,
        )
        .unit("none")
        .thresholds(level_thresholds((1.0, 2.0, 3.0, 5.0)))
    )
    alerts = stat_panel(
        "Alerts open", f"SELECT count() AS alerts FROM ({OPEN_ALERTS})", span=6
    ).unit("none")
    cameras = stat_panel(
        "Cameras online", "SELECT online_rate, working_rate FROM camera_network", span=6
    ).unit("percentunit")
    nearest = (
        table_panel(
            "Zones nearest to capacity",
            f"""
SELECT
    z.zone_id AS zone_id,
    s.name AS name,
    z.station_id AS station_id,
    z.headcount AS headcount,
    s.capacity AS capacity,
    z.capacity_share AS capacity_share,
    z.level AS level,
    z.updated AS updated
FROM ({LATEST_ZONES}) AS z
LEFT JOIN (SELECT zone_id, name, capacity FROM site_zones FINAL) AS s ON s.zone_id = z.zone_id
ORDER BY capacity_share DESC NULLS LAST
LIMIT 10
""",
            height=10,
            span=12,
        )
        .description("The newest state of each zone in the range, fullest first.")
        .override_by_name("level", level_cells())
        .override_by_name(
            "capacity_share",
            [
                model.DynamicConfigValue(id_val="unit", value="percentunit"),
                model.DynamicConfigValue(
                    id_val="thresholds", value=level_thresholds().build().to_json()
                ),
                model.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
            ],
        )
    )
    open_alerts = (
        table_panel("Open alerts", f"{OPEN_ALERTS}\nORDER BY updated DESC", height=10, span=12)
        .description("Alerts not resolved at the end of the range, newest first.")
        .override_by_name("level", level_cells())
    )
    stations = (
        statetimeline.Panel()
        .title("Level per station")
        .description("The worst level of each station's zones (0: none, 1-4: blue to red).")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT $__timeInterval(ts) AS time, station_id, max(level_rank) AS level_rank
FROM station_state
WHERE $__timeFilter(ts)
GROUP BY time, station_id
ORDER BY time
"""
            )
        )
        .mappings(LEVEL_MAPPINGS)
        .show_value(common.VisibilityMode.NEVER)
        .height(8)
        .span(24)
    )
    zone_map = (
        geomap.Panel()
        .title("Zones on the map")
        .description(
            "Every zone of the site at its centre, coloured by its newest warning level "
            "(green: none); size: share of capacity."
        )
        .datasource(DATASOURCE)
        .with_target(
            sql(
                f"""
SELECT
    s.zone_id AS zone_id,
    s.name AS name,
    s.station_id AS station_id,
    s.lat AS lat,
    s.lon AS lon,
    z.headcount AS headcount,
    z.capacity_share AS capacity_share,
    multiIf(z.level = 'red', 4, z.level = 'orange', 3, z.level = 'yellow', 2,
        z.level = 'blue', 1, 0) AS level_rank
FROM (SELECT zone_id, name, station_id, lat, lon FROM site_zones FINAL) AS s
LEFT JOIN ({LATEST_ZONES}) AS z ON z.zone_id = s.zone_id
WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL
ORDER BY level_rank
""",
                table=True,
            )
        )
        .view(geomap.MapViewConfig().id("fit").zoom(12))
        .basemap(basemap())
        .layers([markers("Zones", color_field="level_rank", size_field="capacity_share")])
        .thresholds(level_thresholds((1.0, 2.0, 3.0, 4.0)))
        .mappings(LEVEL_MAPPINGS)
        .height(12)
        .span(12)
    )
    hourly = (
        timeseries_panel(
            "Peak share of capacity per zone, hourly",
            """
SELECT hour AS time, zone_id, max(capacity_share_max) AS capacity_share
FROM zone_hourly
WHERE $__timeFilter(hour)
GROUP BY time, zone_id
ORDER BY time
""",
            height=12,
            span=12,
        )
        .description(
            "The highest share of capacity of each zone per hour, from the hourly rollup "
            "(zone_hourly): cheap over weeks."
        )
        .time_from("7d")
        .unit("percentunit")
        .thresholds(level_thresholds())
    )
    return (
        dashboard.Dashboard("Crowdwatch: network overview")
        .uid(UID)
        .tags(["crowdwatch"])
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("30s")
        .with_panel(people)
        .with_panel(warning)
        .with_panel(alerts)
        .with_panel(cameras)
        .with_panel(nearest)
        .with_panel(open_alerts)
        .with_panel(stations)
        .with_panel(zone_map)
        .with_panel(hourly)
    )
