"""HTTP guards in front of every route: optional API key, a request-size limit, well-formed forms, metrics.

The key and size checks act before the body is read, so an oversized or unauthenticated upload costs
the server nothing. Multipart bodies (already size-bounded) are parsed once with Starlette's own
parser before the app sees them: BentoML 1.4 answers 500 when that parser rejects a malformed form
(measured: 411 of 2,400 fuzz requests), and a client's broken form is a 400.
Forms for BentoML's API routes are then handed on rebuilt, because BentoML 1.4 mishandles two things
a client controls (`_bentoml_impl/serde.py` MultipartSerde.parse_request, `_bentoml_sdk/validators.py`
PathType.decode):
- it JSON-decodes every text field (`json.loads(v)`, the raw text only when that fails), so the user
  names 123, 1e5, true and null arrived as a number, a bool and None (400) and '"alice"' as alice.
  Rebuilt text fields are JSON strings, which BentoML decodes back to exactly the text that was sent;
- it names an upload's temporary file after the client's file name (the whole name as the suffix), so
  a name over the file system's limit was a 500. Rebuilt uploads are named `upload` plus a short
  sanitized extension.
Health, readiness, the OpenAPI docs and the browser page's static files stay open so orchestrators and
people can find the service; the page sends the key (typed by its user) with its API calls. /metrics
needs the key like the API (it reveals traffic), and its series are labelled by route template, never
by path (service/metrics_guard.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable

import anyio
import anyio.to_thread

from service import metrics_guard
from service.page import MOUNT as PAGE

OPEN_PATHS = ("/", "/healthz", "/livez", "/readyz", "/docs", "/docs/", "/docs.json", "/schema.json", PAGE)
OPEN_PREFIXES = ("/static_content/",  # the docs page's own CSS and JavaScript
                 PAGE + "/")  # the browser page (service/static): no secrets, and it must load to ask for the key
METRICS = metrics_guard.PATH
# BentoML rebuilds the OpenAPI document on every GET (the service's schema, every mounted app's routes),
# on the worker's event loop: tens of milliseconds that /healthz and every request wait behind. It
# cannot change while the worker runs, so the first answer is kept and replayed.
STATIC_DOCUMENTS = ("/docs.json", "/schema.json")
FIELD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")  # form field names passed on (they are quoted in the rebuilt form)
EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}")  # the only part of an upload's file name passed on
MAX_TEXT_FIELDS = 16  # user, challenge, …: a form with more text fields is no voicelock form
INLINE_FORM_BYTES = 256 * 1024  # larger forms are parsed off the event loop (_check_form_off_loop)
FORM_PARSER_THREADS = 2  # per worker: large forms parsed at once
MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]{1,64}/[A-Za-z0-9!#$&^_.+\-]{1,64}")


class RequestGuard:
    """ASGI middleware: 401 without the API key (when one is configured), 411/413 for unbounded or
    oversized bodies, 400/415 for malformed forms; counts every answer by route template."""

    def __init__(self, app, max_request_bytes: int, api_key: str | None,
                 form_routes: dict[str, dict[str, int]] | None = None,
                 complete_openapi: Callable[[dict], dict] | None = None):
        """`complete_openapi`: applied once to BentoML's /docs.json before it is kept (service/openapi.py)."""
        self.app = app
        self.complete_openapi = complete_openapi
        # route → {upload field: most files it may hold}; every other field is text. Counting uploads
        # before the app decodes any: 600 challenge files in one 1.6 MB request cost 2.2 GB.
        self.form_routes = form_routes or {}
        self.max_request_bytes = max_request_bytes
        self.form_parsers = anyio.CapacityLimiter(FORM_PARSER_THREADS)
        self.api_key = api_key or None
        self._api_routes: frozenset[str] | None = None
        self._documents: dict[str, tuple[list, bytes]] = {}  # path → (response headers, body) of a 200

    @property
    def api_routes(self) -> frozenset[str]:
        """BentoML's API routes, whose forms BentoML's own parser reads (known once the worker runs)."""
        if self._api_routes is None:
            from bentoml._internal.context import server_context

            self._api_routes = frozenset(self.form_routes) | frozenset(getattr(server_context, "service_routes", ()))
        return self._api_routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await metrics_guard.observe(scope, send, lambda counted_send: self._guard(scope, receive, counted_send))

    async def _guard(self, scope, receive, send):
        path = scope.get("path", "")
        method = scope.get("method")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        if self.api_key and not open_path:
            given = headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await _reject(send, 401, "missing or wrong X-API-Key header")
        if path in STATIC_DOCUMENTS and method == "GET":
            return await self._document(path, scope, receive, send)
        if path == METRICS:
            if method not in ("GET", "HEAD"):
                return await _reject(send, 405, "GET /metrics")
            body, media_type = metrics_guard.exposition()
            return await _answer(send, 200, media_type, b"" if method == "HEAD" else body, len(body))
        if method in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if "transfer-encoding" in headers:
                # Any transfer coding, with or without a Content-Length: the server frames such a body by
                # its chunks and ignores the length (RFC 9112 §6.3), so a declared 5 bytes could carry 100
                # MB past the limit below (bodies this guard does not read itself, e.g. JSON, are never
                # counted). Browsers and HTTP clients send a Content-Length for a file upload.
                return await _reject(send, 411, "send a Content-Length and no Transfer-Encoding: chunked uploads "
                                                "are not accepted")
            if length is not None:
                try:
                    size = int(length)
                except ValueError:
                    return await _reject(send, 400, "Content-Length is not a number")
                if size > self.max_request_bytes:
                    return await _reject(send, 413, f"request of {size} bytes is over the limit of "
                                                    f"{self.max_request_bytes} bytes")
            content_type = headers.get("content-type", "").lower()
            is_form = content_type.startswith("multipart/form-data")
            if path in self.form_routes and not is_form:
                return await _reject(send, 415, "send multipart/form-data (fields: user, and file or files)")
            rebuild = path in self.api_routes
            if is_form or (rebuild and content_type.startswith("application/x-www-form-urlencoded")):
                body = await _read_body(receive, self.max_request_bytes)
                if body is None:
                    return await _reject(send, 413, f"request is over the limit of {self.max_request_bytes} bytes")
                problem, rebuilt = await _check_form_off_loop(scope, body, self.form_routes.get(path, {}), rebuild,
                                                             self.form_parsers)
                if problem:
                    return await _reject(send, 400, f"malformed {'multipart ' if is_form else ''}form: {problem}")
                if rebuilt is not None:
                    body, form_type = rebuilt
                    scope = {**scope, "headers": [
                        *((k, v) for k, v in scope.get("headers", [])
                          if k.lower() not in (b"content-type", b"content-length")),
                        (b"content-type", form_type.encode()), (b"content-length", str(len(body)).encode())]}
                receive = _replay(body)
        return await self.app(scope, receive, send)


    async def _document(self, path: str, scope, receive, send) -> None:
        """A static document (the OpenAPI spec): built by the app once, then answered from memory."""
        if path not in self._documents:
            messages: list[dict] = []

            async def keep(message) -> None:
                messages.append(message)

            await self.app(scope, receive, keep)
            start = next((m for m in messages if m["type"] == "http.response.start"), None)
            body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
            if start is None or start["status"] != 200:  # an error is not worth keeping: pass it on
                for message in messages:
                    await send(message)
                return
            headers = list(start.get("headers", []))
            if path == "/docs.json" and self.complete_openapi is not None:
                body = json.dumps(self.complete_openapi(json.loads(body))).encode()
                headers = [(k, str(len(body)).encode() if k.lower() == b"content-length" else v) for k, v in headers]
            self._documents[path] = (headers, body)
        headers, body = self._documents[path]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes):
    """`receive` that hands `body` over once, then answers disconnect — and lets go of it when it does.

    This closure outlives its request by 20–40 s: asyncio keeps a cancelled timer (the compute pool's
    timeout, BentoML's traffic timeout) in its queue until the deadline, with its copy of the request's
    context variables, which reach BentoML's request and so this `receive`. Holding the whole body that
    long kept ~0.7 MB per /enroll alive (+190 MB per 300 enrollments in a worker, then kept by malloc),
    which was most of the service's memory growth under the fuzz (bench/service.py)."""
    pending = [body]

    async def receive():
        if not pending:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": pending.pop(), "more_body": False}

    return receive


