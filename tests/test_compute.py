"""The bounded compute pool: a timed-out job keeps its slot, so timeouts cannot pile up running work."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.compute import BoundedCompute
from voicelock.errors import Busy


def test_timed_out_jobs_keep_their_slot_and_the_queue_is_bounded():
    running, most = 0, 0
    lock = threading.Lock()

    def slow() -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return "done"

    async def scenario() -> list:
        pool = BoundedCompute(threads=1, max_queued=2, timeout_s=0.1)
        results = await asyncio.gather(*(pool.run(slow) for _ in range(5)), return_exceptions=True)
        assert pool.jobs == 3  # answered 503, still running or queued: still counted
        with pytest.raises(Busy, match="busy"):
            await pool.run(slow)
        while pool.jobs:
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(pool.run(lambda: "fast"), 1) == "fast"
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, Busy) for r in results)  # 2 refused at once, 3 timed out: none unlocked
    assert sum("busy" in str(r) for r in results) == 2
    assert most == 1  # never more than `threads` at once, timeouts or not


def test_a_refused_job_frees_its_request_at_once():
    """A refusal's traceback holds every frame of the request (its uploads, decoded clips, features),
    and the frame awaiting the job held the job, which held the refusal: a reference cycle that only
    a full garbage collection frees. Until one ran, each refused request stayed in memory. Now the
    refusal comes back without frames, and its data goes when the answer does — no collector needed."""
    import gc
    import weakref

    from voicelock.errors import VoicelockError

    class Upload:  # stands for a request's decoded audio
        pass

    refs: list[weakref.ref] = []

    def refused() -> None:
        upload = Upload()
        refs.append(weakref.ref(upload))
        raise VoicelockError("file 1: no speech")

    async def scenario() -> None:
        pool = BoundedCompute(threads=1, max_queued=2, timeout_s=5)
        with pytest.raises(VoicelockError, match="no speech"):
            await pool.run(refused)
        await asyncio.sleep(0.05)  # the worker thread is idle now, and alive
        assert refs[0]() is None

    gc.collect()
    gc.disable()  # only reference counting: what a busy worker has between rare full collections
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()


def test_a_bug_keeps_its_traceback_for_the_log():
    """Only refusals lose their frames; an unexpected error is the service's bug and the log needs where."""
    import traceback

    def broken() -> None:
        raise RuntimeError("bug")

    async def scenario() -> None:
        with pytest.raises(RuntimeError) as caught:
            await BoundedCompute(threads=1, max_queued=1, timeout_s=5).run(broken)
        assert any(frame.name == "broken" for frame in traceback.extract_tb(caught.value.__traceback__))

    asyncio.run(scenario())


def test_an_answered_request_is_not_kept_until_its_deadline():
    """BentoML keeps each request in a context variable. `asyncio.wait_for` queued its timer with that
    context, and asyncio keeps a cancelled timer until its deadline: every answered request (its
    uploads) stayed in memory `timeout_s` longer — most of a worker's growth under the fuzz."""
    import contextvars
    import gc
    import weakref

    request_var: contextvars.ContextVar = contextvars.ContextVar("request")

    class Request:  # stands for BentoML's request, which reaches the uploaded body
        pass

    async def handle(pool: BoundedCompute) -> weakref.ref:
        request = Request()
        request_var.set(request)
        assert await pool.run(lambda: "unlocked") == "unlocked"
        return weakref.ref(request)

    async def scenario() -> None:
        pool = BoundedCompute(threads=1, max_queued=2, timeout_s=30)
        # Another request's deadline, earlier and still running: asyncio drops cancelled timers only
        # from the head of its queue, so ours would wait behind it.
        asyncio.get_running_loop().call_later(10, lambda: None)
        ref = await asyncio.create_task(handle(pool))  # its own context, as each request has
        await asyncio.sleep(0.05)
        assert ref() is None  # answered: gone now, not 30 s from now

    gc.collect()
    gc.disable()
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()
