"""HTTP request metrics labelled by route template, and the /metrics answer, for `RequestGuard`.

BentoML 1.4's own traffic metrics (`RunnerTrafficMetricsMiddleware`) label every series with the raw
request path (`endpoint = scope["path"]`), and it runs outside every middleware a service adds, so
each probed path (`/users/<any name>`, `/<random>`) became a series of its own in every worker's
Prometheus files for the life of the server: /metrics grew without bound and listed every user name
ever tried. The service therefore turns BentoML's middleware off (`metrics={"enabled": False}`) and
`RequestGuard` records these instead, with `endpoint` the template of the route the request matches
(`/enroll`, `/app/config.json`, `/app/{path}`, `/users/{path}`) or `[unmatched]`, found by matching
the app's own routes the way Starlette's router does, before the guard answers, so that a request
the guard refuses is counted under the same label as one the route answers.
The label set is bounded by the routes in the code, and capped per process besides.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from timeit import default_timer

UNMATCHED = "[unmatched]"
OTHER = "[other]"  # a top-level route of an unknown kind, or beyond MAX_ENDPOINTS labels in one process
MAX_ENDPOINTS = 100
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NAMESPACE = "voicelock_http"
PATH = "/metrics"  # answered by RequestGuard itself (BentoML's own route is off with its middleware)


def route_template(scope) -> str:
    """The template of the route Starlette would route `scope` to, else UNMATCHED.

    Matches the routes of the service's Starlette app (`scope["app"]`, set before its middleware runs)
    as its router does, first full match else first partial (wrong method), and descends into Starlette
    mounts. A mounted app's route of a kind this cannot see into (FastAPI's included routers: the
    /users app's routes are included that way by BentoML) is labelled by its mount: `/users/{path}`."""
    from starlette.routing import Match, Mount, Route, WebSocketRoute

    def match(routes, scope, prefix: str) -> str | None:
        partial = None
        for route in routes:
            try:
                found, child = route.matches(scope)
            except Exception:  # noqa: BLE001 — a route that cannot judge this request does not take it
                continue
            if found is Match.NONE:
                continue
            if isinstance(route, Mount):
                inner = prefix + route.path
                label = match(route.routes, {**scope, **child}, inner) or inner + "/{path}"
            elif isinstance(route, (Route, WebSocketRoute)):
                label = prefix + route.path
            else:
                label = prefix + "/{path}" if prefix else OTHER
            if found is Match.FULL:
                return label
            partial = partial or label
        return partial

    if scope.get("path") == PATH:
        return PATH
    router = getattr(scope.get("app"), "router", None)
    return match(getattr(router, "routes", ()), scope, "") or UNMATCHED


class _Instruments:
    def __init__(self) -> None:
        import prometheus_client as pc

        labels = ["endpoint", "method", "http_response_code"]
        self.total = pc.Counter(f"{NAMESPACE}_requests", "HTTP requests answered, by route template",
                                labels, registry=None)
        self.duration = pc.Histogram(f"{NAMESPACE}_request_duration_seconds",
                                     "HTTP request duration in seconds, by route template", labels, registry=None,
                                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.in_progress = pc.Gauge(f"{NAMESPACE}_requests_in_progress", "HTTP requests being answered now",
                                    ["endpoint", "method"], registry=None, multiprocess_mode="livesum")
        # Which code and model answer: BentoML's own metrics said service_version="not available".
        self.build = pc.Gauge("voicelock_build_info", "1, labelled with the voicelock version and the served model",
                              ["version", "model"], registry=None, multiprocess_mode="max")
        self.endpoints: set[str] = set()


_instruments: dict[int, _Instruments] = {}  # by process id: one set per worker, made after it starts


def _get() -> _Instruments:
    pid = os.getpid()
    if pid not in _instruments:
        _instruments.clear()
        _instruments[pid] = _Instruments()
    return _instruments[pid]


def set_build_info(version: str, model: str) -> None:
    """Publish `voicelock_build_info{version, model} 1` from this worker (called once it has its model)."""
    _get().build.labels(version, model).set(1)


async def observe(scope, send, call: Callable[[Callable], Awaitable[None]]) -> None:
    """Run `call(send)` (the guarded app) and count its answer under the request's route template."""
    m = _get()
    endpoint = route_template(scope)
    if endpoint not in m.endpoints:
        if len(m.endpoints) >= MAX_ENDPOINTS:
            endpoint = OTHER
        m.endpoints.add(endpoint)
    method = scope.get("method", "")
    method = method if method in METHODS else "other"
    status, start, done = 500, default_timer(), False

    def record() -> None:
        nonlocal done
        if not done:
            done = True
            labels = (endpoint, method, str(status))
            m.total.labels(*labels).inc()
            m.duration.labels(*labels).observe(max(default_timer() - start, 0.0))

    async def counting_send(message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            record()

    with m.in_progress.labels(endpoint, method).track_inprogress():
        try:
            await call(counting_send)
        finally:
            record()  # no complete answer: 500 (the server's error page), or what was started


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every worker, exactly as BentoML's own /metrics view builds it."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    return client.generate_latest(), client.CONTENT_TYPE_LATEST
