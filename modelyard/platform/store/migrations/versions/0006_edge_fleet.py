"""The edge fleet: bundles, device groups, enrollment tokens, devices, rollouts and what each touched.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger().with_variant(sa.Integer, "sqlite")
    when = sa.DateTime(timezone=True)
    op.create_table(
        "bundles",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(20), primary_key=True),
        sa.Column("target", sa.String(40), primary_key=True),
        sa.Column("variant", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", big, nullable=False),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", when, nullable=False),
    )
    op.create_table(
        "device_groups",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("follows", sa.String(200)),
        sa.Column("followed_version", sa.String(20)),
        sa.Column("target", sa.String(40), nullable=False),
        sa.Column("canary_percent", sa.Float, nullable=False),
        sa.Column("observe_seconds", sa.Float, nullable=False),
        sa.Column("max_failure_share", sa.Float, nullable=False),
        sa.Column("current_model", sa.String(200)),
        sa.Column("current_version", sa.String(20)),
        sa.Column("created_at", when, nullable=False),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("group", sa.String(100), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("expires_at", when, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", when, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("group", sa.String(100), nullable=False, index=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("profile", sa.JSON, nullable=False),
        sa.Column("credential_sha256", sa.String(64), unique=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("agent_version", sa.String(40)),
        sa.Column("installed", sa.JSON),
        sa.Column("desired", sa.JSON),
        sa.Column("health", sa.String(20)),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("last_seen_at", when),
        sa.Column("enrolled_at", when, nullable=False),
        sa.Column("decommissioned_at", when),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("target", sa.String(40), nullable=False),
        sa.Column("group", sa.String(100), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False, index=True),
        sa.Column("paused_from", sa.String(20)),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", big, nullable=False),
        sa.Column("canary_percent", sa.Float, nullable=False),
        sa.Column("observe_seconds", sa.Float, nullable=False),
        sa.Column("max_failure_share", sa.Float, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("phase_started_at", when, nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("finished_at", when),
    )
    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.String(100), primary_key=True),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("reason", sa.Text),
        sa.Column("assigned_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
    )


def downgrade() -> None:
    for table in ("rollout_devices", "rollouts", "devices", "enrollment_tokens", "device_groups", "bundles"):
        op.drop_table(table)
