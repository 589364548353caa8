"""Evidence with provenance: each inference-log row says who sent it (the server, a device by id, a token by
name, the CLI), when the platform received it (its own clock, never the sender's), and whether the platform
vouches that the version produced it (`attested`: what the baking guard may judge a champion by).

Rows from before this migration cannot all be told apart with certainty (an upload could name its own
`source`), so the backfill trusts only what looks like the platform's own work:

- received_at: the row's time, but never later than now (a client-chosen future time is clamped);
- the server's rows (source 'server', no error but the server's own 'inference_failed'): attested;
- rows logged from a file (meta.file) by the CLI: sender 'cli', attested when the platform computed the
  predictions ('computed by v...');
- device telemetry (meta.device is the source): not attested (which version the device was assigned then
  is not known);
- everything else was an upload through the API: sender 'unknown', never attested.

The columns' server defaults are the untrusted values, so a writer that forgets them writes no evidence.
Labels (`feedback`) get a `sender` too: the token's name, or `cli`; before this migration, 'unknown'.

Revision ID: 0008
Revises: 0007
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = sa.table(
    "inference_log",
    sa.column("source", sa.String),
    sa.column("meta", sa.JSON),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("sender_kind", sa.String),
    sa.column("sender", sa.String),
    sa.column("received_at", sa.DateTime(timezone=True)),
    sa.column("attested", sa.Boolean),
)


def upgrade() -> None:
    op.add_column("inference_log", sa.Column("sender_kind", sa.String(20), nullable=False, server_default="token"))
    op.add_column("inference_log", sa.Column("sender", sa.String(100), nullable=False, server_default="unknown"))
    op.add_column("inference_log", sa.Column("received_at", sa.DateTime(timezone=True)))
    op.add_column("inference_log", sa.Column("attested", sa.Boolean, nullable=False, server_default=sa.false()))

    now = dt.datetime.now(dt.UTC)
    error = log.c.meta["error"].as_string()
    op.execute(log.update().values(received_at=log.c.created_at))
    op.execute(log.update().where(log.c.received_at > now).values(received_at=now))
    server = (log.c.source == "server") & (error.is_(None) | (error == "inference_failed"))
    op.execute(log.update().where(server).values(sender_kind="server", sender="server", attested=True))
    from_file = log.c.meta["file"].as_string().is_not(None)
    computed = sa.case((log.c.meta["prediction"].as_string().like("computed by v%"), True), else_=False)
    op.execute(log.update().where(from_file).values(sender_kind="local", sender="cli", attested=computed))
    device = log.c.meta["device"].as_string() == log.c.source
    op.execute(log.update().where(device).values(sender_kind="device", sender=log.c.source, attested=False))

    with op.batch_alter_table("inference_log") as batch:  # SQLite changes a column by copying the table
        batch.alter_column("received_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    # The guard counts a version's rows received since a promotion.
    op.create_index("ix_inference_log_model_version_received", "inference_log", ["model", "version", "received_at"])
    # Labels: who sent them (their created_at was always the server's clock).
    op.add_column("feedback", sa.Column("sender", sa.String(100), nullable=False, server_default="unknown"))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("sender")
    op.drop_index("ix_inference_log_model_version_received", "inference_log")
    with op.batch_alter_table("inference_log") as batch:
        for column in ("attested", "received_at", "sender", "sender_kind"):
            batch.drop_column(column)
