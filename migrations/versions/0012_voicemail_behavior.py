"""voicemail behavior: what a call does when a machine answers, per agent and per batch, and
the detection verdict and action recorded on each call

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds these columns without rewriting the tables.
    for table in ("agents", "batches"):
        op.add_column(
            table,
            sa.Column(
                "voicemail_behavior", sa.Text(), server_default="connect_agent", nullable=False
            ),
        )
    op.add_column(
        "agents", sa.Column("voicemail_message", sa.Text(), server_default="", nullable=False)
    )
    op.add_column(
        "batches",
        sa.Column("voicemail_message_template", sa.Text(), server_default="", nullable=False),
    )
    op.add_column("calls", sa.Column("answered_by", sa.Text(), nullable=True))
    op.add_column("calls", sa.Column("voicemail_action", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "voicemail_action")
    op.drop_column("calls", "answered_by")
    op.drop_column("batches", "voicemail_message_template")
    op.drop_column("agents", "voicemail_message")
    op.drop_column("batches", "voicemail_behavior")
    op.drop_column("agents", "voicemail_behavior")
