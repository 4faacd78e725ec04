"""Enrollment and unlock, with no retraining: templates in both embedding spaces.

`enroll` turns 3–10 clips of one person saying one password into a template (per-head centroids)
and refuses enrollments that disagree; `verify` scores a new clip against a template in both spaces
and unlocks only when both scores clear the thresholds calibrated at evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from voicelock.audio import read_wav
from voicelock.errors import VoicelockError
from voicelock.features import FeatureExtractor
from voicelock.model.checkpoint import load_checkpoint
from voicelock.params import EnrollParams, FeatureParams
from voicelock.scoring import SpeakerScorer


@dataclass
class Template:
    """An enrolled password: unit-length centroids of the enrollment clips in each space."""

    word: list[float]
    speaker: list[float]
    clips: int

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> "Template":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise VoicelockError(f"{path}: template not found — run `voicelock enroll` first") from None
        except (json.JSONDecodeError, TypeError) as e:
            raise VoicelockError(f"{path}: not a voicelock template ({e})") from None


@dataclass
class Decision:
    unlocked: bool
    word_score: float
    speaker_score: float
    thresholds: dict[str, float]
    reason: str


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


Embedder = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]


class VoiceLock:
    """A trained model ready to enroll and verify raw clips (any sample rate, mono).

    `embedder` replaces the in-process embedding (features + network), e.g. with a call to a
    separate service that batches clips from many requests (service/embedder.py)."""

    def __init__(self, model_dir: str | Path, enroll_params: EnrollParams, device: str = "cpu",
                 embedder: Embedder | None = None):
        self.model, meta = load_checkpoint(model_dir, device)
        self.embedder = embedder
        self.device = device
        self.sample_rate = int(meta["sample_rate"])
        self.extractor = FeatureExtractor(FeatureParams(**meta["feature_params"]), self.sample_rate)
        self.thresholds: dict[str, float] = meta.get("thresholds") or {}
        # Speaker scores as calibrated: AS-norm against the cohort shipped with the model, or raw cosine.
        self.scorer = SpeakerScorer(meta.get("cohort"), meta.get("cohort_top_k", 50))
        if not {"word", "speaker"} <= set(self.thresholds):
            raise VoicelockError(f"{model_dir}: model has no calibrated thresholds — use the evaluated model "
                                 f"(models/release, written by the evaluate stage)")
        self.p = enroll_params

    def prepare(self, samples: np.ndarray, rate: int, name: str) -> np.ndarray:
        """Resample to the model's rate and refuse clips that cannot hold a spoken word."""
        if not np.all(np.isfinite(samples)):
            raise VoicelockError(f"{name}: audio contains NaN or infinite samples")
        duration = samples.size / rate if rate else 0.0
        if duration < self.p.min_duration_s:
            raise VoicelockError(f"{name}: too short ({duration:.2f} s, need at least {self.p.min_duration_s} s)")
        if duration > self.p.max_duration_s:
            raise VoicelockError(f"{name}: too long ({duration:.2f} s, at most {self.p.max_duration_s} s)")
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        if rms < self.p.min_rms:
            raise VoicelockError(f"{name}: no speech (level {rms:.4f} below {self.p.min_rms}) — speak closer "
                                 f"to the microphone")
        if rate != self.sample_rate:
            samples = torchaudio.functional.resample(torch.from_numpy(samples), rate, self.sample_rate).numpy()
        return samples.astype(np.float32)

    def embed(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Word and speaker embeddings of prepared clips (model sample rate)."""
        return self.embedder(clips) if self.embedder else self.embed_here(clips)

    @torch.no_grad()
    def embed_here(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """`embed` in this process: features and network on this process's torch threads."""
        feats, frames = self.extractor.from_arrays(clips)
        out = self.model(feats.to(self.device), frames.to(self.device))
        return out.word.cpu().numpy(), out.speaker.cpu().numpy()

    def enroll(self, clips: list[tuple[np.ndarray, int]], names: list[str] | None = None) -> Template:
        """Template from 3–10 (samples, rate) clips of one person saying one password."""
        names = names or [f"clip {i + 1}" for i in range(len(clips))]
        if not self.p.min_clips <= len(clips) <= self.p.max_clips:
            raise VoicelockError(f"enrollment needs {self.p.min_clips}–{self.p.max_clips} clips, got {len(clips)}")
        prepared = [self.prepare(x, r, n) for (x, r), n in zip(clips, names)]
        word, speaker = self.embed(prepared)
        for space, emb, minimum in (("word", word, self.p.min_word_agreement),
                                    ("speaker", speaker, self.p.min_speaker_agreement)):
            total = emb.sum(axis=0)
            for i, name in enumerate(names):
                others = _unit(total - emb[i])
                agreement = float(emb[i] @ others)
                if agreement < minimum:
                    what = "a different word" if space == "word" else "a different voice"
                    raise VoicelockError(f"{name} does not match the others ({what}: {space} agreement "
                                         f"{agreement:.2f} < {minimum}) — record it again")
        return Template(_unit(word.mean(axis=0)).tolist(), _unit(speaker.mean(axis=0)).tolist(), len(clips))

    def verify(self, template: Template, samples: np.ndarray, rate: int, name: str = "clip") -> Decision:
        """Score one clip against a template; unlock only when word and speaker both clear their thresholds."""
        word, speaker = self.embed([self.prepare(samples, rate, name)])
        if (len(template.word), len(template.speaker)) != (word.shape[1], speaker.shape[1]):
            raise VoicelockError(f"the template has {len(template.word)}/{len(template.speaker)}-dimensional "
                                 f"word/speaker centroids but this model embeds into {word.shape[1]}/"
                                 f"{speaker.shape[1]}: it was enrolled with another model — enroll again")
        word_score = float(word[0] @ np.asarray(template.word))
        speaker_score = float(self.scorer(np.asarray(template.speaker), speaker)[0])
        tw, ts = self.thresholds["word"], self.thresholds["speaker"]
        reasons = []
        if word_score < tw:
            reasons.append(f"wrong password (word score {word_score:.3f} < {tw:.3f})")
        if speaker_score < ts:
            reasons.append(f"voice not recognised (speaker score {speaker_score:.3f} < {ts:.3f})")
        return Decision(not reasons, word_score, speaker_score, {"word": tw, "speaker": ts},
                        "; ".join(reasons) or "password and voice match")

    def enroll_files(self, paths: list[str | Path]) -> Template:
        return self.enroll([read_wav(p) for p in paths], [str(p) for p in paths])

    def verify_file(self, template: Template, path: str | Path) -> Decision:
        samples, rate = read_wav(path)
        return self.verify(template, samples, rate, str(path))
