"""Alert handling to sign-off: who must acknowledge, reminders, escalation, notes, the audit log.

`Workflow` keeps the state of every alert in the workflow store (`crowdwatch.store`):

* `record` takes the alert events of the risk engine before anyone is told: it opens the alert
  (and links it to the zone's incident when the zone's last alert closed within
  ``response.reopen_within_s``), asks the roles of the level's acknowledgement policy to
  acknowledge by a deadline, and returns each role's `Notice` — the zone's plan at the level,
  the role's signed one-time acknowledge link, the drill mark — for the outbox.
* `acknowledge` (from the command line or the API) and `acknowledge_link` (a link from a
  message) record who acknowledged, when and from which channel.
* `run_due` sends the reminders that are due and escalates every request whose deadline passed
  to the next tier of the level's policy (a duty chief, then a district command centre).
* `add_note`, `take_measure` (one of the zone's plan) and `sign_off` (an outcome, by a role the
  site allows) follow the alert to its close.

Every step appends a row to the audit log (who, role, when, what, from which channel, note):
the database refuses to change or delete one. `audit_frame` reads it for the CSV ledger and
`unexported_actions` for the warehouse's ``alert_actions``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import polars as pl
import sqlalchemy as sa

from crowdwatch.risk.levels import RANK
from crowdwatch.risk.notify import AlertEvent
from crowdwatch.risk.outbox import Notice, NotifyMode
from crowdwatch.site import LEVEL_NAMES, Role, Site
from crowdwatch.store import Store
from crowdwatch.store.tables import (
    acks_table,
    alerts_table,
    api_tokens_table,
    audit_exported_table,
    audit_table,
    refusals_table,
    secrets_table,
    used_links_table,
)
from crowdwatch.workflow.links import LinkRefused, LinkSigner

log = logging.getLogger(__name__)

Channel = Literal["system", "link", "cli", "api"]
"""Where an action came from."""

SYSTEM = "crowdwatch"
"""The actor of what crowdwatch does by itself (raising, reminding, escalating)."""

ACTIONS_SCHEMA = pl.Schema(
    {
        "action_id": pl.UInt64(),
        "ts": pl.Datetime("ms", "UTC"),
        "incident_id": pl.String(),
        "alert_id": pl.String(),
        "zone_id": pl.String(),
        "station_id": pl.String(),
        "level": pl.String(),
        "action": pl.String(),
        "actor": pl.String(),
        "role": pl.String(),
        "channel": pl.String(),
        "note": pl.String(),
        "measure": pl.String(),
        "tier": pl.UInt8(),
        "elapsed_ms": pl.Int64(),
        "drill": pl.UInt8(),
    }
)
"""``alert_actions`` rows, one per audit log entry; also the CSV ledger's columns."""


class WorkflowError(ValueError):
    """An action that cannot be taken (unknown alert, a role not asked …); says why."""


class NotAllowed(WorkflowError):
    """The role may not take this action (sign off, acknowledge for another role)."""


@dataclass(frozen=True)
class AckResult:
    """How an acknowledgement ended: ``acknowledged`` now, or ``already`` before."""

    alert_id: str
    role: Role
    status: Literal["acknowledged", "already"]
    actor: str
    elapsed_ms: int | None


def event_to_json(event: AlertEvent) -> str:
    """An alert event as JSON text (to rebuild it for reminders)."""
    return json.dumps(dataclasses.asdict(event), sort_keys=True, allow_nan=True)


def event_from_json(text: str) -> AlertEvent:
    """The alert event `event_to_json` wrote."""
    fields = json.loads(text)
    fields["causes"] = tuple(fields.get("causes") or ())
    return AlertEvent(**fields)


