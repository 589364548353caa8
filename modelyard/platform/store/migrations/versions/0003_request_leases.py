"""Training requests as a fenced state machine (store/states.py).

Adds the lease (a fencing token that grows on every claim), the export stage's own
attempt count, how many times a dead worker's stage was taken over, the version a
retraining starts from, and the outbox columns: when the
current stage's message was published, under which broker epoch, and which lease the
reconciler last re-published (and how often). Old
statuses are renamed: `running` is `training`; an `exporting` row nobody holds is
`trained` (waiting for an export worker).

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
    op.add_column("training_requests", sa.Column("lease", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("training_requests", sa.Column("export_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("training_requests", sa.Column("published_at", sa.DateTime(timezone=True)))
    op.add_column("training_requests", sa.Column("broker_epoch", sa.String(64)))
    op.add_column("training_requests", sa.Column("republished_lease", sa.Integer()))
    op.add_column("training_requests", sa.Column("parent_version", sa.String(20)))
    op.add_column("training_requests", sa.Column("takeovers", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("training_requests", sa.Column("republishes", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_training_requests_status", "training_requests", ["status"])
    requests = sa.table(
        "training_requests",
        sa.column("status", sa.String),
        sa.column("owner", sa.String),
        sa.column("lease", sa.Integer),
    )
    conn = op.get_bind()
    conn.execute(sa.update(requests).where(requests.c.status == "running").values(status="training"))
    conn.execute(
        sa.update(requests).where(requests.c.status == "exporting", requests.c.owner.is_(None)).values(status="trained")
    )
    conn.execute(sa.update(requests).where(requests.c.owner.is_not(None)).values(lease=1))


def downgrade() -> None:
    requests = sa.table("training_requests", sa.column("status", sa.String))
    conn = op.get_bind()
    conn.execute(sa.update(requests).where(requests.c.status == "training").values(status="running"))
    conn.execute(sa.update(requests).where(requests.c.status == "trained").values(status="exporting"))
    op.drop_index("ix_training_requests_status", "training_requests")
    for column in (
        "republishes",
        "takeovers",
        "parent_version",
        "republished_lease",
        "broker_epoch",
        "published_at",
        "export_attempts",
        "lease",
    ):
        with op.batch_alter_table("training_requests") as batch:
            batch.drop_column(column)
