"""A bounded place to run decoding and the network: off the event loop, a few at a time, time-limited.

Scoring on the event loop froze the whole worker (and its /healthz) for as long as one slow request
ran (a 16,001 Hz upload: 6–12 s). Here each request's work runs on a thread, at most `threads` at
once; at most `max_queued` more wait, anything beyond that is refused at once with 503, and a request
that runs past `timeout_s` is answered 503 — never an unlock — while its thread finishes unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from voicelock.errors import Busy

T = TypeVar("T")


class BoundedCompute:
    def __init__(self, threads: int, max_queued: int, timeout_s: float):
        self.limiter = anyio.CapacityLimiter(threads)
        self.capacity = threads + max_queued
        self.timeout_s = timeout_s
        self.in_flight = 0  # touched only from the worker's event loop: no lock needed

    async def run(self, fn: Callable[[], T]) -> T:
        if self.in_flight >= self.capacity:
            raise Busy(f"the service is busy ({self.in_flight} requests in progress) — retry in a moment")
        self.in_flight += 1
        try:
            with anyio.fail_after(self.timeout_s):
                return await anyio.to_thread.run_sync(fn, limiter=self.limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise Busy(f"the request took longer than {self.timeout_s:g} s and was abandoned (not unlocked) — "
                       f"retry") from None
        finally:
            self.in_flight -= 1
