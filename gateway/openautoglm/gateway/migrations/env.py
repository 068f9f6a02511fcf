"""Alembic's entry point for the gateway's schema: run by database.migrate on the connection it
holds (there is no alembic.ini; `alembic` on the command line is not needed)."""
from alembic import context

from openautoglm.gateway.database import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
