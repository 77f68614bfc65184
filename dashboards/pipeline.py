"""Pipeline health: rows written, lag, rejected records, and who was told of the alerts.

The time axis is the wall clock (when rows reached the warehouse), not event time: a replay
of last week shows up now, far behind real time. The alert delivery panels are the exception:
they select alert events by their own time, so a report over an event-time range (and a live
run, where the two are the same) shows the deliveries of the alerts in it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries
from grafana_foundation_sdk.models import common

from dashboards.panels import absolute_thresholds, stat_panel, table_panel, timeseries_panel

UID = "crowdwatch-pipeline"


DELIVERY_STATE = """
SELECT
    idempotency_key,
    channel,
    any(event_ts) AS ts,
    any(alert_id) AS alert_id,
    any(kind) AS kind,
    any(event) AS event,
    any(level) AS level,
    any(zone_id) AS zone_id,
    any(role) AS role,
    any(recipient) AS recipient,
    argMax(status, attempt) AS status,
    max(attempt) AS attempts,
    argMax(error, attempt) AS last_error,
    max(attempted_at) AS last_attempt
FROM alert_deliveries FINAL
WHERE $__timeFilter(event_ts)
GROUP BY idempotency_key, channel
"""
"""Each alert event's delivery to each role and channel, as its newest attempt left it.

Drills (kind ``drill``) are in it: the counts and the latency leave them out, the table of
events not delivered shows them marked 【演练】.
"""


def delivery_panels() -> tuple[stat.Panel, table.Panel, timeseries.Panel]:
    """Alert events not delivered (by role, with why) and how long delivery took."""
    undelivered = (
        stat_panel(
            "Alert deliveries not made",
            f"""
SELECT
    countIf(status IN ('retry', 'failed', 'expired')) AS not_delivered,
    countIf(status = 'no_contact') AS no_contact,
    countIf(status IN ('logged', 'stale')) AS not_sent
FROM ({DELIVERY_STATE})
WHERE kind != 'drill'
""",
            span=8,
        )
        .description(
            "Alert events × roles: still retrying or given up; roles without a contact; not "
            "sent on purpose (CROWDWATCH_NOTIFY=log, or older than the age limit). Drills "
            "left out."
        )
        .thresholds(absolute_thresholds("green", [(1, "red")]))
    )
    not_delivered = table_panel(
        "Alert events not delivered",
        f"""
SELECT
    ts, zone_id, if(kind = 'drill', concat('【演练】', event), event) AS event, level, role,
    recipient, status, attempts, last_error, last_attempt
FROM ({DELIVERY_STATE})
WHERE status != 'delivered'
ORDER BY ts DESC, zone_id, role
LIMIT 500
""",
        height=8,
        span=16,
    ).description("Each role that did not hear of an alert event, and why (newest first).")
    latency = (
        timeseries_panel(
            "Alert delivery latency",
            """
SELECT
    $__timeInterval(event_ts) AS time,
    quantile(0.5)(queued_ms + latency_ms) / 1000 AS p50_s,
    max(queued_ms + latency_ms) / 1000 AS max_s
FROM alert_deliveries FINAL
WHERE $__timeFilter(event_ts) AND status = 'delivered' AND kind != 'drill'
GROUP BY time
ORDER BY time
""",
            height=8,
            span=24,
        )
        .description(
            "From the alert event written to the outbox to its delivery answered, per role "
            "(retries included; drills left out)."
        )
        .unit("s")
    )
    return undelivered, not_delivered, latency


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
    board = (
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
    for panel in delivery_panels():
        board = board.with_panel(panel)
    return board
