"""Alert handling: alerts and incidents, acknowledgements, the append-only audit log, links.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    """Create the workflow tables; the audit log refuses UPDATE and DELETE."""
    with op.batch_alter_table("alert_outbox") as batch:
        batch.add_column(
            sa.Column(
                "context",
                sa.Text,
                nullable=True,
                comment=(
                    "JSON for the message's renderer: notice, measures, ack_url, drill, "
                    "escalated_to"
                ),
            )
        )
    op.create_table(
        "wf_alerts",
        sa.Column("alert_id", sa.String(200), primary_key=True),
        sa.Column("incident_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("zone_id", sa.String(200), nullable=False),
        sa.Column("station_id", sa.String(200), nullable=False),
        sa.Column("level", sa.String(16), nullable=False, comment="the level now"),
        sa.Column("status", sa.String(16), nullable=False, comment="open, resolved, closed"),
        sa.Column("opened_ms", sa.BigInteger, nullable=False, comment="the event time it opened"),
        sa.Column("raised_ms", sa.BigInteger, nullable=False, comment="when it was written here"),
        sa.Column("resolved_ms", sa.BigInteger, nullable=True),
        sa.Column("closed_ms", sa.BigInteger, nullable=True, comment="signed off"),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("drill", sa.Boolean, nullable=False),
        sa.Column("event", sa.Text, nullable=False, comment="the latest event, JSON"),
    )
    op.create_index("ix_wf_alerts_incident_id", "wf_alerts", ["incident_id"])
    op.create_index("ix_wf_alerts_zone_id", "wf_alerts", ["zone_id"])
    op.create_table(
        "wf_acks",
        sa.Column("alert_id", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("tier", sa.Integer, nullable=False, comment="0: asked first; n: escalation n"),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="waiting, acked, cancelled"),
        sa.Column("requested_ms", sa.BigInteger, nullable=False),
        sa.Column("deadline_ms", sa.BigInteger, nullable=False),
        sa.Column("reminders", sa.Integer, nullable=False),
        sa.Column("next_reminder_ms", sa.BigInteger, nullable=True),
        sa.Column("escalated_ms", sa.BigInteger, nullable=True, comment="the next tier was called"),
        sa.Column("acked_ms", sa.BigInteger, nullable=True),
        sa.Column("acked_by", sa.String(200), nullable=True),
        sa.Column("ack_channel", sa.String(16), nullable=True),
    )
    op.create_index("wf_acks_waiting", "wf_acks", ["status", "deadline_ms"])
    op.create_table(
        "wf_audit",
        sa.Column("id", AUTO_ID, primary_key=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("incident_id", sa.String(200), nullable=False),
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("zone_id", sa.String(200), nullable=False),
        sa.Column("station_id", sa.String(200), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, comment="system, link, cli, api"),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("measure", sa.String(200), nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("elapsed_ms", sa.BigInteger, nullable=True, comment="acked: since asked"),
        sa.Column("drill", sa.Boolean, nullable=False),
    )
    op.create_index("ix_wf_audit_incident_id", "wf_audit", ["incident_id"])
    op.create_index("ix_wf_audit_alert_id", "wf_audit", ["alert_id"])
    op.create_table(
        "wf_audit_exported",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    )
    op.create_table(
        "wf_used_links",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("alert_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("used_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "wf_refusals",
        sa.Column("id", AUTO_ID, primary_key=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False, comment="forged, expired, replayed …"),
        sa.Column("alert_id", sa.String(200), nullable=True, comment="as the request claimed"),
        sa.Column("role", sa.String(32), nullable=True),
        sa.Column("remote", sa.String(200), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_table(
        "wf_api_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "wf_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # the audit log is append-only: the database itself refuses to change or remove a row
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER wf_audit_no_{verb.lower()} BEFORE {verb} ON wf_audit "
                "BEGIN SELECT RAISE(ABORT, 'wf_audit is append-only'); END"
            )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION wf_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'wf_audit is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER wf_audit_append_only BEFORE UPDATE OR DELETE ON wf_audit "
            "FOR EACH ROW EXECUTE FUNCTION wf_audit_append_only()"
        )


def downgrade() -> None:
    """Drop the workflow tables and the outbox's context column."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS wf_audit_append_only ON wf_audit")
        op.execute("DROP FUNCTION IF EXISTS wf_audit_append_only()")
    for table in (
        "wf_secrets",
        "wf_api_tokens",
        "wf_refusals",
        "wf_used_links",
        "wf_audit_exported",
        "wf_audit",
        "wf_acks",
        "wf_alerts",
    ):
        op.drop_table(table)
    with op.batch_alter_table("alert_outbox") as batch:
        batch.drop_column("context")
