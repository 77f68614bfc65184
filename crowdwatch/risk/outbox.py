"""The durable alert outbox: an alert event is written down before anyone is told.

`Outbox.enqueue` writes one row per alert event, role and channel (the contact's channels:
webhook, DingTalk, WeCom, Feishu/Lark, email, SMS, Apprise; the role's message rendered once,
in each channel's form) to a SQL table — a SQLite file in the data directory by default, or
PostgreSQL — before anything is sent. The `Dispatcher` then delivers the pending rows through
`crowdwatch.risk.channels.Channels`: one thread per target (a webhook or robot URL, a list of
addresses or numbers), so a hung or failing channel delays only the rows it serves. A
target's rows go out in the order they were written, each retried with exponential backoff and
jitter for as long as its alert is open (and ``after_close_s`` after it resolved), across
restarts: a row is marked done (``delivered``, ``failed`` on a refusal such as 404,
``expired``) only after the attempt that decided it. Every attempt keeps the row's
``Idempotency-Key``, so after ``kill -9`` at any point a row is sent again at most once more,
and a receiver that drops repeats sees each event once.

Rows that are not sent are written down too, with why: ``no_contact`` (the role has no contact
or channel at that station), ``logged`` (notifications are in ``log`` mode, as for a replay) and
``stale`` (the event is older than the age limit: catching up after an outage does not page
people about the past).

Every attempt — and every row decided without one — is recorded in ``alert_attempts`` and
exported by the dispatcher to the warehouse table ``alert_deliveries`` (`WarehouseDeliveryLog`).

Several dispatchers may share one outbox (Bytewax workers, processes): a row is claimed for
the length of one attempt before it is sent, so two dispatchers never send it at once; a claim
of a process that died is released when the next dispatcher on the host starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import polars as pl
import sqlalchemy as sa
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from crowdwatch.risk.channels import Channels, ChannelSettings, payload
from crowdwatch.risk.engine import ALERT_SCHEMA
from crowdwatch.risk.messages import Message, language_for, render, warm
from crowdwatch.risk.notify import AlertEvent, Attempt, WebhookPoster
from crowdwatch.settings import Settings
from crowdwatch.site import Contact, Role, Site
from crowdwatch.store import Store, StoreError, wall_ms
from crowdwatch.store.tables import attempts_table, outbox_table
from crowdwatch.warehouse.client import Warehouse

log = logging.getLogger(__name__)

NotifyMode = Literal["on", "log", "off"]
"""on: send; log: write down and log, send nothing; off: nothing at all."""

RowStatus = Literal["pending", "delivered", "failed", "expired", "no_contact", "logged", "stale"]
"""Where one event's delivery to one role stands; all but ``pending`` are final."""

CHANNEL = "webhook"

DELIVERY_SCHEMA = pl.Schema(
    {
        **{name: ALERT_SCHEMA[name] for name in ("alert_id", "event", "kind", "zone_id")},
        "station_id": pl.String(),
        "level": pl.String(),
        "event_ts": pl.Datetime("ms", "UTC"),
        "role": pl.String(),
        "channel": pl.String(),
        "recipient": pl.String(),
        "idempotency_key": pl.String(),
        "attempt": pl.UInt32(),
        "status": pl.String(),
        "http_status": pl.UInt16(),
        "latency_ms": pl.Float32(),
        "queued_ms": pl.Int64(),
        "error": pl.String(),
        "attempted_at": pl.Datetime("ms", "UTC"),
    }
)
"""``alert_deliveries`` rows: one per attempt, or per row decided without one (attempt 0)."""


NoticeKind = Literal["alert", "reminder", "escalation"]
"""What a message is: the alert event itself, a reminder to acknowledge, or an escalation."""