class Workflow:
    """The handling of alerts in a workflow store, for one site.

    Args:
        store: The workflow store (its clock is the workflow's).
        site: The site: roles, acknowledgement policy, contacts and plans.
        public_url: Where ``crowdwatch serve`` is reached; acknowledge links point there.
        link_key: The HMAC key of acknowledge links; None: one made once and kept in the store.
    """

    def __init__(
        self, store: Store, site: Site, *, public_url: str, link_key: bytes | None = None
    ) -> None:
        self.store = store
        self.site = site
        self.clock = store.clock
        self.public_url = public_url.rstrip("/")
        self.links = LinkSigner(link_key or self._stored_key("ack_link_key"))

    # --- keys and tokens -------------------------------------------------------------------

    def _stored_key(self, name: str) -> bytes:
        with self.store.write() as db:
            db.execute(
                self.store.insert_ignoring_repeats(secrets_table).values(
                    name=name, value=secrets.token_hex(32)
                )
            )
            value = db.execute(
                sa.select(secrets_table.c.value).where(secrets_table.c.name == name)
            ).scalar_one()
        return bytes.fromhex(value)

    def issue_token(self, role: Role, actor: str) -> str:
        """A new API token for ``actor`` acting as ``role``; only its hash is kept."""
        self._known_role(role)
        token = secrets.token_urlsafe(32)
        with self.store.write() as db:
            db.execute(
                sa.insert(api_tokens_table).values(
                    token_sha256=_sha256(token), role=role, actor=actor, created_ms=self.clock()
                )
            )
        return token

    def token_identity(self, token: str) -> tuple[Role, str] | None:
        """``(role, actor)`` of a valid API token, else None."""
        t = api_tokens_table.c
        with self.store.engine.connect() as db:
            row = db.execute(
                sa.select(t.role, t.actor).where(
                    t.token_sha256 == _sha256(token), t.revoked_ms.is_(None)
                )
            ).first()
        return None if row is None else (row.role, row.actor)

    def ack_url(self, alert_id: str, role: Role) -> str:
        """A fresh signed one-time link for ``role`` to acknowledge ``alert_id``."""
        expires = self.clock() + int(self.site.response.link_ttl_s * 1000)
        token = self.links.sign(alert_id, role, expires)
        return f"{self.public_url}/ack/{quote(alert_id, safe='')}/{quote(role, safe='')}?t={token}"

    # --- recording the alert events ----------------------------------------------------------

    def record(
        self,
        events: Sequence[AlertEvent],
        *,
        mode: NotifyMode,
        max_age_s: float,
        drill: bool = False,
    ) -> Callable[[AlertEvent, Role], Notice]:
        """Write the events' alerts, incidents and acknowledgement requests; return the notices.

        Acknowledgement is asked only of people who are told: in ``on`` mode, of events not
        older than ``max_age_s``. An event recorded before (a resumed dataflow replays some)
        changes nothing. The returned function gives each routed role's `Notice`.
        """
        notices: dict[tuple[str, str, int, Role], Notice] = {}
        if mode == "off" or not events:
            return _notices(notices)
        now = self.clock()
        recorded: list[tuple[AlertEvent, set[Role]]] = []
        with self.store.write() as db:  # one transaction for the batch
            for event in events:
                told = mode == "on" and now - event.ts_ms <= max_age_s * 1000
                asked = self._record_one(db, event, now, told=told, drill=drill)
                if asked is not None:
                    recorded.append((event, asked))
        for event, asked in recorded:
            measures = tuple(
                {"id": m.id, "text": dict(m.text)}
                for m in self.site.measures_for(event.zone_id, event.level)
            )
            for role, _ in self.site.routes(event.station_id, event.routing_level):
                notices[(event.alert_id, event.event, event.ts_ms, role)] = Notice(
                    measures=measures if event.event in ("opened", "escalated") else (),
                    ack_url=self.ack_url(event.alert_id, role) if role in asked else None,
                    drill=drill,
                )
        return _notices(notices)

    def _record_one(
        self, db: sa.Connection, event: AlertEvent, now: int, *, told: bool, drill: bool
    ) -> set[Role] | None:
        """Record one event; return the roles waiting to acknowledge, None if seen before."""
        a = alerts_table.c
        row = db.execute(sa.select(alerts_table).where(a.alert_id == event.alert_id)).first()
        if row is not None and _seen(event, event_from_json(row.event)):
            return None
        if row is None:
            incident, reopened = self._incident(db, event.zone_id, now)
            db.execute(
                sa.insert(alerts_table).values(
                    alert_id=event.alert_id,
                    incident_id=incident or event.alert_id,
                    kind=event.kind,
                    zone_id=event.zone_id,
                    station_id=event.station_id,
                    level=event.level,
                    status="open",
                    opened_ms=event.ts_ms,
                    raised_ms=now,
                    drill=drill,
                    event=event_to_json(event),
                )
            )
            self._audit(db, event.alert_id, "raised", now, note=event.reason)
            if reopened is not None:
                self._audit(db, event.alert_id, "reopened", now, note=f"after {reopened}")
        values: dict[str, Any] = {"event": event_to_json(event), "level": event.level}
        if event.event == "resolved":
            values |= {"status": "resolved", "resolved_ms": now}
        db.execute(sa.update(alerts_table).where(a.alert_id == event.alert_id).values(**values))
        if row is not None:
            action = {"escalated": "level_up", "de-escalated": "level_down"}.get(
                event.event, event.event
            )
            self._audit(db, event.alert_id, action, now, note=event.reason)
        if event.event == "resolved":
            # the episode is over: no more reminders or escalations; a late ack still counts
            db.execute(
                sa.update(acks_table)
                .where(acks_table.c.alert_id == event.alert_id, acks_table.c.status == "waiting")
                .values(status="lapsed", next_reminder_ms=None)
            )
            return set()
        if told and event.event in ("opened", "escalated"):
            self._ask(db, event, now)
        return self._waiting(db, event.alert_id)

    def _incident(self, db: sa.Connection, zone_id: str, now: int) -> tuple[str | None, str | None]:
        """The incident a new alert of ``zone_id`` belongs to, and the alert it reopens.

        The zone's latest alert's incident, while that alert is not signed off or was signed
        off (or resolved) within ``reopen_within_s``; else None (a new incident).
        """
        a = alerts_table.c
        last = db.execute(
            sa.select(a.alert_id, a.incident_id, a.status, a.closed_ms, a.resolved_ms)
            .where(a.zone_id == zone_id)
            .order_by(a.raised_ms.desc())
            .limit(1)
        ).first()
        if last is None:
            return None, None
        window = int(self.site.response.reopen_within_s * 1000)
        ended = last.closed_ms if last.status == "closed" else last.resolved_ms
        if ended is None or now - ended <= window:
            return last.incident_id, last.alert_id
        return None, None

    def _ask(self, db: sa.Connection, event: AlertEvent, now: int) -> None:
        """Ask the level's roles to acknowledge; tighten the deadline of those still waiting."""
        rule = self.site.ack_rule(event.level)
        if rule is None:
            return
        deadline = now + int(rule.within_s * 1000)
        reminder = now + int(rule.remind_every_s * 1000) if rule.remind_every_s else None
        k = acks_table.c
        for role in self.site.ack_roles(event.station_id, event.level):
            existing = db.execute(
                sa.select(k.status, k.deadline_ms).where(
                    k.alert_id == event.alert_id, k.role == role
                )
            ).first()
            if existing is None:
                db.execute(
                    sa.insert(acks_table).values(
                        alert_id=event.alert_id,
                        role=role,
                        tier=0,
                        level=event.level,
                        status="waiting",
                        requested_ms=now,
                        deadline_ms=deadline,
                        reminders=0,
                        next_reminder_ms=reminder if rule.remind_max != 0 else None,
                    )
                )
                self._audit(db, event.alert_id, "asked", now, role=role, note=_due(rule.within_s))
            elif existing.status == "waiting" and existing.deadline_ms > deadline:
                db.execute(
                    sa.update(acks_table)
                    .where(k.alert_id == event.alert_id, k.role == role)
                    .values(deadline_ms=deadline, level=event.level)
                )

    def _waiting(self, db: sa.Connection, alert_id: str) -> set[Role]:
        k = acks_table.c
        found = db.execute(
            sa.select(k.role).where(k.alert_id == alert_id, k.status == "waiting")
        ).scalars()
        return set(found)

    # --- acknowledging -----------------------------------------------------------------------

    def acknowledge(
        self, alert_id: str, role: Role, *, actor: str, channel: Channel, note: str = ""
    ) -> AckResult:
        """Record that ``actor`` acknowledged ``alert_id`` as ``role``.

        Raises:
            WorkflowError: the alert is unknown, or ``role`` was not asked to acknowledge it.
        """
        now = self.clock()
        k = acks_table.c
        with self.store.write() as db:
            self._alert(db, alert_id)
            request = db.execute(
                sa.select(k.status, k.requested_ms, k.tier, k.acked_by).where(
                    k.alert_id == alert_id, k.role == role
                )
            ).first()
            if request is None:
                raise WorkflowError(f"{role} was not asked to acknowledge alert {alert_id}")
            if request.status == "acked":
                return AckResult(alert_id, role, "already", request.acked_by, None)
            elapsed = now - request.requested_ms
            db.execute(
                sa.update(acks_table)
                .where(k.alert_id == alert_id, k.role == role)
                .values(
                    status="acked",
                    acked_ms=now,
                    acked_by=actor,
                    ack_channel=channel,
                    next_reminder_ms=None,
                )
            )
            self._audit(
                db,
                alert_id,
                "acknowledged",
                now,
                actor=actor,
                role=role,
                channel=channel,
                note=note,
                tier=request.tier,
                elapsed_ms=elapsed,
            )
        return AckResult(alert_id, role, "acknowledged", actor, elapsed)

    def acknowledge_link(
        self, alert_id: str, role: Role, token: str, *, remote: str | None = None
    ) -> AckResult:
        """Acknowledge through a signed one-time link presented for ``alert_id`` and ``role``.

        Raises:
            LinkRefused: forged or altered, expired, used before (replayed), made for another
                alert or role, or for an alert not known here; the refusal is logged and
                written to ``wf_refusals``.
        """
        now = self.clock()
        try:
            claims = self.links.verify(token, now)
            if claims.alert_id != alert_id:
                raise LinkRefused("wrong_alert", f"the link is for alert {claims.alert_id}")
            if claims.role != role:
                raise LinkRefused("wrong_role", f"the link is for {claims.role}, not {role}")
            with self.store.write() as db:
                if (
                    db.execute(
                        sa.select(alerts_table.c.alert_id).where(
                            alerts_table.c.alert_id == alert_id
                        )
                    ).first()
                    is None
                ):
                    raise LinkRefused("unknown_alert", f"no alert {alert_id} here")
                used = db.execute(
                    self.store.insert_ignoring_repeats(used_links_table)
                    .values(nonce=claims.nonce, alert_id=alert_id, role=role, used_ms=now)
                    .returning(used_links_table.c.nonce)
                ).first()
                if used is None:
                    raise LinkRefused("replayed", "the link was used before")
        except LinkRefused as refused:
            self._refused(refused, alert_id, role, remote, now)
            raise
        contact = self.site.contact_for(self._alert_station(alert_id), role)
        return self.acknowledge(
            alert_id, role, actor=contact.name if contact else role, channel="link"
        )

    def _refused(
        self, refused: LinkRefused, alert_id: str, role: str, remote: str | None, now: int
    ) -> None:
        log.warning(
            "acknowledge link refused (%s) for alert %s, role %s, from %s: %s",
            refused.reason,
            alert_id,
            role,
            remote or "?",
            refused.detail,
        )
        with self.store.write() as db:
            db.execute(
                sa.insert(refusals_table).values(
                    ts_ms=now,
                    reason=refused.reason,
                    alert_id=alert_id[:200],
                    role=role[:32],
                    remote=remote,
                    detail=refused.detail,
                )
            )

    def refusals(self) -> list[dict[str, Any]]:
        """Every refused link, oldest first."""
        with self.store.engine.connect() as db:
            rows = db.execute(sa.select(refusals_table).order_by(refusals_table.c.id)).mappings()
            return [dict(r) for r in rows]

    # --- reminders and escalation ------------------------------------------------------------

    def next_due_ms(self) -> int | None:
        """When the next reminder or deadline falls due; None: nothing is waiting."""
        k = acks_table.c
        with self.store.engine.connect() as db:
            row = db.execute(
                sa.select(
                    sa.func.min(k.next_reminder_ms),
                    sa.func.min(sa.case((k.escalated_ms.is_(None), k.deadline_ms))),
                ).where(k.status == "waiting")
            ).first()
        due = [v for v in (row or ()) if v is not None]
        return int(min(due)) if due else None

    def run_due(self, now: int | None = None) -> list[tuple[AlertEvent, Role, Notice]]:
        """Send what is due at ``now``: reminders, and escalations of missed deadlines.

        Returns the messages for the outbox (`Outbox.enqueue_to`). A deadline missed by
        several roles of a tier at once calls the next tier once, naming them all. Several
        processes may run this on one store: a request is escalated, and a reminder counted,
        by one of them only.
        """
        now = self.clock() if now is None else now
        k = acks_table.c
        out: list[tuple[AlertEvent, Role, Notice]] = []
        with self.store.write() as db:
            due = db.execute(
                sa.select(acks_table, alerts_table.c.event, alerts_table.c.drill)
                .join(alerts_table, alerts_table.c.alert_id == k.alert_id)
                .where(
                    k.status == "waiting",
                    sa.or_(
                        k.next_reminder_ms <= now,
                        sa.and_(k.escalated_ms.is_(None), k.deadline_ms <= now),
                    ),
                )
                .order_by(k.alert_id, k.tier, k.role)
            ).all()
            missed: dict[tuple[str, int], list[Any]] = {}
            for row in due:
                event = event_from_json(row.event)
                if row.next_reminder_ms is not None and row.next_reminder_ms <= now:
                    reminder = self._remind(db, row, event, now)
                    if reminder is not None:
                        out.append(reminder)
                if row.escalated_ms is None and row.deadline_ms <= now:
                    taken = db.execute(
                        sa.update(acks_table)
                        .where(
                            k.alert_id == row.alert_id,
                            k.role == row.role,
                            k.escalated_ms.is_(None),
                        )
                        .values(escalated_ms=now)
                    )
                    if taken.rowcount == 1:
                        missed.setdefault((row.alert_id, row.tier), []).append(row)
            for (_, tier), rows in missed.items():
                event = event_from_json(rows[0].event)
                out += self._escalate(db, event, tier, rows, now, drill=bool(rows[0].drill))
        return out

    def _remind(
        self, db: sa.Connection, row: Any, event: AlertEvent, now: int
    ) -> tuple[AlertEvent, Role, Notice] | None:
        """Count and write down a reminder; None when another process sent this one."""
        rule = self.site.ack_rule(row.level)
        number = row.reminders + 1
        every = int(rule.remind_every_s * 1000) if rule and rule.remind_every_s else None
        more = (
            every is not None
            and rule is not None
            and (rule.remind_max is None or number < rule.remind_max)
        )
        k = acks_table.c
        taken = db.execute(
            sa.update(acks_table)
            .where(k.alert_id == row.alert_id, k.role == row.role, k.reminders == row.reminders)
            .values(reminders=number, next_reminder_ms=now + every if more and every else None)
        )
        if taken.rowcount != 1:
            return None
        self._audit(db, row.alert_id, "reminded", now, role=row.role, note=f"#{number}")
        notice = Notice(
            notice="reminder",
            measures=self._measures(event),
            ack_url=self.ack_url(row.alert_id, row.role),
            drill=bool(row.drill),
            number=number,
        )
        return event, row.role, notice

    def _escalate(
        self,
        db: sa.Connection,
        event: AlertEvent,
        tier: int,
        rows: list[Any],
        now: int,
        *,
        drill: bool,
    ) -> list[tuple[AlertEvent, Role, Notice]]:
        """Call the next tier after ``rows`` (of one alert and tier) missed their deadline."""
        missed = tuple(r.role for r in rows)
        rule = self.site.ack_rule(rows[0].level)
        chain = rule.escalate_to if rule else []
        if tier >= len(chain):
            for role in missed:
                self._audit(db, event.alert_id, "deadline_missed", now, role=role, tier=tier)
            return []
        target = chain[tier]
        k = acks_table.c
        for role in missed:
            self._audit(
                db, event.alert_id, "escalated", now, role=role, tier=tier, note=f"→ {target}"
            )
        existing = db.execute(
            sa.select(k.status).where(k.alert_id == event.alert_id, k.role == target)
        ).first()
        if existing is None:
            assert rule is not None
            db.execute(
                sa.insert(acks_table).values(
                    alert_id=event.alert_id,
                    role=target,
                    tier=tier + 1,
                    level=rows[0].level,
                    status="waiting",
                    requested_ms=now,
                    deadline_ms=now + int(rule.within_s * 1000),
                    reminders=0,
                    next_reminder_ms=(
                        now + int(rule.remind_every_s * 1000)
                        if rule.remind_every_s and rule.remind_max != 0
                        else None
                    ),
                )
            )
            self._audit(
                db,
                event.alert_id,
                "asked",
                now,
                role=target,
                tier=tier + 1,
                note=f"{_due(rule.within_s)}; missed by {', '.join(missed)}",
            )
        notice = Notice(
            notice="escalation",
            measures=self._measures(event),
            ack_url=self.ack_url(event.alert_id, target),
            drill=drill,
            escalated_to=target,
            missed_by=missed,
        )
        return [(event, target, notice)]

    def _measures(self, event: AlertEvent) -> tuple[dict[str, Any], ...]:
        return tuple(
            {"id": m.id, "text": dict(m.text)}
            for m in self.site.measures_for(event.zone_id, event.level)
        )

    # --- handling ---------------------------------------------------------------------------

    def add_note(
        self, alert_id: str, note: str, *, actor: str, role: Role, channel: Channel
    ) -> None:
        """Add a note to the alert's record."""
        if not note.strip():
            raise WorkflowError("a note needs some text")
        self._known_role(role)
        with self.store.write() as db:
            self._alert(db, alert_id)
            self._audit(
                db,
                alert_id,
                "note",
                self.clock(),
                actor=actor,
                role=role,
                channel=channel,
                note=note,
            )

    def take_measure(
        self,
        alert_id: str,
        measure: str,
        *,
        actor: str,
        role: Role,
        channel: Channel,
        note: str = "",
    ) -> None:
        """Record that a measure of the zone's plan was carried out.

        Raises:
            WorkflowError: the measure is not in the zone's plan at any level.
        """
        self._known_role(role)
        with self.store.write() as db:
            alert = self._alert(db, alert_id)
            plan = {
                m.id for level in LEVEL_NAMES for m in self.site.measures_for(alert.zone_id, level)
            }
            if measure not in plan:
                raise WorkflowError(
                    f"measure {measure!r} is not in the plan of zone {alert.zone_id} "
                    f"(its plan: {', '.join(sorted(plan)) or 'none'})"
                )
            self._audit(
                db,
                alert_id,
                "measure",
                self.clock(),
                actor=actor,
                role=role,
                channel=channel,
                note=note,
                measure=measure,
            )

    def sign_off(
        self,
        alert_id: str,
        outcome: str,
        *,
        actor: str,
        role: Role,
        channel: Channel,
        note: str = "",
    ) -> None:
        """Close the alert with an outcome.

        Raises:
            NotAllowed: ``role`` is not one of the site's ``response.sign_off`` roles.
            WorkflowError: unknown alert, closed already, or no outcome.
        """
        if role not in self.site.response.sign_off:
            raise NotAllowed(
                f"{role} may not sign off an alert (the site allows: "
                f"{', '.join(self.site.response.sign_off)})"
            )
        if not outcome.strip():
            raise WorkflowError("signing off needs an outcome")
        now = self.clock()
        with self.store.write() as db:
            alert = self._alert(db, alert_id)
            if alert.status == "closed":
                raise WorkflowError(f"alert {alert_id} was signed off already")
            db.execute(
                sa.update(alerts_table)
                .where(alerts_table.c.alert_id == alert_id)
                .values(status="closed", closed_ms=now, outcome=outcome)
            )
            db.execute(
                sa.update(acks_table)
                .where(acks_table.c.alert_id == alert_id, acks_table.c.status == "waiting")
                .values(status="lapsed", next_reminder_ms=None)
            )
            self._audit(
                db,
                alert_id,
                "signed_off",
                now,
                actor=actor,
                role=role,
                channel=channel,
                note=f"{outcome}: {note}" if note else outcome,
                elapsed_ms=now - alert.raised_ms,
            )

    # --- reading ----------------------------------------------------------------------------

    def alerts(self, *, open_only: bool = True, drills: bool = True) -> list[dict[str, Any]]:
        """Alerts newest first, each with its acknowledgement requests under ``acks``."""
        a = alerts_table.c
        query = sa.select(alerts_table).order_by(a.raised_ms.desc())
        if open_only:
            query = query.where(a.status != "closed")
        if not drills:
            query = query.where(a.drill.is_(False))
        with self.store.engine.connect() as db:
            alerts = [_alert_view(r) for r in db.execute(query).mappings()]
            acks = db.execute(
                sa.select(acks_table)
                .where(acks_table.c.alert_id.in_([x["alert_id"] for x in alerts]))
                .order_by(acks_table.c.tier, acks_table.c.requested_ms, acks_table.c.role)
            ).mappings()
            by_alert: dict[str, list[dict[str, Any]]] = {}
            for ack in acks:
                by_alert.setdefault(ack["alert_id"], []).append(dict(ack))
        for alert in alerts:
            alert["acks"] = by_alert.get(alert["alert_id"], [])
        return alerts

    def open_events(self, kind: str) -> list[AlertEvent]:
        """The latest event of each open (not resolved) alert of ``kind``, drills left out."""
        a = alerts_table.c
        query = sa.select(a.event).where(a.kind == kind, a.status == "open", a.drill.is_(False))
        with self.store.engine.connect() as db:
            return [event_from_json(text) for text in db.execute(query).scalars()]

    def show(self, alert_id: str) -> dict[str, Any]:
        """One alert with its acknowledgement requests and its audit log."""
        found = [x for x in self.alerts(open_only=False) if x["alert_id"] == alert_id]
        if not found:
            raise WorkflowError(f"no alert {alert_id} in the workflow store")
        alert = found[0]
        alert["audit"] = self.audit_frame(alert_id=alert_id).to_dicts()
        return alert

    def unacknowledged(self) -> list[dict[str, Any]]:
        """The requests waiting for an acknowledgement now, oldest first."""
        k = acks_table.c
        with self.store.engine.connect() as db:
            rows = db.execute(
                sa.select(acks_table, alerts_table.c.zone_id, alerts_table.c.drill)
                .join(alerts_table, alerts_table.c.alert_id == k.alert_id)
                .where(k.status == "waiting")
                .order_by(k.requested_ms)
            ).mappings()
            return [dict(r) for r in rows]

    def audit_frame(
        self,
        *,
        alert_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        after_id: int | None = None,
    ) -> pl.DataFrame:
        """The audit log (oldest first) as ``alert_actions`` rows; filters optional."""
        t = audit_table.c
        query = sa.select(audit_table).order_by(t.id)
        if alert_id is not None:
            query = query.where(t.alert_id == alert_id)
        if since_ms is not None:
            query = query.where(t.ts_ms >= since_ms)
        if until_ms is not None:
            query = query.where(t.ts_ms < until_ms)
        if after_id is not None:
            query = query.where(t.id > after_id)
        with self.store.engine.connect() as db:
            return _actions_frame(db.execute(query).mappings().all())

    def audit_csv(self, **filters: Any) -> str:
        """The audit log as CSV for the monthly ledger (台账), times in UTC ISO 8601."""
        return self.audit_frame(**filters).write_csv()

    def unexported_actions(self, limit: int = 10_000) -> pl.DataFrame:
        """Audit rows not yet written to the warehouse's ``alert_actions``."""
        t, e = audit_table.c, audit_exported_table.c
        query = (
            sa.select(audit_table)
            .outerjoin(audit_exported_table, e.id == t.id)
            .where(e.id.is_(None))
            .order_by(t.id)
            .limit(limit)
        )
        with self.store.engine.connect() as db:
            return _actions_frame(db.execute(query).mappings().all())

    def mark_exported(self, frame: pl.DataFrame) -> None:
        """Note the rows of ``frame`` (from `unexported_actions`) as in the warehouse."""
        if frame.height == 0:
            return
        with self.store.write() as db:
            db.execute(
                self.store.insert_ignoring_repeats(audit_exported_table),
                [{"id": int(i)} for i in frame["action_id"]],
            )

    # --- helpers ----------------------------------------------------------------------------

    def _alert(self, db: sa.Connection, alert_id: str) -> Any:
        row = db.execute(sa.select(alerts_table).where(alerts_table.c.alert_id == alert_id)).first()
        if row is None:
            raise WorkflowError(f"no alert {alert_id} in the workflow store")
        return row

    def _alert_station(self, alert_id: str) -> str:
        with self.store.engine.connect() as db:
            return str(self._alert(db, alert_id).station_id)

    def _known_role(self, role: str) -> None:
        if role not in self.site.roles:
            raise WorkflowError(f"unknown role {role!r} (the site's: {', '.join(self.site.roles)})")

    def _audit(
        self,
        db: sa.Connection,
        alert_id: str,
        action: str,
        ts_ms: int,
        *,
        actor: str = SYSTEM,
        role: str = "",
        channel: Channel = "system",
        note: str = "",
        measure: str = "",
        tier: int = 0,
        elapsed_ms: int | None = None,
    ) -> None:
        # one statement: the alert's incident, zone, station, level and drill mark copied in
        a = alerts_table.c
        given: dict[str, sa.ColumnElement[Any]] = {
            "ts_ms": sa.literal(ts_ms, sa.BigInteger),
            "action": sa.literal(action, sa.String),
            "actor": sa.literal(actor, sa.String),
            "role": sa.literal(role, sa.String),
            "channel": sa.literal(channel, sa.String),
            "note": sa.literal(note, sa.Text),
            "measure": sa.literal(measure, sa.String),
            "tier": sa.literal(tier, sa.Integer),
            "elapsed_ms": sa.literal(elapsed_ms, sa.BigInteger),
        }
        copied = {name: a[name] for name in ("incident_id", "alert_id", "zone_id", "station_id")}
        copied |= {"level": a.level, "drill": a.drill}
        columns: dict[str, sa.ColumnElement[Any]] = {**given, **copied}
        db.execute(
            sa.insert(audit_table).from_select(
                list(columns),
                sa.select(*(c.label(n) for n, c in columns.items())).where(a.alert_id == alert_id),
            )
        )


