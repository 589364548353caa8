"""Versions and aliases as the platform wrote them: read commands answer from here, without MLflow.

Both tables are projections of the audit log, kept in the same transaction as the events
(store/audit.py); this migration fills them from the events already recorded.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    versions = op.create_table(
        "model_versions",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(20), primary_key=True),
        sa.Column("run_id", sa.String(64)),
        sa.Column("request_id", sa.String(100)),
        sa.Column("trigger", sa.String(20)),
        sa.Column("dataset_sha256", sa.String(64)),
        sa.Column("parent_version", sa.String(20)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    aliases = op.create_table(
        "aliases",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("alias", sa.String(40), primary_key=True),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    conn = op.get_bind()
    events = sa.table(
        "events",
        sa.column("id", sa.Integer),
        sa.column("model", sa.String),
        sa.column("kind", sa.String),
        sa.column("alias", sa.String),
        sa.column("to_version", sa.String),
        sa.column("evidence", sa.JSON),
        sa.column("request_id", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = conn.execute(
        sa.select(events).where(events.c.kind.in_(("registered", "alias_set", "alias_removed"))).order_by(events.c.id)
    )
    seen: dict[tuple[str, str], dict] = {}
    current: dict[tuple[str, str], dict] = {}
    for e in rows:
        if e.kind == "registered" and (e.model, e.to_version) not in seen:
            evidence = e.evidence or {}
            seen[(e.model, e.to_version)] = {
                "model": e.model,
                "version": e.to_version,
                "run_id": evidence.get("run_id"),
                "request_id": e.request_id,
                "trigger": evidence.get("trigger"),
                "dataset_sha256": evidence.get("dataset_sha256"),
                "parent_version": evidence.get("parent_version"),
                "created_at": e.created_at,
            }
        elif e.kind == "alias_set":
            current[(e.model, e.alias)] = {
                "model": e.model,
                "alias": e.alias,
                "version": e.to_version,
                "updated_at": e.created_at,
            }
        elif e.kind == "alias_removed":
            current.pop((e.model, e.alias), None)
    if seen:
        op.bulk_insert(versions, list(seen.values()))
    if current:
        op.bulk_insert(aliases, list(current.values()))


def downgrade() -> None:
    op.drop_table("aliases")
    op.drop_table("model_versions")
