"""Enrollments and failed-unlock counters, persisted with SQLAlchemy.

An embedded SQLite file by default; any SQLAlchemy URL (e.g. PostgreSQL) lets several service
replicas share enrollments and lockouts. Every change is one transaction, so a crash never leaves a
half-written enrollment. Only templates (embedding centroids) are stored, never raw audio.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, delete, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from voicelock.enrollment import Template

metadata = MetaData()
enrollments = Table(
    "enrollments", metadata,
    Column("user", String(128), primary_key=True),
    Column("template", Text, nullable=False),
    Column("clips", Integer, nullable=False),
    Column("model", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
)
attempts = Table(
    "attempts", metadata,
    Column("user", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several workers may write: wait for the lock instead of failing at once.
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _record) -> None:  # readers never wait for a writer; commits stay durable
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url)


def create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables. The service's workers start together on a fresh database; when another
    worker creates a table between our check and our CREATE, the CREATE fails ("table … already
    exists": seen with two BentoML workers on a new SQLite file). Looking again finds it and is done."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


class EnrollmentStore:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        create_tables(self.engine)

    def save(self, user: str, template: Template, model: str) -> None:
        """Replace the user's enrollment (and clear their failures) in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(delete(enrollments).where(enrollments.c.user == user))
            conn.execute(enrollments.insert().values(
                user=user, template=json.dumps({"word": template.word, "speaker": template.speaker}),
                clips=template.clips, model=model, created_at=time.time()))
            conn.execute(delete(attempts).where(attempts.c.user == user))

    def get(self, user: str) -> tuple[Template, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(enrollments).where(enrollments.c.user == user)).first()
        if row is None:
            return None
        data = json.loads(row.template)
        return Template(data["word"], data["speaker"], row.clips), row.model

    def delete(self, user: str) -> bool:
        with self.engine.begin() as conn:
            removed = conn.execute(delete(enrollments).where(enrollments.c.user == user)).rowcount
            conn.execute(delete(attempts).where(attempts.c.user == user))
        return removed > 0

    def failures(self, user: str) -> tuple[int, float]:
        """(consecutive failures, locked until) — (0, 0.0) for a user with a clean record."""
        with self.engine.connect() as conn:
            row = conn.execute(select(attempts).where(attempts.c.user == user)).first()
        return (row.failures, row.locked_until) if row else (0, 0.0)

    def record_failure(self, user: str, now: float, max_failures: int, lockout_s: float) -> float:
        """Count a failed unlock; at `max_failures` in a row lock the user until now + lockout_s.

        Returns the time the user is locked until (0 when not locked).
        """
        with self.engine.begin() as conn:
            row = conn.execute(select(attempts).where(attempts.c.user == user)).first()
            failures = (row.failures if row else 0) + 1
            locked_until = now + lockout_s if failures >= max_failures else 0.0
            if locked_until:
                failures = 0  # a fresh count starts when the lock ends
            conn.execute(delete(attempts).where(attempts.c.user == user))
            conn.execute(attempts.insert().values(user=user, failures=failures, locked_until=locked_until))
        return locked_until

    def reset_failures(self, user: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(attempts).where(attempts.c.user == user))
