"""Each remembered take's fingerprint set, beside its fingerprint.

`fingerprint_set` holds the take's fingerprints at the release's replay shifts (voicelock/replay.py,
`encode`: float16, base64); `fingerprint` keeps the take's own fingerprint as JSON, as before, so a
replica of the previous voicelock that is still running during a rolling deploy reads every row it
finds. One started after this revision refuses a database it has no revision for: to roll back, run
`alembic downgrade 0003` first (nothing is lost but the sets). NULL for rows written before this
revision, by such a replica, or under a release without replay shifts: the take alone is remembered.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("heard", sa.Column("fingerprint_set", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("heard") as batch:
        batch.drop_column("fingerprint_set")
