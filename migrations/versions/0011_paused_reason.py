"""why a batch is paused, and since when its provider has been unreachable

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "manual" or "provider_unreachable" while paused_at is set; null otherwise.
    op.add_column("batches", sa.Column("paused_reason", sa.Text(), nullable=True))
    # The first of the batch's consecutive dials the provider did not process (unreachable,
    # 5xx, 429); cleared by a dial it accepted, and by resume.
    op.add_column(
        "batches",
        sa.Column("first_unreachable_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("batches", "first_unreachable_at")
    op.drop_column("batches", "paused_reason")
