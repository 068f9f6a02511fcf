"""Indexes for what the gateway asks most: studies by state (the running ones, at every pack) and
a tenant's studies newest first (ListStudies).

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("studies_by_state", "studies", ["state"])
    op.create_index("studies_by_tenant", "studies", ["tenant", "created"])


def downgrade() -> None:
    op.drop_index("studies_by_tenant", "studies")
    op.drop_index("studies_by_state", "studies")