async def _check_form_off_loop(scope, body: bytes, upload_fields: dict[str, int], rebuild: bool,
                               parsers: anyio.CapacityLimiter) -> tuple[str | None, tuple[bytes, str] | None]:
    """`_check_form`, on one of the `parsers` threads when the body is large.

    Parsing a form costs about 3–5 ms per MB of body on this CPU, on whichever event loop runs it: a
    20 MB upload stalled the worker's loop (and its /healthz) for 40–100 ms, over 150 ms while the
    cores were busy. Small forms — every genuine unlock — are parsed in place, where a thread would
    cost more than the parse."""
    if len(body) <= INLINE_FORM_BYTES:
        return await _check_form(scope, body, upload_fields, rebuild)
    # Shielded: a cancelled request (the traffic timeout, a shutdown) must not hand its thread slot
    # back while its thread still parses — the cap would then count threads that are long gone.
    parse = asyncio.ensure_future(anyio.to_thread.run_sync(
        lambda: asyncio.run(_check_form(scope, body, upload_fields, rebuild)), limiter=parsers))
    return await asyncio.shield(parse)


async def _check_form(scope, body: bytes, upload_fields: dict[str, int],
                      rebuild: bool) -> tuple[str | None, tuple[bytes, str] | None]:
    """(why not, None) when the form does not parse or has the wrong shape, else (None, rebuilt): the
    same fields in the same order as a new multipart body and its content type when `rebuild`.

    Upload fields must hold uploaded files, at most as many as `upload_fields` allows: BentoML 1.4
    would otherwise take a text value there for a URL and fetch it from the server (a request-forgery
    door). Every other field must be text, and there are few of them.
    """
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    request = Request(scope, _replay(body))
    try:
        form = await request.form(max_files=sum(upload_fields.values()), max_fields=MAX_TEXT_FIELDS)
    except Exception as e:  # noqa: BLE001 — any parser failure is the client's malformed form
        return str(getattr(e, "detail", e)) or type(e).__name__, None
    parts: list[tuple[bytes, bytes]] = []  # (part headers, part content)
    counts: dict[str, int] = {}
    try:
        for key, value in form.multi_items():
            is_file = isinstance(value, UploadFile)
            if key in upload_fields and not is_file:
                return f"field '{key}' must be an uploaded file", None
            if key not in upload_fields and is_file:
                return f"field '{key}' must be text, not a file", None
            counts[key] = counts.get(key, 0) + 1
            if is_file and counts[key] > upload_fields[key]:
                return f"field '{key}': at most {upload_fields[key]} files", None
            if not rebuild:
                continue
            if not FIELD_NAME.fullmatch(key):
                return f"field name {key[:40]!r}: use letters, digits, '_', '.' or '-'", None
            if is_file:
                parts.append((_upload_headers(key, value.filename, value.content_type), await value.read()))
            else:  # a JSON string: BentoML json.loads every text field, which gives back exactly `value`
                parts.append((f'Content-Disposition: form-data; name="{key}"\r\n'.encode(),
                              json.dumps(value).encode()))
    finally:
        await form.close()
    if not rebuild:
        return None, None
    boundary = secrets.token_hex(16).encode()
    while any(boundary in content for _, content in parts):  # cannot happen in practice, but costs nothing
        boundary = secrets.token_hex(16).encode()
    rebuilt = b"".join(b"--%s\r\n%s\r\n%s\r\n" % (boundary, head, content) for head, content in parts)
    return None, (rebuilt + b"--%s--\r\n" % boundary, f"multipart/form-data; boundary={boundary.decode()}")


def _upload_headers(key: str, filename: str | None, media_type: str | None) -> bytes:
    """A short, safe file name (BentoML makes it the temporary file's suffix) and a plain media type."""
    ext = os.path.splitext(filename or "")[1]
    name = "upload" + (ext.lower() if EXTENSION.fullmatch(ext) else "")
    head = f'Content-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
    media_type = (media_type or "").split(";")[0].strip()
    if MEDIA_TYPE.fullmatch(media_type):
        head += f"Content-Type: {media_type}\r\n"
    return head.encode()


async def _reject(send, status: int, message: str) -> None:
    await _answer(send, status, "application/json", json.dumps({"error": message}).encode())


async def _answer(send, status: int, media_type: str, body: bytes, length: int | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type.encode()),
                            (b"content-length", str(len(body) if length is None else length).encode())]})
    await send({"type": "http.response.body", "body": body})
