"""Pipeline health: rows written per table, how far behind real time, and rejected records.

The time axis is the wall clock (when rows reached the warehouse), not event time: a replay
of last week shows up now, far behind real time.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import common

from dashboards.panels import absolute_thresholds, stat_panel, table_panel, timeseries_panel

UID = "crowdwatch-pipeline"


def pipeline_health() -> dashboard.Dashboard:
    """Throughput and lag per table from ``pipeline_writes``, rejected records by reason."""
    written = stat_panel(
        "Rows written",
        "SELECT sum(rows) AS rows FROM pipeline_writes WHERE $__timeFilter(second)",
        span=8,
        color_mode=common.BigValueColorMode.NONE,
    ).description("Rows the pipelines wrote in the range, rewrites of a window included.")
    rejected_total = stat_panel(
        "Records rejected",
        """
SELECT count() AS rejected
FROM rejected_events FINAL
WHERE $__timeFilter(received_at)
""",
        span=8,
    ).thresholds(absolute_thresholds("green", [(1, "orange")]))
    freshest = (
        stat_panel(
            "Newest event written",
            """
SELECT max(newest_event) AS newest_event
FROM pipeline_writes
WHERE $__timeFilter(second) AND table != 'rejected_events'
""",
            span=8,
            color_mode=common.BigValueColorMode.NONE,
        )
        .description("The newest event time any pipeline wrote in the range.")
        .unit("dateTimeAsIso")
    )
    throughput = (
        timeseries_panel(
            "Rows written per minute",
            """
SELECT toStartOfMinute(second) AS time, table, sum(rows) AS rows
FROM pipeline_writes
WHERE $__timeFilter(second)
GROUP BY time, table
ORDER BY time
""",
            height=8,
            span=12,
        )
        .description("Per table, by wall-clock minute of insertion.")
        .unit("short")
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
    )
    lag = (
        timeseries_panel(
            "Lag behind real time",
            """
SELECT toStartOfMinute(second) AS time, table, min(lag_ms) / 1000 AS lag_s
FROM pipeline_writes
WHERE $__timeFilter(second) AND table != 'rejected_events'
GROUP BY time, table
ORDER BY time
""",
            height=8,
            span=12,
        )
        .description(
            "Per table: insertion time minus the event time of the newest row written "
            "(a window's start for window tables). A replay of history is days behind."
        )
        .unit("s")
    )
    reasons_over_time = (
        timeseries_panel(
            "Rejected records by reason",
            """
SELECT $__timeInterval(received_at) AS time, reason, count() AS rejected
FROM rejected_events FINAL
WHERE $__timeFilter(received_at)
GROUP BY time, reason
ORDER BY time
""",
            height=8,
            span=12,
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
    )
    reasons = table_panel(
        "Rejected records per source and reason",
        """
SELECT source, reason, count() AS rejected, max(received_at) AS last
FROM rejected_events FINAL
WHERE $__timeFilter(received_at)
GROUP BY source, reason
ORDER BY rejected DESC, source, reason
""",
        height=8,
        span=12,
    )
    return (
        dashboard.Dashboard("Crowdwatch: pipeline health")
        .uid(UID)
        .tags(["crowdwatch"])
        .timezone("browser")
        .time("now-1h", "now")
        .refresh("30s")
        .with_panel(written)
        .with_panel(rejected_total)
        .with_panel(freshest)
        .with_panel(throughput)
        .with_panel(lag)
        .with_panel(reasons_over_time)
        .with_panel(reasons)
    )
