"""Several seeds per recipe: pre-train each recipe at each seed, print its figures side by side.

    .venv/bin/python bench/recipes.py --seeds 20261124 11 \
        --recipe 'wcw1={"pretrain": {"word_class_weight": 1.0}}' --jobs 2

Why: one pre-training run's spread is as wide as most levers' effects (docs/decisions.md), so a lever
is judged on several seeds, against the shipped recipe (params.yaml, always run as `base`) at the same
seeds. A recipe is params.yaml with the given keys overridden. Each run pre-trains only (fine-tuning
moves these figures little) and is scored with the validation trials (`validation_scores`: keyword
accuracy with templates from other speakers, same-word and all-trials speaker EER) on the test
speakers and on the unseen voices (`data/ood`), overall and by engine. Needs the features and unseen
stages' outputs. A pre-training run is ~15 min on 2 CPU cores; on a GPU machine with many cores,
`--jobs` runs them side by side (docs/decisions.md's table of the seventeenth sitting: 10 at once).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from voicelock.data.layout import SPEAKERS_FILE  # noqa: E402
from voicelock.errors import VoicelockError  # noqa: E402
from voicelock.params import Params, load_params  # noqa: E402

FIGURES = ("keyword_accuracy", "speaker_eer", "speaker_eer_all_trials")


def merged(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys replaced, section by section (a new dict)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def recipe_params(params_file: Path, override: dict, seed: int) -> Params:
    """params.yaml with `override` and `seed`; a key it does not know is an error naming the key."""
    raw = merged(yaml.safe_load(params_file.read_text()), override)
    try:
        return Params.model_validate({**raw, "seed": seed})
    except ValidationError as e:
        keys = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise VoicelockError(f"recipe {json.dumps(override)}: {keys}") from None


def unseen_split(params: Params, cache: Path):
    """The unseen voices' features (computed once, then shared by every run through `cache`)."""
    from voicelock.evaluation import folder_split
    from voicelock.features import FeatureExtractor
    from voicelock.model.train import Split

    npy, csv = cache / "ood.npy", cache / "ood.csv"
    if not npy.exists():
        split = folder_split(params.ood.out_dir, FeatureExtractor(params.features, params.data.sample_rate),
                             "unseen voices")
        engines = pd.read_csv(Path(params.ood.out_dir) / SPEAKERS_FILE, dtype=str).set_index("id")["engine"]
        split.index.assign(engine=split.index["speaker"].map(engines), frames=split.frames).to_csv(csv, index=False)
        np.save(npy, split.features)
    index = pd.read_csv(csv, dtype={"speaker": str, "word": str, "engine": str})
    return Split(np.load(npy), index["frames"].to_numpy(np.int64), index)


def run_one(params_file: Path, name: str, override: dict, seed: int, cache: Path, threads: int) -> dict:
    """Pre-train one recipe at one seed; its figures on the test speakers and the unseen voices."""
    import torch

    from voicelock.features import load_split, read_meta
    from voicelock.model.augment import make_augmenter
    from voicelock.model.network import VoiceLockNet
    from voicelock.model.train import Split, pick_device, train, validation_scores

    logging.basicConfig(level=logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    params = recipe_params(params_file, override, seed)
    features = params.features.out_dir
    splits = {s: Split.from_feature_set(load_split(features, s)) for s in ("training", "validation", "testing")}
    unseen = unseen_split(params, cache)
    torch.manual_seed(seed)
    model = VoiceLockNet(read_meta(features)["n_features"], params.model)
    started = time.perf_counter()
    result = train(model, splits["training"], splits["validation"], params.pretrain, make_augmenter(params, seed),
                   seed, f"{name}@{seed}", params.evaluate)
    device = pick_device(params.pretrain.device)
    row: dict = {"recipe": name, "seed": seed, "best_epoch": result.best_epoch,
                 "train_min": round((time.perf_counter() - started) / 60, 1)}
    engines = unseen.index["engine"].to_numpy()
    parts = {"test": splits["testing"], "unseen": unseen}
    for engine in sorted(set(engines.tolist())):
        rows = np.flatnonzero(engines == engine)
        parts[f"unseen {engine}"] = Split(unseen.features[rows], unseen.frames[rows],
                                          unseen.index.iloc[rows].reset_index(drop=True))
    for label, split in parts.items():
        scores = validation_scores(model, split, device, seed, params.evaluate)
        row.update({f"{label} {k}": round(scores[f"val_{k}"], 4) for k in FIGURES})
    return row


def table(rows: list[dict]) -> pd.DataFrame:
    """Per recipe and figure: the mean over seeds, and the seeds' spread (max − min)."""
    frame = pd.DataFrame(rows)
    figures = [c for c in frame.columns if any(c.endswith(f) for f in FIGURES)]
    grouped = frame.groupby("recipe", sort=False)[figures]
    out = grouped.mean().round(4).T
    spread = (grouped.max() - grouped.min()).round(4).T
    return out.astype(str) + " ±" + (spread / 2).round(4).astype(str)


def parse_recipe(text: str) -> tuple[str, dict]:
    name, _, body = text.partition("=")
    try:
        override = json.loads(body)
    except json.JSONDecodeError as e:
        raise VoicelockError(f"--recipe {name}: not JSON ({e}); write NAME='{{\"section\": {{\"key\": value}}}}'")
    if not name or not isinstance(override, dict):
        raise VoicelockError(f"--recipe {text!r}: write NAME='{{\"section\": {{\"key\": value}}}}'")
    return name, override


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--recipe", action="append", default=[], help="NAME=JSON of params.yaml overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: params.yaml's seed and 11")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each in its own process)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--out", type=Path, help="also write one JSON line per run here")
    args = parser.parse_args()
    try:
        base = load_params(args.params)  # validates params.yaml before any run starts
        recipes = dict([("base", {})] + [parse_recipe(r) for r in args.recipe])
        for name, override in recipes.items():
            recipe_params(args.params, override, base.seed)  # a bad key fails here, not after an hour
    except VoicelockError as e:
        sys.exit(f"error: {e}")
    seeds = args.seeds or [base.seed, 11]
    runs = [(name, recipes[name], seed) for seed in seeds for name in recipes]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unseen_split(base, Path(tmp))  # once, before the runs share it
        with ProcessPoolExecutor(max(args.jobs, 1)) as pool:
            futures = [pool.submit(run_one, args.params, n, o, s, Path(tmp), args.threads) for n, o, s in runs]
            for future in futures:
                rows.append(future.result())
                print(json.dumps(rows[-1]), flush=True)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(rows[-1]) + "\n")
    print(f"\n{len(seeds)} seeds per recipe: mean ± half the spread")
    print(table(rows).to_string())


if __name__ == "__main__":
    main()
