"""The training loop shared by pre-training and fine-tuning.

Triplet margin loss on both heads at once, triplets mined inside P×W×K batches; AdamW with a
one-cycle schedule; after each epoch (from `validate_from_epoch`) the validation split is scored with the same trials the
evaluation reports, the best epoch's weights are kept and training stops when they stop improving.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from voicelock.errors import VoicelockError
from voicelock.features import FeatureSet
from voicelock.metrics import eer
from voicelock.model.augment import FeatureAugmenter, with_warped_speakers
from voicelock.model.margin_softmax import IGNORE, MarginSoftmax
from voicelock.model.network import Outputs, VoiceLockNet
from voicelock.model.sampling import SpeakerWordBatches
from voicelock.model.triplets import triplet_loss
from voicelock.params import EvaluateParams, TrainParams
from voicelock.trials import keyword_predictions, speaker_pair_scores

log = logging.getLogger(__name__)
HISTORY_FILE = "history.csv"  # one row per epoch, next to the checkpoint


def pick_device(name: str) -> torch.device:
    """`auto` takes a GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VoicelockError("params.yaml: device: cuda, but no GPU is available here — use auto or cpu")
    return torch.device(name)


@dataclass
class Split:
    """Features held in RAM as float32-ready float16, with integer labels for both heads."""

    features: np.ndarray
    frames: np.ndarray
    index: pd.DataFrame

    @classmethod
    def from_feature_set(cls, fs: FeatureSet) -> "Split":
        return cls(np.asarray(fs.features), fs.frames.astype(np.int64), fs.index.reset_index(drop=True))

    def concat(self, other: "Split") -> "Split":
        return Split(np.concatenate([self.features, other.features]), np.concatenate([self.frames, other.frames]),
                     pd.concat([self.index, other.index], ignore_index=True))


