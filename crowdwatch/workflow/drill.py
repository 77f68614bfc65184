"""Drills (演练): exercise alerts through the real chain to the real roles, and their report.

`drill_event` makes a marked alert (kind ``drill``, id ``drill:<zone>:<time>``) that the
workflow records with its drill flag: its messages carry 【演练】, its actions are written to
``alert_actions`` with ``drill = 1`` and every real statistic leaves them out. `drill_report`
reads back who was asked, who acknowledged, how fast and through which channel, and
`write_drill_report` writes it as Markdown from ``templates/drill_report.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from crowdwatch.risk.notify import AlertEvent
from crowdwatch.site import Level, Site
from crowdwatch.workflow.service import Workflow

TEMPLATE = Path(__file__).resolve().parent / "templates" / "drill_report.md"
DRILL_KIND = "drill"


def drill_event(site: Site, zone_id: str, level: Level, now_ms: int) -> AlertEvent:
    """An exercise alert opened at ``level`` in ``zone_id`` now.

    Raises:
        ValueError: the site has no such zone.
    """
    zone = site.zone_by_id.get(zone_id)
    if zone is None:
        raise ValueError(
            f"--zone {zone_id!r} is not a zone of the site ({', '.join(site.zone_by_id)})"
        )
    return AlertEvent(
        alert_id=f"drill:{zone_id}:{now_ms}",
        event="opened",
        kind=DRILL_KIND,
        zone_id=zone_id,
        station_id=zone.station,
        level=level,
        previous_level=None,
        ts_ms=now_ms,
        reason="【演练】drill",
        values={"capacity": float(zone.capacity)},
    )


@dataclass(frozen=True)
class RoleResult:
    """One role of a drill: its tier, when asked, when and how it acknowledged (if it did)."""

    role: str
    tier: int
    asked_ms: int
    acked_ms: int | None
    acked_by: str | None
    channel: str | None

    @property
    def seconds(self) -> float | None:
        """Time to acknowledge in seconds; None if it did not."""
        return None if self.acked_ms is None else (self.acked_ms - self.asked_ms) / 1000


@dataclass(frozen=True)
class DrillReport:
    """A drill's outcome per role, with the reminders and escalations it took."""

    alert_id: str
    zone_id: str
    level: str
    started_ms: int
    roles: tuple[RoleResult, ...]
    reminders: int
    escalations: int

    @property
    def acknowledged(self) -> int:
        """How many roles acknowledged."""
        return sum(r.acked_ms is not None for r in self.roles)


def drill_report(workflow: Workflow, alert_id: str) -> DrillReport:
    """The report of the drill ``alert_id`` as it stands now."""
    alert = workflow.show(alert_id)
    if not alert["drill"]:
        raise ValueError(f"alert {alert_id} is not a drill")
    actions = [row["action"] for row in alert["audit"]]
    return DrillReport(
        alert_id=alert_id,
        zone_id=alert["zone_id"],
        level=alert["level"],
        started_ms=alert["raised_ms"],
        roles=tuple(
            RoleResult(
                a["role"],
                a["tier"],
                a["requested_ms"],
                a["acked_ms"],
                a["acked_by"],
                a["ack_channel"],
            )
            for a in alert["acks"]
        ),
        reminders=actions.count("reminded"),
        escalations=actions.count("escalated"),
    )


def write_drill_report(report: DrillReport, site: Site, path: Path) -> Path:
    """Write ``report`` as Markdown to ``path`` (folders made); return the path."""

    def local(ms: int | None) -> str:
        if ms is None:
            return "—"
        return f"{datetime.fromtimestamp(ms / 1000, UTC).astimezone(site.tz):%Y-%m-%d %H:%M:%S}"

    rows = "\n".join(
        f"| {site.role_name(r.role, 'zh-CN') or r.role} ({r.role}) | {r.tier} "
        f"| {local(r.asked_ms)} | {local(r.acked_ms)} "
        f"| {'—' if r.seconds is None else f'{r.seconds:.0f}'} "
        f"| {r.acked_by or '—'} | {r.channel or '—'} |"
        for r in report.roles
    )
    zone = site.zone_by_id[report.zone_id]
    text = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        zone_name=zone.name,
        zone_id=report.zone_id,
        level=report.level,
        alert_id=report.alert_id,
        started=local(report.started_ms),
        timezone=site.site.timezone,
        reminders=report.reminders,
        escalations=report.escalations,
        acked=report.acknowledged,
        asked=len(report.roles),
        rows=rows,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