@dataclass(frozen=True)
class Notice:
    """What the workflow adds to one role's message about an alert event.

    ``notice`` says what the message is; ``measures`` are the zone's plan at the level, each
    ``{"id": …, "text": {lang: text}}``; ``ack_url`` the role's signed one-time acknowledge
    link; ``drill`` marks an exercise (【演练】); ``escalated_to`` names the role called
    because ``missed_by`` did not acknowledge in time; ``number`` tells reminders apart.
    These are what the message renderer takes (`context`); the generic webhook's JSON
    carries them under ``response``.
    """

    notice: NoticeKind = "alert"
    measures: tuple[dict[str, Any], ...] = ()
    ack_url: str | None = None
    drill: bool = False
    escalated_to: Role | None = None
    missed_by: tuple[Role, ...] = ()
    number: int = 0

    def key(self, event: AlertEvent, role: Role) -> str:
        """The row's Idempotency-Key: the event's for the alert itself, else one of its own."""
        base = event.idempotency_key(role)
        if self.notice == "alert":
            return base
        material = json.dumps([base, self.notice, self.number, self.escalated_to])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]

    def context(self) -> dict[str, Any]:
        """The fields for the renderer and the webhook's ``response`` object."""
        return {
            "notice": self.notice,
            "measures": list(self.measures),
            "ack_url": self.ack_url,
            "drill": self.drill,
            "escalated_to": self.escalated_to,
            "missed_by": list(self.missed_by),
            "number": self.number,
        }

    def render_args(self, lang: str) -> dict[str, Any]:
        """The message renderer's keyword arguments, the plan's measures in ``lang``.

        ``measures`` (texts), ``ack_url``, ``drill``, ``escalated_to``, ``escalated_from``
        (the roles that missed the deadline) and ``reminder`` (its number; 0: not one).
        """
        return {
            "measures": [
                m["text"].get(lang) or next(iter(m["text"].values())) for m in self.measures
            ],
            "ack_url": self.ack_url,
            "drill": self.drill,
            "escalated_to": self.escalated_to,
            "escalated_from": list(self.missed_by),
            "reminder": self.number if self.notice == "reminder" else 0,
        }

    def body(
        self,
        event: AlertEvent,
        role: Role,
        contact: Contact,
        message: Mapping[str, str] | None = None,
    ) -> bytes:
        """The generic webhook's JSON: the event's and the message, ``response`` added."""
        body = event.to_json(role, contact, message)
        if self == ALERT:
            return body
        payload = json.loads(body)
        payload["idempotency_key"] = self.key(event, role)
        payload["response"] = self.context()
        payload["drill"] = self.drill
        return json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")


ALERT = Notice()
"""The alert event alone, as it was sent before the workflow."""


@dataclass(frozen=True)
class Delivery:
    """Where the delivery of one event to one role stands.

    ``url`` is the channel's target (the webhook or robot URL, ``mailto:…``, ``sms:…``; None
    without a channel); ``attempts`` the requests made so far (0 when decided without
    sending); ``last_error`` why the last failed attempt failed; ``http_status`` the last HTTP
    status received; ``channel`` the channel's id.
    """

    role: str
    url: str | None
    status: RowStatus
    attempts: int
    last_error: str | None = None
    http_status: int | None = None
    channel: str = CHANNEL


@dataclass(frozen=True)
class OutboxRow:
    """The fields of a pending row that delivering it needs."""

    key: str
    channel: str
    alert_id: str
    target: str
    body: bytes
    attempts: int
    enqueued_ms: int
    next_attempt_ms: int


