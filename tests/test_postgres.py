"""The enrollment store on a real PostgreSQL server (Debian's, started by the test on 127.0.0.1) and,
for the same properties, on SQLite: schema migrations, the atomic lockout under concurrency, single-use
tokens, replay memory. The service's replicas over one PostgreSQL are in tests/test_replicas.py."""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from tests.servers import Postgres
from tests.test_migrations import _config, _old_enrollment
from voicelock.enrollment import Template
from voicelock.store import EnrollmentStore, metadata


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres().start()
    yield server
    server.stop()


def fresh_database(server: Postgres) -> str:
    """A new, empty database on the server; its URL."""
    name = f"t_{secrets.token_hex(6)}"
    with create_engine(server.url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return fresh_database(request.getfixturevalue("postgres"))


def at_once(n: int, call: Callable[[int], object]) -> list:
    """Run call(0..n-1) in n threads released together; their results (or exceptions)."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as e:  # noqa: BLE001 — returned to the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def template(model: str = "sha256:m1", word: tuple[float, float] = (1.0, 0.0)) -> Template:
    return Template(list(word), [0.0, 1.0], 3, [[0.6, 0.8]], model, "")


def test_postgres_schema_is_made_and_upgraded_by_the_migrations(postgres: Postgres):
    store = EnrollmentStore(fresh_database(postgres))
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    url = fresh_database(postgres)
    with create_engine(url).begin() as conn:
        command.upgrade(_config(conn), "0001")
        _old_enrollment(conn)
    upgraded = EnrollmentStore(url)
    assert upgraded.get("olga").model == "sha256:old" and upgraded.lock_state("olga") == (2, 0.0)


def test_replicas_opening_a_new_postgres_database_at_once_all_succeed(postgres: Postgres):
    url = fresh_database(postgres)
    assert [r for r in at_once(6, lambda _: EnrollmentStore(url)) if isinstance(r, Exception)] == []


def test_concurrent_failures_lock_after_exactly_the_limit(database: str):
    """16 attempts at once, each from its own connection pool (as from separate workers or replicas):
    exactly `max_failures` are allowed to be scored, none slips past."""
    EnrollmentStore(database).save("ann", template(), 1.0)
    stores = [EnrollmentStore(database) for _ in range(16)]
    charges = at_once(16, lambda i: stores[i].charge_attempt("ann", 100.0, 5, 60.0, 3600.0))
    assert not [c for c in charges if isinstance(c, Exception)], charges
    assert sum(c.allowed for c in charges) == 5
    assert stores[0].lock_state("ann") == (5, 160.0)


def test_an_unlock_token_is_spent_once_under_concurrency(database: str):
    store = EnrollmentStore(database)
    store.save("ben", template(), 1.0)
    token = store.issue_token("ben", 10.0, 120.0)
    stores = [EnrollmentStore(database) for _ in range(8)]
    results = at_once(8, lambda i: stores[i].delete("ben", 11.0, token=token))
    assert sum(r is True for r in results) == 1  # the rest: Forbidden (token used)


def test_the_same_probe_accepted_twice_at_once_sees_the_other(database: str):
    """`remember` serialises per user (SQLite's write lock; PostgreSQL: a row lock), so of two
    concurrent accepted unlocks the second sees the first's fingerprint."""
    store = EnrollmentStore(database)
    store.save("cat", template(), 1.0)
    stores = [EnrollmentStore(database) for _ in range(2)]
    seen = at_once(2, lambda i: stores[i].remember("cat", [[float(i), 1.0]], 5.0, keep=50))
    assert sorted(len(s) for s in seen) == [0, 1]


def test_a_model_upgrade_writes_once(database: str):
    store = EnrollmentStore(database)
    store.save("dan", template("sha256:old"), 1.0)
    store.remember("dan", [[1.0, 0.0]], 2.0, keep=50)
    stores = [EnrollmentStore(database) for _ in range(4)]
    read = store.get("dan")
    wrote = at_once(4, lambda i: stores[i].upgrade("dan", template("sha256:new", (0.0, 1.0)), read, 3.0))
    assert sum(w is True for w in wrote) == 1
    assert store.get("dan").model == "sha256:new" and store.heard_recently("dan", 50) == []
    assert store.get("dan").word == [0.0, 1.0]  # the new model's template replaced the old one


def test_a_re_fingerprint_for_the_same_model_writes_once(database: str):
    """Replicas on other CPUs re-make a template's views with other floats but the same model and the
    same sealed recordings; only the first may write, or the unlock decided against it loses its token
    (the row no longer holds the template it was decided against)."""
    store = EnrollmentStore(database)
    store.save("eve", dataclasses.replace(template(), sealed_takes="sealed"), 1.0)
    read = store.get("eve")
    stores = [EnrollmentStore(database) for _ in range(4)]
    remade = [dataclasses.replace(read, word=[1.0, 0.001 * (i + 1)]) for i in range(4)]
    wrote = at_once(4, lambda i: stores[i].upgrade("eve", remade[i], read, 2.0, forget_heard=False))
    assert sum(w is True for w in wrote) == 1, wrote
    winner = remade[wrote.index(True)]
    assert store.get("eve").word == winner.word
    assert store.issue_token("eve", 3.0, 120.0, verified=winner) is not None
    # A later re-make from the stale read writes nothing either, one request at a time.
    assert not store.upgrade("eve", remade[wrote.index(True) - 1], read, 4.0, forget_heard=False)
    assert store.get("eve").word == winner.word


@pytest.mark.parametrize("user", ["eve", "nobody"])
def test_the_enrollment_lock_holds_off_every_other_writer_on_sqlite(tmp_path: Path, user: str):
    """SQLite has no row locks, and Python's sqlite3 runs a SELECT before the first write outside the
    transaction: the helper's first statement must be a write, or a decision read under "the lock"
    would be overwritten by whatever another writer commits meanwhile. Held — for a user with a row
    and one without — another connection cannot write at all until it ends."""
    import sqlite3

    from voicelock.store import _lock_enrollment

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = EnrollmentStore(url)
    store.save("eve", template(), 1.0)
    other = sqlite3.connect(tmp_path / "store.db", timeout=0.1)
    with store.engine.begin() as conn:
        _lock_enrollment(conn, user)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("DELETE FROM proof_tokens")
    other.execute("DELETE FROM proof_tokens")  # free once the transaction ended
    other.close()


def test_issuing_a_token_never_deadlocks_against_another_users_delete(postgres: Postgres):
    """A delete holds its user's enrollment lock, spends their token (a row lock) and then deletes
    their tokens; an unlock of another user meanwhile purges expired tokens. A purge of every user's
    waited on the spent token's row while the delete waited on an expired token's row the purge had
    taken: PostgreSQL aborted one ("deadlock detected", a 500 for a genuine unlock).
    The delete is held, by a hook, between spending its token and deleting the rest."""
    from sqlalchemy import event

    url = fresh_database(postgres)
    base = EnrollmentStore(url)
    for user in ("alice", "bob"):
        base.save(user, template(), 0.0)
    base.issue_token("bob", 0.0, 5.0)  # expired by the unlock's clock, not by the delete's
    proof = base.issue_token("bob", 0.0, 50.0)  # likewise
    deleter, unlocker = EnrollmentStore(url), EnrollmentStore(url)
    paused, go = threading.Event(), threading.Event()

    @event.listens_for(deleter.engine, "before_cursor_execute")
    def hold(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith('DELETE FROM proof_tokens WHERE proof_tokens."user"') and not go.is_set():
            paused.set()
            go.wait(10)

    results: dict[str, object] = {}

    def run(key: str, call: Callable[[], object]) -> None:
        try:
            results[key] = call()
        except Exception as e:  # noqa: BLE001 — checked below
            results[key] = e

    deleting = threading.Thread(target=run, args=("delete", lambda: deleter.delete("bob", 10.0, token=proof)))
    deleting.start()
    assert paused.wait(10)
    issuing = threading.Thread(target=run, args=("issue", lambda: unlocker.issue_token("alice", 100.0, 60.0)))
    issuing.start()
    issuing.join(0.5)  # the purge, if it reaches for bob's tokens, now waits on the spent one
    go.set()
    deleting.join(10)
    issuing.join(10)
    assert results["delete"] is True, results
    assert isinstance(results["issue"], str), results  # a token, not "deadlock detected"
    assert base.token_valid("alice", results["issue"], 101.0)


def test_a_retired_name_keeps_its_replay_memory_for_the_administrators_recovery(database: str):
    """A tester with one unheard recording of the owner unlocked, DELETEd with the token, and after the
    administrator's recovery every recording heard before opened the account again (his own too, so the
    cycle repeated). Deleting a name it retires keeps the replay memory as it lives — the accepted
    unlocks' takes (newest first) and the enrollment's takes, each its own budget (one shared budget let
    unlocks push every enrollment take out) — and the administrator's enrollment of the name gets it
    back; a delete that frees the name keeps nothing, another model's fingerprints are not carried, and
    a damaged memory does not stop the recovery."""
    import numpy as np

    from voicelock.replay import encode

    def fp(*xs: float) -> list[float]:  # a unit fingerprint as wide as the templates' (2 word + 2 speaker)
        v = np.asarray(xs, dtype=np.float32)
        return (v / np.linalg.norm(v)).tolist()

    a, b, heard_1, heard_2 = fp(1, 0, 0, 1), fp(0, 1, 1, 0), fp(1, 1, 0, 0), fp(0, 0, 1, 1)
    set_a, set_b, heard_set = encode(np.asarray([a, heard_1])), encode(np.asarray([b, heard_2])), \
        encode(np.asarray([heard_2, a]))
    store = EnrollmentStore(database)
    first = Template([1.0, 0.0], [0.0, 1.0], 2, [a, b], "sha256:m1", "", take_sets=[set_a, set_b])
    recovery = Template([0.0, 1.0], [0.0, 1.0], 1, [fp(1, 0, 1, 0)], "sha256:m1", "")
    for user in ("hal", "ida", "jon", "lea"):
        store.save(user, first, 1.0)
        store.remember(user, [heard_1], 2.0, keep=50)
        store.remember(user, [heard_2], 3.0, keep=50, sets=[heard_set])
    token = store.issue_token("hal", 4.0, 120.0)
    assert store.delete("hal", 5.0, token=token, keep=50) is True
    assert store.save("hal", recovery, 6.0, admin=True) is False  # a new name again, by the administrator
    assert store.get("hal").earlier_takes == [set_a, set_b]
    assert store.heard_recently("hal", 50) == [heard_set, json.dumps(heard_1)]  # newest first, as stored
    # each budget at most `keep`: two unlocks do not push the enrollment's takes out
    assert store.delete("ida", 5.0, admin=True, keep=1) is True
    assert store.save("ida", recovery, 6.0, admin=True, earlier_keep=1) is False
    assert store.get("ida").earlier_takes == [set_a]
    assert store.heard_recently("ida", 50) == [heard_set]
    # a recovery with another model inherits nothing (its fingerprints compare with nothing)
    assert store.delete("jon", 5.0, admin=True) is True
    assert store.save("jon", dataclasses.replace(recovery, model="sha256:m2"), 6.0, admin=True) is False
    assert store.get("jon").earlier_takes == [] and store.heard_recently("jon", 50) == []
    # a damaged memory (here, nested too deep to read) is ignored, the recovery stands
    assert store.delete("lea", 5.0, admin=True) is True
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE retired_names SET takes = :t WHERE \"user\" = 'lea'"), {"t": "[" * 100000})
    assert store.save("lea", recovery, 6.0, admin=True) is False
    assert store.get("lea").earlier_takes == [] and not store.is_retired("lea")
    # a delete that frees the name keeps nothing of the voice
    store.save("kim", first, 1.0)
    store.remember("kim", [heard_1], 2.0, keep=50)
    assert store.delete("kim", 5.0, admin=True, retire=False) is True
    store.save("kim", recovery, 6.0)
    assert store.get("kim").earlier_takes == [] and store.heard_recently("kim", 50) == []
    # an unlock decided while the account was deleted leaves nothing behind
    assert store.remember("hal2", [heard_1], 7.0, keep=50) == []
    assert store.heard_recently("hal2", 50) == []


def test_one_take_is_kept_once_in_the_window_of_replaced_takes():
    """A tester pushed the first enrollment's takes out of the window of replaced takes with
    re-enrollments of one recording, each 1 dB quieter: other text, the same take. A take whose every
    row is within `same_take` of the same row of a take kept before it is kept once; a take that is the
    other's in one view only (a low-passed copy: its band-limited rows match, its full band does not) is
    no copy — dropping the original for it forgot the original's full band (a reviewer's edits of the
    original then unlocked)."""
    import numpy as np

    from voicelock.replay import encode
    from voicelock.store import distinct_takes

    rng = np.random.default_rng(0)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    original = unit(rng.normal(size=(4, 8)))  # 2 delays × (full band, view)
    quieter = unit(original + 0.001 * rng.normal(size=(4, 8)))  # the same take, every row
    low_passed = np.concatenate([unit(rng.normal(size=(2, 8))), original[2:]])  # the same view only
    other = unit(rng.normal(size=(4, 8)))
    entries = [encode(quieter), encode(original), encode(low_passed), encode(other), "junk"]
    assert distinct_takes(entries, 8, same_take=0.9995) == [encode(quieter), encode(low_passed), encode(other)]
    assert distinct_takes(entries, 8, same_take=0.9995, keep=2) == [encode(quieter), encode(low_passed)]
    assert distinct_takes(entries, 8) == entries[:4]  # at 1.0 only exact repeats go


def test_a_replaced_enrollment_keeps_its_takes_and_voids_every_token(database: str):
    """Recordings heard before a re-enrollment must not open it after — kept with the new template, not
    among the accepted unlocks, which re-enrolling again and again would push out of their window — and
    an administrator's recovery voids the tokens of whoever unlocked before it, even of an unlock still
    being decided (a tester deleted a recovered account with one)."""
    import json

    import numpy as np

    from voicelock.replay import encode
    from voicelock.store import CHANGED_MEANWHILE, Conflict

    def fp(*xs: float) -> list[float]:  # a unit fingerprint as wide as template()'s (2 word + 2 speaker)
        v = np.asarray(xs, dtype=np.float32)
        return (v / np.linalg.norm(v)).tolist()

    a, b, c = fp(1, 0, 0, 1), fp(0, 1, 1, 0), fp(1, 1, 0, 0)
    set_a, set_b = encode(np.asarray([a, c])), encode(np.asarray([b, c]))
    store = EnrollmentStore(database)
    first = Template([1.0, 0.0], [0.0, 1.0], 2, [a, b], "sha256:m1", "", take_sets=[set_a, set_b])
    store.save("gus", first, 1.0)
    store.remember("gus", [[0.0, 1.0]], 2.0, keep=50)  # an accepted unlock's take
    read = store.get("gus")
    tokens = [store.issue_token("gus", 3.0, 120.0) for _ in range(2)]
    second = Template([0.0, 1.0], [0.0, 1.0], 1, [c], "sha256:m1", "")
    assert store.save("gus", second, 4.0, admin=True) is True
    assert store.get("gus").earlier_takes == [set_a, set_b]
    assert store.heard_recently("gus", 50) == ["[0.0, 1.0]"]  # the accepted unlocks' memory as it was
    assert not any(store.token_valid("gus", t, 5.0) for t in tokens)
    # an unlock decided against the enrollment before the recovery gets no token after it
    assert store.issue_token("gus", 5.0, 120.0, verified=read) is None
    assert store.token_valid("gus", store.issue_token("gus", 5.0, 120.0, verified=store.get("gus")), 6.0)
    # a token re-enrollment compared with the enrollment before the recovery does not overwrite it
    with pytest.raises(Conflict, match=CHANGED_MEANWHILE):
        store.save("gus", first, 7.0, compared_with=read)
    # re-enrolled again: newest first, each once, at most earlier_keep
    assert store.save("gus", dataclasses.replace(second, word=[1.0, 0.0]), 8.0, admin=True, earlier_keep=2) is True
    assert store.get("gus").earlier_takes == [json.dumps(c), set_a]
    # a damaged take is not carried forward (it would refuse every unlock); a damaged row does not stop
    # a recovery; another model's fingerprints compare with nothing
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE enrollments SET template = :t WHERE \"user\" = 'gus'"),
                     {"t": json.dumps({"word": [1.0, 0.0], "speaker": [0.0, 1.0], "takes": [c, 7],
                                       "take_sets": 7, "earlier_takes": ["junk", set_b, None]})})
    assert store.save("gus", second, 9.0, admin=True) is True
    assert store.get("gus").earlier_takes == [json.dumps(c), set_b]
    assert store.save("gus", template("sha256:m2"), 10.0, admin=True) is True
    assert store.get("gus").earlier_takes == []


