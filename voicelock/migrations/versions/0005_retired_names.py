"""Names whose enrollment was deleted, kept so that no one else can enroll them.

A successful unlock's token proves someone opened the lock — perhaps with a recording of the owner —
and may delete the account. Were the name free again after that, whoever held the token could enroll
it with their own voice and keep the account (a tester did: unlock with an owner recording, delete,
enroll four takes of another voice, unlock with the fifth). A retired name is enrolled again only with
the administrator's key (`service.retire_deleted_names`). Only the name and the time are kept — no
template, recording or fingerprint. A replica of the previous voicelock still running during a rolling
deploy does not read this table; to roll back, `alembic downgrade 0004` (the retired names are lost).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("retired_names",
                    sa.Column("user", sa.String(128), primary_key=True),
                    sa.Column("at", sa.Float, nullable=False))


def downgrade() -> None:
    op.drop_table("retired_names")