class Outbox:
    """The outbox tables of the workflow store (`crowdwatch.store`).

    Args:
        store: The workflow store, or its SQLAlchemy URL (``sqlite:///path``, the folder
            created, or e.g. ``postgresql+psycopg://user@host/db``); opened and migrated.
        clock: The wall clock in epoch ms (tests pass their own); with a store, the store's.
    """

    def __init__(self, store: Store | str, *, clock: Callable[[], int] | None = None) -> None:
        self.store = store if isinstance(store, Store) else Store(store, clock=clock or wall_ms)
        self.url = self.store.url
        self.engine = self.store.engine
        self.clock = clock or self.store.clock
        self._insert = self.store.insert_ignoring_repeats

    def close(self) -> None:
        """Close every pooled connection."""
        self.store.close()

    def _write(self) -> AbstractContextManager[sa.Connection]:
        """A write transaction of the store (this process's writers take turns)."""
        return self.store.write()

    def enqueue(
        self,
        events: Sequence[AlertEvent],
        site: Site,
        *,
        mode: NotifyMode,
        max_age_s: float,
        notices: Callable[[AlertEvent, Role], Notice] | None = None,
        language: str | None = None,
    ) -> set[str]:
        """Write one row per event, routed role and channel; return the targets with new work.

        Each role's message is rendered once (`crowdwatch.risk.messages.render`, in
        ``language``, else the contact's or the site's) and put in the form each of the
        contact's channels takes (`crowdwatch.risk.channels.payload`). An event written before
        (a resume replays the events since the last snapshot) is left as it is. Roles without
        a channel are ``no_contact``; in ``log`` mode every row is ``logged``; events older
        than ``max_age_s`` are ``stale``. Nothing is written in ``off`` mode. ``notices``
        gives what the workflow adds to each role's message (the plan's measures, the
        acknowledge link, the drill mark).
        """
        return self.enqueue_to(
            [
                (event, role, notices(event, role) if notices else ALERT)
                for event in events
                for role, _ in site.routes(event.station_id, event.routing_level)
            ],
            site,
            mode=mode,
            max_age_s=max_age_s,
            language=language,
        )

    def enqueue_to(
        self,
        items: Sequence[tuple[AlertEvent, Role, Notice]],
        site: Site,
        *,
        mode: NotifyMode,
        max_age_s: float,
        language: str | None = None,
    ) -> set[str]:
        """Write one row per event, role, notice and channel; return the targets with new work.

        As `enqueue`, for the roles given (reminders, the next tier of an escalation); a
        role's contact is the station's, else the site's (`Site.contact_for`).
        """
        if mode == "off" or not items:
            return set()
        now = self.clock()
        seq = time.time_ns()
        rows: list[dict[str, Any]] = []
        by_event: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for event, role, notice in items:
            contact = site.contact_for(event.station_id, role)
            channels = contact.all_channels if contact is not None else ()
            status: RowStatus = "pending"
            if contact is None or not channels:
                status = "no_contact"
            elif mode == "log":
                status = "logged"
            elif now - event.ts_ms > max_age_s * 1000 and notice.notice == "alert":
                status = "stale"
            common = {
                "key": notice.key(event, role),
                "alert_id": event.alert_id,
                "event": event.event,
                "kind": event.kind,
                "zone_id": event.zone_id,
                "station_id": event.station_id,
                "level": event.level,
                "ts_ms": event.ts_ms,
                "role": role,
                "recipient": contact.name if contact is not None else None,
                "status": status,
                "attempts": 0,
                "enqueued_ms": now,
                "next_attempt_ms": now,
                "done_ms": None if status == "pending" else now,
                "context": None if notice == ALERT else json.dumps(notice.context()),
            }
            found = by_event.setdefault((event.alert_id, event.event, event.ts_ms), [])
            if contact is None or not channels:
                row = common | {"channel": CHANNEL, "seq": seq + len(rows), "target": None}
                rows.append(row | {"body": b"{}"})
                found.append(row)
                continue
            message = _message(event, site, role, notice, language)
            event_json = notice.body(event, role, contact, asdict(message))
            for channel in channels:
                row = common | {
                    "channel": channel.channel_id,
                    "seq": seq + len(rows),
                    "target": channel.target,
                    "body": payload(channel, message, event_json),
                }
                rows.append(row)
                found.append(row)
        for event, _, _ in items:
            unsent = by_event.pop((event.alert_id, event.event, event.ts_ms), None)
            if unsent is not None:
                _log_unsent(event, unsent, mode)
        decided = [
            {
                "key": r["key"],
                "channel": r["channel"],
                "attempt": 0,
                "status": r["status"],
                "attempted_ms": now,
                "queued_ms": 0,
                "exported": False,
            }
            for r in rows
            if r["status"] != "pending"
        ]
        with self._write() as db:
            # a write first (no read to upgrade from, which SQLite may refuse under another
            # process's write); a row written before is left as it is
            t = outbox_table.c
            insert = self._insert(outbox_table).returning(t.key, t.channel)
            fresh = {
                (row["key"], row["channel"])
                for row in rows
                if db.execute(insert, row).first() is not None
            }
            decided = [d for d in decided if (d["key"], d["channel"]) in fresh]
            if decided:
                db.execute(self._insert(attempts_table), decided)
        return {
            r["target"]
            for r in rows
            if r["status"] == "pending" and (r["key"], r["channel"]) in fresh
        }

    def deliveries(self, event: AlertEvent, site: Site) -> list[Delivery]:
        """Where each role and channel routed for ``event`` stands, in routing order.

        A role's channels come in the contact's order. Roles whose rows were never written
        (``off`` mode) are left out.
        """
        roles = {
            event.idempotency_key(role): role
            for role, _ in site.routes(event.station_id, event.routing_level)
        }
        order = {key: i for i, key in enumerate(roles)}
        t = outbox_table.c
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(
                    t.key, t.target, t.status, t.attempts, t.last_error, t.http_status, t.channel
                )
                .where(t.key.in_(roles))
                .order_by(t.seq)
            ).all()
        found = sorted(rows, key=lambda row: order[row[0]])
        return [Delivery(roles[key], *rest) for key, *rest in found]

    def pending_targets(self) -> set[str]:
        """The webhook URLs with pending rows."""
        with self.engine.connect() as db:
            found = db.execute(
                sa.select(outbox_table.c.target)
                .where(outbox_table.c.status == "pending")
                .distinct()
            )
            return {t for (t,) in found if t is not None}

    def pending_count(self) -> int:
        """Rows still pending."""
        with self.engine.connect() as db:
            count = db.execute(
                sa.select(sa.func.count())
                .select_from(outbox_table)
                .where(outbox_table.c.status == "pending")
            ).scalar_one()
            return int(count)

    def head(self, target: str) -> OutboxRow | None:
        """The oldest pending row for ``target``: rows to one receiver go out in order."""
        t = outbox_table.c
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(
                    t.key,
                    t.channel,
                    t.alert_id,
                    t.target,
                    t.body,
                    t.attempts,
                    t.enqueued_ms,
                    t.next_attempt_ms,
                )
                .where(t.status == "pending", t.target == target)
                .order_by(t.seq)
                .limit(1)
            ).first()
        return None if row is None else OutboxRow(*row)

    def closed_ms(self, alert_id: str) -> int | None:
        """When the alert's ``resolved`` event was written, or None while it is open."""
        t = outbox_table.c
        with self.engine.connect() as db:
            value = db.execute(
                sa.select(sa.func.min(t.enqueued_ms)).where(
                    t.alert_id == alert_id, t.event == "resolved"
                )
            ).scalar()
        return None if value is None else int(value)

    def claim(self, row: OutboxRow, owner: str, until_ms: int) -> bool:
        """Take ``row`` for one attempt; False when another dispatcher holds it."""
        t = outbox_table.c
        now = self.clock()
        with self._write() as db:
            taken = db.execute(
                sa.update(outbox_table)
                .where(
                    t.key == row.key,
                    t.channel == row.channel,
                    t.status == "pending",
                    sa.or_(
                        t.claimed_by.is_(None),
                        t.claimed_by == owner,
                        t.claimed_until_ms < now,
                    ),
                )
                .values(claimed_by=owner, claimed_until_ms=until_ms)
            )
            return bool(taken.rowcount == 1)

    def release_claims_of_dead(self, host: str) -> int:
        """Release claims held by processes of ``host`` that no longer run; return how many."""
        t = outbox_table.c
        with self.engine.connect() as db:
            owners = db.execute(
                sa.select(t.claimed_by)
                .where(t.status == "pending", t.claimed_by.like(f"{host}:%"))
                .distinct()
            ).all()
        dead = [o for (o,) in owners if not _alive(int(o.split(":")[1]))]
        if not dead:
            return 0
        with self._write() as db:
            result = db.execute(
                sa.update(outbox_table)
                .where(t.claimed_by.in_(dead))
                .values(claimed_by=None, claimed_until_ms=None)
            )
            return int(result.rowcount)

    def record(self, row: OutboxRow, attempt: Attempt, started_ms: int, retry_at_ms: int) -> None:
        """Write down one attempt and its outcome, and release the claim.

        Delivered and failed rows are done; a row worth retrying is due again at
        ``retry_at_ms``.
        """
        final = attempt.status != "retry"
        self._decide(
            row,
            {
                "status": attempt.status,
                "http_status": attempt.http_status,
                "latency_ms": attempt.latency_ms,
                "error": attempt.error,
                "attempted_ms": started_ms,
            },
            status=attempt.status if final else "pending",
            next_attempt_ms=retry_at_ms,
            done_ms=started_ms + int(attempt.latency_ms) if final else None,
            http_status=attempt.http_status,
        )

    def expire(self, row: OutboxRow, reason: str) -> None:
        """Give a pending row up (its alert closed long ago), writing down why."""
        now = self.clock()
        self._decide(
            row,
            {"status": "expired", "error": reason, "attempted_ms": now},
            status="expired",
            done_ms=now,
        )

    def _decide(self, row: OutboxRow, attempt: dict[str, Any], **values: Any) -> None:
        """Add attempt number ``row.attempts + 1`` and update the row, in one transaction."""
        number = row.attempts + 1
        with self._write() as db:
            db.execute(
                self._insert(attempts_table),
                [
                    {
                        "key": row.key,
                        "channel": row.channel,
                        "attempt": number,
                        "queued_ms": attempt["attempted_ms"] - row.enqueued_ms,
                        "exported": False,
                    }
                    | attempt
                ],
            )
            db.execute(
                sa.update(outbox_table)
                .where(outbox_table.c.key == row.key, outbox_table.c.channel == row.channel)
                .values(
                    attempts=number,
                    last_error=attempt["error"],
                    claimed_by=None,
                    claimed_until_ms=None,
                    **values,
                )
            )

    def unexported(self, limit: int = 10_000) -> pl.DataFrame:
        """Attempts not yet in the warehouse, as ``alert_deliveries`` rows."""
        o, a = outbox_table.c, attempts_table.c
        query = (
            sa.select(
                o.alert_id,
                o.event,
                o.kind,
                o.zone_id,
                o.station_id,
                o.level,
                o.ts_ms.label("event_ts"),
                o.role,
                o.channel,
                o.recipient,
                o.key.label("idempotency_key"),
                a.attempt,
                a.status,
                a.http_status,
                a.latency_ms,
                a.queued_ms,
                a.error,
                a.attempted_ms.label("attempted_at"),
            )
            .join(attempts_table, sa.and_(a.key == o.key, a.channel == o.channel))
            .where(a.exported.is_(False))
            .limit(limit)
        )
        with self.engine.connect() as db:
            rows = db.execute(query).all()
        frame = pl.DataFrame(
            [tuple(r) for r in rows],
            schema={
                name: (pl.Int64 if dtype == pl.Datetime("ms", "UTC") else dtype)
                for name, dtype in DELIVERY_SCHEMA.items()
            },
            orient="row",
        )
        return frame.with_columns(
            pl.col("event_ts", "attempted_at").cast(pl.Datetime("ms", "UTC")),
            pl.col("recipient", "error").fill_null(""),
        ).cast(DELIVERY_SCHEMA)

    def mark_exported(self, frame: pl.DataFrame) -> None:
        """Mark the attempts in ``frame`` (from `unexported`) as written to the warehouse."""
        a = attempts_table.c
        with self._write() as db:
            db.execute(
                sa.update(attempts_table)
                .where(
                    a.key == sa.bindparam("k"),
                    a.channel == sa.bindparam("c"),
                    a.attempt == sa.bindparam("n"),
                )
                .values(exported=True),
                [
                    {"k": k, "c": c, "n": n}
                    for k, c, n in frame.select("idempotency_key", "channel", "attempt").iter_rows()
                ],
            )

    def statuses(self) -> dict[str, int]:
        """Rows per status."""
        t = outbox_table.c
        with self.engine.connect() as db:
            found = db.execute(sa.select(t.status, sa.func.count()).group_by(t.status))
            return {status: int(n) for status, n in found}


