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

import torch

from voicelock.features import load_split, read_meta
from voicelock.model.augment import make_augmenter
from voicelock.model.network import VoiceLockNet, count_parameters
from voicelock.model.train import Objective, Split, TrainingBatches, start_training, training_forward
from voicelock.params import load_params

PHASES = ("sample", "augment", "forward", "mine + loss", "backward + step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], help="override pretrain.precision")
    parser.add_argument("--max-triplets", type=int, help="override pretrain.max_triplets")
    parser.add_argument("--threads", type=int, default=0, help="override pretrain.threads (0: torch's default)")
    args = parser.parse_args()
    params = load_params(args.params)
    tp = params.pretrain.model_copy(update={k: v for k, v in (("precision", args.precision),
                                                               ("max_triplets", args.max_triplets),
                                                               ("threads", args.threads)) if v})
    cache = params.features.out_dir
    device = start_training(tp, params.seed)  # the stage's deterministic kernels, seed and threads
    split = Split.from_feature_set(load_split(cache, "training"))
    model = VoiceLockNet(read_meta(cache)["n_features"], params.model).train()
    # The pre-training stage's own batches and objective (voicelock/model/train.py), timed phase by phase.
    batches = TrainingBatches(split, tp, make_augmenter(params, params.seed), params.seed)
    objective = Objective(model.to(device), batches.index, tp, device, params.seed)
    optimiser = torch.optim.AdamW(list(model.parameters()) + objective.parameters(), lr=tp.lr,
                                  weight_decay=tp.weight_decay)

    def now() -> float:
        """The time once the device has finished: a GPU runs asynchronously, and without waiting for it
        each phase's time would land in the next one's."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    spent = dict.fromkeys(PHASES, 0.0)
    clips = 0
    for step in range(args.warmup + args.batches):
        marks = [now()]
        feats, frames, warps, index = batches.sample()
        marks.append(now())
        x, n = batches.augment(feats, frames, warps)
        marks.append(now())
        out = training_forward(model, x.to(device), n.to(device), tp.precision)
        marks.append(now())
        loss, _ = objective(out, index)
        marks.append(now())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        marks.append(now())
        if step >= args.warmup:
            clips += len(index)
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                spent[phase] += end - start
    total = sum(spent.values())
    print(f"pretrain step on {device.type}, {torch.get_num_threads()} threads, {count_parameters(model):,} parameters, "
          f"batch {len(index)} clips, {tp.precision}, max_triplets {tp.max_triplets}, "
          f"{args.batches} batches after {args.warmup} warm-up")
    for phase, seconds in spent.items():
        print(f"  {phase:<16} {1000 * seconds / args.batches:7.1f} ms/batch  {100 * seconds / total:5.1f}%")
    print(f"  {'total':<16} {1000 * total / args.batches:7.1f} ms/batch  -> {clips / total:.0f} clips/s")


if __name__ == "__main__":
    main()
