"""Enrollment and unlock, with no retraining: templates in both embedding spaces.

`enroll` turns 3–10 clips of one person saying one password into a template (per-head centroids)
and refuses enrollments that disagree; `verify` is the one place that decides an unlock — CLI,
service and tests all call it. It unlocks only when both scores clear the thresholds calibrated at
evaluation, the probe is no copy of a recording already heard (voicelock/replay.py), and, when a
liveness challenge is given, every challenge take is the asked word in the enrolled voice
(voicelock/liveness.py).

Every decision fails closed: audio is checked finite and scaled into [-1, 1] before features, and a
non-finite embedding or score raises VoicelockError (a 4xx at the service) instead of deciding —
NaN compares false with everything, so a `score < threshold` refusal rule would let NaN through.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from voicelock.audio import as_recorded, at_model_rate, read_wav
from voicelock.errors import VoicelockError
from voicelock.liveness import template_scores
from voicelock.model.network import inference_copy
from voicelock.params import EnrollParams
from voicelock.release import Release
from voicelock.replay import (
    band_limited,
    decode,
    encode,
    fingerprints,
    max_similarity,
    remembered_set,
    replay_similarities,
    speaker_halves,
    stored_rows,
    views,
)
from voicelock.sealing import Sealer
from voicelock.served_network import ServedNetwork
from voicelock.verifier import REQUIRED_THRESHOLDS, make_template, unit

log = logging.getLogger(__name__)


@dataclass
class Template:
    """An enrolled password: unit-length centroids of the enrollment clips in each space."""

    word: list[float]
    speaker: list[float]
    clips: int
    # Fingerprints of the enrollment takes (voicelock/replay.py): a replayed take is refused.
    takes: list[list[float]] = field(default_factory=list)
    model: str = ""  # the `Unlocker.model_id` that made it ("" in templates of voicelock ≤ 0.1)
    # The enrollment recordings, encrypted (voicelock/sealing.py); "" when no key was set. Base64 in
    # a template file; the service keeps them in the database's `sealed_takes` column instead.
    sealed_takes: str = ""
    # When the model that made it was promoted (seconds since the epoch; 0: unknown, e.g. the CLI's):
    # a service serving an older model must not move the template back (voicelock/api.py: _current).
    model_since: float = 0.0
    # Each take's fingerprint set at the release's replay shifts (`replay.encode`), when it has them: a
    # copy padded by a few ms is still the take. Beside `takes`, which older voicelocks read alone.
    take_sets: list[str] = field(default_factory=list)
    # The voice of the last enrollment made without an unlock token (a new name, or the administrator's),
    # as a speaker centroid; [] when that is this template's own `speaker`. A token re-enrollment keeps
    # it and must match it too (`Unlocker.same_voice`), so the voice cannot be walked away step by step.
    anchor: list[float] = field(default_factory=list)
    # The anchor's enrollment recordings, sealed (as `sealed_takes`) after a digest of the anchor
    # (`anchor_recordings`), when the anchor is not this template's own voice and a takes key was set:
    # a model promotion re-makes the anchor from them, so a template walked part of the way before a
    # promotion is still held to the voice it started from.
    anchor_sealed_takes: str = ""
    # The takes of the enrollments this one replaced (same model), newest first, as the replay memory
    # stores takes (encoded sets, or JSON fingerprints): a tester re-enrolled and then unlocked with
    # each take of the enrollment before. Kept here, not among the accepted unlocks (`heard`): re-enrolling
    # again and again must not push the accepted unlocks out of their `replay_history` window.
    earlier_takes: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            raise VoicelockError(f"{path}: is a folder — give the template a file name, e.g. {path / 'me.json'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        record = asdict(self)
        # Fields added after voicelock 0.1, left out when empty: such a file stays readable by older ones.
        for added in ("take_sets", "anchor", "anchor_sealed_takes", "earlier_takes"):
            if not record[added]:
                del record[added]
        path.write_text(json.dumps(record))

    @classmethod
    def load(cls, path: str | Path) -> "Template":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise VoicelockError(f"{path}: template not found — run `voicelock enroll` first") from None
        except (json.JSONDecodeError, TypeError) as e:
            raise VoicelockError(f"{path}: not a voicelock template ({e})") from None


# The coarse reason a refusal gives without `service.explain` (no score, no which-check-failed).
NOT_RECOGNISED = "not recognised"


@dataclass
class Decision:
    unlocked: bool
    word_score: float
    speaker_score: float
    thresholds: dict[str, float]
    reason: str  # which checks failed, with scores: for the owner of the system, never an attacker
    # Every take's fingerprint (password first, then challenge takes), as heard: what a concurrent
    # unlock's takes are compared with (voicelock/api.py).
    fingerprints: list[list[float]] = field(default_factory=list, repr=False)
    # …and each take's band-limited view's (voicelock/replay.py `band_limited`; empty for a release
    # without one): the rest of what the replay rule compares.
    band_fingerprints: list[list[float]] = field(default_factory=list, repr=False)
    # The takes as the network heard them (prepared clips): what `Unlocker.remembered` fingerprints at
    # the replay shifts when the caller keeps a replay memory (the service does; the CLI does not).
    heard: list[np.ndarray] = field(default_factory=list, repr=False)
    details: dict[str, float | str] = field(default_factory=dict)

    def explain(self) -> dict:
        """Everything but the fingerprints: for the CLI and a service with `explain: true`."""
        return {f.name: (dict(value) if isinstance(value := getattr(self, f.name), dict) else value)
                for f in fields(self) if f.name not in ("fingerprints", "band_fingerprints", "heard")}


def anchor_recordings(anchor: list[float], sealed: str) -> str:
    """What `Template.anchor_sealed_takes` keeps: the sealed recordings of the anchor, prefixed by a
    digest of the anchor they were enrolled as ("" without recordings). Why the digest: a replica of the
    previous voicelock rewrites the anchor but not the recordings (an administrator's enrollment there,
    then a token re-enrollment, sets a new anchor beside the old recordings); recordings whose digest
    is not the template's anchor's are ignored (`anchor_recordings_of`), never taken for its voice."""
    return _anchor_digest(anchor) + ":" + sealed if sealed else ""


def _anchor_digest(anchor: list[float]) -> str:
    return hashlib.sha256(json.dumps([float(x) for x in anchor]).encode()).hexdigest()[:32]


def anchor_recordings_of(template: Template) -> str:
    """The template's anchor's sealed recordings, or "" when it has none that are its anchor's."""
    digest, _, sealed = (template.anchor_sealed_takes or "").partition(":")
    if not (template.anchor and sealed):
        return ""
    if _anchor_digest(template.anchor) != digest:
        log.warning("the anchor's recordings are not of this template's anchor (rewritten by an older "
                     "voicelock): ignored")
        return ""
    return sealed


