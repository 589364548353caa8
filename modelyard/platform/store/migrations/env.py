"""Alembic environment: migrations run on the connection modelyard hands in."""

from alembic import context

from modelyard.platform.store.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
