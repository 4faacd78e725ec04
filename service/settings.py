"""Everything the service reads from outside itself, read in one place, once per process.

BentoML builds the service class when its module is imported (workers, model tag and batching are
decorator arguments), so the settings are loaded at import time — here, and nowhere else:

- `VOICELOCK_PARAMS`: the params file (default params.yaml in the working directory);
- `VOICELOCK_MODEL_TAG`: the BentoML model to serve instead of `service.model_tag`;
- `VOICELOCK_DATABASE_URL`: the enrollment store instead of `service.database_url`;
- the variables params.yaml names for the secrets: `service.api_key_env` (the API key),
  `service.admin_key_env` (the admin key) and `service.takes_key_env` (the key that seals enrollment
  recordings, voicelock/sealing.py). Secrets never live in params.yaml, which is committed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from voicelock.params import Params, load_params
from voicelock.promotion import served_model_tag


@dataclass(frozen=True)
class Settings:
    params: Params
    model_tag: str
    database_url: str
    api_key: str | None  # None: no key configured, the API is open
    admin_key: str | None  # None: no admin override of the proof-of-ownership rule
    takes_key: str | None  # None: enrollment recordings are not kept; a model change needs re-enrollment

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        params = load_params(environ.get("VOICELOCK_PARAMS", "params.yaml"))
        service = params.service
        return cls(params=params,
                   model_tag=served_model_tag(params, environ),
                   database_url=environ.get("VOICELOCK_DATABASE_URL") or service.database_url,
                   api_key=environ.get(service.api_key_env) or None,
                   admin_key=environ.get(service.admin_key_env) or None,
                   takes_key=environ.get(service.takes_key_env) or None)


SETTINGS = Settings.from_environment()