def _notices(
    found: dict[tuple[str, str, int, Role], Notice],
) -> Callable[[AlertEvent, Role], Notice]:
    def notice(event: AlertEvent, role: Role) -> Notice:
        return found.get((event.alert_id, event.event, event.ts_ms, role), Notice())

    return notice


def _seen(event: AlertEvent, latest: AlertEvent) -> bool:
    """Whether ``event`` was recorded before, given the alert's latest recorded event.

    Events of an alert come in order; a resumed dataflow replays some. One tick may carry
    several steps up (late readings re-decide a tick), so within one time the level decides.
    """
    if event.ts_ms != latest.ts_ms:
        return event.ts_ms < latest.ts_ms
    if (event.event, event.level) == (latest.event, latest.level):
        return True
    up = ("opened", "escalated")
    return event.event in up and latest.event in up and RANK[event.level] <= RANK[latest.level]


def _due(within_s: float) -> str:
    return f"within {within_s:g} s"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _alert_view(row: Any) -> dict[str, Any]:
    view = dict(row)
    view["event"] = json.loads(view["event"])
    view["drill"] = bool(view["drill"])
    return view


def _actions_frame(rows: Sequence[Any]) -> pl.DataFrame:
    frame = pl.DataFrame(
        [
            {
                "action_id": r["id"],
                "ts": r["ts_ms"],
                "incident_id": r["incident_id"],
                "alert_id": r["alert_id"],
                "zone_id": r["zone_id"],
                "station_id": r["station_id"],
                "level": r["level"],
                "action": r["action"],
                "actor": r["actor"],
                "role": r["role"],
                "channel": r["channel"],
                "note": r["note"],
                "measure": r["measure"],
                "tier": r["tier"],
                "elapsed_ms": r["elapsed_ms"],
                "drill": int(bool(r["drill"])),
            }
            for r in rows
        ],
        schema={
            name: (pl.Int64 if dtype == pl.Datetime("ms", "UTC") else dtype)
            for name, dtype in ACTIONS_SCHEMA.items()
        },
        orient="row",
    )
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC"))).cast(ACTIONS_SCHEMA)
