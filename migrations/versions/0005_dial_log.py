"""dial log for the per-number frequency cap

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dial_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=False),
        sa.Column(
            "dialed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_dial_log_workspace_id_workspaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dial_log")),
    )
    op.create_index(
        "ix_dial_log_workspace_id_phone_number",
        "dial_log",
        ["workspace_id", "phone_number", "dialed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_dial_log_workspace_id_phone_number", table_name="dial_log")
    op.drop_table("dial_log")