@dataclass
class ChallengeTake:
    """One take answering a liveness challenge: the word asked for and the recording."""

    word: str
    samples: np.ndarray
    rate: int
    name: str


Embedder = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]


def _recording(path: str | Path) -> Path:
    """A recording the user named: a missing file and a folder are told apart from a broken file."""
    path = Path(path)
    if not path.exists():
        raise VoicelockError(f"{path}: no such file — check the path (it is read from the current folder)")
    if path.is_dir():
        raise VoicelockError(f"{path}: is a folder — name the recordings themselves, e.g. {path}/*.wav")
    return path


def take_agreements(emb: np.ndarray) -> np.ndarray:
    """Each take's cosine to the mean of the others (rows of unit embeddings): how `enroll` tells a
    take of another word or voice among them."""
    total = emb.sum(axis=0)
    return np.array([float(emb[i] @ unit(total - emb[i])) for i in range(len(emb))])


def _check_clips(rate: int) -> list[np.ndarray]:
    """Clips the served graph must score as the network does: noise bursts of a few lengths (two
    shorter than the network's window, one longer), so that short and full frame counts and the
    trimming of a long clip are all in the check."""
    rng = np.random.default_rng(0)
    clips = []
    for seconds in (0.2, 0.55, 1.0, 1.7):
        n = int(seconds * rate)
        envelope = np.sin(np.linspace(0, np.pi, n)) ** 2
        clips.append((0.3 * envelope * rng.standard_normal(n)).astype(np.float32))
    return clips


