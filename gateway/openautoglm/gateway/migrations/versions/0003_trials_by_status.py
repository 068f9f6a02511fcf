"""An index on trial status: the packer asks for the queued and training trials of the running
studies at every placement, which without it reads every trial of those studies.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("trials_by_status", "trials", ["status"])


def downgrade() -> None:
    op.drop_index("trials_by_status", "trials")
