"""Two service replicas (`bentoml serve` on two ports, two workers each) over one real PostgreSQL:
what one replica writes, the other sees, and the lockout is exact across both under concurrency."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests import servers
from tests.conftest import UnlockCase, find_unlock_case
from tests.servers import Postgres, Server
from tests.test_security_http import enroll, unlock
from voicelock.params import Params, load_params


@pytest.fixture(scope="module")
def params(lenient_params_path: Path) -> Params:
    return load_params(lenient_params_path)


@pytest.fixture(scope="module")
def replicas(params: Params, lenient_params_path: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    database = Postgres().start()
    first = second = None
    try:
        env = {"VOICELOCK_DATABASE_URL": database.url, params.service.api_key_env: ""}
        first = servers.serve_model(lenient_params_path, tmp_path_factory.mktemp("bentoml-replicas"), env)
        second = Server(f"http://127.0.0.1:{servers.free_port()}", first.env, first.log.with_name("replica2.log"))
        second.start()
        yield first, second
    finally:
        servers.stop(first and first.proc)
        servers.stop(second and second.proc)
        database.stop()


@pytest.fixture(scope="module")
def case(params: Params) -> UnlockCase:
    return find_unlock_case(params)


def test_what_one_replica_writes_the_other_sees(replicas: tuple[Server, Server], case: UnlockCase):
    a, b = replicas
    assert enroll(a.url, "rita", case.read(case.enroll)).status_code == 200
    assert enroll(b.url, "rita", case.read(case.enroll)).status_code == 409  # taken, on the other replica too
    answer = unlock(b.url, "rita", case.genuine[0].read_bytes()).json()
    assert answer["unlocked"] is True, answer
    # The token from replica b is the proof replica a accepts, once.
    r = httpx.delete(f"{a.url}/users/rita", headers={"X-Unlock-Token": answer["token"]}, timeout=30)
    assert r.json() == {"deleted": True, "user": "rita", "name_retired": True}
    assert httpx.delete(f"{b.url}/users/rita", headers={"X-Unlock-Token": answer["token"]},
                        timeout=30).status_code == 403
    assert unlock(b.url, "rita", case.genuine[1].read_bytes()).json()["unlocked"] is False  # gone on b too


def test_the_lockout_is_exact_across_replicas(replicas: tuple[Server, Server], case: UnlockCase, params: Params):
    """16 concurrent wrong voices spread over both replicas (four workers): exactly `lockout_failures`
    are scored, the others get 429 — the counter is one UPDATE … RETURNING in the shared database."""
    a, b = replicas
    n = params.service.lockout_failures
    assert enroll(a.url, "sam", case.read(case.enroll)).status_code == 200
    probes = [p.read_bytes() for p in (case.impostors * 4)[:16]]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda ib: unlock((a, b)[ib[0] % 2].url, "sam", ib[1]), enumerate(probes)))
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: n, 429: 16 - n}, statuses
    assert all(r.json()["unlocked"] is False for r in answers if r.status_code == 200)
    for replica in (a, b):  # locked on both, even for the owner
        assert unlock(replica.url, "sam", case.genuine[0].read_bytes()).status_code == 429


def test_a_wrong_or_unreachable_database_stops_the_service_at_start_with_one_line(tmp_path: Path):
    import os
    import subprocess

    closed = servers.free_port()  # nothing listens there
    for url, says in ((f"postgresql+psycopg://voicelock:secret@127.0.0.1:{closed}/voicelock", "Connection refused"),
                      ("postgres-ish://nowhere", "Could not parse")):
        env = {**os.environ, "VOICELOCK_DATABASE_URL": url, "BENTOML_HOME": str(tmp_path / "bentoml")}
        done = subprocess.run([str(servers.BIN / "bentoml"), "serve", "service.service:VoiceLock", "--host",
                               "127.0.0.1", "--port", str(servers.free_port())], cwd=servers.REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, lines
        assert lines[0].startswith("error: service.database_url: cannot open") and says in lines[0], lines
        assert "secret" not in lines[0]  # the password is not printed