@torch.no_grad()
def embed(model: VoiceLockNet, features: np.ndarray, frames: np.ndarray, device: torch.device,
          batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Word and speaker embeddings of cached features, in batches.

    Why 128 clips a batch on a CPU (None): the 2-D front's activations of 512 clips (~50 MB) spill out of
    the cache, and the element-wise passes (masks, ReLUs, BatchNorms) then wait on memory — 128 embed
    the same clips 40% faster (0.98 → 0.60 ms a clip on the AMD EPYC of the README, every embedding
    equal bit for bit there; another CPU's kernels may round a batch size otherwise, as they may any
    change). Every `dvc repro` embeds the 20,200 training clips five times or so."""
    if batch_size is None:
        batch_size = 128 if device.type == "cpu" else 512
    model.eval()
    words, speakers = [], []
    for s in range(0, len(features), batch_size):
        out = model(torch.tensor(np.asarray(features[s: s + batch_size]), dtype=torch.float32, device=device),
                    torch.as_tensor(frames[s: s + batch_size], device=device))
        words.append(out.word.cpu().numpy())
        speakers.append(out.speaker.cpu().numpy())
    return np.concatenate(words), np.concatenate(speakers)


def validation_scores(model: VoiceLockNet, split: Split, device: torch.device, seed: int,
                      trials: EvaluateParams) -> dict[str, float]:
    """Speaker EER on same-word and on all pairs, and speaker-independent keyword accuracy, with the
    evaluation's trial settings (`max_trials`, `keyword_enroll_clips`); lower `score` is better. All
    three are reported targets, so the kept epoch is the best on all three."""
    word_emb, spk_emb = embed(model, split.features, split.frames, device)
    speakers, words = split.index["speaker"].to_numpy(), split.index["word"].to_numpy()
    rng = np.random.default_rng(seed)
    spk_eer = eer(*speaker_pair_scores(spk_emb, speakers, words, True, trials.max_trials, rng))[0]
    all_eer = eer(*speaker_pair_scores(spk_emb, speakers, words, False, trials.max_trials, rng))[0]
    predicted, _ = keyword_predictions(word_emb, speakers, words, trials.keyword_enroll_clips, rng)
    accuracy = float(np.mean(predicted == words))
    return {"val_speaker_eer": spk_eer, "val_speaker_eer_all_trials": all_eer, "val_keyword_accuracy": accuracy,
            "val_score": spk_eer + all_eer + (1 - accuracy)}


@dataclass
class OwnerTask:
    """Fine-tuning extras: the owner's clips mixed into every batch, and the two binary decisions."""

    split: Split
    owner: str
    password: str
    clips_per_batch: int
    loss_weight: float


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best: dict = field(default_factory=dict)  # the best epoch's row, + backend_* scores when fitted


def _labels(values: pd.Series, device: torch.device) -> torch.Tensor:
    codes, _ = pd.factorize(values)
    return torch.as_tensor(codes, device=device)


def _decision_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE weighted so the rare class (owner / password) counts as much as the rest of the batch."""
    positives = target.sum().clamp(min=1)
    pos_weight = (len(target) - positives) / positives
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes bfloat16 natively: a GPU, or a CPU with AVX512-BF16 or AMX."""
    if torch.device(device).type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def uses_bf16(precision: str, device: torch.device | str) -> bool:
    """Whether training in `precision` on `device` runs in bfloat16 (see `training_forward`)."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def kernel_path(tp: TrainParams) -> dict[str, str | bool]:
    """What chose the kernels that trained a model, kept in its checkpoint.

    Why: a run is byte-for-byte repeatable on one machine, but torch picks its CPU kernels by the
    instruction set (`cpu_capability`: AVX2, AVX-512, …) and `precision: auto` trains in bfloat16
    only where the CPU has it natively, so two machines that differ in either train different models.
    """
    device = pick_device(tp.device)
    return {"torch": torch.__version__, "device": device.type,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": uses_bf16(tp.precision, device)}


def training_forward(model: VoiceLockNet, x: torch.Tensor, frames: torch.Tensor, precision: str) -> Outputs:
    """The network's forward pass in training, in bfloat16 where `precision` asks for it.

    bf16 autocast runs the convolutions and projections ~1.4× faster on a CPU with AVX512-BF16 (and on
    GPUs), but on a CPU without it bfloat16 is emulated: measured on an AVX512 Xeon without BF16, a
    pre-training batch took 1254 ms in bf16 against 771 ms in fp32 (bench/training.py). `auto` picks
    bf16 only where it is native. The losses, mining and the optimiser's weights stay float32, and so
    does inference.
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=uses_bf16(precision, x.device)):
        out = model(x, frames)
    return Outputs(out.word.float(), out.speaker.float(), out.password_logit.float(), out.owner_logit.float())


