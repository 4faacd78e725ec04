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
