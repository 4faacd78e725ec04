"""Enrollments and failed-unlock counters, persisted with SQLAlchemy.

An embedded SQLite file by default; any SQLAlchemy URL (e.g. PostgreSQL) lets several service
replicas share enrollments and lockouts. Every change is one transaction, so a crash never leaves a
half-written enrollment. The schema is created and upgraded by the Alembic revisions in
voicelock/migrations when the store opens a database. Templates (embedding centroids) are stored in
the clear; the enrollment recordings only encrypted (`sealed_takes`, see voicelock/sealing.py), so a
new model can re-embed them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from alembic.util.exc import CommandError
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Update,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError

from voicelock.enrollment import Template
from voicelock.replay import decode
from voicelock.errors import VoicelockError

metadata = MetaData()
enrollments = Table(
    "enrollments", metadata,
    Column("user", String(128), primary_key=True),
    Column("template", Text, nullable=False),
    Column("clips", Integer, nullable=False),
    Column("model", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("sealed_takes", LargeBinary, nullable=True),  # encrypted recordings; NULL: no key at enrollment
    Column("model_since", Float, nullable=True),  # promotion time of the template's model; NULL: unknown
    # the anchor's recordings, encrypted, when the anchor is not the template's own voice (Template)
    Column("anchor_sealed_takes", LargeBinary, nullable=True),
)
# The lockout state per user name (also for names never enrolled, so a lockout tells nothing about
# who exists). `failures` counts attempts charged in the current window, including ones still being
# scored; `streak` counts lockouts in a row, which doubles the next one. Replaces the `attempts` table
# of voicelock ≤ 0.1, whose read-then-write counter lost concurrent increments.
lockouts = Table(
    "lockouts", metadata,
    Column("user", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("streak", Integer, nullable=False),
)
# Single-use proofs of ownership from a successful unlock; only their SHA-256 is stored.
proof_tokens = Table(
    "proof_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user", String(128), nullable=False, index=True),
    Column("expires_at", Float, nullable=False, index=True),
)
# Open liveness challenges; only their id's SHA-256 is stored.
challenges = Table(
    "challenges", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user", String(128), nullable=False, index=True),
    Column("words", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),  # every insert purges the expired ones
)
# Fingerprints (embeddings, never audio) of each user's recent accepted probes, for replay detection.
heard = Table(
    "heard", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(128), nullable=False, index=True),
    Column("fingerprint", Text, nullable=False),  # the take's own fingerprint, JSON (every version reads it)
    # …and at the replay shifts (voicelock/replay.py `encode`); NULL: an older voicelock wrote the row,
    # or the release has no shifts
    Column("fingerprint_set", Text, nullable=True),
    Column("at", Float, nullable=False),
)

# Names whose enrollment was deleted (migration 0005 says why): only the administrator enrolls them again.
# The name, when, and the replay memory of the deleted enrollment (migration 0007): fingerprints of the
# takes it heard — embeddings, never recordings — which the administrator's enrollment of the name inherits.
retired_names = Table(
    "retired_names", metadata,
    Column("user", String(128), primary_key=True),
    Column("at", Float, nullable=False),
    Column("model", String(256), nullable=True),  # the model of `takes`; NULL: nothing kept
    Column("takes", Text, nullable=True),  # JSON {"heard": [...], "enrolled": [...]}: `delete`
)

# Every enroll / unlock / delete decision, for the operator: who, what, the outcome and its reason, the
# model, when. Never audio, embeddings or scores (an attacker with the log must learn nothing that
# helps the next guess). The newest `service.audit_max_rows` are kept.
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("action", String(16), nullable=False),
    Column("user", String(128), nullable=False, index=True),
    Column("outcome", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("model", String(256), nullable=False),
)
AUDIT_PRUNE_EVERY = 500  # rows between two prunes: pruning costs a scan, an insert does not


@dataclass(frozen=True)
class Charge:
    """The outcome of charging one unlock attempt against a user's lockout budget."""

    allowed: bool  # False: the user is locked until `locked_until`, nothing may be scored
    locked_until: float  # > 0: the user is (or, if this attempt fails, stays) locked until then


class Conflict(VoicelockError):
    """The request clashes with stored state (e.g. enrolling a name already taken)."""

    status = 409


class Forbidden(VoicelockError):
    """Proof of ownership was missing, wrong, used or expired."""

    status = 403


