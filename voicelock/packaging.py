"""Put the evaluated model into the BentoML model store, with where it came from.

The stored model carries the network, its calibrated thresholds and feature parameters (inside
model.pt), the evaluation metrics (in-domain, and on the unseen voices: the promotion gate weighs
both), and the code and data versions as metadata, so a served model can always be traced to the
commit and corpus that made it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import torch
import yaml

from voicelock.errors import VoicelockError
from voicelock.model.checkpoint import MODEL_FILE
from voicelock.params import Params
from voicelock.promotion_rules import RULES, finite_number


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version(lock_file: str | Path = "dvc.lock") -> str:
    """The DVC hash of the corpus the model was trained on (download stage output in dvc.lock)."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text())
        return lock["stages"]["download"]["outs"][0]["md5"]
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def unseen_figures(metrics_file: Path, details_file: Path, thresholds: dict) -> dict[str, float]:
    """The release's unseen-voices figures (evaluate_unseen stage), which the promotion gate weighs.

    Refused unless every gated figure is there as a finite number and the details file records the
    release's own thresholds: figures of another release (a stale file) would let the gate judge
    the wrong model."""
    fix = "run the evaluate_unseen stage for this release (dvc repro evaluate_unseen)"
    try:
        figures = json.loads(metrics_file.read_text())
        measured_at = json.loads(details_file.read_text()).get("thresholds")
    except FileNotFoundError as err:
        raise VoicelockError(f"{err.filename}: no unseen-voices figures for this release — {fix}") from None
    except (json.JSONDecodeError, AttributeError) as err:
        raise VoicelockError(f"{metrics_file} / {details_file}: not an evaluate_unseen result ({err}) — {fix}") from None
    if bad := [k for k in RULES if finite_number(figures.get(k)) is None]:
        raise VoicelockError(f"{metrics_file}: {bad} missing or not finite numbers — {fix}")
    if measured_at != thresholds:
        raise VoicelockError(f"{details_file}: measured at other thresholds than this release's — {fix}")
    return {k: v for k, v in figures.items() if isinstance(v, (int, float))}


def package_model(params: Params, record: str | Path | None = None) -> str:
    """Save models/release into the BentoML store as a candidate (<promotion.candidate_name>:<version>).

    It becomes the production model only through the promotion gate (voicelock.promotion).
    """
    import bentoml
    from bentoml.exceptions import NotFound as BentoNotFound

    release = Path(params.evaluate.out_dir)
    checkpoint = release / MODEL_FILE
    if not checkpoint.exists():
        raise VoicelockError(f"{checkpoint}: no evaluated model — run the evaluate stage first")
    meta = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if "thresholds" not in meta:
        raise VoicelockError(f"{checkpoint}: model has no calibrated thresholds — re-run the evaluate stage")
    metrics = {k: v for k, v in meta.get("metrics", {}).items() if isinstance(v, (int, float))}
    ood_file = Path(params.ood.metrics_file)
    ood_metrics = unseen_figures(ood_file, Path(params.ood.details_file), meta["thresholds"])
    # The version is the digest of the release file and its unseen-voices figures, not BentoML's random
    # one: packaging the same release again (a fresh clone's `dvc repro`) names the same candidate, so
    # models/package.json and dvc.lock come out identical, and an already stored candidate is reused.
    digest = hashlib.sha256(checkpoint.read_bytes() + ood_file.read_bytes()).hexdigest()[:20]
    tag = f"{params.promotion.candidate_name}:{digest}"
    try:
        bentoml.models.get(tag)
    except BentoNotFound:
        with bentoml.models.create(
            tag,
            labels={"stage": "candidate", "password": str(meta.get("password", ""))},
            metadata={"code_version": code_version(), "data_version": data_version(),
                      "thresholds": meta["thresholds"], "metrics": metrics, "ood_metrics": ood_metrics,
                      "sample_rate": meta["sample_rate"], "feature_kind": meta["feature_params"]["kind"]},
        ) as model:
            shutil.copy2(checkpoint, model.path_of(MODEL_FILE))
            for extra in release.glob("*.json"):
                shutil.copy2(extra, model.path_of(extra.name))
    if record is not None:
        Path(record).parent.mkdir(parents=True, exist_ok=True)
        Path(record).write_text(json.dumps({"tag": tag, "metrics": metrics, "ood_metrics": ood_metrics}, indent=1))
    return tag
