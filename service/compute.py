"""A bounded place to run decoding and the network: off the event loop, a few at a time, time-limited.

Scoring on the event loop froze the whole worker (and its /healthz) for as long as one slow request
ran (a 16,001 Hz upload: 6–12 s). Here each request's work runs on an AnyIO worker thread (BentoML's
client for the embedder service needs one), at most `threads` at once; at most `max_queued` more jobs
wait, anything beyond is refused at once with 503. A request that runs past `timeout_s` is answered
503 — never an unlock — but its job is shielded, not abandoned: it keeps its thread slot and its place
in the count until it has really finished (anyio's abandon-on-cancel freed the slot at once, and 8
jobs ran on a pool of 1).
"""

from __future__ import annotations

import asyncio
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
        self.jobs = 0  # started and not yet finished; touched only on the worker's event loop

    async def run(self, fn: Callable[[], T]) -> T:
        if self.jobs >= self.capacity:
            raise Busy("the service is busy — retry in a moment")
        self.jobs += 1
        job = asyncio.ensure_future(anyio.to_thread.run_sync(fn, limiter=self.limiter))
        job.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(job), self.timeout_s)
        except asyncio.TimeoutError:
            raise Busy(f"the request took longer than {self.timeout_s:g} s and was abandoned (not unlocked) — "
                       f"retry") from None

    def _finished(self, job: asyncio.Future) -> None:
        self.jobs -= 1
        if not job.cancelled():
            job.exception()  # an abandoned job's error is retrieved (and was answered 503), not logged as lost
