"""Alembic migrations of the enrollment store's schema (voicelock/store.py).

`EnrollmentStore` upgrades its database to the newest revision when it opens it, so an existing
database survives an upgrade of voicelock with its enrollments. To change the schema: change the
tables in voicelock/store.py, then add a revision under versions/ (the next number, `down_revision`
the previous one) whose upgrade() makes exactly that change — tests/test_migrations.py fails while the
newest revision and store.py disagree.
"""
