"""The voice-unlock API as a BentoML service: `bentoml serve service.service:VoiceLock`.

Thin by design: each endpoint hands the request to `voicelock.unlock_service.UnlockService` and turns
its VoicelockError into a JSON answer with the error's 4xx status. Unexpected errors are logged and
answered with a generic 500 by BentoML, never with a stack trace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
import bentoml
import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from service.middleware import RequestGuard
from service.page import MOUNT as PAGE_MOUNT, build_page_app
from voicelock.enrollment import VoiceLock as VoiceModel
from voicelock.errors import LockedOut, VoicelockError
from voicelock.params import load_params
from voicelock.runtime import limit_threads
from voicelock.store import EnrollmentStore
from voicelock.unlock_service import UnlockService

PARAMS = load_params(os.environ.get("VOICELOCK_PARAMS", "params.yaml"))
MODEL_TAG = os.environ.get("VOICELOCK_MODEL_TAG", PARAMS.service.model_tag)
log = logging.getLogger("voicelock.service")
# FastAPI's own docs pages load assets from a CDN; BentoML's page at / serves them locally and
# already lists these routes, so the sub-apps publish none of their own.
users = FastAPI(title="voicelock users", docs_url=None, redoc_url=None)
docs = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
page = build_page_app(PARAMS)  # the browser page: enroll and unlock by voice


@docs.get("/")
def _docs_page() -> RedirectResponse:
    """/docs: BentoML's OpenAPI page (Swagger UI, local assets) lives at /, its spec at /docs.json."""
    return RedirectResponse("/")


def _answer(ctx: bentoml.Context, call: Callable[[], dict]) -> dict:
    try:
        return call()
    except VoicelockError as e:
        ctx.response.status_code = e.status
        if isinstance(e, LockedOut):
            ctx.response.headers["Retry-After"] = str(int(e.retry_after_s))
        return {"error": str(e)}


@bentoml.asgi_app(page, path=PAGE_MOUNT)
@bentoml.asgi_app(docs, path="/docs")
@bentoml.asgi_app(users, path="/users")
@bentoml.service(name="voicelock", traffic={"timeout": 30}, workers=PARAMS.service.workers)
class VoiceLock:
    """Enroll a password by voice, then unlock only for the same person saying it."""

    model = bentoml.models.BentoModel(MODEL_TAG)
    if PARAMS.service.batching:  # embeddings from a separate, adaptively batching service
        from service.embedder import Embedder

        embedder = bentoml.depends(Embedder)

    def __init__(self) -> None:
        limit_threads(PARAMS.service.torch_threads)
        stored = self.model
        lock = VoiceModel(stored.path, PARAMS.enroll,
                          embedder=self._embed_batched if PARAMS.service.batching else None)
        self.word_dim = lock.model.password_out.in_features
        store = EnrollmentStore(os.environ.get("VOICELOCK_DATABASE_URL", PARAMS.service.database_url))
        self.core = UnlockService(lock, store, PARAMS, str(stored.tag))
        log.info("voicelock service ready with model %s", stored.tag)

    def _embed_batched(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(self.embedder.embed(clips=clips), dtype=np.float32)
        return rows[:, : self.word_dim], rows[:, self.word_dim:]

    @bentoml.api(route="/enroll")
    def enroll(self, user: str, files: list[Path], ctx: bentoml.Context) -> dict:
        """Enroll `user` from 3–10 recordings of their password (WAV/FLAC/OGG, any rate, mono or stereo)."""
        return _answer(ctx, lambda: self.core.enroll(
            user, [(f"file {i + 1}", Path(f).read_bytes()) for i, f in enumerate(files)]))

    @bentoml.api(route="/unlock")
    async def unlock(self, user: str, file: Path, ctx: bentoml.Context) -> dict:
        """Unlock when `file` is the enrolled user saying the enrolled password."""
        blob = Path(file).read_bytes()

        def answer() -> dict:
            return _answer(ctx, lambda: self.core.unlock(user, "file", blob))

        if PARAMS.service.batching:  # waits on the embedder service, whose client wants an AnyIO thread
            return await anyio.to_thread.run_sync(answer)
        # A few milliseconds of CPU on this worker's one torch thread: run it on the event loop. The
        # thread-pool hand-off BentoML gives a sync API costs more than it frees (measured, 1 worker,
        # 16 clients: 186–191 → 202–222 req/s; bench/framework_floor.py shows the same for a no-op).
        return answer()

    @users.delete("/{user}")
    def delete_user(self, user: str) -> JSONResponse:
        """Forget a user's enrollment and failure count."""
        try:
            return JSONResponse(self.core.delete(user))
        except VoicelockError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)


VoiceLock.add_asgi_middleware(RequestGuard, max_request_bytes=PARAMS.service.max_request_bytes,
                              api_key_env=PARAMS.service.api_key_env,
                              form_routes={"/enroll": ("files",), "/unlock": ("file",)})
