"""call-bulk's batchSize: how many dial messages of a batch are published per chunk

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("fan_out_chunk_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("batches", "fan_out_chunk_size")
