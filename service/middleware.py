"""HTTP guards in front of every route: optional API key and a request-size limit.

Both act before the body is read, so an oversized or unauthenticated upload costs the server nothing.
Health, readiness and the OpenAPI docs stay open so orchestrators and people can find the service.
"""

from __future__ import annotations

import hmac
import json
import os

OPEN_PATHS = ("/", "/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs/", "/docs.json", "/schema.json")
OPEN_PREFIXES = ("/static_content/",)  # the docs page's own CSS and JavaScript


class RequestGuard:
    """ASGI middleware: 401 without the API key (when one is configured), 411/413 for unbounded or
    oversized bodies."""

    def __init__(self, app, max_request_bytes: int, api_key_env: str):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.api_key = os.environ.get(api_key_env) or None
        self.api_key_env = api_key_env

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        if self.api_key and not open_path:
            given = headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await _reject(send, 401, "missing or wrong X-API-Key header")
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is None:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    return await _reject(send, 411, "send a Content-Length: chunked uploads are not accepted")
            else:
                try:
                    size = int(length)
                except ValueError:
                    return await _reject(send, 400, "Content-Length is not a number")
                if size > self.max_request_bytes:
                    return await _reject(send, 413, f"request of {size} bytes is over the limit of "
                                                    f"{self.max_request_bytes} bytes")
        return await self.app(scope, receive, send)


async def _reject(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
