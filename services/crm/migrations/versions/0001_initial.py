"""Initial CRM schema: users, customers, cdrs, audit_log, sessions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("extension", sa.String(32), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("username"),
        sa.UniqueConstraint("agent_id"),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("vip_tier", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_customers_phone", "customers", ["phone"])
    op.create_table(
        "cdrs",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("ani", sa.String(128), nullable=False),
        sa.Column("dnis", sa.String(128), nullable=False),
        sa.Column("trunk", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("extension", sa.String(32), nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("offered_at", TS, nullable=True),
        sa.Column("queued_at", TS, nullable=True),
        sa.Column("answered_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("wait_ms", sa.BigInteger(), nullable=True),
        sa.Column("talk_ms", sa.BigInteger(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=False),
        sa.Column("abandoned", sa.Boolean(), nullable=False),
        sa.Column("recording_id", sa.String(128), nullable=False),
        sa.Column("recording_path", sa.String(512), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_cdrs_queue", "cdrs", ["queue"])
    op.create_index("ix_cdrs_agent_id", "cdrs", ["agent_id"])
    op.create_index("ix_cdrs_started_at", "cdrs", ["started_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires", TS, nullable=False),
    )
    op.create_index("ix_sessions_username", "sessions", ["username"])
    op.create_index("ix_sessions_expires", "sessions", ["expires"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("audit_log")
    op.drop_table("cdrs")
    op.drop_table("customers")
    op.drop_table("users")
