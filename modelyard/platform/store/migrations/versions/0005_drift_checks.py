"""Drift checks, and an index that reads a served version's newest logged rows.

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
    log_id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("window_key", sa.String(64), nullable=False, unique=True),
        sa.Column("first_id", log_id, nullable=False),
        sa.Column("last_id", log_id, nullable=False),
        sa.Column("window_from", sa.DateTime(timezone=True)),
        sa.Column("window_to", sa.DateTime(timezone=True)),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("labeled_rows", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("drift_share", sa.Float),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("decision", sa.Text),
        sa.Column("report_uri", sa.Text),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The window of a served version is "the newest N rows of (model, version)": one index range scan.
    op.create_index("ix_inference_log_model_version_id", "inference_log", ["model", "version", "id"])


def downgrade() -> None:
    op.drop_index("ix_inference_log_model_version_id", "inference_log")
    op.drop_table("drift_checks")
