"""The HTTP guard in front of every route (service/middleware.py), over real HTTP against `bentoml serve`.

- Upload file names never reach the file system: a 300-character name once made BentoML's temporary
  file fail with "File name too long" (500).
- Text form fields reach the API function verbatim, as str: BentoML 1.4 JSON-decodes every text field
  of a multipart form, which turned the user names 123, 1e5, true and null into a number, a bool and
  None (400 from its validation) and '"alice"' into alice.
- /metrics needs the API key like every other route, and its series are labelled by route template,
  never by the raw path (one series per probed path once grew it from 110 KB to 2.35 MB and listed
  every user name tried).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import servers
from tests.servers import Server
from tests.test_service_http import API_KEY, clips
from voicelock.params import Params


@pytest.fixture(scope="module")
def server(trained: Params, tiny_params_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("guard")
    # A database of its own, so the fixed user names below ("123", "true", …) are always new.
    srv = servers.serve_model(tiny_params_path, home / "bentoml",
                              {trained.service.api_key_env: API_KEY,
                               "VOICELOCK_DATABASE_URL": f"sqlite:///{home / 'enrollments.db'}"})
    yield srv
    srv.stop()


def client(key: str | None = API_KEY) -> httpx.Client:
    return httpx.Client(headers={"X-API-Key": key} if key is not None else {}, timeout=60)


def fresh(stem: str = "u") -> str:
    return f"{stem}{secrets.token_hex(4)}"


def enroll(c: httpx.Client, url: str, user: str, blobs: list[bytes], names: list[str] | None = None) -> httpx.Response:
    names = names or [f"c{i}.wav" for i in range(len(blobs))]
    return c.post(f"{url}/enroll", data={"user": user},
                  files=[("files", (n, b, "audio/wav")) for n, b in zip(names, blobs)])


def test_long_and_odd_upload_file_names_are_not_a_server_error(server: Server, trained: Params):
    pw = clips(trained, trained.owner.password)[:3]
    odd = ["a" * 296 + ".wav",  # over the file system's 255-byte name limit once BentoML adds its prefix
           "é" * 200 + ".wav",  # 400 bytes of UTF-8 in 205 characters
           "../../../../etc/passwd"]
    with client() as c:
        for names in ([odd[0]] * 3, [odd[1], odd[2], "x" * 1000]):
            user = fresh()
            r = enroll(c, server.url, user, pw, names)
            assert r.status_code == 200, r.text
            assert r.json()["enrolled"] is True
            r = c.post(f"{server.url}/unlock", data={"user": user}, files={"file": (names[0], pw[0], "audio/wav")})
            assert r.status_code < 500 and "unlocked" in r.json(), r.text
        # The same name on a recording that is no audio: the recording's own 4xx, not a 500.
        r = enroll(c, server.url, fresh(), [b"GIF89a not audio" * 20, *pw[1:]], [odd[0]] * 3)
        assert r.status_code == 400 and "Traceback" not in r.text, r.text


@pytest.mark.parametrize("user", ["123", "1e5", "true", "null", "0", "1.50"])
def test_user_names_that_look_like_json_are_still_names(server: Server, trained: Params, user: str):
    pw = clips(trained, trained.owner.password)[:3]
    with client() as c:
        r = enroll(c, server.url, user, pw)
    assert r.status_code == 200, r.text
    assert r.json()["user"] == user


def test_text_fields_arrive_verbatim(server: Server, trained: Params):
    """A quoted name is not unquoted on the way (BentoML's JSON decoding made '"bob"' into bob), and
    whitespace is kept, so the name rule refuses all of these instead of enrolling a trimmed name."""
    pw = clips(trained, trained.owner.password)[:3]
    with client() as c:
        for user in (f'"{fresh()}"', f' "{fresh()}" ', f'["{fresh()}"]', '{"a": 1}',
                     f" {fresh()} ", f"{fresh()}\n", f"\t{fresh()}", f"{fresh()}\r\n"):
            r = enroll(c, server.url, user, pw)
            assert r.status_code == 400 and "user" in r.json()["error"], (user, r.text)


def _metrics(c: httpx.Client, url: str) -> str:
    r = c.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    return r.text


def test_metrics_need_the_key_and_are_labelled_by_route_not_path(server: Server):
    url = server.url
    with client(None) as anon:
        r = anon.get(f"{url}/metrics")
        assert r.status_code == 401 and "X-API-Key" in r.json()["error"]
        assert "bentoml" not in r.text and "_total" not in r.text
    with client("wrong") as bad:
        assert bad.get(f"{url}/metrics").status_code == 401

    def burst(n: int) -> list[str]:
        tokens = [secrets.token_hex(8) for _ in range(n)]
        with client(None) as anon, client("wrong") as bad, client() as good:
            for i, tok in enumerate(tokens):
                kind = i % 5
                if kind == 0:
                    assert bad.delete(f"{url}/users/u{tok}").status_code == 401
                elif kind == 1:
                    assert anon.get(f"{url}/random-{tok}").status_code == 401
                elif kind == 2:
                    assert good.get(f"{url}/random-{tok}/x").status_code == 404
                elif kind == 3:
                    assert good.delete(f"{url}/users/u{tok}").status_code in (403, 404)
                else:
                    assert anon.get(f"{url}/app/{tok}.js").status_code == 404
        return tokens

    with client() as c:
        burst(10)  # every kind of request once, so its series exist before the baseline
        before = _metrics(c, url)
        tokens = burst(200)
        after = _metrics(c, url)
    leaked = [t for t in tokens if t in after]
    assert not leaked, f"{len(leaked)} raw paths in /metrics, e.g. {leaked[0]}"
    assert len(after) - len(before) < 4096, (len(before), len(after))
    # Still counted, each under its route's template (a mounted app's routes may share their mount's).
    for route in ("/users/", "/app/"):
        assert re.search(r'_total\{endpoint="%s\{\w+\}"' % route, after), route
    assert '_total{endpoint="[unmatched]"' in after
    # Which code and model answer (BentoML's own metrics said service_version="not available").
    assert re.search(r'voicelock_build_info\{model="voicelock:\w+",version="[\w.]+"\} 1\.0', after), \
        [line for line in after.splitlines() if "build_info" in line]


def _asgi_call(guard, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One request straight through the guard (no server: some framings never get past uvicorn)."""
    import asyncio

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [
        (k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_unbounded_or_unreadable_lengths_are_refused_before_the_app():
    from service.middleware import RequestGuard

    reached: list[str] = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(app, max_request_bytes=1000, api_key=None, form_routes={"/unlock": {"file": 1}})
    status, body = _asgi_call(guard, "POST", "/unlock", {"transfer-encoding": "chunked",
                                                         "content-type": "multipart/form-data; boundary=b"})
    assert status == 411 and b"Content-Length" in body
    # A small declared length beside chunked framing: the server would read the chunks, not the length.
    status, body = _asgi_call(guard, "POST", "/challenge", {"content-length": "5", "transfer-encoding": "chunked",
                                                            "content-type": "application/json"})
    assert status == 411 and b"no Transfer-Encoding" in body
    status, body = _asgi_call(guard, "POST", "/unlock", {"content-length": "12abc"})
    assert status == 400 and b"not a number" in body
    status, _ = _asgi_call(guard, "POST", "/unlock", {"content-length": "1001"})
    assert status == 413
    assert reached == []  # none of them reached the service
    assert _asgi_call(guard, "GET", "/healthz", {}) == (200, b"ok") and reached == ["/healthz"]


def test_the_openapi_document_is_built_once_per_worker():
    """BentoML rebuilds /docs.json on every GET on the event loop; the guard keeps the first 200."""
    from service.middleware import RequestGuard

    built: list[int] = []

    async def app(scope, receive, send):
        built.append(1)
        status = 500 if len(built) == 1 else 200  # the first attempt fails: an error is never kept
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"n": %d}' % len(built)})

    guard = RequestGuard(app, max_request_bytes=1000, api_key=None)
    assert _asgi_call(guard, "GET", "/docs.json", {}) == (500, b'{"n": 1}')
    answers = [_asgi_call(guard, "GET", "/docs.json", {}) for _ in range(3)]
    assert answers == [(200, b'{"n": 2}')] * 3 and len(built) == 2


def test_a_rebuilt_body_is_let_go_once_the_app_has_it():
    """The guard's `receive` outlives its request by 20–40 s (asyncio keeps a cancelled timer with the
    request's context until its deadline): once the app has read the body, the closure must not hold it.
    It did, and under the fuzz that was ~0.7 MB per /enroll kept alive (bench/service.py: +400 MB)."""
    import asyncio
    import sys

    from service.middleware import _replay

    body = bytes(2_000_000)
    receive = _replay(body)
    assert sys.getrefcount(body) == 3  # here, the argument, and the pending request inside `receive`
    message = asyncio.run(receive())
    assert message == {"type": "http.request", "body": body, "more_body": False}
    del message
    assert sys.getrefcount(body) == 2  # `receive` no longer holds it
    assert asyncio.run(receive()) == {"type": "http.disconnect"}


def test_large_forms_are_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch):
    """Parsing a 20 MB form took 40–100 ms on the worker's event loop, and /healthz waited behind it
    (bench/service.py's fuzz: /healthz up to 160 ms). Large forms are parsed on another thread, small
    ones (every genuine unlock) in place, and both reach the app with the same fields."""
    import threading

    from service import middleware
    from service.middleware import RequestGuard

    parsed_on: list[int] = []
    check_form = middleware._check_form

    async def recording(*args):
        parsed_on.append(threading.get_ident())
        return await check_form(*args)

    monkeypatch.setattr(middleware, "_check_form", recording)
    received: list[bytes] = []

    async def app(scope, receive, send):
        received.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(app, max_request_bytes=30_000_000, api_key=None, form_routes={"/enroll": {"files": 10}})
    for size in (1000, 2_000_000):
        upload = bytes(range(256)) * (size // 256)
        request = httpx.Request("POST", "http://guard/enroll", data={"user": "alice"},
                                files=[("files", ("a.wav", upload, "audio/wav"))] * 10)
        status, _ = _asgi_call(guard, "POST", "/enroll", dict(request.headers), request.read())
        assert status == 200 and received[-1].count(upload) == 10 and b'"alice"' in received[-1]
    small, large = parsed_on
    assert small == threading.get_ident() and large != threading.get_ident()


def test_cancelled_requests_keep_their_form_parsing_slot_until_the_thread_ends(monkeypatch: pytest.MonkeyPatch):
    """At most FORM_PARSER_THREADS large forms are parsed at once per worker, cancellations (the traffic
    timeout) included: a cancelled request's thread keeps parsing, so it must keep its slot."""
    import asyncio
    import threading
    import time

    from service import middleware
    from service.middleware import RequestGuard

    running, most = 0, 0
    lock = threading.Lock()

    async def slow_check(*args):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)  # parsing a large body, on the parse thread
        with lock:
            running -= 1
        return None, None

    monkeypatch.setattr(middleware, "_check_form", slow_check)
    parsers = RequestGuard(None, max_request_bytes=1, api_key=None).form_parsers  # one worker's
    body = bytes(middleware.INLINE_FORM_BYTES + 1)

    async def scenario() -> None:
        first = [asyncio.create_task(middleware._check_form_off_loop({}, body, {}, False, parsers))
                 for _ in range(2)]
        await asyncio.sleep(0.05)
        for task in first:
            task.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        assert await asyncio.gather(*(middleware._check_form_off_loop({}, body, {}, False, parsers)
                                      for _ in range(2))) == \
            [(None, None)] * 2

    asyncio.run(scenario())
    assert most <= middleware.FORM_PARSER_THREADS


def test_the_service_installs_its_traffic_timeout(server: Server):
    """`service/service.py` must swap BentoML's TimeoutMiddleware before BentoML builds the app."""
    import subprocess
    import sys

    code = ("import service.service; from bentoml._internal.server.http import traffic; "
            "from service.traffic_timeout import TimeoutMiddleware; print(traffic.TimeoutMiddleware is TimeoutMiddleware)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], env=server.env,
                          capture_output=True, text=True, timeout=180)
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]