def already_enrolled(user: str) -> str:
    """Why enrolling an existing user without proof is refused, and what to do instead."""
    return f"user '{user}' is already enrolled — to re-enroll, unlock first and send the token it returns as header " \
           f"X-Unlock-Token"


CHANGED_MEANWHILE = ("the enrollment was replaced while this request was being decided — unlock again and "
                     "re-enroll")
TOKEN_INVALID = "X-Unlock-Token: not valid for this user (wrong, used or expired) — unlock again for a new one"


def retired(user: str) -> str:
    """The refusal for enrolling a deleted user's name without the administrator's key."""
    return (f"user '{user}' was deleted and the name is retired — enrolling it again needs the administrator's "
            f"X-Admin-Key; or choose another name")


def printable(text: str, limit: int) -> str:
    """`text` with each character that is not printable (controls, format characters such as a
    right-to-left override), the backslash and `|` written as a Python escape (\\x1b, \\u202e, \\\\,
    \\x7c), at most `limit` characters of it, never an escape cut in half. Why: the audit log keeps
    refused names as sent, and a reader must not be fooled by a forged row — a tester's name with \\r
    and ANSI codes showed an "alice unlocked" line in a terminal, and `|` is the `sqlite3` shell's
    column separator. A name that passed `UnlockApi.check_user`, and this service's own messages, are
    unchanged."""
    out, used = [], 0
    for c in text[:limit]:
        piece = c if c.isprintable() and c not in "\\|" else (
            "\\x7c" if c == "|" else c.encode("unicode_escape").decode("ascii"))
        if used + len(piece) > limit:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def _canonical(data: dict) -> str:
    """A `template` column's fields as this voicelock writes them: keys an older one did not write
    (`take_sets`, `anchor`) as the empty lists `get` reads them as, `earlier_takes` only when there
    are some. `json.dumps` writes each float as the shortest text that reads back as it."""
    out = {"word": data.get("word"), "speaker": data.get("speaker"), "takes": data.get("takes", []),
           "take_sets": data.get("take_sets", []), "anchor": data.get("anchor", [])}
    if data.get("earlier_takes"):
        out["earlier_takes"] = data["earlier_takes"]
    return json.dumps(out)


def template_json(template: Template) -> str:
    """The `template` column's text for a template (what `_row` stores)."""
    return _canonical({"word": template.word, "speaker": template.speaker, "takes": template.takes,
                       "take_sets": template.take_sets, "anchor": template.anchor,
                       "earlier_takes": template.earlier_takes})


def holds(row_text: str, template: Template) -> bool:
    """Whether a stored `template` column is `template` — read as `get` reads it, so a row written by
    an older voicelock (without `take_sets` or `anchor`) still holds the template read from it: what
    tells whether an enrollment changed since it was read (`save`'s `compared_with`, `issue_token`'s
    `verified`). A row that cannot be read holds nothing."""
    try:
        data = json.loads(row_text)
    except (TypeError, ValueError):
        return False
    return isinstance(data, dict) and _canonical(data) == template_json(template)


def earlier_takes(replaced, model: str, keep: int, dim: int, same_take: float = 1.0) -> list[str]:
    """What a replacement keeps of the replaced row (`template` text and `model`): its takes — each
    its set, or its fingerprint as JSON, as the replay memory stores a take — then the takes it kept
    itself, newest first, each once, at most `keep`. Nothing of another model (its fingerprints
    compare with nothing), and nothing damaged — no entry that does not read as whole `dim`-wide
    fingerprints (`replay.decode`): one such entry refuses every unlock, and a recovery must neither
    fail on what it replaces nor carry a damaged take forward. Nor a second copy of one take
    (`distinct_takes` at `same_take`): a tester filled the window with six token re-enrollments of the
    same recordings, each 1 dB quieter (other text, the same take), and pushed the first takes out.
    (Not judged against the new enrollment's own takes: the replaced takes stay in the row even when
    the same recordings are enrolled again, so the row differs from the one it replaced — what
    `holds` tells a stale decision by.)"""
    if replaced.model != model:
        return []
    try:
        data = json.loads(replaced.template)
        takes, sets, earlier = data.get("takes"), data.get("take_sets"), data.get("earlier_takes", [])
    except (TypeError, ValueError, AttributeError):
        return []
    if isinstance(sets, list) and sets and isinstance(takes, list) and len(sets) == len(takes):
        own = sets
    else:  # no sets (a release without replay shifts), or damaged ones: the takes' own fingerprints
        own = [json.dumps(t) for t in takes] if isinstance(takes, list) else []
    found = [t for t in own + (earlier if isinstance(earlier, list) else []) if isinstance(t, str)]
    return distinct_takes(found, dim, same_take, keep)


