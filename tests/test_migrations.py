"""The store's schema is Alembic's: a database of an earlier voicelock is upgraded and keeps its users."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from voicelock.store import MIGRATIONS, EnrollmentStore, metadata


def _config(conn) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _old_enrollment(conn) -> None:
    conn.execute(text("INSERT INTO enrollments VALUES ('olga', :t, 3, 'sha256:old', 1.0)"),
                 {"t": json.dumps({"word": [1.0, 0.0], "speaker": [0.0, 1.0], "takes": []})})
    conn.execute(text("INSERT INTO lockouts VALUES ('olga', 2, 0.0, 0)"))


def test_the_newest_revision_is_the_schema_the_code_uses(tmp_path: Path):
    store = EnrollmentStore(f"sqlite:///{tmp_path / 'new.db'}")
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_a_database_of_the_previous_revision_is_upgraded_and_keeps_its_users(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'r1.db'}"
    with create_engine(url).begin() as conn:
        command.upgrade(_config(conn), "0001")
        _old_enrollment(conn)
    store = EnrollmentStore(url)
    olga = store.get("olga")
    assert (olga.word, olga.model, olga.sealed_takes) == ([1.0, 0.0], "sha256:old", "")
    assert store.lock_state("olga") == (2, 0.0)  # the lockout survives too


def test_databases_made_before_migrations_are_adopted_and_completed(tmp_path: Path):
    """voicelock 0.1 created its tables directly (no alembic_version) — all six, or in its first
    versions only `enrollments` and an `attempts` counter. Both are adopted with their users, and
    what they lack is created (a stamp alone left the early ones without `lockouts`: every unlock 500)."""
    full = f"sqlite:///{tmp_path / 'full.db'}"
    with create_engine(full).begin() as conn:
        command.upgrade(_config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        _old_enrollment(conn)
    early = f"sqlite:///{tmp_path / 'early.db'}"
    with create_engine(early).begin() as conn:  # the schema of the first commit's store
        conn.execute(text('CREATE TABLE enrollments ("user" VARCHAR(128) PRIMARY KEY, template TEXT NOT NULL, '
                          'clips INTEGER NOT NULL, model VARCHAR(256) NOT NULL, created_at FLOAT NOT NULL)'))
        conn.execute(text('CREATE TABLE attempts ("user" VARCHAR(128) PRIMARY KEY, failures INTEGER NOT NULL, '
                          'locked_until FLOAT NOT NULL)'))
        conn.execute(text("INSERT INTO enrollments VALUES ('olga', :t, 3, 'sha256:old', 1.0)"),
                     {"t": json.dumps({"word": [1.0, 0.0], "speaker": [0.0, 1.0], "takes": []})})
    for url in (full, early):
        store = EnrollmentStore(url)
        assert store.get("olga").model == "sha256:old", url
        assert store.charge_attempt("olga", 5.0, 3, 60.0, 3600.0).allowed  # lockouts exist
        store.record("unlock", "olga", "refused", "not recognised", "m", 5.0, keep=10)  # audit exists
        with store.engine.connect() as conn:
            assert {"sealed_takes", "anchor_sealed_takes"} <= {c["name"] for c in inspect(conn).get_columns("enrollments")}
            assert "fingerprint_set" in {c["name"] for c in inspect(conn).get_columns("heard")}
            assert {"model", "takes"} <= {c["name"] for c in inspect(conn).get_columns("retired_names")}
            head = ScriptDirectory.from_config(_config(conn)).get_current_head()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head == "0007"
            assert compare_metadata(MigrationContext.configure(conn), metadata) == [] or url == early


def test_workers_opening_a_new_database_at_once_all_succeed(tmp_path: Path):
    """Two BentoML workers start together on a fresh file: one migrates, the others wait for it."""
    url, errors = f"sqlite:///{tmp_path / 'race.db'}", []

    def open_store() -> None:
        try:
            EnrollmentStore(url)
        except Exception as e:  # noqa: BLE001 — collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_database_url_that_cannot_be_used_is_one_error_naming_the_setting(tmp_path: Path):
    import pytest

    from voicelock.errors import VoicelockError

    for url, says in (("not a url", "Could not parse"), ("nosuch://x", "Can't load plugin"),
                      (f"sqlite:///{tmp_path / 'file.db'}/under/a/file.db", ""),
                      ("postgresql+psycopg://u:pass@wd@h:5x/db", "must be %-escaped"),
                      ("alice:s3cretpw@host/db", "Could not parse"),
                      ("postgresql+psycopg://u@127.0.0.1:1/db?password=s3cretpw", "refused")):
        (tmp_path / "file.db").write_text("")
        with pytest.raises(VoicelockError, match=rf"^service\.database_url: cannot open .*{says}") as error:
            EnrollmentStore(url)
        assert "s3cretpw" not in str(error.value) and "pass@wd" not in str(error.value)