OutboxError = StoreError
"""The outbox (the workflow store) cannot be opened; the message says what to check."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _message(
    event: AlertEvent, site: Site, role: str, notice: Notice, language: str | None
) -> Message:
    """The role's message; a template that fails must not lose the alert: then the log line."""
    try:
        lang = language or language_for(site, role, event.station_id)
        return render(event, site, role=role, lang=lang, **notice.render_args(lang))
    except Exception:
        log.exception(
            "alert %s: message for %s not rendered; sending the plain reason", event.alert_id, role
        )
        title = f"{event.level.upper()} {event.event}: {event.station_id} {event.zone_id}"
        text = f"{title}\n{event.reason}"
        return Message(lang="en", title=title, text=text, markdown=text, short=text)


def _log_unsent(event: AlertEvent, rows: Iterable[Mapping[str, Any]], mode: NotifyMode) -> None:
    """One log line per event that someone will not hear of, and why."""
    why = {
        "no_contact": "no contact",
        "logged": f"not sent, CROWDWATCH_NOTIFY={mode}",
        "stale": "not sent, older than the age limit",
    }
    unsent = list(
        dict.fromkeys(f"{r['role']} ({why[r['status']]})" for r in rows if r["status"] in why)
    )
    if unsent:
        log.info(
            "alert %s %s %s at %s: %s",
            event.alert_id,
            event.event,
            event.level,
            event.zone_id,
            ", ".join(unsent),
        )


