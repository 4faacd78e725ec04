"""Pre-training: the two-head Siamese network on the corpus's training speakers."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from voicelock.features import load_split, read_meta
from voicelock.model.augment import make_augmenter
from voicelock.model.checkpoint import MODEL_FILE, save_checkpoint
from voicelock.model.network import VoiceLockNet, count_parameters
from voicelock.model.train import HISTORY_FILE, Split, kernel_path, reproducible, train, write_history
from voicelock.params import Params

log = logging.getLogger(__name__)


def pretrain(params: Params) -> Path:
    cache = params.features.out_dir
    meta = read_meta(cache)
    train_split = Split.from_feature_set(load_split(cache, "training"))
    val_split = Split.from_feature_set(load_split(cache, "validation"))
    torch.manual_seed(params.seed)  # the initial weights too: same params, same model
    model = VoiceLockNet(meta["n_features"], params.model)
    log.info("pretrain: %d parameters, %d training clips, %d validation clips", count_parameters(model),
             len(train_split.index), len(val_split.index))
    result = train(model, train_split, val_split, params.pretrain, make_augmenter(params, params.seed),
                   params.seed, "pretrain", params.evaluate)
    out = Path(params.pretrain.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_history(result, out / HISTORY_FILE)
    return save_checkpoint(out / MODEL_FILE, model, params.model, params.features, params.data.sample_rate,
                           meta["n_features"], stage="pretrain", words=meta["words"], best_epoch=result.best_epoch,
                           validation=reproducible(result.best), kernels=kernel_path(params.pretrain))