def test_a_row_written_by_an_older_voicelock_still_earns_a_token(database: str):
    """Rows from before `take_sets` and `anchor` were written lack those keys; read, they are empty
    lists. Compared as text, such a row never held the template read from it, and every unlock of
    its user was refused (a reviewer's find): it is compared as read."""
    store = EnrollmentStore(database)
    store.save("ida", template(), 1.0)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE enrollments SET template = :t WHERE \"user\" = 'ida'"),
                     {"t": '{"word": [1.0, 0.0], "speaker": [0.0, 1.0], "takes": [[0.6, 0.8]]}'})
    assert store.issue_token("ida", 2.0, 120.0, verified=store.get("ida")) is not None


def test_a_delete_or_an_unlock_racing_a_recovery_never_deadlocks(database: str):
    """A token holder's DELETE and the administrator's re-enrollment of the same user, at once: `save`
    locks the enrollment, then the tokens; `delete` must take them in that order too (the other order
    deadlocked on PostgreSQL, which aborts one transaction: a 500)."""
    from voicelock.store import Conflict, Forbidden

    for round_ in range(5):
        user = f"hal{round_}"
        store = EnrollmentStore(database)
        store.save(user, template(), 1.0)
        token = store.issue_token(user, 2.0, 120.0)
        stores = [EnrollmentStore(database) for _ in range(2)]
        results = at_once(2, lambda i: stores[i].delete(user, 3.0, token=token) if i == 0
                          else stores[i].save(user, template(word=(0.0, 1.0)), 3.0, admin=True))
        assert all(isinstance(r, (bool, Conflict, Forbidden)) for r in results), results
    # …and an unlock's token against a recovery, with an expired token of the user left to purge
    for round_ in range(5):
        user = f"ivo{round_}"
        store = EnrollmentStore(database)
        store.save(user, template(), 1.0)
        store.issue_token(user, 1.0, 1.0)  # expires at 2.0: the next issue purges it
        read = store.get(user)
        stores = [EnrollmentStore(database) for _ in range(2)]
        results = at_once(2, lambda i: stores[i].issue_token(user, 3.0, 120.0, verified=read) if i == 0
                          else stores[i].save(user, template(word=(0.0, 1.0)), 3.0, admin=True))
        assert not [r for r in results if isinstance(r, Exception)], results


