"""retry policies, attempt history, pause

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("retry_policy", postgresql.JSONB(), nullable=True))
    op.add_column("batches", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "calls",
        sa.Column(
            "attempt_history", postgresql.JSONB(), server_default="[]", nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("calls", "attempt_history")
    op.drop_column("batches", "paused_at")
    op.drop_column("batches", "retry_policy")
