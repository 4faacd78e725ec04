"""The one accept rule: how a template is built, how a probe is scored against it, and what unlocks.

Everything that decides or reports an unlock goes through `Verifier`: `Unlocker.verify` (CLI and
service), the evaluation's FAR/FRR on validation, test and unseen voices, and the owner's figures. So
what the metrics report is, by construction, what the service does: there is no second formula to
drift from the first.

Every rule fails closed: a NaN compares false with everything, so each check is written as
"accept only if score >= threshold", never "refuse if score < threshold".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from voicelock.errors import VoicelockError
from voicelock.scoring import SpeakerScorer

# The thresholds a release must carry before anything may be decided with it.
REQUIRED_THRESHOLDS = ("word", "word_margin", "speaker", "speaker_raw", "replay", "challenge_word", "speaker_any_word")


def unit(v: np.ndarray) -> np.ndarray:
    """Unit length along the last axis (a zero vector stays zero)."""
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


def make_template(word: np.ndarray, speaker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Enrollment takes' (N, Dw) word and (N, Ds) speaker embeddings → the unit-length centroid in each
    space: what an enrolled password is, for the service and the evaluation alike."""
    return unit(np.asarray(word, dtype=np.float32).mean(axis=0)), unit(np.asarray(speaker, dtype=np.float32).mean(axis=0))