def one_cycle(optimiser: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle LR with 10% warm-up. Torch divides by (warm-up steps - 1), so exactly 10 steps in all
    (e.g. 2 epochs × 5 batches) crashed with ZeroDivisionError: warm up for at least 2 steps, and
    with fewer than 3 steps in all keep the rate constant."""
    if steps < 3:
        return torch.optim.lr_scheduler.ConstantLR(optimiser, factor=1.0, total_iters=0)
    warmup = min(steps - 1, max(2, round(0.1 * steps)))
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=warmup / steps)


def margin_classifiers(model: VoiceLockNet, index: pd.DataFrame, tp: TrainParams,
                       device: torch.device) -> dict[str, tuple[dict, MarginSoftmax, float]]:
    """Auxiliary margin-softmax per head over the training split's classes (voicelock/model/margin_softmax.py):
    head → (class id of each label, classifier, loss weight); a head whose weight is 0 has none."""
    classifiers = {}
    for head, weight, dim in (("speaker", tp.speaker_class_weight, model.speaker_dim),
                              ("word", tp.word_class_weight, model.word_dim)):
        if weight > 0:  # the index column is named as the head: a clip's speaker id or word
            classes = {c: i for i, c in enumerate(sorted(index[head].unique()))}
            classifiers[head] = (classes, MarginSoftmax(dim, len(classes), tp.class_margin, tp.class_scale).to(device),
                                 weight)
    return classifiers


@torch.no_grad()
def centres_from_class_means(classifiers: dict[str, tuple[dict, MarginSoftmax, float]], model: VoiceLockNet,
                             split: Split, device: torch.device) -> None:
    """Start each class centre at the mean embedding of its class's clips.

    Why: a network that is already trained (fine-tuning) has its speakers and words where they are;
    random centres would give a loss as if it knew nothing (≈ ln of the class count) and their
    gradients would drag the embeddings towards arbitrary directions in the first epochs.
    Classes with no clip in `split` (the warped copies of speaker augmentation) keep their random start.
    """
    embeddings = dict(zip(("word", "speaker"), embed(model, split.features, split.frames, device)))
    for head, (classes, classifier, _) in classifiers.items():
        ids = split.index[head].map(classes).to_numpy()
        centres = np.zeros((len(classes), classifier.centres.shape[1]), dtype=np.float32)
        np.add.at(centres, ids, embeddings[head])
        seen = torch.as_tensor(np.bincount(ids, minlength=len(classes)) > 0, device=device)
        classifier.centres[seen] = torch.as_tensor(centres, device=device)[seen]  # the loss normalises them


def fit_speaker_backend(model: VoiceLockNet, split: Split, val_split: Split, device: torch.device, seed: int,
                        desc: str, trials: EvaluateParams) -> dict[str, float]:
    """Fit the speaker back-end (voicelock/model/backend.py) on the split's clean raw embeddings and
    return the validation scores with it, `backend_`-prefixed (the epoch's own scores are without)."""
    backend = model.speaker_backend
    backend.reset()
    _, raw = embed(model, split.features, split.frames, device)
    backend.fit(raw, split.index["speaker"].to_numpy())
    scores = {f"backend_{k}": v for k, v in validation_scores(model, val_split, device, seed, trials).items()}
    log.info("%s: speaker back-end fitted on %d clips; validation with it: %s", desc, len(raw),
             {k: round(v, 4) for k, v in scores.items()})
    return scores


def speaker_weights(index: pd.DataFrame, engine_weights: dict[str, float]) -> dict[str, float]:
    """Each speaker's draw weight from the engine that made its clips (`engine_weights`, default 1).

    Why: the corpus's few speakers from recorded people (festival) are the nearest it has to a real
    user, and drawn evenly they are 1 in 25 of a batch's speakers (docs/decisions.md measures it).
    A corpus without an engine column (real Speech Commands) weighs every speaker the same.
    """
    if not engine_weights:
        return {}
    if "engine" not in index:
        log.warning("engine_weights %s ignored: the feature cache has no engine column (a corpus without "
                    "speakers.csv, or a cache from before engines; dvc repro features rebuilds it)", engine_weights)
        return {}
    engines = index.drop_duplicates("speaker").set_index("speaker")["engine"]
    missing = sorted(set(engine_weights) - set(engines))
    if missing:
        log.warning("engine_weights: no training speaker is from %s (engines here: %s)", missing,
                    sorted(set(engines)))
    weights = {str(s): float(engine_weights.get(e, 1.0)) for s, e in engines.items()}
    log.info("speakers drawn by weight: %s", pd.Series(weights).value_counts().sort_index().to_dict())
    return weights


class TrainingBatches:
    """Where a training step's clips come from: P×W×K batches of the training split (its speakers and
    their warped copies as new speakers), the owner's clips mixed in when fine-tuning, augmented."""

    def __init__(self, split: Split, tp: TrainParams, augmenter: FeatureAugmenter, seed: int,
                 owner: OwnerTask | None = None):
        self.split, self.augmenter, self.owner = split, augmenter, owner
        # Speaker augmentation: warped copies of the training speakers join as new identities.
        self.index = with_warped_speakers(split.index, augmenter.speaker_warps)
        self.sampler = SpeakerWordBatches(self.index, tp.speakers_per_batch, tp.words_per_batch, tp.takes_per_pair,
                                          seed, speaker_weights(self.index, tp.engine_weights))
        self.owner_rng = np.random.default_rng(seed + 1)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
        """(features, frames, speaker warp per clip, index rows) of the next batch, before augmentation."""
        index = self.index.iloc[np.sort(self.sampler.batch())]
        source = index["source"].to_numpy()
        feats, frames, warps = self.split.features[source], self.split.frames[source], index["speaker_warp"]
        index, warps = index.drop(columns=["source", "speaker_warp"]), warps.to_numpy(dtype=np.float32)
        if self.owner is not None:
            owner = self.owner.split
            pick = self.owner_rng.choice(len(owner.index), size=self.owner.clips_per_batch,
                                         replace=len(owner.index) < self.owner.clips_per_batch)
            feats = np.concatenate([feats, owner.features[pick]])
            frames = np.concatenate([frames, owner.frames[pick]])
            index = pd.concat([index, owner.index.iloc[pick]], ignore_index=True)
            warps = np.concatenate([warps, np.ones(len(pick), dtype=np.float32)])
        return feats, frames, warps, index

    def augment(self, feats: np.ndarray, frames: np.ndarray, warps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augmenter(torch.as_tensor(feats, dtype=torch.float32), torch.as_tensor(frames),
                              torch.as_tensor(warps))


class Objective:
    """One batch's loss: mined triplets on both heads, margin-softmax over the training classes, and
    (fine-tuning) the owner / password decisions. Returns the loss and the batch's figures."""

    STATS = ("loss_word", "loss_speaker", "loss_word_class", "loss_speaker_class", "loss_decision",
             "triplets_word", "triplets_speaker")

    def __init__(self, model: VoiceLockNet, index: pd.DataFrame, tp: TrainParams, device: torch.device, seed: int,
                 owner: OwnerTask | None = None):
        self.tp, self.device, self.owner = tp, device, owner
        self.classifiers = margin_classifiers(model, index, tp, device)
        self.gen = torch.Generator().manual_seed(seed)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The class centres: trained with the network."""
        return [p for _, c, _ in self.classifiers.values() for p in c.parameters()]

    def __call__(self, out: Outputs, index: pd.DataFrame) -> tuple[torch.Tensor, dict[str, float]]:
        tp, device = self.tp, self.device
        stats = dict.fromkeys(self.STATS, 0.0)
        lw, stats["triplets_word"] = triplet_loss(_labels(index["word"], device), out.word, tp.margin,
                                                  tp.mining, tp.max_triplets, self.gen)
        ls, stats["triplets_speaker"] = triplet_loss(_labels(index["speaker"], device), out.speaker, tp.margin,
                                                     tp.mining, tp.max_triplets, self.gen)
        loss = lw + ls
        stats["loss_word"], stats["loss_speaker"] = lw.item(), ls.item()
        for head, (classes, classifier, weight) in self.classifiers.items():
            targets = index[head].map(classes).fillna(IGNORE).astype(int).to_numpy()
            lc = classifier(getattr(out, head), torch.tensor(targets, device=device))
            loss = loss + weight * lc
            stats[f"loss_{head}_class"] = lc.item()
        if self.owner is not None:
            is_owner = torch.tensor((index["speaker"] == self.owner.owner).to_numpy(), dtype=torch.float32,
                                    device=device)
            is_password = torch.tensor((index["word"] == self.owner.password).to_numpy(), dtype=torch.float32,
                                       device=device)
            ld = _decision_loss(out.owner_logit, is_owner) + _decision_loss(out.password_logit, is_password)
            loss = loss + self.owner.loss_weight * ld
            stats["loss_decision"] = ld.item()
        return loss, stats


def start_training(tp: TrainParams, seed: int) -> torch.device:
    """The process-wide torch settings of a training run — deterministic kernels, the seed, the thread
    count — in one place, so `bench/training.py` times the step the stages run. Returns the device."""
    device = pick_device(tp.device)
    # Same params, same model: without this, parallel CPU kernels (then the backward of gathered
    # triplet embeddings) summed in varying order and two runs drifted apart (tests/test_model_stages.py).
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    # Deterministic mode also fills every new tensor with NaN, in case code reads memory it never
    # wrote; nothing here does (the same weights come out either way), and the fills were ~1.5% of a
    # pre-training batch on CPU (docs/decisions.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(seed)
    if tp.threads:
        torch.set_num_threads(tp.threads)
    return device


def train(model: VoiceLockNet, train_split: Split, val_split: Split, tp: TrainParams, augmenter: FeatureAugmenter,
          seed: int, desc: str, trials: EvaluateParams, owner: OwnerTask | None = None) -> TrainResult:
    """Fit the raw embeddings (the speaker back-end reset to identity): one-cycle AdamW over
    `TrainingBatches` and the `Objective`, scored on the validation split after every epoch from
    `validate_from_epoch` on; keep the best scored epoch, stop after `patience` scored epochs without a
    better one, then fit the back-end if any."""
    device = start_training(tp, seed)
    model.to(device)
    if model.speaker_backend is not None:
        model.speaker_backend.reset()
    batches = TrainingBatches(train_split, tp, augmenter, seed, owner)
    objective = Objective(model, batches.index, tp, device, seed, owner)
    if tp.class_centres == "class_means":
        centres_from_class_means(objective.classifiers, model, train_split, device)
    optimiser = torch.optim.AdamW(list(model.parameters()) + objective.parameters(), lr=tp.lr,
                                  weight_decay=tp.weight_decay)
    schedule = one_cycle(optimiser, tp.lr, tp.max_epochs * tp.batches_per_epoch)
    result, best_state, stale = TrainResult(), None, 0
    for epoch in range(1, tp.max_epochs + 1):
        model.train()
        started = time.perf_counter()
        totals = dict.fromkeys(Objective.STATS, 0.0)
        bar = tqdm(range(tp.batches_per_epoch), desc=f"{desc} epoch {epoch}/{tp.max_epochs}", unit=" batch")
        for _ in bar:
            feats, frames, warps, index = batches.sample()
            x, n = batches.augment(feats, frames, warps)
            loss, stats = objective(training_forward(model, x.to(device), n.to(device), tp.precision), index)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            for k, v in stats.items():
                totals[k] += v
            bar.set_postfix(word=f"{stats['loss_word']:.3f}", speaker=f"{stats['loss_speaker']:.3f}")
        row = {"epoch": epoch, **{k: v / tp.batches_per_epoch for k, v in totals.items()},
               "lr": schedule.get_last_lr()[0]}
        validated = epoch >= tp.validate_from_epoch  # see validate_from_epoch in params.yaml
        if validated:
            row.update(validation_scores(model, val_split, device, seed, trials))
        row["seconds"] = time.perf_counter() - started
        result.history.append(row)
        log.info("%s epoch %d%s: %s", desc, epoch, "" if validated else " (not validated)",
                 {k: round(v, 4) for k, v in row.items()})
        if not validated:
            continue
        if best_state is None or row["val_score"] < result.best["val_score"]:
            best_state, result.best, result.best_epoch, stale = copy.deepcopy(model.state_dict()), row, epoch, 0
        else:
            stale += 1
            if stale >= tp.patience:
                log.info("%s: no better validation score for %d epochs, stopping", desc, stale)
                break
    model.load_state_dict(best_state)
    model.eval()
    if model.speaker_backend is not None:
        # A new dict: `best` is also a row of the history, which stays one row per epoch.
        result.best = {**result.best, **fit_speaker_backend(model, train_split, val_split, device, seed, desc, trials)}
    return result


def reproducible(row: dict) -> dict:
    """An epoch's figures without its wall-clock time: what a checkpoint keeps, so that the same params
    give a byte-identical model file (and DVC sees nothing changed downstream)."""
    return {k: v for k, v in row.items() if k != "seconds"}


def write_history(result: TrainResult, path: str | Path) -> None:
    pd.DataFrame(result.history).to_csv(path, index=False)
