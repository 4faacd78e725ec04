"""What BentoML alone costs: the /unlock form signature and request guard of the real service, no work.

Served by bench/framework_floor.py; the real service can be no faster than this on the same cores.
"""

from __future__ import annotations

from pathlib import Path

import bentoml

from service.middleware import RequestGuard
from voicelock.params import load_params

LIMITS = load_params().service


@bentoml.service(name="voicelock-floor", workers=2)
class Floor:
    @bentoml.api(route="/unlock")
    def unlock(self, user: str, file: Path) -> dict:
        """A sync API, as BentoML runs it: in a thread pool."""
        return {"unlocked": True, "user": user, "bytes": Path(file).stat().st_size}

    @bentoml.api(route="/unlock_async")
    async def unlock_async(self, user: str, file: Path) -> dict:
        """An async API: on the worker's event loop, no thread hand-off."""
        return {"unlocked": True, "user": user, "bytes": Path(file).stat().st_size}


# The service's own size limit; no API key (the bench measures the framework, not the key check).
Floor.add_asgi_middleware(RequestGuard, max_request_bytes=LIMITS.max_request_bytes,
                          api_key=None, form_routes={"/unlock": {"file": 1}, "/unlock_async": {"file": 1}})