class DeliveryLog(Protocol):
    """Where the delivery attempts go (the warehouse's ``alert_deliveries``)."""

    def write(self, frame: pl.DataFrame) -> None:
        """Write ``alert_deliveries`` rows; raise when they could not be written."""

    def close(self) -> None:
        """Release what the log holds."""


class Dispatcher:
    """Delivers an outbox's pending rows: one thread per receiver, and the log exported.

    Args:
        outbox: The outbox.
        delivery_log: Where attempts are exported; None: they stay in the outbox only.
        timeout_s: Connect and read timeout of one request.
        backoff_s: The wait before the first retry; it doubles on every retry.
        backoff_max_s: The cap on one wait (before jitter).
        after_close_s: How long rows are retried after their alert resolved.
        export_every_s: How often attempts are exported to ``delivery_log``.
        rng: Draws the jitter (seed it for repeatable waits).
        channels: Sends a row to its channel (`crowdwatch.risk.channels.Channels`, built from
            the site file); None: every target is a generic webhook.

    `start` picks up every pending row (a restart resumes what the last run left); `wake`
    tells it about new rows; `close` waits up to ``drain_s`` for the pending rows, then stops.
    The rows left go out on the next start.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        delivery_log: DeliveryLog | None = None,
        timeout_s: float = 2.0,
        backoff_s: float = 0.2,
        backoff_max_s: float = 60.0,
        after_close_s: float = 3600.0,
        export_every_s: float = 1.0,
        rng: random.Random | None = None,
        channels: Channels | None = None,
    ) -> None:
        if backoff_s < 0 or backoff_max_s < backoff_s:
            raise ValueError(
                f"need 0 <= backoff_s <= backoff_max_s, got {backoff_s} and {backoff_max_s}"
            )
        self.outbox = outbox
        self.delivery_log = delivery_log
        self.poster: Channels | WebhookPoster = (
            channels if channels is not None else WebhookPoster(timeout_s)
        )
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.after_close_ms = int(after_close_s * 1000)
        self.lease_ms = int((timeout_s * 3 + 5) * 1000)
        self.export_every_s = export_every_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._wakes: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._exported = threading.Event()

    def start(self) -> Dispatcher:
        """Release dead processes' claims and start delivering every pending row."""
        released = self.outbox.release_claims_of_dead(socket.gethostname())
        if released:
            log.info("released %d alert deliveries claimed by a process that died", released)
        self.wake(self.outbox.pending_targets())
        exporter = threading.Thread(
            target=self._export_loop, name="crowdwatch-delivery-log", daemon=True
        )
        exporter.start()
        self._threads.append(exporter)
        return self

    def wake(self, targets: Iterable[str]) -> None:
        """New rows for ``targets``: start their threads or wake them."""
        with self._lock:
            for target in targets:
                wake = self._wakes.get(target)
                if wake is None:
                    wake = self._wakes[target] = threading.Event()
                    thread = threading.Thread(
                        target=self._deliver_loop,
                        args=(target, wake),
                        name=f"crowdwatch-deliver-{len(self._wakes)}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
                wake.set()

    def backoff(self, retry: int) -> float:
        """The wait in seconds before retry number ``retry`` (1 = the first), jitter included.

        ``min(backoff_max_s, backoff_s * 2 ** (retry - 1))`` scaled by a random factor in
        [0.5, 1), so that senders that failed together do not retry together.
        """
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(retry - 1, 60))
        with self._rng_lock:
            factor = 0.5 + self._rng.random() / 2
        return base * factor

    def close(self, drain_s: float = 10.0) -> None:
        """Wait up to ``drain_s`` for the pending rows, then stop and export."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and self.outbox.pending_count():
            self._stopping.wait(0.05)
        self._stopping.set()
        with self._lock:
            for wake in self._wakes.values():
                wake.set()
        for thread in self._threads:
            thread.join()
        try:
            self.export()
        except Exception as exc:  # the warehouse may be down or held: the rows stay
            log.warning("alert delivery log not written (%s); it will be on a later export", exc)
        if self.delivery_log is not None:
            self.delivery_log.close()
        left = self.outbox.pending_count()
        if left:
            log.warning(
                "%d alert deliveries still pending: they are kept in the outbox and sent on the "
                "next start",
                left,
            )

    def export(self) -> int:
        """Write the attempts not yet exported to the delivery log; return how many."""
        if self.delivery_log is None:
            return 0
        written = 0
        while True:
            frame = self.outbox.unexported()
            if frame.height == 0:
                return written
            self.delivery_log.write(frame)
            self.outbox.mark_exported(frame)
            written += frame.height

    def _export_loop(self) -> None:
        while not self._stopping.wait(self.export_every_s):
            try:
                # rows another process wrote (a forecast warning) for a receiver with no thread
                with self._lock:
                    known = set(self._wakes)
                self.wake(self.outbox.pending_targets() - known)
                self.export()
            except Exception as exc:  # the warehouse may be down: keep the rows, try again
                log.warning("alert delivery log not written yet (%s); will retry", exc)

    def _deliver_loop(self, target: str, wake: threading.Event) -> None:
        while not self._stopping.is_set():
            wake.clear()
            try:
                wait_s = self._deliver_next(target)
            except Exception:  # the outbox itself failed (disk, database): wait, try again
                log.exception(
                    "alert delivery to %s failed in the outbox; retrying", self._label(target)
                )
                wait_s = 1.0
            if wait_s > 0:
                wake.wait(wait_s)

    def _label(self, target: str) -> str:
        """The target for a log line: a channel's type and host, never its token."""
        if isinstance(self.poster, Channels):
            return self.poster.label(target)
        return urllib.parse.urlsplit(target).netloc or "webhook"

    def _deliver_next(self, target: str) -> float:
        """Deliver the head row for ``target`` if it is due; return how long to wait next."""
        row = self.outbox.head(target)
        if row is None:
            return 5.0
        now = self.outbox.clock()
        # a row not yet tried goes out at once; only retries ask whether the alert is still open
        closed = self.outbox.closed_ms(row.alert_id) if row.attempts else None
        if closed is not None and now - closed >= self.after_close_ms:
            self.outbox.expire(row, f"alert resolved over {self.after_close_ms // 1000} s ago")
            return 0.0
        if row.next_attempt_ms > now:
            return (row.next_attempt_ms - now) / 1000
        if not self.outbox.claim(row, self.owner, now + self.lease_ms):
            return 0.5
        attempt = self.poster.post(target, row.key, row.body)
        retry_at = now + int(attempt.latency_ms) + int(self.backoff(row.attempts + 1) * 1000)
        self.outbox.record(row, attempt, now, retry_at)
        if attempt.status != "delivered":
            log.warning(
                "alert delivery %s to %s: attempt %d %s (%s)",
                row.key,
                self._label(target),
                row.attempts + 1,
                "refused for good" if attempt.status == "failed" else "failed, will retry",
                attempt.error,
            )
        return 0.0


