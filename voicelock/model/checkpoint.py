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
from voicelock.params import FeatureParams, ModelParams, Params

MODEL_FILE = "model.pt"
# Feature settings that say where or how fast the cache is written, not what a clip's features are.
_WHERE_NOT_WHAT = ("out_dir", "batch_size")


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


def check_built_as_configured(path: str | Path, meta: dict[str, Any], params: Params, rerun: str) -> None:
    """Refuse a checkpoint whose network or features differ from params.yaml's.

    Why: the stage that reads it (fine-tuning, evaluation) computes features with params.yaml's
    `features` and saves or reports under its `model`, while the network behaves as it was built. Run
    after params.yaml changed without `dvc repro` re-running the stage that wrote the checkpoint, the
    figures would be measured on features the release does not serve, or the saved model would claim
    settings it was not trained with. `rerun`: the stage whose re-run fixes it."""
    try:
        built = {"model": ModelParams(**meta["model_params"]).model_dump(),
                 "features": FeatureParams(**meta["feature_params"]).model_dump(exclude=set(_WHERE_NOT_WHAT)),
                 "data.sample_rate": {"": int(meta["sample_rate"])}}
    except (KeyError, TypeError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise VoicelockError(f"{path}: its recorded settings are unreadable ({str(e).splitlines()[0]}) — "
                             f"re-run `dvc repro {rerun}`") from None
    wanted = {"model": params.model.model_dump(),
              "features": params.features.model_dump(exclude=set(_WHERE_NOT_WHAT)),
              "data.sample_rate": {"": params.data.sample_rate}}
    differ = [f"{section}{'.' + key if key else ''}: {built[section][key]!r} in the checkpoint, "
              f"{wanted[section].get(key)!r} in params.yaml"
              for section in built for key in built[section] if built[section][key] != wanted[section].get(key)]
    if differ:
        raise VoicelockError(f"{path}: built with other settings than params.yaml ({'; '.join(differ)}) — "
                             f"re-run `dvc repro {rerun}` (or restore params.yaml)")
