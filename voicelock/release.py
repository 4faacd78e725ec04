"""The release: one typed artifact holding everything that decides an unlock, with one save and one load.

Network (with its speaker back-end), feature parameters, the speaker scorer's cohort, the calibrated
thresholds and the liveness word templates travel together in `models/release/model.pt` (and, from
there, in the BentoML store). The CLI, the service, the evaluation of any folder and the unseen-voices
evaluation all open it with `Release.load`, and the evaluate stage writes it with `Release.save` — so
a model can never be served with thresholds, a cohort or templates other than those it was judged with.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voicelock.errors import VoicelockError
from voicelock.features import FeatureExtractor
from voicelock.model.checkpoint import MODEL_FILE, load_checkpoint
from voicelock.model.network import VoiceLockNet
from voicelock.params import FeatureParams
from voicelock.scoring import SpeakerScorer
from voicelock.verifier import REQUIRED_THRESHOLDS, Verifier

THRESHOLDS_FILE = "thresholds.json"
# Checkpoint keys that `Release` holds as fields; every other key is a record kept in `meta`.
_FIELDS = ("state_dict", "feature_params", "sample_rate", "thresholds", "cohort", "cohort_top_k", "word_templates")
# Feature parameters added after releases were made, at the value a release saved without them loads
# with: left out of `model_id` at that value, so upgrading voicelock does not make every enrolled
# template look like another model's (re-embedded, its replay memory forgotten).
_ADDED_LATER = {"digital_silence_s": 0.0}


def _number(value: Any) -> float:
    """A threshold as a float; NaN for anything that is not a number (so every range check fails)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@dataclass
class Release:
    """An evaluated model and what it ships. `meta` keeps the checkpoint's other records (stage, words,
    owner, validation figures, metrics) for packaging and provenance."""

    model: VoiceLockNet
    feature_params: FeatureParams
    sample_rate: int
    thresholds: dict[str, Any]
    scorer: SpeakerScorer
    word_templates: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """What a template must have been made with to be scored by this release: a digest of the
        network's weights and the feature parameters (not of the thresholds: re-calibrating keeps
        every template valid). Two copies of one model share it, whatever their file or store tag."""
        features = {k: v for k, v in self.feature_params.model_dump().items()
                    if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
        heard = [features, self.sample_rate]
        if self.model.input_level_db is not None:  # what the network does with the features, beside its weights
            heard.append({"input_level_db": self.model.input_level_db})
        digest = hashlib.sha256(json.dumps(heard, sort_keys=True).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"sha256:{digest.hexdigest()[:32]}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.scorer, self.thresholds, self.word_templates)

    def extractor(self) -> FeatureExtractor:
        return FeatureExtractor(self.feature_params, self.sample_rate)

    @classmethod
    def from_checkpoint(cls, model: VoiceLockNet, meta: dict[str, Any], thresholds: dict[str, Any],
                        scorer: SpeakerScorer, word_templates: dict[str, np.ndarray], **records: Any) -> "Release":
        """A release of a loaded checkpoint (`load_checkpoint`) with what evaluation gives it; `records`
        (e.g. metrics) join the checkpoint's own."""
        rest = {k: v for k, v in meta.items() if k not in _FIELDS}
        return cls(model, FeatureParams(**meta["feature_params"]), int(meta["sample_rate"]), thresholds, scorer,
                   word_templates, {**rest, **records})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", calibrated: bool = True) -> "Release":
        """Open `models/release` (or its model.pt); refuse a model that was never evaluated, or one
        without word templates (the rival words of every password). `calibrated=False`: a model whose
        thresholds are about to be set again (the promotion gate's production model), which may come
        from a voicelock that did not have every threshold of this one."""
        model, meta = load_checkpoint(path, device)
        thresholds = dict(meta.get("thresholds") or {})
        missing = [f"'{k}' threshold" for k in REQUIRED_THRESHOLDS if not np.isfinite(float(thresholds.get(k, np.nan)))]
        if not meta.get("word_templates"):
            missing.append("word templates")
        if calibrated and missing:
            raise VoicelockError(f"{path}: model has no calibrated {', '.join(missing)} — use the evaluated model "
                                 f"(models/release, written by the evaluate stage), or re-run `dvc repro evaluate` "
                                 f"for a model evaluated by an older voicelock (`make repro` promotes a new one)")
        scorer = SpeakerScorer(meta.get("cohort"), int(meta.get("cohort_top_k", 50)))
        templates = {w: np.asarray(v, dtype=np.float32) for w, v in (meta.get("word_templates") or {}).items()}
        release = cls.from_checkpoint(model, meta, thresholds, scorer, templates)
        if calibrated and (why := release.replay_problem()):
            raise VoicelockError(f"{path}: {why}")
        return release

    def replay_problem(self) -> str | None:
        """Why the release's replay rule cannot be served, or None. Checked where a release is opened, so
        the service and the CLI refuse to start on it and the promotion gate (`unservable`) never
        promotes it — not at the first enrollment, when takes would already be remembered under it."""
        shifts = self.verifier.replay_shifts  # refuses damaged shifts itself
        band = self.verifier.replay_band_hz  # and a damaged band-limited view
        if band and band >= self.sample_rate / 2:
            return (f"the release's replay_band_hz {band:g} is not below half its sample rate ({self.sample_rate} Hz): "
                    f"that view would be the full band — re-run the evaluate stage (dvc repro evaluate)")
        single = self.thresholds.get("replay_single")  # calibrated beside every set rule this voicelock writes
        if len(shifts) > 1 and not (isinstance(single, float) and np.isfinite(single)):
            return ("the release has replay_shifts but no finite replay_single threshold (a take's own "
                    "fingerprint would go unjudged) — re-run the evaluate stage (dvc repro evaluate)")
        view = self.thresholds.get("replay_band")
        if band and not (isinstance(view, float) and np.isfinite(view)):
            return ("the release has a band-limited replay view (replay_band_hz) but no finite replay_band "
                    "threshold — re-run the evaluate stage (dvc repro evaluate)")
        for name in ("replay", "replay_single", "replay_band"):
            value = self.thresholds.get(name)
            if value is not None and not 0.0 < _number(value) < 1.0:  # calibrated below 1: an exact copy reaches it
                return (f"the release's {name} threshold {value!r} is not a number between 0 and 1, so a copy "
                        f"might never reach it — re-run the evaluate stage (dvc repro evaluate)")
        cut = self.feature_params.digital_silence_s * self.sample_rate
        if cut and max(shifts) >= cut:
            return (f"the release's replay_shifts reach {max(shifts)} samples, but zeros from {cut:g} on are cut "
                    f"before the features (features.digital_silence_s): such a copy is the take itself — use "
                    f"shorter evaluate.replay_shifts and re-run dvc repro evaluate")
        return None

    def save(self, out_dir: str | Path) -> Path:
        """Write the release folder afresh: model.pt (everything) and thresholds.json (to read)."""
        out = Path(out_dir)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        cohort = ({"cohort": self.scorer.cohort.astype(np.float16), "cohort_top_k": self.scorer.top_k}
                  if self.scorer.normalised else {})
        torch.save({**self.meta, "state_dict": self.model.state_dict(),
                    "feature_params": self.feature_params.model_dump(), "sample_rate": self.sample_rate,
                    "thresholds": self.thresholds, **cohort,
                    "word_templates": {w: v.astype(np.float16) for w, v in self.word_templates.items()}},
                   out / MODEL_FILE)
        (out / THRESHOLDS_FILE).write_text(json.dumps(self.thresholds, indent=1))
        return out
