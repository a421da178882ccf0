"""provider connections: a workspace's accounts at its providers (Twilio account, Vobiz auth
id, SIP trunk), their secrets encrypted at rest, referenced by phone numbers' credentials_ref

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_connections",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("workspace_id", sa.Text(), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        # The account's public identifier (Twilio account SID, Vobiz auth id, trunk address).
        sa.Column("account_id", sa.Text(), nullable=False),
        # Fernet token of the JSON object of its secrets; never returned by the API.
        sa.Column("secret", sa.Text(), nullable=False),
        # Settings that are not secret (a SIP trunk's transport, media encryption, headers).
        sa.Column("config", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("workspace_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("provider_connections")