def distinct_takes(entries: list, dim: int, same_take: float = 1.0, keep: int | None = None) -> list[str]:
    """The readable entries (remembered takes: sets or JSON fingerprints, `replay.decode`) in order, each
    take once, at most `keep`. Two entries are one take when they hold as many rows and every row is
    within `same_take` (cosine) of the same row of the other — every delay and view alike, so a copy that
    changes only the level goes and a low-passed copy (the same take in the band-limited view alone)
    stays, with its original: dropping an original for a copy that replays it in one view only forgot
    the original's full band (a reviewer's edits of it then unlocked). Each entry is decoded once."""
    kept: list[str] = []
    rows: list[np.ndarray] = []
    for entry in dict.fromkeys(e for e in entries if isinstance(e, str)):
        if keep is not None and len(kept) >= keep:
            break
        mine = decode(entry, dim)
        if np.isnan(mine).any():
            continue  # damaged: one such entry would refuse every unlock
        if any(r.shape == mine.shape and float(np.min(np.sum(r * mine, axis=1))) >= same_take for r in rows):
            continue
        kept.append(entry)
        rows.append(mine)
    return kept


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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


MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x766F6963  # any constant: the advisory lock id every replica takes to migrate


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's migration lock: the service's workers
    and replicas start together, and only one may upgrade the schema; the others wait, then find it
    done. PostgreSQL: a transaction-scoped advisory lock. SQLite: an exclusive lock on a file next to
    the database (SQLite runs DDL outside transactions, so its own locks cannot serialise this)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    lock_file = Path(f"{database}.migrate-lock").open("a") if database and database != ":memory:" else None
    try:
        if lock_file is not None:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK})
            yield conn
    finally:
        if lock_file is not None:
            lock_file.close()  # closing releases the lock