class WarehouseDeliveryLog:
    """Writes delivery attempts to the warehouse's ``alert_deliveries`` table (or ``table``).

    Connects on the first write and again after a failed one; `close` disconnects. An
    embedded (``chdb://``) warehouse admits one process: it is let go after every write, so
    that ``crowdwatch serve`` exporting its audit log does not lock out ``crowdwatch drill``,
    and not waited for when another process has it (the write fails, the rows stay in the
    store and go out on a later export, of this process or another on the same store).
    """

    def __init__(self, dsn: str, database: str, table: str = "alert_deliveries") -> None:
        self.dsn = dsn
        self.database = database
        self.table = table
        self._warehouse: Warehouse | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Insert the rows; raise when they could not be written."""
        if self._warehouse is None:
            self._warehouse = Warehouse.connect(self.dsn, self.database, busy_wait_s=0)
        try:
            self._warehouse.insert(self.table, frame)
        except Exception:
            self.close()
            raise
        if self.dsn.startswith("chdb:"):
            self.close()

    def close(self) -> None:
        """Disconnect."""
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None


class OutboxSink(DynamicSink[AlertEvent]):
    """The alert events of a dataflow, written to the outbox and delivered from there.

    One outbox connection and `Dispatcher` per worker. ``settings.notify_mode`` decides
    whether events are sent (``on``), only written down and logged (``log``) or ignored
    (``off``); closing waits up to ``settings.notify_drain_s`` for what is still pending.
    """

    def __init__(self, settings: Settings, site: Site) -> None:
        self.settings = settings
        self.site = site

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OutboxPartition:
        """Open the outbox and start delivering (nothing at all in ``off`` mode)."""
        if self.settings.notify_mode == "off":
            return _OutboxPartition(None, None, self.settings, self.site)
        outbox = Outbox(self.settings.outbox_dsn())
        dispatcher = dispatcher_for(self.settings, outbox, self.site).start()
        return _OutboxPartition(outbox, dispatcher, self.settings, self.site)


def channel_settings(settings: Settings) -> ChannelSettings:
    """What the channels take from the settings: the timeout, SMTP server and SMS gateway."""
    return ChannelSettings(
        timeout_s=settings.notify_timeout_s,
        mail_url=settings.mail_url,
        sms_gateway=settings.sms_gateway,
        sms_token=settings.sms_token,
    )


def dispatcher_for(settings: Settings, outbox: Outbox, site: Site | None = None) -> Dispatcher:
    """A `Dispatcher` of ``outbox`` as the settings say, logging to the settings' warehouse.

    With ``site``, rows go to the channels of its contacts; without, every target is a webhook.
    The site's message templates are compiled here, not on the first alert.
    """
    if site is not None:
        warm(site, settings.language)
    return Dispatcher(
        outbox,
        delivery_log=WarehouseDeliveryLog(settings.dsn(), settings.clickhouse_database),
        timeout_s=settings.notify_timeout_s,
        backoff_max_s=settings.notify_backoff_max_s,
        after_close_s=settings.notify_after_close_s,
        channels=(None if site is None else Channels.for_site(site, channel_settings(settings))),
    )


def deliver(
    settings: Settings, site: Site, events: Sequence[AlertEvent], mode: NotifyMode
) -> dict[str, int]:
    """Write ``events`` to the outbox and deliver them, for a command that runs once.

    Waits up to ``settings.notify_drain_s`` for every pending row; what is left goes out on
    the next start of any dispatcher of this outbox. Returns the outbox's rows per status.
    """
    if mode == "off" or not events:
        return {}
    outbox = Outbox(settings.outbox_dsn())
    try:
        dispatcher = dispatcher_for(settings, outbox, site).start()
        dispatcher.wake(
            outbox.enqueue(
                events,
                site,
                mode=mode,
                max_age_s=settings.notify_max_age_s,
                language=settings.language,
            )
        )
        dispatcher.close(settings.notify_drain_s)
        return outbox.statuses()
    finally:
        outbox.close()


class _OutboxPartition(StatelessSinkPartition[AlertEvent]):
    def __init__(
        self,
        outbox: Outbox | None,
        dispatcher: Dispatcher | None,
        settings: Settings,
        site: Site,
    ) -> None:
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.settings = settings
        self.site = site

    def write_batch(self, items: list[AlertEvent]) -> None:
        if self.outbox is None or self.dispatcher is None:
            return
        targets = self.outbox.enqueue(
            items,
            self.site,
            mode=self.settings.notify_mode,
            max_age_s=self.settings.notify_max_age_s,
            language=self.settings.language,
        )
        self.dispatcher.wake(targets)

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close(self.settings.notify_drain_s)
        if self.outbox is not None:
            self.outbox.close()
