"""The voice-unlock API as a BentoML service: `bentoml serve service.service:VoiceLock`.

Thin by design: each endpoint hands the request to `voicelock.api.UnlockApi` and turns
its VoicelockError into a JSON answer with the error's 4xx/503 status. The work (decoding, network,
database) runs off the event loop through `BoundedCompute`, so /healthz answers while requests are
scored. Unexpected errors are logged and answered with a generic 500 by BentoML, never with a stack
trace.

Proof of ownership travels in headers, never in the form: `X-Unlock-Token` (from a successful
unlock) or `X-Admin-Key` (the key in the variable named by service.admin_key_env).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path

import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from service import metrics_guard
from service.compute import BoundedCompute
from service.middleware import RequestGuard
from service.openapi import document
from service.page import MOUNT as PAGE_MOUNT
from service.page import build_page_app
from service.settings import SETTINGS
from service.traffic_timeout import install as install_traffic_timeout
from voicelock import package_version
from voicelock.api import UnlockApi
from voicelock.audio import resample
from voicelock.enrollment import Unlocker
from voicelock.errors import Busy, LockedOut, VoicelockError
from voicelock.runtime import limit_threads
from voicelock.sealing import Sealer
from voicelock.store import EnrollmentStore

PARAMS = SETTINGS.params
log = logging.getLogger("voicelock.service")


def _check_database() -> None:
    """Open (create, upgrade) the database once when the module is imported — by `bentoml serve`'s
    main process before any worker starts — so a wrong or unreachable `service.database_url` stops
    the service at start with one line, instead of workers failing and restarting forever."""
    try:
        EnrollmentStore(SETTINGS.database_url).engine.dispose()
    except VoicelockError as e:
        raise SystemExit(f"error: {e}") from None


_check_database()
install_traffic_timeout()  # BentoML's own kept every request alive for traffic.timeout (service/traffic_timeout.py)
# FastAPI's own docs pages load assets from a CDN; BentoML's page at / serves them locally and
# already lists these routes, so the sub-apps publish none of their own.
users = FastAPI(title="voicelock users", docs_url=None, redoc_url=None)
docs = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
# The browser page: enroll and unlock by voice.
VOCABULARY: list[str] = []  # the served model's words, filled when the worker loads it
page = build_page_app(PARAMS, api_key_required=SETTINGS.api_key is not None, vocabulary=VOCABULARY)


@docs.get("/")
def _docs_page() -> RedirectResponse:
    """/docs: BentoML's OpenAPI page (Swagger UI, local assets) lives at /, its spec at /docs.json."""
    return RedirectResponse("/")


def _error(e: VoicelockError) -> tuple[int, dict, dict]:
    """(status, body, headers) of a refusal."""
    headers = {}
    if isinstance(e, LockedOut):
        headers["Retry-After"] = str(int(e.retry_after_s))
    elif isinstance(e, Busy):
        headers["Retry-After"] = "1"
    return e.status, {"error": str(e)}, headers


def _json(call: Callable[[], dict]) -> JSONResponse:
    """The answer of a /users route (plain FastAPI, run in its thread pool): `call`'s dict, or a refusal."""
    try:
        return JSONResponse(call())
    except VoicelockError as e:
        status, body, headers = _error(e)
        return JSONResponse(body, status_code=status, headers=headers)


def _proof(request: Request) -> dict[str, str | None]:
    return {"token": request.headers.get("x-unlock-token") or None,
            "admin_key": request.headers.get("x-admin-key") or None}


@bentoml.asgi_app(page, path=PAGE_MOUNT)
@bentoml.asgi_app(docs, path="/docs")
@bentoml.asgi_app(users, path="/users")
@bentoml.service(name="voicelock", traffic={"timeout": 30}, workers=PARAMS.service.workers,
                 metrics={"enabled": False})  # RequestGuard counts requests by route template instead
