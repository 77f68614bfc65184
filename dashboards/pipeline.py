"""Pipeline health: rows written per table, how far behind real time, and rejected records.

The time axis is the wall clock (when rows reached the warehouse), not event time: a replay
of last week shows up now, far behind real time.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.panels import DATASOURCE, sql

UID = "crowdwatch-pipeline"


def pipeline_health() -> dashboard.Dashboard:
    """Throughput and lag per table from ``pipeline_writes``, rejected records by reason."""
    written = (
        stat.Panel()
        .title("Rows written")
        .description("Rows the pipelines wrote in the range, rewrites of a window included.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                "SELECT sum(rows) AS rows FROM pipeline_writes WHERE $__timeFilter(second)",
                table=True,
            )
        )
        .color_mode(common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(4)
        .span(8)
    )
    rejected_total = (
        stat.Panel()
        .title("Records rejected")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT count() AS rejected
FROM rejected_events FINAL
WHERE $__timeFilter(received_at)
""",
                table=True,
            )
        )
        .thresholds(
            dashboard.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    model.Threshold(value=None, color="green"),
                    model.Threshold(value=1, color="orange"),
                ]
            )
        )
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(4)
        .span(8)
    )
    freshest = (
        stat.Panel()
        .title("Newest event written")
        .description("The newest event time any pipeline wrote in the range.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT max(newest_event) AS newest_event
FROM pipeline_writes
WHERE $__timeFilter(second) AND table != 'rejected_events'
""",
                table=True,
            )
        )
        .unit("dateTimeAsIso")
        .color_mode(common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .height(4)
        .span(8)
    )
    throughput = (
        timeseries.Panel()
        .title("Rows written per minute")
        .description("Per table, by wall-clock minute of insertion.")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT toStartOfMinute(second) AS time, table, sum(rows) AS rows
FROM pipeline_writes
WHERE $__timeFilter(second)
GROUP BY time, table
ORDER BY time
"""
            )
        )
        .unit("short")
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .height(8)
        .span(12)
    )
    lag = (
        timeseries.Panel()
        .title("Lag behind real time")
        .description(
            "Per table: insertion time minus the event time of the newest row written "
            "(a window's start for window tables). A replay of history is days behind."
        )
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT toStartOfMinute(second) AS time, table, min(lag_ms) / 1000 AS lag_s
FROM pipeline_writes
WHERE $__timeFilter(second) AND table != 'rejected_events'
GROUP BY time, table
ORDER BY time
"""
            )
        )
        .unit("s")
        .height(8)
        .span(12)
    )
    reasons_over_time = (
        timeseries.Panel()
        .title("Rejected records by reason")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT $__timeInterval(received_at) AS time, reason, count() AS rejected
FROM rejected_events FINAL
WHERE $__timeFilter(received_at)
GROUP BY time, reason
ORDER BY time
"""
            )
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .height(8)
        .span(12)
    )
    reasons = (
        table.Panel()
        .title("Rejected records per source and reason")
        .datasource(DATASOURCE)
        .with_target(
            sql(
                """
SELECT source, reason, count() AS rejected, max(received_at) AS last
FROM rejected_events FINAL
WHERE $__timeFilter(received_at)
GROUP BY source, reason
ORDER BY rejected DESC, source, reason
""",
                table=True,
            )
        )
        .height(8)
        .span(12)
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
