"""The browser page at /app/: enroll a password by voice and unlock, served by the same `bentoml serve`.

The page is static HTML/JS/CSS from `service/static/` (no build step, no CDN) plus one generated
file, `config.json`, so its recording settings and the enrollment limits come from params.yaml and
are never written twice. A strict Content-Security-Policy lets the page load and talk to this origin
only; the microphone needs a secure context, which http://127.0.0.1 and http://localhost count as.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from voicelock.params import Params

STATIC = Path(__file__).parent / "static"
MOUNT = "/app"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def page_config(params: Params, api_key_required: bool, vocabulary: list[str] | None = None) -> dict:
    """What the page needs to record takes the service will accept, from params.yaml: also whether
    unlocking needs a liveness challenge (so the Unlock button asks for one first), whether answers
    carry scores (explain), so the page shows scores only when the service sends them, and the words
    the served model knows (a password should be one of them; /challenge draws from them too)."""
    page, enroll, service = params.page, params.enroll, params.service
    return {
        **page.model_dump(),
        "sample_rate": params.data.sample_rate,
        "min_clips": enroll.min_clips,
        "max_clips": enroll.max_clips,
        "max_user_length": service.max_user_length,
        "api_key_required": api_key_required,
        "explain": service.explain,
        "liveness": service.liveness,
        "challenge_words": service.challenge_words,
        "vocabulary": sorted(vocabulary or []),
    }


def build_page_app(params: Params, api_key_required: bool, vocabulary: list[str] | None = None) -> FastAPI:
    """`vocabulary`: a list the service fills once its model is loaded (the page app is built first)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    vocabulary = vocabulary if vocabulary is not None else []

    @app.middleware("http")
    async def _security_headers(request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/config.json")
    def _config() -> dict:
        return page_config(params, api_key_required, vocabulary)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app
