"""``crowdwatch report``, the data half: which panels, their queries run on the warehouse.

A look without Grafana. The report takes the panels of the Grafana dashboards as built
(`dashboards.build.built_dashboards`), expands each target's SQL as Grafana would
(`dashboards.macros.expand`) and runs it on the warehouse. `build_report` returns a `Report`:
the overview's key panels, one zone's (the one with the worst alert, by default), a zoom on
its alerts, a snapshot of the overview a minute into the worst one, and who was told of the
alerts (the pipeline health dashboard's delivery panels) and how they responded (the response
dashboard's KPIs). `app.report.page` draws it.

Panels are picked by dashboard uid and title. A panel that is missing, or whose query fails,
becomes a note on the page; the report is still written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import polars as pl
from clickhouse_connect.driver.exceptions import ClickHouseError

from crowdwatch.warehouse.client import Warehouse, describe_dsn
from dashboards.build import built_dashboards
from dashboards.macros import expand
from dashboards.overview import UID as OVERVIEW_UID
from dashboards.panels import LEVELS
from dashboards.pipeline import UID as PIPELINE_UID
from dashboards.response import UID as RESPONSE_UID
from dashboards.zone import UID as ZONE_UID


@dataclass(frozen=True)
class Pick:
    """A panel to show: which dashboard, which title, and its width on the page (of 24)."""

    uid: str
    title: str
    span: int = 24


OVERVIEW: tuple[Pick, ...] = (
    Pick(OVERVIEW_UID, "People in the network", 6),
    Pick(OVERVIEW_UID, "Zones with a warning", 6),
    Pick(OVERVIEW_UID, "Alerts open", 6),
    Pick(OVERVIEW_UID, "Cameras online", 6),
    Pick(OVERVIEW_UID, "Level per station"),
    Pick(OVERVIEW_UID, "Zones nearest to capacity"),
    Pick(OVERVIEW_UID, "Open alerts"),
)
"""The network overview's key panels, in page order."""

SNAPSHOT: tuple[Pick, ...] = tuple(p for p in OVERVIEW if p.title != "Level per station")
"""The overview's state panels again, a minute into the zone's worst alert."""

ZONE: tuple[Pick, ...] = (
    Pick(ZONE_UID, "Headcount against capacity and forecast"),
    Pick(ZONE_UID, "Level of service and warning level"),
    Pick(ZONE_UID, "Density", 12),
    Pick(ZONE_UID, "Inflow and outflow", 12),
    Pick(ZONE_UID, "Anomaly scores"),
    Pick(ZONE_UID, "Alerts"),
)
"""The zone dashboard's key panels, in page order."""

DELIVERIES: tuple[Pick, ...] = (
    Pick(PIPELINE_UID, "Alert deliveries not made", 8),
    Pick(PIPELINE_UID, "Alert events not delivered", 16),
    Pick(PIPELINE_UID, "Alert delivery latency"),
)
"""Who was told of the alerts in the range: the pipeline health dashboard's delivery panels."""

RESPONSE: tuple[Pick, ...] = (
    Pick(RESPONSE_UID, "Unacknowledged now", 6),
    Pick(RESPONSE_UID, "Escalations", 6),
    Pick(RESPONSE_UID, "Alerts signed off", 12),
    Pick(RESPONSE_UID, "Time to acknowledge", 12),
    Pick(RESPONSE_UID, "Time to sign off", 12),
    Pick(RESPONSE_UID, "Who has not acknowledged"),
)
"""How people responded: the response dashboard's KPIs (drills left out)."""

ZOOM: tuple[Pick, ...] = ZONE[:2]
"""Shown again over the zone's alerts and half an hour either side, after ``ZONE[:2]``."""

ZOOM_MARGIN = timedelta(minutes=30)


@dataclass
class PanelResult:
    """One picked panel: its JSON (None when missing), its frames by refId, and notes."""

    pick: Pick
    panel: dict[str, Any] | None
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    sql: dict[str, str] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None
    caption: str = ""


@dataclass(frozen=True)
class ZoneFacts:
    """The zone a report is about, from the site tables."""

    zone_id: str
    station_id: str
    name: str
    capacity: int | None


@dataclass
class Report:
    """Everything the page shows."""

    title: str
    zone: ZoneFacts | None
    start: datetime
    end: datetime
    tz: tzinfo
    overview: list[PanelResult]
    zone_panels: list[PanelResult]
    snapshot: list[PanelResult]
    snapshot_at: datetime | None
    only_in_grafana: list[str]
    source: str
    generated: datetime
    deliveries: list[PanelResult] = field(default_factory=list)
    response: list[PanelResult] = field(default_factory=list)


# -- data -------------------------------------------------------------------------------------


def _flat_panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        # a collapsed row holds its panels inside it
        yield from _flat_panels(panel.get("panels") or [])


