"""Save and load a trained network with everything needed to use it on a raw clip.

A checkpoint carries the feature parameters it was trained on, so enrollment, unlock and the service
compute features exactly as training did, and (after evaluation) its calibrated thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from voicelock.errors import VoicelockError
from voicelock.model.network import VoiceLockNet
from voicelock.params import FeatureParams, ModelParams

MODEL_FILE = "model.pt"


def save_checkpoint(path: str | Path, model: VoiceLockNet, model_params: ModelParams, feature_params: FeatureParams,
                    sample_rate: int, n_features: int, **extra: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "model_params": model_params.model_dump(),
               "feature_params": feature_params.model_dump(), "sample_rate": sample_rate,
               "n_features": n_features, **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[VoiceLockNet, dict]:
    """The network (eval mode) and the checkpoint's metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise VoicelockError(f"{path}: model not found — train one first (dvc repro) or pass --model")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        model = VoiceLockNet(payload["n_features"], ModelParams(**payload["model_params"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, EOFError, ValueError) as e:
        raise VoicelockError(f"{path}: not a voicelock checkpoint ({e}) — re-run training") from None
    model.to(device).eval()
    return model, payload
