"""A canary device's inference counts when its rollout began observing it: the error rate is judged on
what the device counted after that, not on what it served before.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rollout_devices", sa.Column("counted_from", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("rollout_devices") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("counted_from")
