"""The BentoML service over real HTTP: a `bentoml serve` on 127.0.0.1 started and stopped by the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import servers
from tests.conftest import UnlockCase, find_unlock_case
from tests.servers import Server
from tests.test_api import wav_bytes
from voicelock.params import Params, load_params

API_KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(trained: Params, lenient_params_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = servers.serve_model(lenient_params_path, tmp_path_factory.mktemp("bentoml"),
                              {trained.service.api_key_env: API_KEY})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def case(lenient_params_path: Path) -> UnlockCase:
    return find_unlock_case(load_params(lenient_params_path))


def client(auth: bool = True) -> httpx.Client:
    return httpx.Client(headers={"X-API-Key": API_KEY} if auth else {}, timeout=30)


def clips(params: Params, word: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((Path(params.owner.out_dir) / word).glob("*.wav"))]


def enroll(c: httpx.Client, url: str, user: str, blobs: list[bytes]) -> httpx.Response:
    return c.post(f"{url}/enroll", data={"user": user},
                  files=[("files", (f"c{i}.wav", b, "audio/wav")) for i, b in enumerate(blobs)])


def unlock(c: httpx.Client, url: str, user: str, blob: bytes) -> httpx.Response:
    return c.post(f"{url}/unlock", data={"user": user}, files={"file": ("probe.wav", blob, "audio/wav")})


def assert_clean_error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["error"], body
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_health_docs_and_auth(server: Server):
    with client(auth=False) as c:
        assert c.get(f"{server.url}/healthz").status_code == 200
        assert c.get(f"{server.url}/readyz").status_code == 200
        assert c.get(f"{server.url}/docs", follow_redirects=True).status_code == 200
        paths = c.get(f"{server.url}/docs.json").json()["paths"]
        assert {"/enroll", "/unlock", "/users/{user}"} <= set(paths)
        assert_clean_error(c.post(f"{server.url}/unlock", data={"user": "x"}), 401, "X-API-Key")
        # The browser page loads without the key (it has none to give) and tells itself to ask for one.
        assert c.get(f"{server.url}/app/").status_code == 200
        assert c.get(f"{server.url}/app/config.json").json()["api_key_required"] is True
    with httpx.Client(headers={"X-API-Key": "wrong"}) as c:
        assert_clean_error(c.delete(f"{server.url}/users/x"), 401, "X-API-Key")


def test_enroll_unlock_delete_and_persistence(server: Server, case: UnlockCase):
    with client() as c:
        r = enroll(c, server.url, "alice", case.read(case.enroll))
        assert r.json() == {"enrolled": True, "user": "alice", "clips": 3, "replaced": False}
        answer = unlock(c, server.url, "alice", case.genuine[0].read_bytes()).json()
        assert answer["unlocked"] is True and answer["token"], answer
        assert unlock(c, server.url, "alice", case.impostors[0].read_bytes()).json() == \
            {"unlocked": False, "user": "alice", "reason": "not recognised"}
    server.stop()
    server.start()  # enrollments, replay memory and tokens survive a restart
    with client() as c:
        assert unlock(c, server.url, "alice", case.genuine[0].read_bytes()).json()["unlocked"] is False  # heard
        token = {"X-Unlock-Token": answer["token"]}
        assert c.delete(f"{server.url}/users/alice", headers=token).json() == {"deleted": True, "user": "alice",
                                                                                "name_retired": True}
        assert unlock(c, server.url, "alice", case.genuine[1].read_bytes()).json()["unlocked"] is False
        assert_clean_error(c.delete(f"{server.url}/users/alice", headers=token), 403, "X-Unlock-Token")


def test_lockout_over_http(server: Server, case: UnlockCase, trained: Params):
    with client() as c:
        assert enroll(c, server.url, "bob", case.read(case.enroll)).status_code == 200
        assert c.get(f"{server.url}/users/bob/lock").json() == {"user": "bob", "locked_for_s": 0}
        for probe in case.impostors[: trained.service.lockout_failures]:
            assert unlock(c, server.url, "bob", probe.read_bytes()).json()["unlocked"] is False
        r = unlock(c, server.url, "bob", case.genuine[0].read_bytes())
        assert_clean_error(r, 429, "locked")
        assert 0 < int(r.headers["Retry-After"]) <= trained.service.lockout_seconds
        # The page asks before recording: the same wait, for any name (unknown ones are never locked).
        assert 0 < c.get(f"{server.url}/users/bob/lock").json()["locked_for_s"] <= trained.service.lockout_seconds
        assert c.get(f"{server.url}/users/nobody/lock").json() == {"user": "nobody", "locked_for_s": 0}
        assert_clean_error(c.get(f"{server.url}/users/a%20b/lock"), 400, "user")


def test_bad_requests_get_4xx_with_reasons(server: Server, trained: Params):
    pw = clips(trained, trained.owner.password)
    url = server.url
    with client() as c:
        assert_clean_error(enroll(c, url, "carol", pw[:2]), 400, "needs 3–10")
        assert_clean_error(enroll(c, url, "carol", [b"", pw[1], pw[2]]), 400, "empty")
        assert_clean_error(enroll(c, url, "carol", [pw[0][:3000], pw[1], pw[2]]), 400, "truncated")
        assert_clean_error(enroll(c, url, "carol", [wav_bytes(np.zeros(16000)), pw[1], pw[2]]), 400, "no speech")
        assert_clean_error(enroll(c, url, "carol", [b"GIF89a not audio" * 20, pw[1], pw[2]]), 400, "not a readable")
        nan = wav_bytes(np.full(16000, np.nan, dtype=np.float32), subtype="FLOAT")
        assert_clean_error(enroll(c, url, "carol", [nan, pw[1], pw[2]]), 400, "NaN")
        assert_clean_error(enroll(c, url, "../../etc", pw[:3]), 400, "user")
        assert unlock(c, url, "nobody", pw[0]).json() == {"unlocked": False, "user": "nobody",
                                                            "reason": "not recognised"}  # no enumeration
        big = b"\0" * (trained.service.max_request_bytes + 10)
        assert_clean_error(c.post(f"{url}/unlock", content=big, headers={"Content-Type": "audio/wav"}), 413,
                           "over the limit")
        assert_clean_error(c.post(f"{url}/unlock", data={"user": "x"}), 415, "multipart")  # a form, not multipart
        assert_clean_error(c.post(f"{url}/unlock", data={"user": "x"}, files={"files": ("a.wav", pw[0])}), 400,
                           "must be text")  # /unlock takes one 'file'
        r = c.post(f"{url}/unlock", files={"user": (None, "x")})  # multipart without the file
        assert r.status_code == 400 and "Traceback" not in r.text
        r = c.post(f"{url}/unlock", content=b"--xx\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=xx"})
        assert 400 <= r.status_code < 500 and "Traceback" not in r.text
        # The API is multipart only; a URL in a file field is never fetched; a file is no user name.
        assert_clean_error(c.post(f"{url}/unlock", json={"user": "x", "file": "http://127.0.0.1:9/a.wav"}), 415,
                           "multipart")
        url_part = {"user": (None, "x"), "file": (None, "http://127.0.0.1:9/a.wav")}  # text parts, not uploads
        assert_clean_error(c.post(f"{url}/unlock", files=url_part), 400, "must be an uploaded file")
        assert_clean_error(c.post(f"{url}/unlock", files={"user": ("u.bin", b"\x80\xff"), "file": ("f.wav", pw[0])}),
                           400, "must be text")
        assert c.get(f"{url}/healthz").status_code == 200


def test_a_body_framed_by_chunks_is_refused_whatever_length_it_declares(server: Server, trained: Params):
    """Content-Length: 5 beside Transfer-Encoding: chunked — the server reads the chunks (a tester sent
    100 MB of JSON to /challenge this way, past the 21 MB limit). Raw bytes: no HTTP client sends both."""
    import socket

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = (f"POST /challenge HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = sock.recv(4096)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert b"Traceback" not in answer


def test_adaptive_batching_gives_the_same_answers(trained: Params, tiny_params_path: Path,
                                                  tmp_path_factory: pytest.TempPathFactory):
    """service.batching moves embeddings to a second, batching service: the scores the core computes
    in-process, one request at a time and under concurrent requests the embedder groups."""
    from concurrent.futures import ThreadPoolExecutor

    import yaml

    from voicelock.audio import decode_bytes
    from voicelock.enrollment import Unlocker

    root = tmp_path_factory.mktemp("batching")
    raw = yaml.safe_load(tiny_params_path.read_text())
    # explain: scores in the answers (a probe that unlocked once is then refused as a replay, so only
    # the scores, not the decisions, can be compared under repetition)
    raw["service"].update(batching=True, max_batch_size=8, max_latency_ms=50, lockout_failures=1000,
                          explain=True,
                          database_url=f"sqlite:///{root / 'enrollments.db'}")
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    pw, other = clips(trained, trained.owner.password), clips(trained, "yes")
    probes = [pw[3], pw[4], other[0], other[1]]
    lock = Unlocker(trained.evaluate.out_dir, trained.enroll)
    template = lock.enroll([decode_bytes(b, "enroll") for b in pw[:3]])
    want = [lock.verify(template, *decode_bytes(p, "probe")) for p in probes]

    batched = servers.serve_model(params_path, root / "bentoml", {trained.service.api_key_env: API_KEY})
    try:
        with client() as c:
            assert enroll(c, batched.url, "dave", pw[:3]).status_code == 200
            one_by_one = [unlock(c, batched.url, "dave", p).json() for p in probes]
            with ThreadPoolExecutor(8) as pool:
                together = list(pool.map(lambda p: unlock(c, batched.url, "dave", p).json(), probes * 4))
    finally:
        batched.stop()
    for got, expected in zip(one_by_one, want):
        assert got["unlocked"] == expected.unlocked, got
    for got, expected in zip(one_by_one + together, want * 5):
        assert "unlocked" in got, got
        assert got["word_score"] == pytest.approx(expected.word_score, abs=2e-3)
        assert got["speaker_score"] == pytest.approx(expected.speaker_score, abs=2e-2)


def test_a_promotion_keeps_users_enrolled_before_it(trained: Params, lenient_params_path: Path, retrained_release: Path,
                                                    case: UnlockCase, tmp_path_factory: pytest.TempPathFactory):
    """Enroll, promote a retrained model into the same BentoML store, restart: the user unlocks with
    no re-enrollment (the service re-embeds the sealed recordings), and the answer says nothing of it."""
    import subprocess
    import sys

    from cryptography.fernet import Fernet

    home = tmp_path_factory.mktemp("bentoml-promotion")
    srv = servers.serve_model(lenient_params_path, home, {trained.service.api_key_env: API_KEY,
                                                          trained.service.takes_key_env: Fernet.generate_key().decode()})
    try:
        with client() as c:
            assert enroll(c, srv.url, "pia", case.read(case.enroll)).status_code == 200
            assert unlock(c, srv.url, "pia", case.genuine[0].read_bytes()).json()["unlocked"] is True
        srv.stop()
        promote = ("import sys; from voicelock.packaging import package_model; from voicelock.params import "
                   "load_params; from voicelock.promotion import promote; p = load_params(sys.argv[1]); "
                   "p = p.model_copy(update={'evaluate': p.evaluate.model_copy(update={'out_dir': sys.argv[2]})}); "
                   "print(promote(package_model(p), p.service.model_name))")
        done = subprocess.run([sys.executable, "-c", promote, str(lenient_params_path), str(retrained_release)],
                              cwd=servers.REPO, env=srv.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        srv.start()
        with client() as c:
            answer = unlock(c, srv.url, "pia", case.genuine[1].read_bytes()).json()
            assert answer["unlocked"] is True, answer
            assert set(answer) == {"unlocked", "user", "token", "token_expires_in_s"}
        assert "re-embedded the enrollment of 'pia'" in srv.log.read_text()
    finally:
        srv.stop()


def test_the_openapi_page_documents_every_answer_status_and_header(server: Server, case: UnlockCase):
    """/docs.json types each route's answer (not `additionalProp1`), lists its status codes, the proof
    headers and the API key; real answers validate against the same models (extra fields forbidden)."""
    from service.openapi import EnrollAnswer, ErrorAnswer, UnlockAnswer

    with client() as c:
        spec = c.get(f"{server.url}/docs.json").json()
        assert spec["info"]["title"] == "voicelock" and spec["info"]["version"] not in (None, "None", "")
        unlock_op = spec["paths"]["/unlock"]["post"]
        assert unlock_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/UnlockAnswer")
        fields = spec["components"]["schemas"]["UnlockAnswer"]["properties"]
        assert {"unlocked", "user", "token", "token_expires_in_s", "reason", "locked_for_s"} <= set(fields)
        assert {"400", "401", "409", "413", "415", "429", "503"} <= set(unlock_op["responses"])
        assert unlock_op["security"] == [{"ApiKey": []}]
        assert spec["components"]["securitySchemes"]["ApiKey"] == {**spec["components"]["securitySchemes"]["ApiKey"],
                                                                     "in": "header", "name": "X-API-Key"}
        enroll_op = spec["paths"]["/enroll"]["post"]
        assert {"X-Unlock-Token", "X-Admin-Key"} <= {p["name"] for p in enroll_op["parameters"] if p["in"] == "header"}
        assert {"403", "409"} <= set(enroll_op["responses"])
        assert {"403", "404"} <= set(spec["paths"]["/users/{user}"]["delete"]["responses"])
        EnrollAnswer.model_validate(enroll(c, server.url, "olive", case.read(case.enroll)).json())
        UnlockAnswer.model_validate(unlock(c, server.url, "olive", case.genuine[0].read_bytes()).json())
        UnlockAnswer.model_validate(unlock(c, server.url, "olive", case.impostors[0].read_bytes()).json())
        ErrorAnswer.model_validate(enroll(c, server.url, "olive", case.read(case.enroll)).json())  # 409