class VoiceLock:
    """Enroll a password by voice, then unlock only for the same person saying it."""

    model = bentoml.models.BentoModel(SETTINGS.model_tag)
    if PARAMS.service.batching:  # embeddings from a separate, adaptively batching service
        from service.embedder import Embedder

        embedder = bentoml.depends(Embedder)

    def __init__(self) -> None:
        # BentoML's server logging passes WARNING and up from other packages; voicelock's INFO lines
        # (model loaded, enrollments moved to a new model) belong in the operator's log too.
        logging.getLogger("voicelock").setLevel(logging.INFO)
        limit_threads(PARAMS.service.torch_threads)
        stored = self.model
        lock = Unlocker(stored.path, PARAMS.enroll, embedder=self._embed_batched if PARAMS.service.batching else None)
        self.word_dim = lock.model.word_dim
        VOCABULARY[:] = lock.vocabulary
        store = EnrollmentStore(SETTINGS.database_url)
        sealer = Sealer(SETTINGS.takes_key, PARAMS.service.takes_key_env) if SETTINGS.takes_key else None
        if sealer is None:
            log.warning("%s is not set: enrollment recordings are not kept, so after a model change every user "
                        "must enroll again", PARAMS.service.takes_key_env)
        self.core = UnlockApi(lock, store, PARAMS, str(stored.tag), admin_key=SETTINGS.admin_key, sealer=sealer,
                              model_since=stored.info.creation_time.timestamp())
        p = PARAMS.service
        self.compute = BoundedCompute(p.compute_threads, p.max_queued, p.request_timeout_s)
        # scipy's resampler takes ~1 s to import (more on a busy machine): paid now, not by the worker's
        # first upload at another rate than 16 kHz (3.1 s in CI when it was).
        resample(np.zeros(441, dtype=np.float32), 44100, 16000)
        # Everything loaded so far (torch, the model, BentoML, pydantic schemas) lives as long as the
        # worker: out of the garbage collector's sight, a full collection no longer walks it, which
        # otherwise paused the event loop (and /healthz) for tens of milliseconds at a time.
        gc.collect()
        gc.freeze()
        metrics_guard.set_build_info(package_version(), str(stored.tag))
        log.info("voicelock service ready with model %s (%s)", stored.tag, lock.model_id)

    def _embed_batched(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(self.embedder.embed(clips=clips), dtype=np.float32)
        return rows[:, : self.word_dim], rows[:, self.word_dim:]

    async def _answer(self, ctx: bentoml.Context, call: Callable[[], dict]) -> dict:
        """Run `call` on the bounded compute pool; a VoicelockError becomes its status and message."""
        try:
            return await self.compute.run(call)
        except VoicelockError as e:
            ctx.response.status_code, body, headers = _error(e)
            ctx.response.headers.update(headers)
            return body

    @bentoml.api(route="/enroll")
    async def enroll(self, user: str, files: list[Path], ctx: bentoml.Context) -> dict:
        """Enroll `user` from 3–10 recordings of their password (WAV/FLAC/OGG, any rate, mono or stereo).

        A name already enrolled is replaced only with proof of ownership: header X-Unlock-Token (the
        token of a successful unlock, single use) or X-Admin-Key; otherwise 409 (no proof) or 403. A
        deleted user's name is retired: only X-Admin-Key enrolls it again (409 otherwise)."""
        proof = _proof(ctx.request)
        return await self._answer(ctx, lambda: self.core.enroll(
            user, [(f"file {i + 1}", Path(f).read_bytes()) for i, f in enumerate(files)], **proof))

    @bentoml.api(route="/challenge")
    async def challenge(self, user: str, ctx: bentoml.Context) -> dict:
        """A liveness challenge (service.liveness: challenge): 1–3 words to say after the password,
        single use, expiring. Send its id as `challenge` and one take per word, in order, as
        `challenge_files` to /unlock."""
        return await self._answer(ctx, lambda: self.core.challenge(user))

    @bentoml.api(route="/unlock")
    async def unlock(self, user: str, file: Path, ctx: bentoml.Context, challenge: str = "",
                     challenge_files: list[Path] = []) -> dict:  # noqa: B006 — a pydantic default, never mutated
        """Unlock when `file` is the enrolled user saying the enrolled password (and, with liveness on,
        `challenge_files` are the same voice saying the challenge's words). A successful unlock returns
        a single-use `token`: the proof of ownership that re-enrolling or deleting the user needs."""
        def call() -> dict:
            extra = [(f"challenge file {i + 1}", Path(f).read_bytes()) for i, f in enumerate(challenge_files or [])]
            return self.core.unlock(user, "file", Path(file).read_bytes(), challenge or None, extra)

        return await self._answer(ctx, call)

    @users.get("/{user}/lock")
    def lock_status(self, user: str) -> JSONResponse:
        """Whether `user` is locked out after failed attempts (`locked_for_s` > 0), for any name."""
        return _json(lambda: self.core.lock_status(user))

    @users.delete("/{user}")
    def delete_user(self, user: str, request: Request) -> JSONResponse:
        """Forget a user's enrollment; needs header X-Unlock-Token (from a successful unlock) or X-Admin-Key.
        The name stays taken (service.retire_deleted_names) until the administrator enrolls it."""
        return _json(lambda: self.core.delete(user, **_proof(request)))


def _complete_openapi(spec: dict) -> dict:
    return document(spec, package_version(), SETTINGS.model_tag, api_key=SETTINGS.api_key is not None)


VoiceLock.add_asgi_middleware(RequestGuard, max_request_bytes=PARAMS.service.max_request_bytes,
                              api_key=SETTINGS.api_key, complete_openapi=_complete_openapi,
                              form_routes={"/enroll": {"files": PARAMS.enroll.max_clips},
                                           "/unlock": {"file": 1, "challenge_files": PARAMS.service.challenge_words}})
