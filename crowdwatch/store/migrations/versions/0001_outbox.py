"""The alert outbox and its attempts, as the outbox created them before migrations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create alert_outbox and alert_attempts."""
    op.create_table(
        "alert_outbox",
        sa.Column("key", sa.String(64), primary_key=True, comment="the Idempotency-Key"),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, comment="write order"),
        sa.Column("alert_id", sa.String(200), nullable=False),
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
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("enqueued_ms", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("done_ms", sa.BigInteger, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_until_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_alert_outbox_alert_id", "alert_outbox", ["alert_id"])
    op.create_index("alert_outbox_due", "alert_outbox", ["status", "target", "seq"])
    op.create_table(
        "alert_attempts",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True, comment="0: decided without sending"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempted_ms", sa.BigInteger, nullable=False),
        sa.Column("queued_ms", sa.BigInteger, nullable=False, comment="since the row was written"),
        sa.Column("exported", sa.Boolean, nullable=False),
    )
    op.create_index("ix_alert_attempts_exported", "alert_attempts", ["exported"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("alert_attempts")
    op.drop_table("alert_outbox")
