"""do-not-call list

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dnc_numbers",
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"],
            name=op.f("fk_dnc_numbers_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("workspace_id", "phone_number", name=op.f("pk_dnc_numbers")),
    )


def downgrade() -> None:
    op.drop_table("dnc_numbers")
