"""Enrollment recordings kept encrypted at rest, so that a promoted model can re-embed them.

Why keep them at all: a template is an embedding of one model and means nothing to the next one, so
without the recordings every promotion would force every user to enroll again (the weekly retrain
would lock everyone out). Why encrypted: they are the user's voice saying their password. They are
sealed with Fernet (the `cryptography` package: AES-128-CBC with an HMAC-SHA256, so a changed byte
is detected, never decoded) under a key read from the environment (the variable named by
`service.takes_key_env`), which is never in the repository or the database: a stolen database holds
templates and ciphertext only.

The recordings are sealed as the network saw them (mono, scaled into [-1, 1], at the model's sample
rate) in 16-bit PCM. No key, a wrong key or a damaged blob never decides anything: that user is
asked to enroll again (voicelock/api.py), which is where they would be without this module.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np
from cryptography.fernet import Fernet, InvalidToken

from voicelock.errors import VoicelockError

MAX_SEALED_CLIPS = 10  # an enrollment holds at most enroll.max_clips (≤ 10) recordings


class Sealer:
    """Seals and opens enrollment recordings with one Fernet key."""

    def __init__(self, key: str, env_name: str):
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise VoicelockError(
                f"{env_name}: not a Fernet key (32 url-safe base64-encoded bytes) — make one with `python -c "
                f"\"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\"` and keep it "
                f"as safe as the database backups; or unset it (then a model change needs re-enrollment)") from None
        self.env_name = env_name

    @classmethod
    def from_environment(cls, env_name: str, environ: Mapping[str, str] = os.environ) -> "Sealer | None":
        """The sealer of the key in `env_name`, or None when the variable is unset or empty."""
        key = environ.get(env_name)
        return cls(key, env_name) if key else None

    def seal(self, clips: list[np.ndarray], rate: int) -> bytes:
        """Encrypt prepared clips (float32 in [-1, 1] at `rate`)."""
        buffer = io.BytesIO()
        pcm = {f"clip{i}": np.round(np.clip(c, -1.0, 1.0) * 32767).astype(np.int16) for i, c in enumerate(clips)}
        np.savez(buffer, rate=np.int64(rate), **pcm)
        return self._fernet.encrypt(buffer.getvalue())

    def open(self, blob: bytes) -> tuple[list[np.ndarray], int]:
        """The clips and their rate; VoicelockError when the key is not the one that sealed them or the
        blob was changed."""
        try:
            data = self._fernet.decrypt(blob)
        except InvalidToken:
            raise VoicelockError(f"sealed recordings: cannot be opened with the key in {self.env_name} (another "
                                 f"key sealed them, or they were changed)") from None
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = sorted((n for n in archive.files if n.startswith("clip")), key=lambda n: int(n[4:]))
            if not 0 < len(names) <= MAX_SEALED_CLIPS:
                raise VoicelockError(f"sealed recordings: {len(names)} clips, expected 1–{MAX_SEALED_CLIPS}")
            clips = [archive[n].astype(np.float32) / 32767.0 for n in names]
            rate = int(archive["rate"])
        return clips, rate