def upgrade_schema(engine: Engine) -> None:
    """Create or upgrade the tables to the newest revision in voicelock/migrations (Alembic).

    A database of voicelock 0.1 (tables but no alembic_version) runs every revision too: the first
    one creates only the tables it lacks, so its enrollments are kept."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@functools.lru_cache(maxsize=8)
def _charge_statement(max_failures: int, lockout_s: float, lockout_max_s: float) -> Update:
    """`charge_attempt`'s UPDATE … RETURNING for one lockout policy, with the user and the time bound
    per call (`charged_user`, `charged_at`). Built once: its 32-step CASE took 2.5 of the 2.9 ms a charge cost, every
    request, to build again (SQLAlchemy caches the compiled SQL, not the expression)."""
    user, now = bindparam("charged_user", type_=String), bindparam("charged_at", type_=Float)
    durations = [min(lockout_s * 2 ** k, lockout_max_s) for k in range(32)]
    c = lockouts.c
    ended = c.locked_until > 0  # the WHERE below keeps only rows whose lock, if any, has ended
    failures = case((ended, 1), else_=c.failures + 1)
    reaches = failures >= max_failures
    # A streak is forgotten once its last lock ended longer ago than the longest lock lasts: five
    # bad clips once a day must not keep the owner locked for an hour each time.
    streak = case((ended & (c.locked_until < now - lockout_max_s), 0), else_=c.streak)
    duration = case(*[(streak == k, d) for k, d in enumerate(durations)], else_=lockout_max_s)
    return (update(lockouts).where(c.user == user, c.locked_until <= now)
            .values(failures=failures, locked_until=case((reaches, now + duration), else_=0.0),
                    streak=case((reaches, streak + 1), else_=streak))
            .returning(c.locked_until))


def _insert_if_missing(conn: Connection, table: Table, **values) -> bool:
    """INSERT that does nothing when the primary key exists (atomic: no check-then-insert race);
    True when it inserted. Being a write, it also takes SQLite's write lock first thing, so the rest
    of the transaction cannot fail on a stale read snapshot."""
    dialect = conn.engine.dialect.name
    if dialect in ("sqlite", "postgresql"):
        module = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
        # RETURNING, not rowcount: psycopg reports rowcount -1 for INSERT … ON CONFLICT DO NOTHING.
        key = list(table.primary_key.columns)
        return conn.execute(module.insert(table).values(**values).on_conflict_do_nothing()
                            .returning(*key)).first() is not None
    try:  # other databases: a nested transaction absorbs the duplicate-key error
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
        return True
    except IntegrityError:
        return False


def _heard_takes(conn: Connection, user: str, limit: int, excluding: list[int] | None = None) -> list[str]:
    """The user's newest `limit` remembered takes (`heard`, but rows `excluding`) as stored: each its
    fingerprint set, or its fingerprint (JSON) where a set was not written (`replay.decode` reads either)."""
    h = heard.c
    query = select(func.coalesce(h.fingerprint_set, h.fingerprint).label("stored")).where(h.user == user)
    if excluding:
        query = query.where(h.id.not_in(excluding))
    return [r.stored for r in conn.execute(query.order_by(h.id.desc()).limit(limit))]


def _lock_enrollment(conn: Connection, user: str, *columns):
    """The user's enrollment row (these `columns`; None when there is none), locked until the transaction
    ends — taken before any of that user's token or heard rows, and never while holding another user's
    (the other order deadlocked a delete against a recovery on PostgreSQL: a 500). PostgreSQL: SELECT …
    FOR UPDATE. SQLite has no row locks, and Python's sqlite3 opens a transaction only at the first
    INSERT, UPDATE or DELETE: a SELECT before it runs outside the transaction, so a write decided on it
    would silently overwrite whatever another writer committed in between. A write that changes
    nothing comes first: it opens the transaction and takes the database's one write lock (even when it
    matches no row)."""
    e = enrollments.c
    if conn.engine.dialect.name == "sqlite":
        # Matches no row, so it costs the same whether the user exists or how large their row is (a
        # no-op UPDATE of the row itself rewrote it: a DELETE with a wrong token took 0.9 ms longer for
        # an enrolled name with a large row — who is enrolled, from a route that answers alike).
        conn.execute(update(enrollments).where(e.user == user, false()).values(clips=e.clips))
        query = select(*(columns or (e.user,))).where(e.user == user)
    else:
        query = select(*(columns or (e.user,))).where(e.user == user).with_for_update()
    return conn.execute(query).first()


def _shown(url: str) -> str:
    """The URL for an error message: its password hidden, in the user part and in the query alike; an
    URL that does not parse is not shown at all (where its password is cannot be known)."""
    try:
        parsed = make_url(url)
        query = {k: ("***" if "pass" in k.lower() else v) for k, v in parsed.query.items()}
        return parsed.set(query=query).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(a URL that does not parse)"


def _first_line(error: Exception, url: str) -> str:
    """The error's first line, with any part of the URL's password it quotes masked."""
    if isinstance(error, ValueError) and not isinstance(error, ArgumentError):  # its text may quote the password
        return "the URL does not parse (a ':' or '@' in the password must be %-escaped)"
    line = (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]
    try:
        secret = make_url(url).password
    except (ArgumentError, ValueError):
        secret = url.rpartition("@")[0].partition("://")[2]  # the user part of what did not parse
    if secret:
        for piece in {str(secret), *str(secret).split(":")}:
            if len(piece) >= 3:
                line = line.replace(piece, "***")
    return line


class EnrollmentStore:
    def __init__(self, url: str):
        """Open (and create or upgrade) the database; a URL that cannot be used is one VoicelockError
        naming `service.database_url`, so the service stops at start instead of failing requests."""
        try:
            self.engine = make_engine(url)
            upgrade_schema(self.engine)
        except (ArgumentError, NoSuchModuleError, DBAPIError, OSError, ImportError, ValueError, CommandError) as e:
            # ImportError: no driver; ValueError: e.g. a port that is not a number (an unescaped ':' in a
            # password); CommandError: the database has a revision this voicelock does not know (newer).
            cause = _first_line(e, url)
            raise VoicelockError(
                f"service.database_url: cannot open {_shown(url)} ({cause}) — check the scheme (sqlite:///path or "
                f"postgresql+psycopg://user:password@host:port/database), that the server is running and "
                f"reachable, and the user and database; or set VOICELOCK_DATABASE_URL") from None

    # --- enrollments ----------------------------------------------------------------------------

    def save(self, user: str, template: Template, now: float, token: str | None = None,
             admin: bool = False, compared_with: Template | None = None, earlier_keep: int = 50,
             same_take: float = 1.0) -> bool:
        """Store an enrollment; True when it replaced one.

        A new name is inserted (two concurrent first enrollments cannot both win: the primary key
        refuses the second). An existing name is replaced only with proof of ownership — `admin`, or a
        valid `token` from that user's successful unlock, spent in the same transaction — or one the
        caller has spent already and then compared the new voice with the enrollment `compared_with`
        (`UnlockApi` spends it before comparing, so that one unlock buys one comparison however many
        requests carry it): then stored only if that is still the stored enrollment (an administrator's
        recovery committed in between must not be overwritten: Conflict). The lockout state is never
        touched: re-enrolling must not reset a lock. A retired name (a deleted user's, `delete`) is
        enrolled only by `admin`, which frees it.

        What a replacement voids: every outstanding unlock token of the user (one issued to whoever
        unlocked before an administrator's recovery must not delete the recovered account). What it
        keeps: the replaced enrollment's takes, as the new template's `earlier_takes` (with those it
        kept, newest first, at most `earlier_keep`; same model only) — recordings heard before a
        re-enrollment must not open it after.
        """
        for _ in range(2):  # a second time only when a concurrent delete removed the name meanwhile
            row = self._row(template, now)
            with self.engine.begin() as conn:
                if _insert_if_missing(conn, enrollments, user=user, **row):
                    # Checked after the insert, in its transaction: an insert that waited on a concurrent
                    # delete of the name reads the retirement that delete committed.
                    if admin:
                        self._inherit_retired_memory(conn, user, template, now, earlier_keep)
                        conn.execute(delete(retired_names).where(retired_names.c.user == user))
                    elif self._retired(conn, user):
                        raise Conflict(retired(user))
                    return False
                # The existing row, locked before the token is spent: PostgreSQL's ON CONFLICT DO NOTHING
                # locks nothing, so a concurrent delete could remove the row under the UPDATE below (the
                # admin told "replaced" while nothing was stored), or deadlock with this token's row.
                replaced = _lock_enrollment(conn, user, enrollments.c.template, enrollments.c.model)
                if replaced is None:
                    continue  # deleted meanwhile: a new name again, retired or not
                if not admin and compared_with is None:
                    if not token:
                        raise Conflict(already_enrolled(user))
                    if not self._spend_token(conn, user, token, now):
                        raise Forbidden(TOKEN_INVALID)
                if compared_with is not None and not holds(replaced.template, compared_with):
                    raise Conflict(CHANGED_MEANWHILE)
                dim = len(template.word) + len(template.speaker)  # a fingerprint's width (replay.fingerprints)
                kept = dataclasses.replace(template, earlier_takes=earlier_takes(replaced, template.model,
                                                                                 earlier_keep, dim, same_take))
                conn.execute(update(enrollments).where(enrollments.c.user == user).values(**self._row(kept, now)))
                conn.execute(delete(proof_tokens).where(proof_tokens.c.user == user))
                return True
        raise Conflict(f"user '{user}' was deleted while this enrollment was being stored — enroll again")

    def _inherit_retired_memory(self, conn: Connection, user: str, template: Template, now: float,
                                keep: int) -> None:
        """The administrator enrolling a retired name: the deleted enrollment's replay memory (`delete`)
        comes back as it was — its enrollment takes into the new template's `earlier_takes`, as a
        replacement's takes do, and its accepted unlocks' takes into `heard` — same model only. A
        damaged memory is ignored (a recovery must not fail on it)."""
        retired = conn.execute(select(retired_names.c.model, retired_names.c.takes)
                               .where(retired_names.c.user == user)).first()
        if retired is None or retired.model != template.model or not retired.takes:
            return
        try:
            memory = json.loads(retired.takes)
        except (ValueError, RecursionError):
            return
        if not isinstance(memory, dict):
            return
        dim = len(template.word) + len(template.speaker)
        enrolled, heard_takes = memory.get("enrolled"), memory.get("heard")
        if isinstance(enrolled, list) and enrolled:
            merged = distinct_takes(list(template.earlier_takes) + enrolled, dim, keep=keep)
            conn.execute(update(enrollments).where(enrollments.c.user == user)
                         .values(**self._row(dataclasses.replace(template, earlier_takes=merged), now)))
        for take in reversed(distinct_takes(heard_takes if isinstance(heard_takes, list) else [], dim, keep=keep)):
            # As `remember` stores a take: its own fingerprint as JSON (what every version reads) and, for
            # a set (`replay.encode`; a lone fingerprint is a JSON list), the set beside it.
            own = json.dumps(decode(take, dim)[0].tolist())
            single = take.lstrip().startswith("[")
            conn.execute(insert(heard).values(user=user, fingerprint=own, fingerprint_set=None if single else take,
                                              at=now))

    def upgrade(self, user: str, template: Template, previous: Template, now: float,
                forget_heard: bool = True) -> bool:
        """Replace a template re-made from its recordings (`Unlocker.reembed`) — only if the stored row
        is still the one `previous` was read from: the same model, the same sealed recordings (a Fernet
        token is unique to each sealing, so any enrollment or deletion since changed them) and the same
        template, compared as read (`holds`). Of two workers upgrading at once, one writes — also when
        both re-fingerprint for the same model: replicas on other CPUs re-make other floats, and a
        second write would refuse the unlock the first one's template decided (`issue_token`'s
        `verified`). A re-made copy of a stale read can never put back a template replaced or deleted
        meanwhile. The replay memory is forgotten with it
        (`forget_heard`): fingerprints of another model compare with nothing. True when this call wrote."""
        e = enrollments.c
        with self.engine.begin() as conn:
            row = _lock_enrollment(conn, user, e.template, e.model, e.sealed_takes)
            if (row is None or row.model != previous.model or not holds(row.template, previous)
                    or (row.sealed_takes.decode() if row.sealed_takes else "") != previous.sealed_takes):
                return False
            conn.execute(update(enrollments).where(e.user == user).values(**self._row(template, now)))
            if forget_heard:
                conn.execute(delete(heard).where(heard.c.user == user))
        return True

    @staticmethod
    def _row(template: Template, now: float) -> dict:
        return {"template": template_json(template),
                "clips": template.clips, "model": template.model, "created_at": now,
                "sealed_takes": template.sealed_takes.encode() if template.sealed_takes else None,
                "model_since": template.model_since or None,
                "anchor_sealed_takes": template.anchor_sealed_takes.encode() if template.anchor_sealed_takes else None}

    def get(self, user: str) -> Template | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(enrollments).where(enrollments.c.user == user)).first()
        if row is None:
            return None
        data = json.loads(row.template)
        return Template(data["word"], data["speaker"], row.clips, data.get("takes", []), row.model,
                        row.sealed_takes.decode() if row.sealed_takes else "", row.model_since or 0.0,
                        data.get("take_sets", []), data.get("anchor", []),
                        row.anchor_sealed_takes.decode() if row.anchor_sealed_takes else "",
                        data.get("earlier_takes", []))

    def delete(self, user: str, now: float, token: str | None = None, admin: bool = False,
               retire: bool = True, keep: int = 50) -> bool:
        """Forget a user's enrollment, tokens, challenges and heard probes (not the lockout: deleting
        and re-enrolling must not reset a lock). Needs the same proof as replacing an enrollment;
        without it the answer is the same whether or not the user exists. `retire`: the name stays
        taken (`retired_names`) until the administrator enrolls it — in the same transaction, so no
        enrollment slips in between — and keeps the replay memory (`_memory_of`: the accepted unlocks'
        takes and the enrollment's, at most `keep` of each). Forgetting it let a tester who held one
        unheard recording unlock, DELETE, and after each administrator's recovery unlock again with
        every recording the service had heard before (`save` hands it back)."""
        with self.engine.begin() as conn:
            _lock_enrollment(conn, user)  # before the token's row, in the order `save` takes them
            if not admin and not (token and self._spend_token(conn, user, token, now)):
                raise Forbidden("deleting a user needs proof of ownership: header X-Unlock-Token from a successful "
                                "unlock (or the administrator's X-Admin-Key)")
            # Read after the proof, not with the lock: reading a large row first made a wrong token's
            # refusal slower for an enrolled name.
            row = conn.execute(select(enrollments.c.template, enrollments.c.model)
                               .where(enrollments.c.user == user)).first()
            memory = self._memory_of(conn, user, row, keep) if row is not None and retire else {}
            removed = conn.execute(delete(enrollments).where(enrollments.c.user == user)).rowcount
            for table in (proof_tokens, challenges, heard):
                conn.execute(delete(table).where(table.c.user == user))
            if removed and retire:
                _insert_if_missing(conn, retired_names, user=user, at=now, model=row.model if memory else None,
                                   takes=json.dumps(memory) if memory else None)
        return removed > 0

    @staticmethod
    def _memory_of(conn: Connection, user: str, row, keep: int) -> dict[str, list[str]]:
        """A user's replay memory as it lives: `heard`, the accepted unlocks' takes (newest first, at
        most `keep`, as `remember` keeps them), and `enrolled`, the enrollment's takes and those it kept
        (`earlier_takes`) — each its own budget, as in a live account: one shared budget let 50 unlocks
        push every enrollment take out (a reviewer's finding). Damaged entries are dropped."""
        heard_takes = _heard_takes(conn, user, keep)
        try:
            data = json.loads(row.template)
            dim = len(data["word"]) + len(data["speaker"])
        except (TypeError, ValueError, KeyError, RecursionError):
            return {}
        memory = {"heard": distinct_takes(heard_takes, dim, keep=keep),
                  "enrolled": earlier_takes(row, row.model, keep, dim)}
        return {k: v for k, v in memory.items() if v}

    def is_retired(self, user: str) -> bool:
        """Whether `user` names a deleted enrollment that only the administrator may enroll again."""
        with self.engine.connect() as conn:
            return self._retired(conn, user)

    @staticmethod
    def _retired(conn: Connection, user: str) -> bool:
        return conn.execute(select(retired_names.c.user).where(retired_names.c.user == user)).first() is not None

    # --- lockout --------------------------------------------------------------------------------

    def lock_state(self, user: str) -> tuple[int, float]:
        """(failures charged, locked until): a cheap early look, not the authoritative check."""
        with self.engine.connect() as conn:
            row = conn.execute(select(lockouts).where(lockouts.c.user == user)).first()
        return (row.failures, row.locked_until) if row else (0, 0.0)

    def charge_attempt(self, user: str, now: float, max_failures: int, lockout_s: float,
                       lockout_max_s: float) -> Charge:
        """Charge one unlock attempt *before* it is scored, in one atomic UPDATE … RETURNING.

        Counting after scoring (read, then write) let 8 concurrent guessers score 43 attempts in one
        window. Here the attempt that reaches `max_failures` sets the lock at once, so while it is
        scored every further attempt is refused; if it then unlocks, `clear_failures` lifts the lock.
        Each lockout in a row doubles the next (capped at `lockout_max_s`).
        """
        c = lockouts.c
        with self.engine.begin() as conn:
            _insert_if_missing(conn, lockouts, user=user, failures=0, locked_until=0.0, streak=0)
            row = conn.execute(_charge_statement(max_failures, lockout_s, lockout_max_s),
                               {"charged_user": user, "charged_at": now}).first()
            if row is None:
                until = conn.execute(select(c.locked_until).where(c.user == user)).scalar_one()
                return Charge(False, float(until))
        return Charge(True, float(row.locked_until))

    def clear_failures(self, user: str) -> None:
        """A successful unlock: the count, the lock and the lockout streak start afresh."""
        with self.engine.begin() as conn:
            conn.execute(delete(lockouts).where(lockouts.c.user == user))

    # --- proofs of ownership ----------------------------------------------------------------------

    def issue_token(self, user: str, now: float, ttl_s: float, verified: Template | None = None) -> str | None:
        """A single-use proof that `user` just unlocked; only its hash is stored. With `verified` (the
        template the unlock was decided against) only while that is still the stored enrollment, else
        None: an unlock decided against an enrollment that an administrator's recovery replaced
        meanwhile must not come away with a token that deletes the recovered account (a replacement
        voids the tokens stored before it; this one would have come after)."""
        token = secrets.token_urlsafe(32)
        t = proof_tokens.c
        with self.engine.begin() as conn:
            # The enrollment's row before any token row, as `save` and `delete` take them (purging expired
            # tokens first deadlocked against a recovery); no replacement commits until the insert.
            row = _lock_enrollment(conn, user, enrollments.c.template)
            if verified is not None and (row is None or not holds(row.template, verified)):
                return None
            # Only this user's expired tokens: purging everyone's deadlocked against another user's delete,
            # which holds one of that user's tokens (spent) and then deletes the rest — two transactions
            # taking one user's token rows in opposite orders. Each user's are purged at their next
            # unlock and with their deletion, so what is kept stays a few rows a user.
            conn.execute(delete(proof_tokens).where(t.user == user, t.expires_at <= now))
            conn.execute(insert(proof_tokens).values(token_hash=_hash(token), user=user, expires_at=now + ttl_s))
        return token

    def token_valid(self, user: str, token: str, now: float) -> bool:
        """Whether `token` is a live proof for `user`, without using it up (`save` spends it)."""
        t = proof_tokens.c
        with self.engine.connect() as conn:
            return conn.execute(select(t.token_hash).where(
                t.token_hash == _hash(token), t.user == user, t.expires_at > now)).first() is not None

    def spend_token(self, user: str, token: str, now: float) -> bool:
        """Use a token up on its own (e.g. when what it was sent with was refused)."""
        with self.engine.begin() as conn:
            return self._spend_token(conn, user, token, now)

    @staticmethod
    def _spend_token(conn: Connection, user: str, token: str, now: float) -> bool:
        """Atomically use up a token: of two concurrent requests with it, exactly one succeeds."""
        t = proof_tokens.c
        return conn.execute(delete(proof_tokens).where(
            t.token_hash == _hash(token), t.user == user, t.expires_at > now)).rowcount == 1

    # --- liveness challenges ----------------------------------------------------------------------

    def open_challenge(self, user: str, words: list[str], now: float, ttl_s: float, max_open: int) -> str:
        """Store a challenge and return its id; a user keeps at most `max_open` open ones."""
        challenge_id = secrets.token_urlsafe(24)
        c = challenges.c
        with self.engine.begin() as conn:
            conn.execute(delete(challenges).where(c.expires_at <= now))
            conn.execute(insert(challenges).values(id_hash=_hash(challenge_id), user=user, words=json.dumps(words),
                                                   created_at=now, expires_at=now + ttl_s))
            keep = select(c.id_hash).where(c.user == user).order_by(c.created_at.desc()).limit(max_open)
            conn.execute(delete(challenges).where(c.user == user, c.id_hash.not_in(keep.scalar_subquery())))
        return challenge_id

    def take_challenge(self, user: str, challenge_id: str, now: float) -> list[str] | None:
        """Use up a challenge (single use, even when the unlock then fails); its words, or None when it
        is unknown, someone else's, used or expired."""
        c = challenges.c
        with self.engine.begin() as conn:
            row = conn.execute(delete(challenges).where(c.id_hash == _hash(challenge_id), c.user == user,
                                                        c.expires_at > now).returning(c.words)).first()
        return json.loads(row.words) if row else None

    # --- replay memory ----------------------------------------------------------------------------

    # --- audit log ---------------------------------------------------------------------------------

    def record(self, action: str, user: str, outcome: str, reason: str, model: str, now: float,
               keep: int) -> None:
        """Append one decision; every AUDIT_PRUNE_EVERY rows, drop all but the newest `keep`."""
        a = audit.c
        with self.engine.begin() as conn:
            row = conn.execute(insert(audit).values(at=now, action=action, user=printable(user, 128),
                                                    outcome=outcome, reason=printable(reason, 500),
                                                    model=model)
                               .returning(a.id)).scalar_one()
            if row % AUDIT_PRUNE_EVERY == 0:
                conn.execute(delete(audit).where(a.id <= row - keep))

    def audit_tail(self, limit: int = 100) -> list[dict]:
        """The newest decisions, newest first."""
        a = audit.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(a.at, a.action, a.user, a.outcome, a.reason, a.model)
                                .order_by(a.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    def heard_recently(self, user: str, limit: int) -> list[str]:
        """The user's newest remembered takes as stored: each its fingerprint set, or its fingerprint
        (JSON) where a set was not written (voicelock/replay.py `decode` reads either)."""
        with self.engine.connect() as conn:
            return _heard_takes(conn, user, limit)

    def remember(self, user: str, fingerprints: list[list[float]], now: float, keep: int,
                 sets: list[str] | None = None) -> list[str]:
        """Add an accepted unlock's takes — each its fingerprint and, when given, its encoded set (one
        row a take) — keep the user's newest `keep`, and return every *other* remembered take as of this
        write, as `heard_recently` does: the same recording sent twice at once passes
        both requests' replay checks (each read the memory before the other wrote), and must not
        unlock twice. The write is serialised per user — SQLite's write lock, taken by the first
        statement; elsewhere a row lock on the user's enrollment — so of two such writes the second
        sees the first."""
        h = heard.c
        with self.engine.begin() as conn:
            if _lock_enrollment(conn, user) is None:
                return []  # deleted while this unlock was decided: nothing of the user is kept
            sets = sets if sets is not None else [None] * len(fingerprints)
            mine = [conn.execute(insert(heard).values(user=user, fingerprint=json.dumps(fp), fingerprint_set=fp_set,
                                                      at=now).returning(h.id)).scalar_one()
                    for fp, fp_set in zip(fingerprints, sets, strict=True)]
            others = _heard_takes(conn, user, keep, excluding=mine)
            newest = select(h.id).where(h.user == user).order_by(h.id.desc()).limit(keep)
            conn.execute(delete(heard).where(h.user == user, h.id.not_in(newest.scalar_subquery())))
        return others
