"""BentoML's per-request deadline, replaced (service/traffic_timeout.py): same answers, nothing kept.

BentoML's own timer was never cancelled and held the request's context (its OpenTelemetry span) for
the whole `traffic.timeout`: ~7,700 live timers per worker under the fuzz, 100–160 ms garbage
collections on the event loop and /healthz stalls over 100 ms (bench/service.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import pytest
from bentoml._internal.server.http import traffic

from service.traffic_timeout import _BENTOML_TIMEOUT, TimeoutMiddleware, install

span_var: contextvars.ContextVar = contextvars.ContextVar("span")


class Span:  # stands for the OpenTelemetry span an outer middleware keeps in the context
    pass


async def answering_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def span_outlives_answer(middleware, sent: list) -> bool:
    """One request through `middleware`, in a task of its own whose context holds a span: is the span
    still alive 50 ms after the answer?"""

    async def request() -> weakref.ref:
        span = Span()
        span_var.set(span)

        async def send(message) -> None:
            sent.append(message)

        await middleware({"type": "http", "path": "/unlock"}, None, send)
        return weakref.ref(span)

    async def scenario() -> bool:
        asyncio.get_running_loop().call_later(10, lambda: None)  # another request's live deadline, ahead
        ref = await asyncio.create_task(request())
        await asyncio.sleep(0.05)
        return ref() is not None

    gc.collect()
    gc.disable()  # reference counting only, as between a worker's rare full collections
    try:
        return asyncio.run(scenario())
    finally:
        gc.enable()


def test_an_answered_request_is_let_go_at_once():
    sent: list = []
    assert not span_outlives_answer(TimeoutMiddleware(answering_app, timeout=30), sent)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]


def test_bentomls_own_middleware_kept_it_for_the_whole_timeout():
    """The defect this module exists for: if BentoML fixes it, this fails and the module can go."""
    sent: list = []
    assert span_outlives_answer(_BENTOML_TIMEOUT(answering_app, timeout=30), sent)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]  # answered, still held


def test_a_request_past_the_deadline_is_answered_504():
    async def stuck_app(scope, receive, send) -> None:
        await asyncio.sleep(5)

    sent: list = []

    async def send(message) -> None:
        sent.append(message)

    asyncio.run(TimeoutMiddleware(stuck_app, timeout=0.05)({"type": "http", "path": "/unlock"}, None, send))
    assert sent[0]["status"] == 504 and b"0.05 seconds" in sent[1]["body"]


def test_install_makes_bentoml_build_ours(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(traffic, "TimeoutMiddleware", _BENTOML_TIMEOUT)
    install()
    from bentoml._internal.server.base_app import BaseAppFactory

    class App(BaseAppFactory):
        name = "probe"

        def __init__(self) -> None:
            super().__init__(timeout=30)

    assert [m.cls for m in App().middlewares] == [TimeoutMiddleware]


def test_an_app_that_fails_before_answering_ends_the_wait_at_once():
    """BentoML's waited out the whole timeout, keeping the error (and the upload in its traceback)."""
    import time

    async def failing_app(scope, receive, send) -> None:
        raise RuntimeError("bug")

    async def send(message) -> None:
        pass

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="bug"):
        asyncio.run(TimeoutMiddleware(failing_app, timeout=30)({"type": "http", "path": "/unlock"}, None, send))
    assert time.perf_counter() - started < 5
