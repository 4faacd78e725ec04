"""Where a pre-training step spends its time on CPU, phase by phase.

Runs the `pretrain` batch recipe from params.yaml (P×W×K sampler, augmentation, both heads' mined
triplet losses and margin-softmax losses, AdamW) on the feature cache for a few batches and prints
milliseconds per batch for each phase and clips per second. The pre-training stage is most of
`dvc repro`'s 20-minute budget, so this is the figure to watch before adding epochs or width.

Run after the features stage (`dvc repro features`); compare runs on the same machine, as ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from voicelock.features import load_split, read_meta
from voicelock.model.network import VoiceLockNet, count_parameters
from voicelock.model.pretrain import make_augmenter
from voicelock.model.sampling import SpeakerWordBatches
from voicelock.model.train import Split, margin_classifiers, training_forward
from voicelock.model.triplets import triplet_loss
from voicelock.params import load_params

PHASES = ("sample", "augment", "forward", "mine + loss", "backward + step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="override pretrain.precision")
    parser.add_argument("--max-triplets", type=int, help="override pretrain.max_triplets")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    params = load_params(args.params)
    tp = params.pretrain.model_copy(update={k: v for k, v in (("precision", args.precision),
                                                               ("max_triplets", args.max_triplets)) if v})
    cache = params.features.out_dir
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(params.seed)
    split = Split.from_feature_set(load_split(cache, "training"))
    model = VoiceLockNet(read_meta(cache)["n_features"], params.model).train()
    augmenter = make_augmenter(params, params.seed)
    sampler = SpeakerWordBatches(split.index, tp.speakers_per_batch, tp.words_per_batch, tp.takes_per_pair,
                                 params.seed)
    heads = margin_classifiers(model, split.index, tp, torch.device("cpu"))
    optimiser = torch.optim.AdamW(list(model.parameters()) + [p for _, c, _ in heads.values() for p in c.parameters()],
                                  lr=tp.lr, weight_decay=tp.weight_decay)
    loss_fn = nn.TripletMarginLoss(margin=tp.margin)
    gen = torch.Generator().manual_seed(params.seed)
    spent = dict.fromkeys(PHASES, 0.0)
    clips = 0
    for step in range(args.warmup + args.batches):
        marks = [time.perf_counter()]
        rows = np.sort(sampler.batch())
        feats = torch.as_tensor(split.features[rows], dtype=torch.float32)
        frames, index = torch.as_tensor(split.frames[rows]), split.index.iloc[rows]
        marks.append(time.perf_counter())
        x, n = augmenter(feats, frames)
        marks.append(time.perf_counter())
        out = training_forward(model, x, n, tp.precision)
        marks.append(time.perf_counter())
        loss = torch.zeros(())
        for head in ("word", "speaker"):
            labels = torch.tensor(pd.factorize(index[head])[0])
            loss = loss + triplet_loss(labels, getattr(out, head), loss_fn, tp.mining, tp.max_triplets, gen)[0]
        for head, (classes, classifier, weight) in heads.items():
            loss = loss + weight * classifier(getattr(out, head), torch.tensor(index[head].map(classes).to_numpy()))
        marks.append(time.perf_counter())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        marks.append(time.perf_counter())
        if step >= args.warmup:
            clips += len(rows)
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                spent[phase] += end - start
    total = sum(spent.values())
    print(f"pretrain step on CPU, {torch.get_num_threads()} threads, {count_parameters(model):,} parameters, "
          f"batch {len(rows)} clips, {tp.precision}, max_triplets {tp.max_triplets}, "
          f"{args.batches} batches after {args.warmup} warm-up")
    for phase, seconds in spent.items():
        print(f"  {phase:<16} {1000 * seconds / args.batches:7.1f} ms/batch  {100 * seconds / total:5.1f}%")
    print(f"  {'total':<16} {1000 * total / args.batches:7.1f} ms/batch  -> {clips / total:.0f} clips/s")


if __name__ == "__main__":
    main()