def panel_index(boards: Mapping[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Panels by (dashboard uid, title), rows flattened."""
    return {
        (uid, panel["title"]): panel
        for uid, board in boards.items()
        for panel in _flat_panels(board.get("panels") or [])
        if panel.get("type") != "row" and "title" in panel
    }


def collect(
    warehouse: Warehouse,
    picks: Sequence[Pick],
    boards: Mapping[str, dict[str, Any]],
    *,
    start: datetime,
    end: datetime,
    variables: Mapping[str, str],
) -> list[PanelResult]:
    """Run every picked panel's targets; a missing panel or a failing query becomes a note."""
    index = panel_index(boards)
    results = []
    for pick in picks:
        panel = index.get((pick.uid, pick.title))
        result = PanelResult(pick, panel, start=start, end=end)
        results.append(result)
        if panel is None:
            result.notes.append(
                f"Panel “{pick.title}” is not on dashboard {pick.uid} (renamed or removed?)."
            )
            continue
        for target in panel.get("targets") or []:
            ref = str(target.get("refId", "A"))
            raw = target.get("rawSql")
            if not raw:
                result.notes.append(f"Target {ref} has no SQL.")
                continue
            try:
                sql = expand(raw, start=start, end=end, variables=variables)
                result.sql[ref] = sql
                result.frames[ref] = warehouse.query(sql)
                result.formats[ref] = int(target.get("format", 1))
            except (ClickHouseError, KeyError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                result.notes.append(f"Query {ref} failed: {first[:300]}")
    return results


def default_range(warehouse: Warehouse, now: datetime) -> tuple[datetime, datetime]:
    """Up to a day ending at the newest zone state (minute after it), or the 6 h before ``now``."""
    row = warehouse.query("SELECT count() AS n, min(ts) AS first, max(ts) AS last FROM zone_state")
    if row["n"][0] == 0:
        return now - timedelta(hours=6), now
    first = row["first"][0].replace(tzinfo=UTC)
    last = row["last"][0].replace(tzinfo=UTC)
    end = last.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = max(first.replace(second=0, microsecond=0), end - timedelta(days=1))
    return start, end


CHOOSE_ZONE = """
SELECT s.zone_id AS zone_id
FROM (
    SELECT zone_id, max(capacity_share) AS share
    FROM zone_state FINAL
    WHERE ts >= {start:DateTime64(3)} AND ts <= {end:DateTime64(3)}
    GROUP BY zone_id
) AS s
LEFT JOIN (
    SELECT zone_id, max(indexOf({levels:Array(String)}, level)) AS rank
    FROM alerts FINAL
    WHERE ts >= {start:DateTime64(3)} AND ts <= {end:DateTime64(3)}
    GROUP BY zone_id
) AS a ON a.zone_id = s.zone_id
ORDER BY a.rank DESC, s.share DESC NULLS LAST, zone_id
LIMIT 1
"""


def choose_zone(warehouse: Warehouse, start: datetime, end: datetime) -> str | None:
    """The zone with the most severe alert in the range, then the highest capacity share."""
    frame = warehouse.query(CHOOSE_ZONE, {"start": start, "end": end, "levels": list(LEVELS)})
    return str(frame["zone_id"][0]) if frame.height else None


def zone_facts(warehouse: Warehouse, zone_id: str) -> ZoneFacts:
    """Station, name and capacity of a zone from the site tables.

    Raises:
        ValueError: the zone is not in ``site_zones``, naming the zones that are.
    """
    frame = warehouse.query(
        "SELECT zone_id, station_id, name, capacity FROM site_zones FINAL ORDER BY zone_id"
    )
    match = frame.filter(pl.col("zone_id") == zone_id)
    if match.height == 0:
        known = ", ".join(frame["zone_id"].to_list()) or "none (run `crowdwatch site sync`)"
        raise ValueError(f"zone {zone_id!r} is not in the warehouse's site_zones; zones: {known}")
    row = match.row(0, named=True)
    capacity = row["capacity"]
    return ZoneFacts(
        zone_id, str(row["station_id"]), str(row["name"]), None if capacity is None else capacity
    )


def build_report(
    warehouse: Warehouse,
    *,
    now: datetime,
    tz: tzinfo = UTC,
    zone: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    title: str = "crowdwatch report",
    boards: Mapping[str, dict[str, Any]] | None = None,
) -> Report:
    """Collect the overview and one zone's panels over a range.

    Args:
        warehouse: where the panel queries run.
        now: the present (UTC), for the default range on an empty warehouse and the footer.
        tz: the time zone times are shown in (the site's).
        zone: the zone to show; default: the one with the most severe alert, then the fullest.
        start: the range's start; default: up to a day before ``end``.
        end: its end; default: just after the newest zone state.
        title: the page heading.
        boards: dashboard JSON by uid; default: as built by `dashboards.build`.

    Raises:
        WarehouseError: the warehouse is not migrated.
        ValueError: ``zone`` is not in the site tables, or the range is empty.
    """
    warehouse.check_tables("zone_state", "alerts", "site_zones")
    boards = built_dashboards() if boards is None else boards
    if start is None or end is None:
        auto_start, auto_end = default_range(warehouse, now)
        end = auto_end if end is None else end
        start = (max(auto_start, end - timedelta(days=1))) if start is None else start
    if start >= end:
        raise ValueError(f"--from {start:%Y-%m-%d %H:%M} is not before --to {end:%Y-%m-%d %H:%M}")
    zone_id = zone or choose_zone(warehouse, start, end)
    facts = zone_facts(warehouse, zone_id) if zone_id else None
    variables = {"zone": facts.zone_id, "station": facts.station_id} if facts else {}
    overview = collect(warehouse, OVERVIEW, boards, start=start, end=end, variables=variables)
    zone_panels: list[PanelResult] = []
    if facts is not None:
        zone_panels = collect(warehouse, ZONE, boards, start=start, end=end, variables=variables)
        window = alert_window(zone_panels, start, end)
        if window is not None:
            zoom = collect(
                warehouse, ZOOM, boards, start=window[0], end=window[1], variables=variables
            )
            for result in zoom:
                result.caption = (
                    f"{local_time(window[0], tz):%H:%M}–{local_time(window[1], tz):%H:%M}, "
                    "around the alerts"
                )
            zone_panels[len(ZOOM) : len(ZOOM)] = zoom
    snapshot: list[PanelResult] = []
    first = worst_alert(zone_panels)
    at = None
    if first is not None:
        at = aware(first["ts"]) + timedelta(minutes=1)
        if at < end:
            snapshot = collect(
                warehouse,
                SNAPSHOT,
                boards,
                start=max(start, at - timedelta(days=1)),
                end=at,
                variables=variables,
            )
            for result in snapshot:
                result.caption = f"at {local_time(at, tz):%H:%M}"
        else:
            at = None
    deliveries = collect(warehouse, DELIVERIES, boards, start=start, end=end, variables=variables)
    response = collect(warehouse, RESPONSE, boards, start=start, end=end, variables=variables)
    picked = {(p.uid, p.title) for p in (*OVERVIEW, *ZONE, *DELIVERIES, *RESPONSE)}
    others = [f"{uid}: {title}" for uid, title in panel_index(boards) if (uid, title) not in picked]
    return Report(
        title=title,
        zone=facts,
        start=start,
        end=end,
        tz=tz,
        overview=overview,
        zone_panels=zone_panels,
        snapshot=snapshot,
        snapshot_at=at,
        only_in_grafana=others,
        source=f"{describe_dsn(warehouse.dsn)}, database {warehouse.database}",
        generated=now,
        deliveries=deliveries,
        response=response,
    )


def worst_alert(results: Sequence[PanelResult]) -> dict[str, Any] | None:
    """The first event at the most severe level in the zone's Alerts panel, or None."""
    alerts = frame_of(results, "Alerts")
    if alerts is None or not {"ts", "level"} <= set(alerts.columns):
        return None
    ranked = alerts.filter(pl.col("level").is_in(list(LEVELS))).sort("ts")
    if ranked.height == 0:
        return None
    worst = max(ranked["level"].to_list(), key=LEVELS.index)
    return ranked.filter(pl.col("level") == worst).row(0, named=True)


def alert_window(
    results: Sequence[PanelResult], start: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    """The zone's alerts and half an hour either side, or None: no alerts, or most of the range."""
    alerts = frame_of(results, "Alerts")
    if alerts is None or alerts.height == 0 or "ts" not in alerts.columns:
        return None
    first, last = alerts["ts"].min(), alerts["ts"].max()
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        return None
    lo = max(start, aware(first) - ZOOM_MARGIN)
    hi = min(end, aware(last) + ZOOM_MARGIN)
    if hi <= lo or (hi - lo) > 0.6 * (end - start):
        return None
    return lo, hi


# -- helpers the page shares ----------------------------------------------------------


def aware(ts: datetime) -> datetime:
    """``ts`` with a time zone: a naive time from the warehouse is UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def local_time(ts: datetime | float, tz: tzinfo) -> datetime:
    """A time in ``tz``; a number is epoch seconds (``DateTime`` arrives so, see `time_column`)."""
    if not isinstance(ts, datetime):
        return datetime.fromtimestamp(ts, UTC).astimezone(tz)
    return aware(ts).astimezone(tz)


def frame_of(results: Sequence[PanelResult], title: str, ref: str = "A") -> pl.DataFrame | None:
    """A panel's frame over the whole range (not a zoomed repeat)."""
    for result in results:
        if result.pick.title == title and ref in result.frames and not result.caption:
            return result.frames[ref]
    return None
