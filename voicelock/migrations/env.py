"""Alembic's entry point: runs the revisions on the connection `voicelock.store.upgrade_schema` passes in.

There is no alembic.ini: the store configures Alembic in code, on the connection it already holds
(with the migration lock taken), so the service, the CLI and the tests upgrade the same way.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
