"""A retired name keeps the replay memory of the enrollment deleted under it.

Deleting an account forgot every take the service had heard, and a retired name is enrolled again only
by the administrator — a recovery. A tester held one recording of the owner the service had not heard:
unlock with it, DELETE with the token, and after the administrator's recovery every recording heard
before (the old enrollment takes, the owner's accepted unlocks) opened the account once more, his own
included, so the cycle repeated. The deleted enrollment's replay memory — fingerprints (embeddings,
never recordings) of its accepted unlocks' takes, its enrollment takes and those it kept — is kept
with the retired name (`takes`, JSON: {"heard": [...], "enrolled": [...]}, each a list of entries as
the replay memory stores a take; `model`, the model that made them) and comes back with the
administrator's new enrollment of the name (`heard` rows, the template's `earlier_takes`). Existing
rows get NULL (nothing kept). A replica of the previous voicelock neither writes nor reads the
columns: a delete there keeps nothing, and its enrollment of a retired name inherits nothing, as
before. To roll back, `alembic downgrade 0006`.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("retired_names", sa.Column("model", sa.String(256), nullable=True))
    op.add_column("retired_names", sa.Column("takes", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retired_names") as batch:
        batch.drop_column("takes")
        batch.drop_column("model")
