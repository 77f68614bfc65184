"""Response: time to acknowledge and to sign off per role, station and level, and who has not.

Read from ``alert_actions`` (the workflow's audit log, `crowdwatch.workflow`), by the time of each
action. Real statistics leave drills out; the drills table shows them, marked 【演练】. The KPI
queries are `crowdwatch.workflow.kpis`' (the report and the demo run the same).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import common

from crowdwatch.workflow import kpis
from dashboards.panels import absolute_thresholds, stat_panel, table_panel, timeseries_panel

UID = "crowdwatch-response"


def times_sql(action: str) -> str:
    """`kpis.TIMES_SQL` for ``action`` over the dashboard's time range."""
    return kpis.TIMES_SQL.replace("{action:String}", f"'{action}'").replace(
        kpis.RANGE, "$__timeFilter(ts)"
    )


def response_kpis() -> dashboard.Dashboard:
    """Unacknowledged now, time to acknowledge and to sign off, escalations, drills."""
    waiting = (
        stat_panel(
            "Unacknowledged now",
            f"SELECT count() AS unacknowledged FROM ({kpis.UNACKNOWLEDGED_SQL})",
            span=6,
        )
        .description("Roles asked to acknowledge an open alert who have not (drills left out).")
        .thresholds(absolute_thresholds("green", [(1, "red")]))
    )
    escalations = (
        stat_panel(
            "Escalations",
            """
SELECT countIf(action = 'escalated') AS escalated,
    countIf(action = 'deadline_missed') AS missed_at_the_top
FROM alert_actions FINAL
WHERE drill = 0 AND $__timeFilter(ts)
""",
            span=6,
        )
        .description("Deadlines missed that called the next tier; and missed by the last tier.")
        .thresholds(absolute_thresholds("green", [(1, "orange")]))
    )
    signed = stat_panel(
        "Alerts signed off",
        """
SELECT countIf(action = 'signed_off') AS signed_off, uniqExactIf(alert_id, action = 'raised')
    AS raised
FROM alert_actions FINAL
WHERE drill = 0 AND $__timeFilter(ts)
""",
        span=12,
        color_mode=common.BigValueColorMode.NONE,
    )
    unacknowledged = table_panel(
        "Who has not acknowledged", kpis.UNACKNOWLEDGED_SQL, height=8, span=24
    ).description("Each role still to acknowledge an open alert, since when, at which tier.")
    ack_times = table_panel(
        "Time to acknowledge", times_sql("acknowledged"), height=8, span=12
    ).description("From being asked (or escalated to) to acknowledging: p50 and p90 in seconds.")
    sign_off_times = table_panel(
        "Time to sign off", times_sql("signed_off"), height=8, span=12
    ).description("From the alert raised to its sign-off, by the role that signed it off.")
    actions = timeseries_panel(
        "Actions per hour",
        """
SELECT toStartOfHour(ts) AS time, action, count() AS actions
FROM alert_actions FINAL
WHERE drill = 0 AND $__timeFilter(ts)
GROUP BY time, action
ORDER BY time
""",
        height=8,
        span=24,
    ).description("Every step of alert handling: raised, asked, reminded, escalated, acknowledged…")
    drills = table_panel(
        "Drills (演练)",
        """
SELECT concat('【演练】', alert_id) AS exercise, any(zone_id) AS zone_id, role,
    minIf(ts, action = 'asked') AS asked,
    round(maxIf(elapsed_ms, action = 'acknowledged') / 1000, 1) AS ack_s
FROM alert_actions FINAL
WHERE drill = 1 AND $__timeFilter(ts) AND role != ''
GROUP BY alert_id, role
ORDER BY asked DESC, role
""",
        height=8,
        span=24,
    ).description("Exercise alerts: time to acknowledge per role (never in the figures above).")
    return (
        dashboard.Dashboard("Crowdwatch: response (acknowledgement, escalation, sign-off)")
        .uid(UID)
        .tags(["crowdwatch"])
        .timezone("browser")
        .time("now-7d", "now")
        .refresh("30s")
        .with_panel(waiting)
        .with_panel(escalations)
        .with_panel(signed)
        .with_panel(unacknowledged)
        .with_panel(ack_times)
        .with_panel(sign_off_times)
        .with_panel(actions)
        .with_panel(drills)
    )
