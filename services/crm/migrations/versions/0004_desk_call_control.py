"""The agent desk's call control (issue 10): CDRs gain hold, transfers, conference parties,
every recording, after-call work and handle time; wrap-up dispositions, callback tasks,
click-to-dial records; screen lock on sessions; the user's desk language.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("cdrs") as batch:
        batch.add_column(
            sa.Column("caller_number", sa.String(32), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("hold_ms", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("hold_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("acw_started_at", TS, nullable=True))
        batch.add_column(sa.Column("acw_ended_at", TS, nullable=True))
        batch.add_column(sa.Column("acw_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("handle_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("transfers", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("conference", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("recordings", sa.JSON(), nullable=False, server_default="[]"))
        batch.create_index("ix_cdrs_caller_number", ["caller_number"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("locked_at", TS, nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("language", sa.String(8), nullable=False, server_default=""))
    op.create_table(
        "disposition_codes",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("label_en", sa.String(128), nullable=False),
        sa.Column("label_zh", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "dispositions",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("submitted_at", TS, nullable=False),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_callbacks_call_id", "callbacks", ["call_id"])
    op.create_index("ix_callbacks_customer_id", "callbacks", ["customer_id"])
    op.create_index("ix_callbacks_due_at", "callbacks", ["due_at"])
    op.create_index("ix_callbacks_agent_id", "callbacks", ["agent_id"])
    op.create_table(
        "dial_outs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("dial_class", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_dial_outs_call_id", "dial_outs", ["call_id"])
    op.create_index("ix_dial_outs_agent_id", "dial_outs", ["agent_id"])
    op.create_index("ix_dial_outs_number", "dial_outs", ["number"])


def downgrade() -> None:
    op.drop_table("dial_outs")
    op.drop_table("callbacks")
    op.drop_table("dispositions")
    op.drop_table("disposition_codes")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("locked_at")
    with op.batch_alter_table("cdrs") as batch:
        batch.drop_index("ix_cdrs_caller_number")
        for column in (
            "recordings",
            "conference",
            "transfers",
            "handle_ms",
            "acw_ms",
            "acw_ended_at",
            "acw_started_at",
            "hold_count",
            "hold_ms",
            "caller_number",
        ):
            batch.drop_column(column)
