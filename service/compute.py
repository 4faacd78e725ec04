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
import contextvars
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from voicelock.errors import Busy, VoicelockError

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
        job = asyncio.ensure_future(anyio.to_thread.run_sync(_releasing, fn, limiter=self.limiter))
        job.add_done_callback(self._finished)
        woken = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        job.add_done_callback(wake)
        timer = deadline_timer(self.timeout_s, wake)  # not asyncio.wait_for: see deadline_timer
        try:
            await woken  # a cancelled request (BentoML's own timeout) leaves `job` running: it keeps its slot
        finally:
            timer.cancel()
            job.remove_done_callback(wake)
        if not job.done():
            raise Busy(f"the request took longer than {self.timeout_s:g} s and was abandoned (not unlocked) — "
                       f"retry")
        result, error = job.result()
        if error is not None:
            raise error
        return result

    def _finished(self, job: asyncio.Future) -> None:
        self.jobs -= 1
        if not job.cancelled():
            job.exception()  # an abandoned job's error is retrieved (and was answered 503), not logged as lost


def deadline_timer(delay: float, callback: Callable[..., object], *args: object) -> asyncio.TimerHandle:
    """`loop.call_later` in an empty context: the timer of a request's deadline.

    asyncio keeps a timer queued until its deadline (a cancelled one too, while a live one is ahead of
    it) with the context it was made in. A request's context holds BentoML's request and OpenTelemetry
    span, and through them the upload: a deadline timer made there (`asyncio.wait_for`, BentoML's
    traffic timeout) kept every answered request alive until the deadline — the worker's growth and
    its long garbage collections under bench/service.py's fuzz.
    """
    return asyncio.get_running_loop().call_later(delay, callback, *args, context=contextvars.Context())


def _releasing(fn: Callable[[], T]) -> tuple[T | None, VoicelockError | None]:
    """Run `fn` on the worker thread; a refusal comes back without its traceback.

    Why: the traceback holds every frame of the request — the uploaded bytes, the decoded clips, their
    features — and, on its way through the event loop, frames and futures that hold the error again:
    a reference cycle only a full garbage collection frees, which a busy worker runs rarely. Each
    refused request stayed in memory until then (tracemalloc on a worker: 15 MB a round of 60
    refused enrollments, still there after the round). The message is all the answer needs.
    """
    try:
        return fn(), None
    except VoicelockError as e:  # a bug keeps its traceback, for the log: it is rare, refusals are not
        for link in _chain(e):
            link.__traceback__ = None
        return None, e


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen

