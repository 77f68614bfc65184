"""The workflow store's tables: the outbox of messages, and the handling of alerts.

The schema is changed by Alembic migrations (``migrations/versions``), never by
``create_all``: these definitions are what the code reads and writes, and a test checks that
the migrated database matches them.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# --- the outbox: one row per message to one role on one channel, sent from here -------------

outbox_table = sa.Table(
    "alert_outbox",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True, comment="the Idempotency-Key"),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, comment="write order"),
    sa.Column("alert_id", sa.String(200), nullable=False, index=True),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("zone_id", sa.String(200), nullable=False),
    sa.Column("station_id", sa.String(200), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False, comment="the event's time"),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("recipient", sa.String(200), nullable=True, comment="the contact's name"),
    sa.Column("target", sa.Text, nullable=True, comment="the webhook URL"),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("enqueued_ms", sa.BigInteger, nullable=False),
    sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
    sa.Column("done_ms", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_until_ms", sa.BigInteger, nullable=True),
    sa.Column(
        "context",
        sa.Text,
        nullable=True,
        comment="JSON for the message's renderer: notice, measures, ack_url, drill, escalated_to",
    ),
    sa.Index("alert_outbox_due", "status", "target", "seq"),
)

attempts_table = sa.Table(
    "alert_attempts",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True, comment="0: decided without sending"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempted_ms", sa.BigInteger, nullable=False),
    sa.Column("queued_ms", sa.BigInteger, nullable=False, comment="since the row was written"),
    sa.Column("exported", sa.Boolean, nullable=False, default=False, index=True),
)

# --- alert handling ----------------------------------------------------------------------------

alerts_table = sa.Table(
    "wf_alerts",
    metadata,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("incident_id", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("zone_id", sa.String(200), nullable=False, index=True),
    sa.Column("station_id", sa.String(200), nullable=False),
    sa.Column("level", sa.String(16), nullable=False, comment="the level now"),
    sa.Column("status", sa.String(16), nullable=False, comment="open, resolved, closed"),
    sa.Column("opened_ms", sa.BigInteger, nullable=False, comment="the event time it opened"),
    sa.Column("raised_ms", sa.BigInteger, nullable=False, comment="when it was written here"),
    sa.Column("resolved_ms", sa.BigInteger, nullable=True),
    sa.Column("closed_ms", sa.BigInteger, nullable=True, comment="signed off"),
    sa.Column("outcome", sa.Text, nullable=True),
    sa.Column("drill", sa.Boolean, nullable=False, default=False),
    sa.Column("event", sa.Text, nullable=False, comment="the latest event, JSON"),
)

acks_table = sa.Table(
    "wf_acks",
    metadata,
    sa.Column("alert_id", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(32), primary_key=True),
    sa.Column("tier", sa.Integer, nullable=False, comment="0: asked first; n: escalation n"),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, comment="waiting, acked, cancelled"),
    sa.Column("requested_ms", sa.BigInteger, nullable=False),
    sa.Column("deadline_ms", sa.BigInteger, nullable=False),
    sa.Column("reminders", sa.Integer, nullable=False, default=0),
    sa.Column("next_reminder_ms", sa.BigInteger, nullable=True),
    sa.Column("escalated_ms", sa.BigInteger, nullable=True, comment="the next tier was called"),
    sa.Column("acked_ms", sa.BigInteger, nullable=True),
    sa.Column("acked_by", sa.String(200), nullable=True),
    sa.Column("ack_channel", sa.String(16), nullable=True),
    sa.Index("wf_acks_waiting", "status", "deadline_ms"),
)

audit_table = sa.Table(
    "wf_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("incident_id", sa.String(200), nullable=False, index=True),
    sa.Column("alert_id", sa.String(200), nullable=False, index=True),
    sa.Column("zone_id", sa.String(200), nullable=False),
    sa.Column("station_id", sa.String(200), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False, comment="system, link, cli, api"),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("measure", sa.String(200), nullable=False, default=""),
    sa.Column("tier", sa.Integer, nullable=False, default=0),
    sa.Column("elapsed_ms", sa.BigInteger, nullable=True, comment="acked: since asked"),
    sa.Column("drill", sa.Boolean, nullable=False, default=False),
)

audit_exported_table = sa.Table(
    "wf_audit_exported",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
)

used_links_table = sa.Table(
    "wf_used_links",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("alert_id", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("used_ms", sa.BigInteger, nullable=False),
)

refusals_table = sa.Table(
    "wf_refusals",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False, comment="forged, expired, replayed …"),
    sa.Column("alert_id", sa.String(200), nullable=True, comment="as the request claimed"),
    sa.Column("role", sa.String(32), nullable=True),
    sa.Column("remote", sa.String(200), nullable=True),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

api_tokens_table = sa.Table(
    "wf_api_tokens",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_ms", sa.BigInteger, nullable=True),
)

secrets_table = sa.Table(
    "wf_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
