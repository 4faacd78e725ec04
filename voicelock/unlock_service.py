"""The voice-unlock API's logic, independent of the HTTP framework serving it.

Validates users and uploads, enrolls and verifies with `VoiceLock`, persists with `EnrollmentStore`,
and enforces the lockout. Every refusal is a VoicelockError whose `status` the HTTP layer returns.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from voicelock.audio import decode_bytes
from voicelock.enrollment import VoiceLock
from voicelock.errors import LockedOut, NotFound, TooLarge, VoicelockError
from voicelock.params import Params
from voicelock.store import EnrollmentStore

_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


class UnlockService:
    def __init__(self, lock: VoiceLock, store: EnrollmentStore, params: Params, model_tag: str,
                 clock: Callable[[], float] = time.time):
        self.lock, self.store, self.p, self.model_tag, self.clock = lock, store, params.service, model_tag, clock

    def check_user(self, user: str | None) -> str:
        user = (user or "").strip()
        if not user:
            raise VoicelockError("user: missing — send a form field 'user'")
        if len(user) > self.p.max_user_length or not _USER.match(user):
            raise VoicelockError(f"user: must be 1–{self.p.max_user_length} characters of letters, digits, "
                                 f"'_', '.', '@' or '-', starting with a letter or digit")
        return user

    def _check_size(self, name: str, blob: bytes) -> None:
        if len(blob) > self.p.max_file_bytes:
            raise TooLarge(f"{name}: {len(blob)} bytes, at most {self.p.max_file_bytes} per file")

    def enroll(self, user: str, files: list[tuple[str, bytes]]) -> dict:
        user = self.check_user(user)
        n_min, n_max = self.lock.p.min_clips, self.lock.p.max_clips
        if not n_min <= len(files) <= n_max:
            raise VoicelockError(f"files: enrollment needs {n_min}–{n_max} recordings, got {len(files)}")
        clips = []
        for name, blob in files:
            self._check_size(name, blob)
            clips.append(decode_bytes(blob, name))
        template = self.lock.enroll(clips, [name for name, _ in files])
        self.store.save(user, template, self.model_tag)
        return {"enrolled": True, "user": user, "clips": template.clips}

    def unlock(self, user: str, name: str, blob: bytes) -> dict:
        user = self.check_user(user)
        found = self.store.get(user)
        if found is None:
            raise NotFound(f"user '{user}' is not enrolled — enroll first")
        template, model = found
        if model != self.model_tag:
            raise VoicelockError(f"user '{user}' was enrolled with model {model}, the service runs "
                                 f"{self.model_tag} — enroll again")
        now = self.clock()
        failures, locked_until = self.store.failures(user)
        if locked_until > now:
            wait = math.ceil(locked_until - now)
            raise LockedOut(f"user '{user}' is locked after {self.p.lockout_failures} failed attempts — "
                            f"try again in {wait} s", wait)
        self._check_size(name, blob)
        samples, rate = decode_bytes(blob, name)
        decision = self.lock.verify(template, samples, rate, name)
        answer = {"unlocked": decision.unlocked, "user": user, "word_score": round(decision.word_score, 4),
                  "speaker_score": round(decision.speaker_score, 4), "thresholds": decision.thresholds,
                  "reason": decision.reason}
        if decision.unlocked:
            if failures or locked_until:  # write only when there is a record to clear
                self.store.reset_failures(user)
        else:
            until = self.store.record_failure(user, now, self.p.lockout_failures, self.p.lockout_seconds)
            if until:
                answer["locked_for_s"] = self.p.lockout_seconds
                answer["reason"] += f"; locked for {self.p.lockout_seconds:g} s after " \
                                    f"{self.p.lockout_failures} failed attempts"
        return answer

    def delete(self, user: str) -> dict:
        user = self.check_user(user)
        if not self.store.delete(user):
            raise NotFound(f"user '{user}' is not enrolled")
        return {"deleted": True, "user": user}
