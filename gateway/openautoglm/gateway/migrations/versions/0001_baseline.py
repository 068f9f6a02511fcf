"""The first versioned schema: studies, trials and API keys, as the gateway kept them in SQLite.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(320), unique=True),
        sa.Column("traceparent", sa.String(64), nullable=False, server_default=""),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("priors", sa.LargeBinary),
        sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("study_id", "number"),
    )
    op.create_index("trials_by_study", "trials", ["study_id", "number"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("role", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("revoked", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("trials_by_study", "trials")
    op.drop_table("trials")
    op.drop_table("studies")
