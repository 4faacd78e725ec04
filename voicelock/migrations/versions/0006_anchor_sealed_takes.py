"""The anchor's recordings, kept encrypted, so that a model promotion re-makes the anchor itself.

A token re-enrollment keeps the template's *anchor* (the voice of the last enrollment made without a
token) and must match it, so a template cannot be walked to another voice one re-enrollment at a time.
A promotion re-embeds the template from its sealed recordings; the anchor's own recordings were not
kept, so the re-made template's voice became the anchor, and a template walked part of the way before
a promotion kept what it had walked. `anchor_sealed_takes` keeps them (encrypted with the takes key,
as `sealed_takes`); NULL when the anchor is the template's own voice or no key was set. Existing rows
get NULL. The value starts with a digest of the anchor the recordings were enrolled as
(`enrollment.anchor_recordings`): a replica of the previous voicelock neither reads nor writes the
column but rewrites the anchor (an administrator's enrollment clears it, a token re-enrollment then
sets a new one), and recordings whose digest is not the anchor's are ignored. To roll back,
`alembic downgrade 0005`.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("enrollments", sa.Column("anchor_sealed_takes", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("anchor_sealed_takes")
