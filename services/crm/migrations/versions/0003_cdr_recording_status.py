"""CDRs say whether their recording is complete or a flagged partial.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cdrs") as batch:
        batch.add_column(
            sa.Column("recording_status", sa.String(16), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("cdrs") as batch:
        batch.drop_column("recording_status")
