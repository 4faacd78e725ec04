"""BentoML's per-request deadline (`traffic.timeout`), without keeping every request alive until it.

BentoML 1.4's `TimeoutMiddleware` arms `loop.call_later(timeout, …)` for each request and never
cancels it, so the timer — with the request's context variables, which hold its OpenTelemetry span
(attributes, events, locks) — stays queued for the full timeout after the answer has gone. Under
bench/service.py's fuzz (~250 requests/s per worker) that was ~7,700 live timers per worker, 150,000
objects that every full garbage collection walked: collections of 100–160 ms on the event loop, the
/healthz stalls over 100 ms, and most of the worker's memory growth.

This replacement keeps BentoML's behaviour (504 when the app has not started answering in time) and
differs in three lines: the timer runs in an empty context, it is cancelled once the request ends,
and an app that fails before answering ends the wait at once (its error reaches BentoML's handler).
`install()` swaps it in before BentoML builds the app's middleware (it looks the class up by name in
`bentoml._internal.server.http.traffic` when the worker starts).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

from service.compute import deadline_timer

_BENTOML_TIMEOUT = traffic.TimeoutMiddleware


class TimeoutMiddleware(_BENTOML_TIMEOUT):
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        timer = deadline_timer(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send))
        # An app that fails (or ends) before answering wakes the waiter too: BentoML's waited out the
        # whole timeout, keeping the error — and through its traceback the upload — until then.
        fut.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                await JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                   status_code=504)(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()


def install() -> None:
    """Make BentoML build this class wherever it would build its own (idempotent)."""
    traffic.TimeoutMiddleware = TimeoutMiddleware
