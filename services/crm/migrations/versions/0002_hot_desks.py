"""Hot desks: extensions an admin approved for any agent (issue 11).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hot_desks",
        sa.Column("extension", sa.String(32), primary_key=True),
        sa.Column("approved_by", sa.String(64), nullable=False),
        sa.Column("approved_at", TS, nullable=False),
        sa.Column("note", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hot_desks")