class Unlocker:
    """A trained model ready to enroll and verify raw clips (any sample rate, mono).

    `embedder` replaces the in-process embedding (features + network), e.g. with a call to a
    separate service that batches clips from many requests (service/embedder.py)."""

    def __init__(self, model_dir: str | Path, enroll_params: EnrollParams, embedder: Embedder | None = None):
        release = Release.load(model_dir, "cpu")
        # BatchNorms folded; the same function as the release's network, float rounding aside. It is
        # what the served graph is traced from and checked against, not what runs an unlock.
        self.model = inference_copy(release.model)
        # Templates record it; one made with another model is re-made from its recordings or refused.
        self.model_id = release.model_id
        self.embedder = embedder
        self.sample_rate = release.sample_rate
        self.extractor = release.extractor()
        # Every embedding here runs through ONNX Runtime (voicelock/served_network.py: why, and the
        # check that the graph is this network before it may decide anything).
        checks = self.extractor.from_arrays(_check_clips(self.sample_rate))
        # The traced function: the weights and feature parameters (`model_id`) and the network's build
        # (dilations, pooling… are no weights) — the key under which a process may reuse the graph.
        build = json.dumps([self.model_id, release.meta.get("model_params")], sort_keys=True)
        self.network = ServedNetwork(self.model, build, checks)
        self.thresholds: dict[str, float] = release.thresholds
        # Speaker scores as calibrated: AS-norm against the cohort shipped with the model, or raw cosine.
        self.scorer = release.scorer
        self.verifier = release.verifier
        # Speaker-independent word templates, for liveness challenges.
        self.word_templates: dict[str, np.ndarray] = release.word_templates
        self.p = enroll_params
        # A fingerprint's length (the word and the scored speaker embedding, which the back-end may
        # shorten): how remembered sets are read back. Measured (by the served graph's load check), not
        # derived from the parameters.
        self.fingerprint_dim = sum(self.network.dims)

    @property
    def vocabulary(self) -> list[str]:
        """The words a liveness challenge may ask for: those the model has a template of."""
        return list(self.word_templates)

    def decoy_template(self) -> Template:
        """A template in this model's spaces that no voice matches (the negated embedding of a quiet
        noise clip): the service scores an unknown user's probe against it so the answer takes as
        long as a real refusal. Callers must still never unlock on it."""
        noise = np.random.default_rng(0).normal(0, 0.01, self.sample_rate).astype(np.float32)
        word, speaker = self.embed_here([noise])
        return Template((-unit(word[0])).tolist(), (-unit(speaker[0])).tolist(), 0, model=self.model_id)

    def check(self, samples: np.ndarray, rate: int, name: str) -> None:
        """Refuse clips that cannot hold a spoken word (non-finite, too short or long, silent).

        Cheap: the service runs it before it charges an attempt, so such a clip never counts as a guess.
        """
        if not np.all(np.isfinite(samples)):
            raise VoicelockError(f"{name}: audio contains NaN or infinite samples")
        # Length and level are judged on what the network will hear: within full scale, and without
        # the digital silence it never hears.
        samples = as_recorded(samples, rate, self.extractor.params.digital_silence_s)
        duration = samples.size / rate if rate else 0.0
        if duration < self.p.min_duration_s:
            raise VoicelockError(f"{name}: too short ({duration:.2f} s, need at least {self.p.min_duration_s} s)")
        if duration > self.p.max_duration_s:
            raise VoicelockError(f"{name}: too long ({duration:.2f} s, at most {self.p.max_duration_s} s)")
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if rms < self.p.min_rms:
            raise VoicelockError(f"{name}: no speech (level {rms:.4f} below {self.p.min_rms}) — speak closer "
                                 f"to the microphone")

    def prepare(self, samples: np.ndarray, rate: int, name: str) -> np.ndarray:
        """`check`, then scale into [-1, 1] and resample to the model's rate.

        Float WAV/FLAC may carry any finite value: a clip scaled by 1e20 overflowed the network to NaN.
        A clip whose peak is above full scale is scaled back to it, so the network only ever sees audio
        in [-1, 1].
        """
        samples = np.asarray(samples, dtype=np.float32)
        self.check(samples, rate, name)
        # polyphase resampling: bounded cost at any rate
        return at_model_rate(samples, rate, self.sample_rate, self.extractor.params.digital_silence_s)

    def embed(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Word and speaker embeddings of prepared clips (model sample rate)."""
        return self.embedder(clips) if self.embedder else self.embed_here(clips)

    @torch.no_grad()
    def embed_here(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """`embed` in this process: features and network on as many threads as torch is set to."""
        return self.network(*self.extractor.from_arrays(clips))

    def embed_checked(self, clips: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`embed`, refusing any clip whose embedding is not finite: such a clip must never decide."""
        word, speaker = self.embed(clips)
        for i, name in enumerate(names):
            if not (np.all(np.isfinite(word[i])) and np.all(np.isfinite(speaker[i]))):
                raise VoicelockError(f"{name}: the recording could not be scored (non-finite embedding) — "
                                     f"record it again")
        return word, speaker

    def band_views(self, prepared: list[np.ndarray]) -> list[np.ndarray]:
        """The takes' band-limited views (voicelock/replay.py `band_limited`), none for a release without."""
        band = self.verifier.replay_band_hz
        return [band_limited(clip, self.sample_rate, band) for clip in prepared] if band else []

    def embed_views(self, prepared: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`embed_checked` of the takes, and the fingerprints of their band-limited views ((0, D) for a
        release without), in one call: what the replay rule compares a take by."""
        band = self.band_views(prepared)
        word, speaker = self.embed_checked(prepared + band, names + names[: len(band)])
        n = len(prepared)
        return word[:n], speaker[:n], fingerprints(word[n:], speaker[n:])

    def fingerprint_sets(self, prepared: list[np.ndarray], fps: np.ndarray, band_fps: np.ndarray,
                         names: list[str]) -> list[np.ndarray]:
        """Each prepared take's fingerprints in the rows `views` gives (voicelock/replay.py): at the
        release's `replay_shifts`, then its band-limited view at them — the take's own fingerprint
        `fps[i]` (and its view's, `band_fps[i]`) where shift 0 is: how the take is remembered. Costs
        one embedding per delay, view and take, so it runs only for takes that will be remembered
        (enrollment, an unlock)."""
        shifts, band = self.verifier.replay_shifts, self.verifier.replay_band_hz
        sets = []
        for i, (clip, name) in enumerate(zip(prepared, names, strict=True)):
            at_zero = [fps[i]] + ([band_fps[i]] if band else [])
            if len(shifts) == 1:
                sets.append(np.stack(at_zero))
                continue
            # one take a call (14 clips at the shipped shifts and view), within the batching embedder's
            # max_batch_size (service/embedder.py)
            copies = views(clip, shifts[1:], self.sample_rate, band)
            late = fingerprints(*self.embed_checked(copies, [name] * len(copies)))
            sets.append(remembered_set(np.stack(at_zero), late.reshape(len(at_zero), len(shifts) - 1, -1)))
        return sets

    def enroll(self, clips: list[tuple[np.ndarray, int]], names: list[str] | None = None,
               sealer: Sealer | None = None) -> Template:
        """Template from 3–10 (samples, rate) clips of one person saying one password; with a `sealer`,
        the prepared recordings are sealed into it (voicelock/sealing.py) for a later model to re-embed."""
        names = names or [f"clip {i + 1}" for i in range(len(clips))]
        if not self.p.min_clips <= len(clips) <= self.p.max_clips:
            raise VoicelockError(f"enrollment needs {self.p.min_clips}–{self.p.max_clips} clips, got {len(clips)}")
        prepared = [self.prepare(x, r, n) for (x, r), n in zip(clips, names)]
        template = self.template_of(prepared, names)
        if sealer is not None:
            template.sealed_takes = sealer.seal(prepared, self.sample_rate).decode()
        return template

    def template_of(self, prepared: list[np.ndarray], names: list[str], checked: bool = True) -> Template:
        """Template from prepared clips. `checked`: refuse takes that are copies of each other or
        disagree (a different word or voice) — a new enrollment's checks; recordings that passed them
        once and are re-embedded by a new model (`checked=False`) are not judged again."""
        word, speaker, band_fps = self.embed_views(prepared, names)
        fps = fingerprints(word, speaker)
        if checked:  # the cheap checks first: the sets cost an embedding per shift, view and take
            self._check_no_copies([fp[None, :] for fp in fps], [fp[None, :] for fp in fps], names, single=True)
            self._check_takes_agree(word, speaker, names)
        sets = self.fingerprint_sets(prepared, fps, band_fps, names)
        if checked:
            self._check_no_copies([self._views(fps, band_fps, i) for i in range(len(fps))], sets, names)
        t_word, t_speaker = make_template(word, speaker)
        remembers_sets = len(self.verifier.replay_shifts) > 1 or self.verifier.replay_band_hz
        return Template(t_word.tolist(), t_speaker.tolist(), len(prepared), fps.tolist(), self.model_id,
                        take_sets=[encode(s) for s in sets] if remembers_sets else [])

    def _check_no_copies(self, probes: list[np.ndarray], sets: list[np.ndarray], names: list[str],
                         single: bool = False) -> None:
        """No take is a copy of another: each take's fingerprints (`probes[i]`, (V, D): its views)
        against every other take's set, judged as `verify` judges a take against remembered ones
        (`single`: each take's own fingerprint against the other's, at `replay_single`)."""
        for i in range(len(names)):
            for j in range(i):
                # either take may be the padded copy of the other: each against the other's set
                if (self.verifier.is_replay(float(np.max(sets[j] @ probes[i][0])), single=True) if single else
                        self.replays_take(probes[i], [sets[j]]) or self.replays_take(probes[j], [sets[i]])):
                    raise VoicelockError(f"{names[i]} is the same recording as {names[j]} — record every take "
                                         f"anew")

    def _check_takes_agree(self, word: np.ndarray, speaker: np.ndarray, names: list[str]) -> None:
        """Every take says the same word in the same voice as the others."""
        for space, emb, minimum in (("word", word, self.p.min_word_agreement),
                                    ("speaker", speaker, self.p.min_speaker_agreement)):
            for name, agreement in zip(names, take_agreements(emb), strict=True):
                if not agreement >= minimum:  # NaN refuses too
                    what = "a different word" if space == "word" else "a different voice"
                    raise VoicelockError(f"{name} does not match the others ({what}: {space} agreement "
                                         f"{agreement:.2f} < {minimum}) — record it again")

    def verify(self, template: Template, samples: np.ndarray, rate: int, name: str = "clip",
               recent: list[str] | None = None,
               challenge: list[ChallengeTake] | None = None) -> Decision:
        """Decide one unlock: the password take (and the takes of a liveness challenge, if given)
        against a template.

        Unlocks only when every check passes: the password's word and speaker scores clear their
        thresholds; no take is a copy of an enrollment take, of a `recent` accepted probe or of
        another take in the request; and each challenge take is its asked word (nearest word template,
        above `challenge_word`) in the enrolled voice (above `speaker_any_word`). A non-finite
        embedding or score raises instead of deciding.
        """
        challenge = challenge or []
        names = [name] + [c.name for c in challenge]
        prepared = [self.prepare(samples, rate, name)] + [self.prepare(c.samples, c.rate, c.name) for c in challenge]
        if template.model != self.model_id:  # its vectors would be read in spaces they do not live in
            raise VoicelockError(f"the template was made with model {template.model or '(unrecorded)'}, this is "
                                 f"{self.model_id} — re-make it from its sealed recordings (`reembed`) or enroll again")
        word, speaker, band_fps = self.embed_views(prepared, names)
        if (len(template.word), len(template.speaker)) != (word.shape[1], speaker.shape[1]):
            raise VoicelockError(f"the template has {len(template.word)}/{len(template.speaker)}-dimensional "
                                 f"word/speaker centroids but this model embeds into {word.shape[1]}/"
                                 f"{speaker.shape[1]}: it is damaged or of another model — enroll again")
        th, rule = self.thresholds, self.verifier
        word_scores, speaker_scores, raw_scores, rival_scores = rule.scores(
            np.asarray(template.word), np.asarray(template.speaker), word, speaker)
        word_score, speaker_score, raw_score = float(word_scores[0]), float(speaker_scores[0]), float(raw_scores[0])
        fps = fingerprints(word, speaker)
        kept = template.take_sets or template.takes  # the takes' sets where the template has them
        # a value that is not a list (in any field) is damaged: one NaN row, a refusal
        kept = kept if isinstance(kept, list) and isinstance(template.take_sets, list) else [None]
        kept = kept + (template.earlier_takes if isinstance(template.earlier_takes, list) else [None])
        heard, own, in_band = self._memory(kept + list(recent or []))
        # Each take against every remembered fingerprint of the full band, shifted copies included
        # (`replay`), against the remembered takes' own fingerprints and the request's earlier takes
        # (`replay_single`), and in its band-limited view against theirs (`replay_band`).
        replay = replay_single = replay_band = -1.0
        for i in range(len(fps)):
            to_sets, to_own, to_band = replay_similarities(self._views(fps, band_fps, i), heard, own, in_band)
            replay = max(replay, to_sets)
            replay_single = max(replay_single, to_own, max_similarity(fps[i], fps[:i]))
            earlier_band = max_similarity(band_fps[i], band_fps[:i]) if len(band_fps) else -1.0
            replay_band = max(replay_band, to_band, earlier_band)
        # A damaged remembered take (one full-band NaN row) makes `replay` and `replay_single` +inf (a
        # refusal); anything else must be finite.
        rival_score = float(rival_scores[0])  # -inf: no other word to lose to
        if not (np.isfinite(word_score) and np.all(np.isfinite(speaker_scores)) and np.isfinite(raw_score)
                and not np.isnan(rival_score) and not np.isnan([replay, replay_single, replay_band]).any()):
            raise VoicelockError(f"{name}: the recording could not be scored (non-finite score) — record it again")
        reasons = []
        password = (word_scores[:1], speaker_scores[:1], raw_scores[:1], rival_scores[:1])
        if not rule.accepts(*password)[0]:
            # The rule refused; say which part (the owner's explanation, never an attacker's).
            passed = rule.password_checks(*password)
            failed = {"word": f"wrong password (word score {word_score:.3f} < {th['word']:.3f})",
                      "word_margin": f"wrong password (nearer another word: {word_score:.3f} against "
                                     f"{rival_score:.3f}, margin {th['word_margin']:.3f})",
                      "speaker": f"voice not recognised (speaker score {speaker_score:.3f} < {th['speaker']:.3f})",
                      "speaker_raw": f"voice not recognised (raw similarity {raw_score:.3f} < "
                                     f"{th['speaker_raw']:.3f})"}
            reasons.append("; ".join(why for check, why in failed.items() if not passed[check][0])
                           or "password and voice not accepted")
        fired = rule.replay_checks(replay, replay_single, replay_band)
        if fired["replay"]:
            reasons.append(f"replayed recording (similarity {replay:.4f} to one already heard ≥ {th['replay']:.4f})")
        if fired["replay_single"]:
            reasons.append(f"replayed recording (similarity {replay_single:.4f} to a take already heard ≥ "
                           f"{rule.replay_threshold(single=True):.4f})")
        if fired.get("replay_band"):
            reasons.append(f"replayed recording (similarity {replay_band:.4f} below {rule.replay_band_hz:g} Hz to one "
                           f"already heard ≥ {th['replay_band']:.4f})")
        details: dict[str, float | str] = {"replay_similarity": round(replay, 4),
                                           "replay_similarity_single": round(replay_single, 4),
                                           "speaker_raw": round(raw_score, 4)}
        if len(band_fps):
            details["replay_similarity_band"] = round(replay_band, 4)
        if np.isfinite(rival_score):  # the nearest other word's score (absent without a vocabulary)
            details["word_rival"] = round(rival_score, 4)
        if challenge:
            if not self.word_templates:
                raise VoicelockError("this model ships no word templates for liveness challenges — re-run "
                                     "`dvc repro evaluate`")
            vocab, word_scores = template_scores(word[1:], self.word_templates)
            for i, take in enumerate(challenge):
                asked = vocab.index(take.word) if take.word in vocab else -1
                heard_word = vocab[int(np.argmax(word_scores[i]))]
                w_score = float(word_scores[i, asked]) if asked >= 0 else float("-inf")
                s_score = float(speaker_scores[i + 1])
                details[f"challenge_{i + 1}"] = f"asked {take.word}, heard {heard_word}"
                if not rule.challenge_word_ok(w_score, asked >= 0 and heard_word == take.word):
                    reasons.append(f"{take.name}: not the word '{take.word}' (nearest '{heard_word}', "
                                   f"score {w_score:.3f}, need {th['challenge_word']:.3f})")
                if not rule.challenge_voice_ok(s_score):
                    reasons.append(f"{take.name}: voice not recognised (speaker score {s_score:.3f} < "
                                   f"{th['speaker_any_word']:.3f})")
        unlocked = not reasons
        thresholds = {k: float(th[k]) for k in REQUIRED_THRESHOLDS}
        return Decision(unlocked, word_score, speaker_score, thresholds,
                        "; ".join(reasons) or "password and voice match", fps.tolist(), band_fps.tolist(), prepared,
                        details)

    def remembered(self, decision: Decision) -> list[str] | None:
        """What the replay memory keeps of an accepted unlock beside its takes' fingerprints: each take's
        fingerprint set, encoded (voicelock/replay.py), so that none of its recordings — nor a copy
        padded by a few ms, nor one low-passed — unlocks again; None for a release with neither replay
        shifts nor a band-limited view. Apart from `verify` because only a caller with a memory pays its
        embeddings (one per replay shift, view and take: ~38 ms for a password take on one thread on
        the twenty-eighth sitting's machine), and only for an unlock."""
        if not decision.unlocked:
            raise VoicelockError("only an accepted unlock's takes are remembered")
        if len(self.verifier.replay_shifts) == 1 and not self.verifier.replay_band_hz:
            return None
        names = [f"take {i + 1}" for i in range(len(decision.heard))]
        sets = self.fingerprint_sets(decision.heard, np.asarray(decision.fingerprints, dtype=np.float32),
                                     np.asarray(decision.band_fingerprints, dtype=np.float32), names)
        return [encode(s) for s in sets]

    def reembed(self, template: Template, sealer: Sealer | None, anchor: bool = True) -> Template:
        """The template re-made by this model from its sealed enrollment recordings: how a user
        enrolled before a promotion keeps working. `anchor`: re-make the anchor too, from its own kept
        recordings (`anchor_recordings_of`) — a promotion; not for a template of this same model, whose
        anchor is already in its space. VoicelockError when the recordings were not kept (no key at
        enrollment), no key is set now, or they (the anchor's included) cannot be opened — then only
        enrolling again helps. Everything is opened before anything is embedded."""
        if not template.sealed_takes:
            raise VoicelockError("its recordings were not kept (no takes key was set at enrollment)")
        if sealer is None:
            raise VoicelockError("no takes key is set to open its recordings")
        clips, rate = sealer.open(template.sealed_takes.encode())
        # The anchor lives in the old model's space: re-made from its own recordings where they were
        # kept. Where they were not (a template from before they were kept), the voice re-made here
        # becomes the anchor — a promotion is the operator's act, not a token holder's.
        anchor_sealed = anchor_recordings_of(template) if anchor else ""
        anchor_clips, anchor_rate = sealer.open(anchor_sealed.encode()) if anchor_sealed else ([], rate)
        names = [f"enrollment take {i + 1}" for i in range(len(clips))]
        renewed = self.template_of([self.prepare(c, rate, n) for c, n in zip(clips, names)], names, checked=False)
        renewed.sealed_takes = template.sealed_takes
        if anchor_clips:
            names = [f"anchor take {i + 1}" for i in range(len(anchor_clips))]
            prepared = [self.prepare(c, anchor_rate, n) for c, n in zip(anchor_clips, names)]
            renewed.anchor = make_template(*self.embed_checked(prepared, names))[1].tolist()
            renewed.anchor_sealed_takes = anchor_recordings(renewed.anchor, anchor_sealed)
        if not anchor:  # the same model: the replaced enrollments' takes are still in its space
            renewed.earlier_takes = template.earlier_takes
        return renewed

    def remembers_as_released(self, template: Template) -> bool:
        """Whether the template's takes are remembered with this release's replay rows (`views` at its
        shifts): a template enrolled under a release without the band-limited view has full-band rows
        only, and its takes' low-passed copies would go unrecognised."""
        shifts, band = len(self.verifier.replay_shifts), bool(self.verifier.replay_band_hz)
        if shifts == 1 and not band:
            return True
        sets = template.take_sets if isinstance(template.take_sets, list) else []
        return bool(sets) and all(len(decode(s, self.fingerprint_dim)) == shifts * (2 if band else 1) for s in sets)

    def replays_any(self, decision: Decision, others: list[str]) -> bool:
        """Whether any of the decision's takes is a copy of any of `others` (takes remembered at the
        same moment, as `EnrollmentStore.remember` returns them), by the rule `verify` applies."""
        if not others:
            return False
        full = np.asarray(decision.fingerprints, dtype=np.float32)
        band = np.asarray(decision.band_fingerprints, dtype=np.float32).reshape(-1, full.shape[1])
        return any(self.replays_take(self._views(full, band, i), others) for i in range(len(full)))

    @staticmethod
    def _views(fps: np.ndarray, band_fps: np.ndarray, i: int) -> np.ndarray:
        """Take i's fingerprints as the replay rule compares them, (V, D): the full band, then its
        band-limited view when there is one."""
        return np.stack([fps[i]] + ([band_fps[i]] if len(band_fps) else []))

    def _memory(self, entries: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Remembered takes (encoded sets, JSON fingerprints or arrays) as `stored_rows` reads them for
        this release's shifts and view."""
        return stored_rows(entries, self.fingerprint_dim, len(self.verifier.replay_shifts),
                           bool(self.verifier.replay_band_hz))

    def replays_take(self, take: np.ndarray, remembered: list) -> bool:
        """The replay rule (`Verifier.replays`) for one take's views (V, D: the full band, then its
        band-limited view if the release has one) against remembered takes, as `verify` applies it."""
        return self.verifier.replays(*replay_similarities(take, *self._memory(remembered)))

    def same_voice(self, enrolled: Template, new: Template) -> bool:
        """Whether a new enrollment is the enrolled voice (its password may differ): re-enrolling with an
        unlock token must not hand the account to another voice.

        Every take must be the enrolled voice as a challenge take must (`speaker_any_word`), not only
        their mean: a tester re-enrolled with two of the owner's takes and three of his own — the mean
        passed for the owner's voice, and his own voice then unlocked. Simulated on the test speakers
        (a token re-enrollment mixing the owner's takes of a new word with another voice's, that voice
        then unlocking): 8.2% of mixes took the account with the mean alone, 0.43% with every take
        checked; on the unseen voices 5.4% and 0.06%. The price: the owner changing the password is
        refused 22% of the time instead of 9% (unseen voices 43% instead of 28%) — they unlock and record
        again, or the administrator re-enrolls (docs/decisions.md, "service")."""
        takes = speaker_halves(np.asarray(new.takes, dtype=np.float32), len(new.word)) if new.takes else None
        if takes is None or len(takes) != new.clips:  # a template without its takes proves nothing
            return False
        # Against the voice enrolled now and its anchor: a tester walked a template to his own voice in
        # seven token re-enrollments of owner/attacker mixes, each step passing for the step before.
        voice = np.asarray(new.speaker, dtype=np.float32)
        return all(self.verifier.is_voice_of(np.asarray(reference, dtype=np.float32), voice, takes)
                   for reference in [enrolled.speaker] + ([enrolled.anchor] if enrolled.anchor else []))

    def enroll_files(self, paths: list[str | Path], sealer: Sealer | None = None) -> Template:
        return self.enroll([read_wav(_recording(p)) for p in paths], [str(p) for p in paths], sealer)

    def verify_file(self, template: Template, path: str | Path) -> Decision:
        samples, rate = read_wav(_recording(path))
        return self.verify(template, samples, rate, str(path))