class Verifier:
    """Scores probes against a template and applies the calibrated thresholds.

    `thresholds` may be None while they are being calibrated (scores only); `accepts` then refuses to
    decide. `word_templates`: one unit template per vocabulary word (the release's training-speaker
    means): the other words a password must win against (`rival_templates`)."""

    def __init__(self, scorer: SpeakerScorer, thresholds: Mapping[str, float] | None = None,
                 word_templates: Mapping[str, np.ndarray] | None = None):
        self.scorer = scorer
        self.thresholds = dict(thresholds) if thresholds is not None else None
        vocabulary = [np.asarray(t, dtype=np.float32).reshape(-1) for t in (word_templates or {}).values()]
        if len({v.size for v in vocabulary}) > 1 or not all(np.all(np.isfinite(v)) for v in vocabulary):
            raise VoicelockError("the release's word templates are damaged (non-finite, or of several sizes) — "
                                 "re-run the evaluate stage (dvc repro evaluate)")
        self.vocabulary = np.stack([unit(v) for v in vocabulary]) if vocabulary else np.zeros((0, 0), np.float32)

    def rival_templates(self, t_word: np.ndarray) -> np.ndarray:
        """The vocabulary's word templates a probe of this password must score below: all but the one
        nearest the password's template — that one is the password's own word when the password is a
        vocabulary word (which the service is never told). For a password outside the vocabulary it
        is the nearest other word, which is then checked by the word threshold alone (as every word
        was before this rule). No vocabulary, no rivals."""
        if not self.vocabulary.size:
            return np.zeros((0, np.size(t_word)), dtype=np.float32)
        if self.vocabulary.shape[1] != np.size(t_word):
            raise VoicelockError(f"the password template has {np.size(t_word)} dimensions, the release's word "
                                 f"templates {self.vocabulary.shape[1]}: they come from different models")
        nearest = int(np.argmax(self.vocabulary @ unit(np.asarray(t_word, dtype=np.float32).reshape(-1))))
        return np.delete(self.vocabulary, nearest, axis=0)

    @property
    def replay_shifts(self) -> tuple[int, ...]:
        """The delays (samples at the model's rate) at which a remembered take is fingerprinted
        (voicelock/replay.py): what the replay threshold was calibrated with. A release calibrated
        before shift sets has none recorded and remembers each take as it came, (0,)."""
        shifts = (self.thresholds or {}).get("replay_shifts", [0])
        if (not isinstance(shifts, (list, tuple)) or not shifts or shifts[0] != 0
                or not all(type(s) is int and 0 <= s <= 1600 for s in shifts)):
            raise VoicelockError(f"the release's replay_shifts {shifts!r} are damaged (need whole samples, 0 first, "
                                 f"at most 1600) — re-run the evaluate stage (dvc repro evaluate)")
        return tuple(shifts)

    @property
    def replay_band_hz(self) -> float:
        """The cut of the band-limited view a take is also fingerprinted in (voicelock/replay.py
        `band_limited`), 0 for none: what the replay threshold was calibrated with. A release calibrated
        before the view has none recorded."""
        band = (self.thresholds or {}).get("replay_band_hz", 0)
        if type(band) not in (int, float) or not (band == 0 or 500 <= band <= 24000):
            raise VoicelockError(f"the release's replay_band_hz {band!r} is damaged (need 0, or 500–24000 Hz) — "
                                 f"re-run the evaluate stage (dvc repro evaluate)")
        return float(band)

    def threshold(self, name: str) -> float:
        if self.thresholds is None or name not in self.thresholds:
            raise VoicelockError(f"no calibrated '{name}' threshold — use the evaluated model (models/release)")
        return float(self.thresholds[name])

    def scores(self, t_word: np.ndarray, t_speaker: np.ndarray, word: np.ndarray, speaker: np.ndarray,
               speaker_stats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """N probes' embeddings against one template → (N,) word scores (cosine to the word centroid),
        (N,) speaker scores (the scorer's: AS-norm or cosine), (N,) raw speaker cosines and (N,) rival
        scores (the probe's cosine to the nearest `rival_templates`; -inf when there are none).
        `speaker_stats`: the probes' `SpeakerScorer.probe_stats`, when many templates meet the same
        probes (evaluation trials)."""
        word = unit(np.asarray(word, dtype=np.float32).reshape(-1, np.size(t_word)))
        word_scores = word @ unit(np.asarray(t_word, dtype=np.float32).reshape(-1))
        rivals = self.rival_templates(t_word)
        rival_scores = (word @ rivals.T).max(axis=1) if len(rivals) else np.full(len(word), -np.inf, np.float32)
        t_speaker, speaker = unit(np.asarray(t_speaker, dtype=np.float32)), unit(np.asarray(speaker, dtype=np.float32))
        return (word_scores, self.scorer(t_speaker, speaker, speaker_stats), speaker @ t_speaker.reshape(-1),
                rival_scores)

    def accepts(self, word_scores: np.ndarray, speaker_scores: np.ndarray, raw_scores: np.ndarray,
                rival_scores: np.ndarray) -> np.ndarray:
        """The password rule: the right word *and* the right voice, each at its threshold.

        The word must also be nearer the password than any other vocabulary word, by `word_margin`
        (cosine). Why: the word threshold is set on the validation voices, and for an accent unlike
        theirs the owner's other words come closer to the password (unseen voices: the owner saying
        another word got in 2.4–3.1× the target FAR); a word that is nearer "down" than the password
        "dog" is "down", however high its score. Unseen voices' owner + other word FAR 0.0031 →
        0.0021 for FRR 0.027 → 0.030 on the shipped release (0.0024 → 0.0014, FRR 0.0435 → 0.0454, on
        the release before; docs/decisions.md).

        The voice must clear two: the normalised score (`speaker`, calibrated for the target FAR) and
        a floor on the raw cosine (`speaker_raw`). Why the floor: AS-norm divides by how a template
        scores against its nearest cohort voices, and a voice unlike every training voice has no near
        cohort — its impostors' normalised scores inflate (measured on unseen voices: FAR 0.0071 with
        AS-norm alone, 0.0035 with the floor, while in-domain FRR fell 0.139 → 0.089)."""
        passed = self.password_checks(word_scores, speaker_scores, raw_scores, rival_scores)
        return passed["word"] & passed["word_margin"] & passed["speaker"] & passed["speaker_raw"]

    def password_checks(self, word_scores: np.ndarray, speaker_scores: np.ndarray, raw_scores: np.ndarray,
                        rival_scores: np.ndarray) -> dict[str, np.ndarray]:
        """Each part of the password rule on its own, keyed by its threshold's name: `accepts` needs
        all of them, and `Unlocker.verify` names the ones that failed."""
        margin = np.asarray(word_scores, dtype=np.float64) - np.asarray(rival_scores, dtype=np.float64)
        return {"word": np.asarray(word_scores) >= self.threshold("word"),
                "word_margin": margin >= self.threshold("word_margin"),
                "speaker": np.asarray(speaker_scores) >= self.threshold("speaker"),
                "speaker_raw": np.asarray(raw_scores) >= self.threshold("speaker_raw")}

    def is_replay(self, similarity: float, single: bool = False) -> bool:
        """One part of the replay rule in the full band: a take as close as its threshold to one
        already heard (NaN counts as a replay). `single`: the similarity is to a remembered take's own
        fingerprint (voicelock/replay.py, `stored_rows`), judged at `replay_single` — `replay` in a
        release without sets. Decisions use `replays` (or `replay_checks`), which apply every part."""
        return not similarity < self.replay_threshold(single)

    def replay_threshold(self, single: bool = False) -> float:
        """The threshold of one full-band part of the replay rule (`is_replay`)."""
        return self.threshold("replay_single" if single and "replay_single" in (self.thresholds or {}) else "replay")

    def replay_checks(self, to_sets: float, to_own: float, to_band: float) -> dict[str, bool]:
        """Each part of the replay rule on its own, keyed by its threshold's name: `replays` refuses
        when any fires, and `Unlocker.verify` refuses the same way and names the ones that fired.

        `to_sets`: a take's closest similarity to every remembered fingerprint in the full band,
        shifted copies included; `to_own`: to the remembered takes' own (unshifted) fingerprints and
        the request's earlier takes; `to_band`: its band-limited view's to the remembered takes' views
        (voicelock/replay.py `replay_similarities`; judged only in a release with that view). Why
        apart: a shifted copy of a take is a near neighbour of a genuine new take too, so the sets are
        judged at the looser `replay`, while a take's own fingerprint — which only a copy of that
        recording comes as close to — is judged at the tighter `replay_single`; and genuine takes come
        closer below the view's cut than in the full band, so the view has its own `replay_band`."""
        checks = {"replay": self.is_replay(to_sets), "replay_single": self.is_replay(to_own, single=True)}
        if self.replay_band_hz:
            checks["replay_band"] = not to_band < self.threshold("replay_band")
        return checks

    def replays(self, to_sets: float, to_own: float, to_band: float) -> bool:
        """The replay rule: a take is a replay when any part fires (`replay_checks`, which
        `Unlocker.verify` reads to name the part). `Unlocker.replays_any` (the check for a recording
        accepted twice at once), enrollment's check for copies among its takes, the evaluation's
        `replay_false_refusals` and bench/unseen_level.py and bench/replay_edits.py ask this."""
        return any(self.replay_checks(to_sets, to_own, to_band).values())

    def challenge_word_ok(self, asked_score: float, asked_is_nearest: bool) -> bool:
        """A challenge take holds the asked word: nearest word template, and above its threshold."""
        return bool(asked_is_nearest and asked_score >= self.threshold("challenge_word"))

    def challenge_voice_ok(self, speaker_score: float) -> bool:
        """A challenge take (another word than the password) is in the enrolled voice."""
        return bool(speaker_score >= self.threshold("speaker_any_word"))

    def is_voice_of(self, reference: np.ndarray, voice: np.ndarray, takes: np.ndarray) -> bool:
        """A re-enrollment is `reference`'s voice: its takes' mean `voice` *and* each take `takes` (N, D)
        score as a challenge take in that voice must (`challenge_voice_ok`). Each take, not only the
        mean: a mean of two owner takes and three of another voice passed (`Unlocker.same_voice`)."""
        scores = self.scorer(reference, np.concatenate([voice[None, :], takes]))
        return bool(np.all(np.isfinite(scores)) and all(self.challenge_voice_ok(float(s)) for s in scores))
