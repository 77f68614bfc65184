"""Response KPIs from the warehouse's ``alert_actions``: time to acknowledge and to sign off.

Per role, station and level: how many, and the median (p50) and p90 in seconds, over a time
range; and what is unacknowledged now. Drills are left out (``drill = 0``). The dashboard, the
report and the demo run these same queries.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from crowdwatch.warehouse.client import Warehouse

RANGE = "ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}"
"""The time range of `TIMES_SQL` (a dashboard puts Grafana's ``$__timeFilter(ts)`` instead)."""

TIMES_SQL = """
SELECT
    role,
    station_id,
    level,
    count() AS n,
    round(quantile(0.5)(elapsed_ms) / 1000, 1) AS p50_s,
    round(quantile(0.9)(elapsed_ms) / 1000, 1) AS p90_s
FROM alert_actions FINAL
WHERE action = {action:String} AND drill = 0
    AND ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}
GROUP BY role, station_id, level
ORDER BY station_id, level, role
"""
"""How long an action took (``elapsed_ms``) per role, station and level: ``acknowledged``
(since the role was asked) or ``signed_off`` (since the alert was raised)."""

UNACKNOWLEDGED_SQL = """
SELECT alert_id, any(zone_id) AS zone_id, any(station_id) AS station_id, role,
    argMax(level, ts) AS level, min(ts) AS asked_at, max(tier) AS tier
FROM alert_actions FINAL
WHERE drill = 0 AND action = 'asked'
    AND (alert_id, role) NOT IN (
        SELECT alert_id, role FROM alert_actions FINAL WHERE action = 'acknowledged'
    )
    AND alert_id NOT IN (
        SELECT alert_id FROM alert_actions FINAL WHERE action IN ('signed_off', 'resolved')
    )
GROUP BY alert_id, role
ORDER BY asked_at, alert_id, role
"""
"""Who was asked to acknowledge an alert that is still open, and has not."""


def ack_times(warehouse: Warehouse, start: datetime, end: datetime) -> pl.DataFrame:
    """Time to acknowledge (p50, p90 in s) per role, station and level in [start, end)."""
    return warehouse.query(TIMES_SQL, {"action": "acknowledged", "start": start, "end": end})


def sign_off_times(warehouse: Warehouse, start: datetime, end: datetime) -> pl.DataFrame:
    """Time to sign off (p50, p90 in s) per role, station and level in [start, end)."""
    return warehouse.query(TIMES_SQL, {"action": "signed_off", "start": start, "end": end})


def unacknowledged(warehouse: Warehouse) -> pl.DataFrame:
    """The requests of open real alerts that nobody has acknowledged yet."""
    return warehouse.query(UNACKNOWLEDGED_SQL)
