"""caller-ID pools: several caller numbers per batch, and the number each call used

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batches",
        sa.Column(
            "phone_number_ids",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.add_column("calls", sa.Column("caller_number", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "caller_number")
    op.drop_column("batches", "phone_number_ids")
