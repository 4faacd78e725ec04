"""The schema of voicelock 0.1 before migrations: enrollments, lockouts, proof tokens, challenges,
replay memory and the audit log.

Databases made by voicelock 0.1 created their tables directly (no alembic_version), and early ones
only some of them (enrollments and an `attempts` table, which nothing reads any more). So this
revision creates each table only where it is missing: on such a database it adopts what is there and
adds the rest, on a new one it creates all.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    def create_table(name: str, *columns: sa.Column) -> None:
        if name not in existing:
            op.create_table(name, *columns)

    create_table(
        "enrollments",
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("clips", sa.Integer, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    create_table(
        "lockouts",
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=False),
        sa.Column("streak", sa.Integer, nullable=False),
    )
    create_table(
        "proof_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), nullable=False, index=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    create_table(
        "challenges",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(128), nullable=False, index=True),
        sa.Column("words", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    create_table(
        "heard",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(128), nullable=False, index=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("user", sa.String(128), nullable=False, index=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit", "heard", "challenges", "proof_tokens", "lockouts", "enrollments"):
        op.drop_table(table)
