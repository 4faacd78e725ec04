"""Fine-tuning: the whole network tuned on the owner's recordings, mixed with corpus impostors.

The owner's clips join every corpus batch, so the triplet losses keep both embedding spaces usable for
enrollment while two class-weighted binary outputs learn this owner and this password.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from voicelock.audio import as_heard
from voicelock.data.layout import Clip, scan_corpus
from voicelock.data.owner import check_owner_clips, split_owner_clips
from voicelock.features import FeatureExtractor, load_split
from voicelock.model.augment import make_augmenter
from voicelock.model.checkpoint import MODEL_FILE, check_built_as_configured, load_checkpoint, save_checkpoint
from voicelock.model.train import HISTORY_FILE, OwnerTask, Split, kernel_path, reproducible, train, write_history
from voicelock.params import Params

log = logging.getLogger(__name__)


def clips_to_split(root: str | Path, clips: list[Clip], extractor: FeatureExtractor) -> Split:
    """Features of clips outside the feature cache (the owner's, a corpus to evaluate) with the
    features stage's extractor, each file decoded as an upload is (`as_heard`: a corpus to evaluate
    may be at any rate; the owner's folder is checked for the corpus rate before it gets here)."""
    root = Path(root)
    silence = extractor.params.digital_silence_s
    waves = [as_heard(root / c.path, extractor.sample_rate, digital_silence_s=silence) for c in clips]
    feats, frames = extractor.from_arrays(waves)
    index = pd.DataFrame({"path": [c.path for c in clips], "word": [c.word for c in clips],
                          "speaker": [c.speaker for c in clips], "utterance": [c.utterance for c in clips],
                          "frames": frames.numpy()})
    return Split(feats.numpy().astype(np.float16), frames.numpy().astype(np.int64), index)


def owner_splits(params: Params, extractor: FeatureExtractor) -> tuple[str, Split, Split]:
    """(owner id, fine-tuning clips, held-out clips) of the owner folder."""
    o = params.owner
    clips = scan_corpus(o.out_dir)
    owner = check_owner_clips(clips, o.out_dir, o.password, params.enroll.min_clips)
    tune, held = split_owner_clips(clips, o.holdout_fraction)
    return owner, clips_to_split(o.out_dir, tune, extractor), clips_to_split(o.out_dir, held, extractor)


def finetune(params: Params) -> Path:
    path = Path(params.pretrain.out_dir) / MODEL_FILE
    model, meta = load_checkpoint(path)
    check_built_as_configured(path, meta, params, "pretrain")  # so the saved settings are the network's
    extractor = FeatureExtractor(params.features, params.data.sample_rate)
    owner, tune, _ = owner_splits(params, extractor)
    cache = params.features.out_dir
    train_split = Split.from_feature_set(load_split(cache, "training"))
    val_split = Split.from_feature_set(load_split(cache, "validation"))
    task = OwnerTask(tune, owner, params.owner.password, params.finetune.owner_clips_per_batch,
                     params.finetune.decision_loss_weight)
    log.info("finetune: owner %s with %d clips (%d of the password '%s')", owner, len(tune.index),
             int((tune.index["word"] == params.owner.password).sum()), params.owner.password)
    result = train(model, train_split, val_split, params.finetune, make_augmenter(params, params.seed + 1),
                   params.seed + 1, "finetune", params.evaluate, owner=task)
    out = Path(params.finetune.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_history(result, out / HISTORY_FILE)
    return save_checkpoint(out / MODEL_FILE, model, params.model, params.features, params.data.sample_rate,
                           meta["n_features"], stage="finetune", words=meta.get("words"), owner=owner,
                           password=params.owner.password, best_epoch=result.best_epoch,
                           validation=reproducible(result.best), kernels=kernel_path(params.finetune))
