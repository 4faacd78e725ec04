"""The voice-unlock API's logic, independent of the HTTP framework serving it.

Validates users and uploads, enrolls and verifies with `Unlocker` (the one verifier), persists with
`EnrollmentStore`, and enforces every account rule: proof of ownership to replace or delete an
enrollment, the atomic lockout, replay memory, liveness challenges, and answers that tell a caller no
more than it needs. Every refusal is a VoicelockError whose `status` the HTTP layer returns.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import re
import time
from collections.abc import Callable

import numpy as np

from voicelock.audio import DecodeLimits, decode_bytes
from voicelock.enrollment import NOT_RECOGNISED, ChallengeTake, Decision, Template, Unlocker, anchor_recordings
from voicelock.errors import Busy, LockedOut, NotFound, TooLarge, VoicelockError
from voicelock.liveness import draw_challenge
from voicelock.params import Params
from voicelock.sealing import Sealer
from voicelock.store import TOKEN_INVALID, Conflict, EnrollmentStore, Forbidden, already_enrolled, retired

log = logging.getLogger(__name__)
# Letters, digits and _ . @ -, starting with a letter or digit: no whitespace, no path or SQL syntax.
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
MIN_ADMIN_KEY = 16  # characters: guessing is unthrottled on a 403, so the key must be long


class UnlockApi:
    def __init__(self, lock: Unlocker, store: EnrollmentStore, params: Params, model_tag: str,
                 clock: Callable[[], float] = time.time, admin_key: str | None = None,
                 sealer: Sealer | None = None, model_since: float = 0.0):
        """`model_tag` names the served model in the audit log; `sealer` (the takes key) keeps each
        enrollment's recordings encrypted so that a later model can re-embed them; `model_since` is
        when the served model was promoted (templates move only to newer models)."""
        self.lock, self.store, self.p, self.model_tag, self.clock = lock, store, params.service, model_tag, clock
        self.model_since = model_since
        self.sealer = sealer
        self.admin_key = admin_key or None
        if self.admin_key and len(self.admin_key) < MIN_ADMIN_KEY:
            raise VoicelockError(f"{self.p.admin_key_env}: the admin key is {len(self.admin_key)} characters — use at "
                                 f"least {MIN_ADMIN_KEY} random ones (e.g. `openssl rand -hex 16`), or unset it")
        self.limits = DecodeLimits(max_seconds=params.enroll.max_duration_s, min_rate=self.p.min_sample_rate,
                                   max_rate=self.p.max_sample_rate, max_channels=self.p.max_channels)
        # An unknown user's probe is scored against this decoy, so that the answer takes as long as a
        # wrong voice's and an attacker cannot tell from timing who is enrolled. It never unlocks.
        self._decoy = lock.decoy_template()

    # --- input checks -----------------------------------------------------------------------------

    def check_user(self, user: str | None) -> str:
        """The name exactly as sent: whitespace is refused, never trimmed (" alice " is not alice)."""
        if not user:
            raise VoicelockError("user: missing — send a form field 'user'")
        if len(user) > self.p.max_user_length or not _USER.fullmatch(user):
            raise VoicelockError(f"user: must be 1–{self.p.max_user_length} characters of letters, digits, "
                                 f"'_', '.', '@' or '-', starting with a letter or digit (no spaces)")
        return user

    def _decode(self, name: str, blob: bytes) -> tuple[np.ndarray, int]:
        if len(blob) > self.p.max_file_bytes:
            raise TooLarge(f"{name}: {len(blob)} bytes, at most {self.p.max_file_bytes} per file")
        return decode_bytes(blob, name, self.limits)

    def _is_admin(self, admin_key: str | None) -> bool:
        """True for the right admin key, False when none is sent; a wrong one is refused outright."""
        if not admin_key:
            return False
        if not (self.admin_key and hmac.compare_digest(admin_key.encode(), self.admin_key.encode())):
            raise Forbidden("X-Admin-Key: wrong, or no admin key is configured on this service")
        return True

    # --- endpoints --------------------------------------------------------------------------------

    def enroll(self, user: str, files: list[tuple[str, bytes]], token: str | None = None,
               admin_key: str | None = None) -> dict:
        """Enroll a new user; replacing an enrollment needs proof (see `EnrollmentStore.save`)."""
        return self._audited("enroll", user, lambda: self._enroll(user, files, token, admin_key))

    def _enroll(self, user: str, files: list[tuple[str, bytes]], token: str | None, admin_key: str | None) -> dict:
        user = self.check_user(user)
        n_min, n_max = self.lock.p.min_clips, self.lock.p.max_clips
        if not n_min <= len(files) <= n_max:
            raise VoicelockError(f"files: enrollment needs {n_min}–{n_max} recordings, got {len(files)}")
        names = [name for name, _ in files]
        clips = [self._decode(name, blob) for name, blob in files]
        for (samples, rate), name in zip(clips, names):  # cheap: bad recordings are told apart first, as
            self.lock.check(samples, rate, name)  # for a free name, before the proof says the name is taken
        admin = self._is_admin(admin_key)
        found = self.store.get(user) if not admin else None
        # The proof first, before any recording is embedded (an enrollment costs an embedding per take
        # and replay shift): without a valid token nothing is compared either, so a forged token cannot
        # be used to learn whether a voice passes for the owner's (both would answer differently).
        # This only refuses early: the token is spent, atomically, before the voices are compared.
        if found is not None and not token:
            raise Conflict(already_enrolled(user))
        if found is None and not admin and self.store.is_retired(user):  # `save` checks again, atomically
            raise Conflict(retired(user))
        if found is not None and not self.store.token_valid(user, token, self.clock()):
            raise Forbidden(TOKEN_INVALID)
        template = self.lock.enroll(clips, names, self.sealer)
        template.model_since = self.model_since
        current = None  # the enrollment a token re-enrollment was compared with
        if found is not None:
            # An unlock token proves someone opened the lock — perhaps with a recording of the owner —
            # not that they may give the account to another voice. The enrolled voice is compared in
            # this model's space (re-made from its recordings if it was enrolled with another model).
            # The token is spent first, in one atomic statement: of any number of requests carrying it
            # at once, one is compared and the rest are refused before comparing (spent after a
            # mismatch, two workers compared two mixes on one token), so one unlock buys one comparison.
            # Bad recordings were refused above, at no cost to the token.
            current = self._current(user, found)
            if not self.store.spend_token(user, token, self.clock()):
                raise Forbidden(TOKEN_INVALID)
            if not self.lock.same_voice(current, template):
                raise Forbidden("these recordings are not the enrolled voice — an unlock token re-enrolls the same "
                                "voice only, every recording of it (the token is now used up): unlock again for a "
                                "new token and record every take anew; changing the voice needs the "
                                "administrator's X-Admin-Key")
            # A token never moves the anchor, nor drops its recordings (a promotion re-makes it from them).
            template.anchor = current.anchor or current.speaker
            template.anchor_sealed_takes = (current.anchor_sealed_takes if current.anchor
                                            else anchor_recordings(current.speaker, current.sealed_takes))
        # With the token spent, stored only over the enrollment the voices were compared with.
        replaced = self.store.save(user, template, self.clock(), token, admin, compared_with=current,
                                   earlier_keep=self.p.replay_history, same_take=self.p.replay_same_take)
        return {"enrolled": True, "user": user, "clips": template.clips, "replaced": replaced}

    def challenge(self, user: str) -> dict:
        """A single-use, expiring liveness challenge: words to say after the password.

        Issuing one is what charges the unlock attempt (see `charge_attempt`): were challenges free, an
        attacker holding some recordings of the owner would draw again and again until the words were
        ones they hold. Answered alike for every name (no enumeration), from the whole vocabulary:
        leaving out the user's password word would tell who is enrolled, and with what word.
        """
        if self.p.liveness != "challenge":
            raise VoicelockError("liveness challenges are off on this service (service.liveness: off) — unlock "
                                 "with the password take alone")
        user = self.check_user(user)
        now = self.clock()
        self._charge(user, now)
        words = draw_challenge(self.lock.vocabulary, self.p.challenge_words)
        challenge_id = self.store.open_challenge(user, words, now, self.p.challenge_seconds,
                                                 self.p.max_open_challenges)
        return {"challenge": challenge_id, "words": words, "expires_in_s": self.p.challenge_seconds}

    def unlock(self, user: str, name: str, blob: bytes, challenge_id: str | None = None,
               challenge_files: list[tuple[str, bytes]] | None = None) -> dict:
        """Decide one unlock. Order matters: cheap refusals first (they are no guess), then the attempt
        is charged atomically — by this request, or with liveness on by the challenge it spends — and
        only then scored, so no number of concurrent requests scores more than `lockout_failures`
        guesses per lockout window."""
        return self._audited("unlock", user, lambda: self._unlock(user, name, blob, challenge_id, challenge_files))

    def _unlock(self, user: str, name: str, blob: bytes, challenge_id: str | None,
                challenge_files: list[tuple[str, bytes]] | None) -> dict:
        user = self.check_user(user)
        now = self.clock()
        if self.p.liveness == "challenge":
            takes = self._challenge_takes(user, challenge_id, challenge_files or [], now)
            samples, rate = self._decode(name, blob)
        else:
            if challenge_id or challenge_files:
                raise VoicelockError("challenge: liveness challenges are off on this service — send the password "
                                     "take alone")
            _, locked_until = self.store.lock_state(user)
            if locked_until > now:
                raise self._locked(user, locked_until - now)
            samples, rate, takes = *self._decode(name, blob), []
        for n, x, r in [(name, samples, rate)] + [(t.name, t.samples, t.rate) for t in takes]:
            self.lock.check(x, r, n)
        found = self.store.get(user)
        if found is None and self.p.explain:
            raise NotFound(f"user '{user}' was deleted; only the administrator can enroll the name again"
                           if self.store.is_retired(user) else f"user '{user}' is not enrolled — enroll first")
        if self.p.liveness != "challenge":
            self._charge(user, now)  # before any re-embedding: that work is only done for a charged attempt
        if found is not None:
            try:
                found = self._current(user, found)
            except Conflict as e:
                if self.p.explain:
                    raise
                # Stranded on another model: without explain the caller gets what a wrong voice gets
                # (a 409 for enrolled names only would list them); the operator's log says why.
                log.warning("unlock of %r refused: %s", user, e)
                found = None
        template = found or self._decoy
        recent = self.store.heard_recently(user, self.p.replay_history)
        decision = self.lock.verify(template, samples, rate, name, recent, takes)
        unlocked = decision.unlocked and found is not None  # the decoy never unlocks
        if unlocked:
            raced = self.store.remember(user, decision.fingerprints, now, self.p.replay_history,
                                        self.lock.remembered(decision))
            unlocked = not self.lock.replays_any(decision, raced)
        # The proof of this unlock, only while the enrollment it was decided against is still the stored
        # one: one replaced meanwhile (an administrator's recovery) opens nothing (`issue_token`).
        token = self.store.issue_token(user, now, self.p.proof_token_seconds, verified=template) if unlocked else None
        unlocked = token is not None
        answer: dict = {"unlocked": unlocked, "user": user}
        if unlocked:
            self.store.clear_failures(user)
            answer["token"] = token
            answer["token_expires_in_s"] = self.p.proof_token_seconds
        else:
            answer["reason"] = NOT_RECOGNISED
            _, locked_until = self.store.lock_state(user)
            if locked_until > now:
                wait = math.ceil(locked_until - now)
                answer["locked_for_s"] = wait
                answer["reason"] += f"; locked for {wait} s after {self.p.lockout_failures} failed attempts"
        if self.p.explain:
            answer.update(self._explain(decision))
        return answer

    def lock_status(self, user: str) -> dict:
        """Whether `user` is locked out, and for how long: so that the page says so before asking for a
        recording. It tells nothing new: an unlock attempt says the same (429) before it is charged,
        and any name, enrolled or not, has a lockout state."""
        user = self.check_user(user)
        _, locked_until = self.store.lock_state(user)
        return {"user": user, "locked_for_s": max(0, math.ceil(locked_until - self.clock()))}

    def delete(self, user: str, token: str | None = None, admin_key: str | None = None) -> dict:
        """Forget a user; needs proof of ownership, and says nothing about unknown names without it."""
        return self._audited("delete", user, lambda: self._delete(user, token, admin_key))

    def _delete(self, user: str, token: str | None, admin_key: str | None) -> dict:
        user = self.check_user(user)
        if not self.store.delete(user, self.clock(), token, self._is_admin(admin_key), self.p.retire_deleted_names,
                                 keep=self.p.replay_history):
            raise NotFound(f"user '{user}' is not enrolled")
        # Said, so that the caller knows the name cannot simply be enrolled again.
        return {"deleted": True, "user": user, "name_retired": self.p.retire_deleted_names}

    # --- helpers ----------------------------------------------------------------------------------

    def _audited(self, action: str, user: str | None, call: Callable[[], dict]) -> dict:
        """Run one decision and append it to the audit log (`EnrollmentStore.record`): the outcome and
        the reason the caller was given — never audio, embeddings or scores, even with `explain` on."""
        try:
            answer = call()
        except VoicelockError as e:
            self._record(action, user, f"refused {e.status}", str(e))
            raise
        except Exception:
            self._record(action, user, "error", "internal error")
            raise
        if action == "unlock":
            outcome, reason = ("unlocked", "password and voice match") if answer["unlocked"] else \
                ("refused", answer["reason"])
        elif action == "enroll":
            outcome, reason = ("replaced" if answer["replaced"] else "enrolled"), f"{answer['clips']} clips"
        else:
            outcome, reason = "deleted", "proof of ownership given"
        self._record(action, user, outcome, reason)
        return answer

    def _record(self, action: str, user: str | None, outcome: str, reason: str) -> None:
        try:
            self.store.record(action, user or "", outcome, reason, self.model_tag, self.clock(),
                              self.p.audit_max_rows)
        except Exception:  # noqa: BLE001 — the decision stands; the log says the audit row is missing
            log.exception("audit: could not record %s of %r (%s)", action, user, outcome)

    def _current(self, user: str, enrolled: Template) -> Template:
        """The user's template in the served model's space. One enrolled with an earlier model is
        re-made from its sealed recordings and stored (once: the next request finds it current); one
        labelled with the served tag by voicelock ≤ 0.1 is the same model and only relabelled. When
        neither is possible the user must enroll again (Conflict); when the template belongs to a newer
        model than this replica serves, it is left alone (Busy). One of the served model whose takes are
        remembered without this release's replay views (enrolled before the band-limited view) is
        re-fingerprinted from its sealed recordings, its replay memory kept (the same model's)."""
        if enrolled.model == self.lock.model_id:
            if self.lock.remembers_as_released(enrolled) or not enrolled.sealed_takes or self.sealer is None:
                return enrolled  # without its recordings it keeps the views it has (README, known limits)
            try:
                renewed = self.lock.reembed(enrolled, self.sealer, anchor=False)
            except VoicelockError as e:  # its recordings cannot be opened: the views it has still judge
                log.warning("could not re-fingerprint the enrollment of %r: %s", user, e)
                return enrolled
            # The same model's space: the anchor stays as it is, whether or not its recordings were kept.
            renewed.anchor, renewed.anchor_sealed_takes = enrolled.anchor, enrolled.anchor_sealed_takes
            renewed.model_since = enrolled.model_since
            if self.store.upgrade(user, renewed, enrolled, self.clock(), forget_heard=False):
                log.info("re-fingerprinted the enrollment of %r for this release's replay views", user)
                return renewed
            stored = self.store.get(user)
            if stored is None or stored.model != self.lock.model_id:
                raise Conflict(f"user '{user}' changed while being moved to this release — try again")
            return stored
        if enrolled.model_since > self.model_since:
            # Made by a model promoted after ours: another replica already serves it (a rolling
            # deploy). Moving the template back would undo that, and each move forgets the replay memory.
            raise Busy(f"user '{user}' was moved to a newer model than this replica serves — retry")
        same_model = enrolled.model == self.model_tag  # voicelock ≤ 0.1 recorded the served tag
        if same_model:
            renewed = dataclasses.replace(enrolled, model=self.lock.model_id)
        else:
            try:
                renewed = self.lock.reembed(enrolled, self.sealer)
            except VoicelockError as e:
                raise Conflict(f"user '{user}' was enrolled with another model than the service runs and "
                               f"cannot be moved to it ({e}) — enroll again (with the administrator's "
                               f"X-Admin-Key)") from None
        renewed.model_since = self.model_since
        # The same model's fingerprints stay comparable; another model's compare with nothing.
        if self.store.upgrade(user, renewed, enrolled, self.clock(), forget_heard=not same_model):
            if not same_model:
                log.info("re-embedded the enrollment of %r with model %s", user, self.lock.model_id)
            return renewed
        # Someone else changed the row meanwhile (another worker moved it, an administrator re-enrolled
        # or deleted the user): decide on what is stored now, never on the stale template.
        stored = self.store.get(user)
        if stored is None or stored.model != self.lock.model_id:
            raise Conflict(f"user '{user}' changed while being moved to this model — try again")
        return stored

    def _charge(self, user: str, now: float) -> None:
        charge = self.store.charge_attempt(user, now, self.p.lockout_failures, self.p.lockout_seconds,
                                           self.p.lockout_max_seconds)
        if not charge.allowed:
            raise self._locked(user, charge.locked_until - now)

    def _challenge_takes(self, user: str, challenge_id: str | None, files: list[tuple[str, bytes]],
                         now: float) -> list[ChallengeTake]:
        """Spend the challenge (single use), then decode exactly one take per challenge word — nothing
        is decoded for an unknown challenge or the wrong number of takes."""
        if not challenge_id:
            raise VoicelockError("challenge: this service needs a liveness challenge — POST /challenge first, then "
                                 "send its id as 'challenge' and one take per word as 'challenge_files'")
        words = self.store.take_challenge(user, challenge_id, now)
        if words is None:
            raise VoicelockError("challenge: unknown, already used or expired — POST /challenge for a new one")
        if len(files) != len(words):
            raise VoicelockError(f"challenge_files: the challenge asks for {len(words)} word(s) ({', '.join(words)}), "
                                 f"got {len(files)} take(s) — the challenge is used up, ask for a new one")
        return [ChallengeTake(w, *self._decode(n, b), n) for w, (n, b) in zip(words, files)]

    def _locked(self, user: str, wait_s: float) -> LockedOut:
        wait = max(1, math.ceil(wait_s))
        return LockedOut(f"user '{user}' is locked after {self.p.lockout_failures} failed attempts — try again in "
                         f"{wait} s", wait)

    @staticmethod
    def _explain(decision: Decision) -> dict:
        return {"word_score": round(decision.word_score, 4), "speaker_score": round(decision.speaker_score, 4),
                "thresholds": decision.thresholds, "reason_detail": decision.reason, **decision.details}

