"""calling windows

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("calling_window", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("batches", "calling_window")
