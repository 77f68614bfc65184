"""Camera health: online and working rates against the targets, and the cameras at fault."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, stat, statetimeline
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.panels import (
    DATASOURCE,
    absolute_thresholds,
    sql,
    stat_panel,
    table_panel,
    timeseries_panel,
)

UID = "crowdwatch-cameras"
ONLINE_TARGET = 0.90
"""Public-safety video networks aim at 90 % of cameras online …"""
WORKING_TARGET = 0.95
"""… and 95 % of those working (not frozen): `camera_network` says how the rates are counted."""

# Each site camera's state in every interval, as of the interval's newest health window: the
# newest episode of camera_status_log that began by then (ASOF JOIN). Before its first episode a
# camera that has reported counts as online (its first state is written with the batch that
# judged it), one that has not as offline.
STATES = """
SELECT
    g.time AS time,
    g.camera_id AS camera_id,
    if(e.camera_id = '', if(g.first_seen <= g.at, 'online', 'offline'), e.status) AS status
FROM
(
    SELECT t.time AS time, t.at AS at, c.camera_id AS camera_id, ifNull(f.first_seen, t.at + 1)
        AS first_seen
    FROM (
        SELECT $__timeInterval(ts) AS time, max(ts) AS at
        FROM camera_health
        WHERE $__timeFilter(ts)
        GROUP BY time
    ) AS t
    CROSS JOIN (SELECT camera_id FROM site_cameras FINAL) AS c
    LEFT JOIN (
        SELECT camera_id, toNullable(min(ts)) AS first_seen
        FROM camera_health
        WHERE $__timeFilter(ts)
        GROUP BY camera_id
    ) AS f ON f.camera_id = c.camera_id
) AS g
ASOF LEFT JOIN (SELECT camera_id, since, status FROM camera_status_log FINAL) AS e
    ON e.camera_id = g.camera_id AND e.since <= g.at
"""

STATUS_MAPPINGS: list[model.ValueMapping] = [
    model.ValueMap(
        options={
            "0": model.ValueMappingResult(text="online", color="green", index=0),
            "1": model.ValueMappingResult(text="stuck", color="orange", index=1),
            "2": model.ValueMappingResult(text="offline", color="red", index=2),
        }
    )
]


def _rate(title: str, column: str, limit: float) -> stat.Panel:
    return (
        stat_panel(
            title,
            f"SELECT {column} FROM camera_network",
            span=12,
            color_mode=common.BigValueColorMode.BACKGROUND,
        )
        .description(f"Now, over every camera of the site; target {limit:.0%}.")
        .unit("percentunit")
        .thresholds(absolute_thresholds("red", [(limit, "green")]))
    )


def camera_health() -> dashboard.Dashboard:
    """Camera health: online and working rates against the targets, faults, frame rates."""
    online = _rate("Cameras online", "online_rate", ONLINE_TARGET)
    working = _rate("Cameras working", "working_rate", WORKING_TARGET)
    now = table_panel(
        "Cameras now",
        """
SELECT c.camera_id AS camera_id, c.station_id AS station_id,
    if(s.camera_id = '', 'offline', s.status) AS status, s.since AS since,
    s.last_seen AS last_seen, s.fps AS fps, c.fps AS expected_fps
FROM (SELECT camera_id, station_id, fps FROM site_cameras FINAL) AS c
LEFT JOIN (SELECT camera_id, status, since, last_seen, fps FROM camera_status FINAL) AS s
    ON s.camera_id = c.camera_id
ORDER BY status != 'online' DESC, camera_id
""",
        height=8,
        span=12,
    ).description("Each camera's current state, since when, and its frame rate.")
    rates = (
        timeseries_panel(
            "Online and working rates",
            f"""
SELECT
    time,
    countIf(status != 'offline') / count() AS online_rate,
    countIf(status = 'online') / count() AS working_rate
FROM ({STATES})
GROUP BY time
ORDER BY time
""",
            height=8,
            span=12,
        )
        .description(
            f"Share of the site's cameras online and working over time; dashed: the "
            f"{ONLINE_TARGET:.0%} online and {WORKING_TARGET:.0%} working targets."
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(
            absolute_thresholds("red", [(ONLINE_TARGET, "orange"), (WORKING_TARGET, "green")])
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    )
    timeline = (
        statetimeline.Panel()
        .title("Camera states")
        .description("Each camera online, stuck (frozen counts) or offline over time.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                f"""
SELECT time, camera_id, multiIf(status = 'offline', 2, status = 'stuck', 1, 0) AS state
FROM ({STATES})
ORDER BY time
"""
            )
        )
        .mappings(STATUS_MAPPINGS)
        .show_value(common.VisibilityMode.NEVER)
        .height(8)
        .span(24)
    )
    faults = table_panel(
        "Offline and stuck cameras",
        """
SELECT camera_id, station_id, status, since, until,
    round(dateDiff('second', since, ifNull(until, $__toTime)) / 60, 1) AS minutes
FROM
(
    SELECT camera_id, station_id, status, since,
        leadInFrame(toNullable(since)) OVER (
            PARTITION BY camera_id ORDER BY since
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) AS until
    FROM camera_status_log FINAL
)
WHERE status != 'online' AND since <= $__toTime AND (until IS NULL OR until >= $__fromTime)
ORDER BY since DESC
""",
        height=8,
        span=12,
    ).description("Every episode of a camera offline or stuck in the range; until empty: still.")
    fps = (
        timeseries_panel(
            "Frame rate per camera",
            """
SELECT $__timeInterval(ts) AS time, camera_id, avg(fps) AS fps
FROM camera_health FINAL
WHERE $__timeFilter(ts)
GROUP BY time, camera_id
ORDER BY time
""",
            height=8,
            span=12,
        )
        .description("Frames per second from the camera's messages, per health window.")
        .unit("none")
    )
    return (
        dashboard.Dashboard("Crowdwatch: camera health")
        .uid(UID)
        .tags(["crowdwatch"])
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("1m")
        .with_panel(online)
        .with_panel(working)
        .with_panel(now)
        .with_panel(rates)
        .with_panel(timeline)
        .with_panel(faults)
        .with_panel(fps)
    )
