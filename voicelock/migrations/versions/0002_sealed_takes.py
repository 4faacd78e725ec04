"""Enrollment takes kept encrypted, so that a promoted model can re-embed them (no re-enrollment).

`sealed_takes` holds the enrollment recordings (16-bit PCM at the model's rate) encrypted with the
key in the variable named by `service.takes_key_env`; NULL when no key was set at enrollment (that
user must enroll again after a model change). Existing rows get NULL.

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
    op.add_column("enrollments", sa.Column("sealed_takes", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("sealed_takes")
