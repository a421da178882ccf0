"""Cheaper bulk inserts of calls: one foreign key check per row instead of two, and no index
entries for calls without a provider SID

A call's workspace is its batch's: (workspace_id, batch_id) now references batches
(workspace_id, id), which checks both in one lookup and also forbids a call in another
workspace than its batch. The provider SID index covers only calls that have one.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_unique_constraint("uq_batches_workspace_id", "batches", ["workspace_id", "id"])
    op.drop_index("ix_batches_workspace_id_id", table_name="batches")
    op.create_foreign_key(
        "fk_calls_workspace_id_batches",
        "calls",
        "batches",
        ["workspace_id", "batch_id"],
        ["workspace_id", "id"],
    )
    op.drop_constraint("fk_calls_batch_id_batches", "calls", type_="foreignkey")
    op.drop_constraint("fk_calls_workspace_id_workspaces", "calls", type_="foreignkey")
    op.drop_index("ix_calls_provider_call_sid", table_name="calls")
    op.create_index(
        "ix_calls_provider_call_sid",
        "calls",
        ["provider_call_sid"],
        postgresql_where=sa.text("provider_call_sid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_calls_provider_call_sid", table_name="calls")
    op.create_index("ix_calls_provider_call_sid", "calls", ["provider_call_sid"])
    op.create_foreign_key(
        "fk_calls_workspace_id_workspaces", "calls", "workspaces", ["workspace_id"], ["id"]
    )
    op.create_foreign_key("fk_calls_batch_id_batches", "calls", "batches", ["batch_id"], ["id"])
    op.drop_constraint("fk_calls_workspace_id_batches", "calls", type_="foreignkey")
    op.create_index("ix_batches_workspace_id_id", "batches", ["workspace_id", "id"])
    op.drop_constraint("uq_batches_workspace_id", "batches", type_="unique")
