"""The OpenAPI document the service publishes at /docs.json, completed with what BentoML cannot know.

BentoML derives each route's schema from the Python signature; our endpoints answer a dict (so that a
refusal can carry its own status), which it documents as `additionalProp1`, and it knows nothing of the
status codes, the proof-of-ownership headers or the API key. The typed answers below are the contract;
`document` writes them, every status code and the headers into the spec once per worker (the guard
keeps the result, service/middleware.py), and tests/test_service_http.py checks real answers against
the same models, so the page cannot drift from what the service sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrollAnswer(_Answer):
    enrolled: bool = Field(description="always true: a refusal is an error status")
    user: str
    clips: int = Field(description="recordings in the template")
    replaced: bool = Field(description="true when an existing enrollment was replaced (with proof of ownership)")


class UnlockAnswer(_Answer):
    unlocked: bool
    user: str
    token: str | None = Field(None, description="on unlock: single-use proof of ownership for X-Unlock-Token")
    token_expires_in_s: float | None = Field(None, description="on unlock: seconds the token stays valid")
    reason: str | None = Field(None, description="on refusal: 'not recognised' (and the lockout, if one began)")
    locked_for_s: int | None = Field(None, description="on refusal: seconds the user is now locked for")
    # Only with service.explain: true (development): scores and thresholds, a search oracle otherwise.
    word_score: float | None = None
    speaker_score: float | None = None
    thresholds: dict[str, float] | None = None
    reason_detail: str | None = None
    replay_similarity: float | None = None
    speaker_raw: float | None = None


class ChallengeAnswer(_Answer):
    challenge: str = Field(description="send back as form field 'challenge' to /unlock")
    words: list[str] = Field(description="say these, in order, one recording each ('challenge_files')")
    expires_in_s: float


class DeleteAnswer(_Answer):
    deleted: bool
    user: str
    name_retired: bool = Field(description="the name stays taken: only X-Admin-Key enrolls it again "
                                           "(service.retire_deleted_names)")


class LockAnswer(_Answer):
    user: str
    locked_for_s: int = Field(description="seconds until the user may try again; 0 when not locked")


class ErrorAnswer(_Answer):
    error: str = Field(description="what was wrong and how to fix it (never a stack trace)")


COMMON_ERRORS = {
    "400": "bad input: a missing field, an unreadable, silent, too short or too long recording, a bad user name",
    "401": "the X-API-Key header is missing or wrong (only when the service has an API key)",
    "411": "no Content-Length",
    "413": "the request or one recording is larger than the service accepts",
    "415": "not multipart/form-data, or an upload outside the upload fields",
    "503": "the service is busy (too many requests queued) or a request took too long: retry later; never an unlock",
}
ROUTES: dict[tuple[str, str], tuple[type[_Answer], dict[str, str]]] = {
    ("/enroll", "post"): (EnrollAnswer, {
        "403": "X-Unlock-Token is wrong, used or expired, the recordings are another voice, or X-Admin-Key is wrong",
        "409": "the user is already enrolled: unlock first and send its token as X-Unlock-Token; or the name "
               "was deleted and is retired (service.retire_deleted_names): only X-Admin-Key enrolls it"}),
    ("/unlock", "post"): (UnlockAnswer, {
        "404": "unknown user (only with service.explain: true; otherwise the answer is a refusal)",
        "409": "enrolled with another model whose recordings could not be re-embedded: enroll again",
        "429": "locked out after too many failed attempts: wait Retry-After seconds"}),
    ("/challenge", "post"): (ChallengeAnswer, {
        "429": "locked out after too many failed attempts: wait Retry-After seconds"}),
    ("/users/{user}/lock", "get"): (LockAnswer, {}),
    ("/users/{user}", "delete"): (DeleteAnswer, {
        "403": "no valid proof of ownership (X-Unlock-Token or X-Admin-Key)",
        "404": "not enrolled (answered only to a valid proof)"}),
}
PROOF_HEADERS = {
    "X-Unlock-Token": "the token of this user's last successful unlock (single use): proof of ownership",
    "X-Admin-Key": "the administrator's key (service.admin_key_env): proof of ownership for any user",
}


def document(spec: dict[str, Any], version: str, model: str, api_key: bool) -> dict[str, Any]:
    """`spec` (BentoML's) with typed answers, every status code, the proof headers and the API key."""
    info = spec.setdefault("info", {})
    info.update(title="voicelock", version=version,
                description=f"Voice unlock: the right person saying the right password. Model {model}.")
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model_cls in (EnrollAnswer, UnlockAnswer, ChallengeAnswer, DeleteAnswer, LockAnswer, ErrorAnswer):
        schemas[model_cls.__name__] = model_cls.model_json_schema(ref_template="#/components/schemas/{model}")
    if api_key:
        spec["components"].setdefault("securitySchemes", {})["ApiKey"] = {
            "type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": "the key in the variable named by service.api_key_env"}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}
    for (path, method), (answer, errors) in ROUTES.items():
        operation = spec.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        operation["responses"] = {
            "200": {"description": "OK", "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{answer.__name__}"}}}},
            **{code: {"description": why, "content": error}
               for code, why in sorted({**COMMON_ERRORS, **errors}.items())}}
        if path in ("/enroll", "/users/{user}"):
            params = operation.setdefault("parameters", [])
            params += [{"name": name, "in": "header", "required": False, "schema": {"type": "string"},
                        "description": why} for name, why in PROOF_HEADERS.items()]
        if api_key:
            operation["security"] = [{"ApiKey": []}]
    return spec
