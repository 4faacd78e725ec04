"""When the model that made each template was promoted, so that templates only ever move forward.

Replicas behind one database may serve different models for a while (a rolling deploy): without an
order, each would re-embed a user's template into its own model on every other request, and each
move forgets the replay memory. `model_since` (the promotion time of the template's model, seconds
since the epoch; NULL before this revision) lets a replica serving an older model refuse (503, retry)
instead of moving the template back.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("enrollments", sa.Column("model_since", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("model_since")