def test_a_deleted_name_stays_taken_even_against_an_enrollment_racing_the_delete(database: str):
    """A token's holder deletes the account while others try to enroll the name: every enrollment
    either meets the account (409) or the retirement the delete committed (409) — none gets the name.
    Only the administrator enrolls it again, and that frees it; `retire=False` leaves it free."""
    from voicelock.store import Conflict

    store = EnrollmentStore(database)
    store.save("eve", template(), 1.0)
    token = store.issue_token("eve", 10.0, 120.0)
    stores = [EnrollmentStore(database) for _ in range(6)]
    results = at_once(6, lambda i: stores[i].delete("eve", 11.0, token=token) if i == 0
                      else stores[i].save("eve", template(word=(0.0, 1.0)), 11.0))
    assert results[0] is True, results
    assert all(isinstance(r, Conflict) for r in results[1:]), results
    assert store.get("eve") is None and store.is_retired("eve")
    with pytest.raises(Conflict, match="retired — enrolling it again needs the administrator's X-Admin-Key"):
        store.save("eve", template(word=(0.0, 1.0)), 12.0)
    assert store.save("eve", template(word=(0.0, 1.0)), 13.0, admin=True) is False  # a new row, by the admin
    assert not store.is_retired("eve") and store.get("eve").word == [0.0, 1.0]
    store.save("fay", template(), 1.0)
    assert store.delete("fay", 14.0, admin=True, retire=False) and not store.is_retired("fay")
    assert store.save("fay", template(word=(0.0, 1.0)), 15.0) is False
    assert not store.delete("nobody", 16.0, admin=True) and not store.is_retired("nobody")  # nothing to retire
