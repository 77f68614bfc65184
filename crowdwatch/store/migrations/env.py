"""Alembic's entry: migrations run on the connection `crowdwatch.store.migrate` passes in."""

from __future__ import annotations

from alembic import context

from crowdwatch.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the workflow store's migrations through crowdwatch (crowdwatch.store.migrate, "
        "or any crowdwatch command that opens the store), not the alembic command"
    )
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
