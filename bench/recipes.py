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
`--jobs` runs them side by side (docs/decisions.md's table of the seventeenth sitting came from an ad-hoc
copy of this method, 10 runs at a time, with the features quantised to 8 bits for the transfer).
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
from voicelock.params import Params, _format_validation_error, load_params  # noqa: E402

FIGURES = ("keyword_accuracy", "speaker_eer", "speaker_eer_all_trials")


# What a pre-training run reads. The feature cache and the corpora are the stages' outputs, read as
# they are: overriding `features`, `data` or `ood` here would change nothing, so it is refused.
SECTIONS = ("model", "augment", "pretrain", "evaluate")


def recipe_params(params_file: Path, override: dict, seed: int) -> Params:
    """params.yaml with each `override` section's keys replaced (a key's value whole, dicts too), at
    `seed`, made absolute under the checkout; an unknown section or key is an error naming it."""
    raw = yaml.safe_load(params_file.read_text())
    for section, keys in override.items():
        if section not in SECTIONS or not isinstance(keys, dict):
            raise VoicelockError(f"recipe {json.dumps(override)}: '{section}' — a recipe overrides keys of "
                                 f"{', '.join(SECTIONS)}, as {{\"section\": {{\"key\": value}}}}")
        raw[section] = {**raw[section], **keys}
    try:
        return Params.model_validate({**raw, "seed": seed}).under(params_file.parent)
    except ValidationError as e:
        raise VoicelockError(_format_validation_error(params_file, e).replace(
            " — fix these keys and re-run", f" (recipe {json.dumps(override)})")) from None


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
    """Pre-train one recipe at one seed (the pretrain stage's own function, into a folder of its own);
    its figures on the test speakers and the unseen voices, overall and by engine."""
    import torch

    from voicelock.features import load_split
    from voicelock.model.checkpoint import load_checkpoint
    from voicelock.model.pretrain import pretrain
    from voicelock.model.train import Split, pick_device, validation_scores

    logging.basicConfig(level=logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    params = recipe_params(params_file, override, seed)
    params = params.model_copy(update={"pretrain": params.pretrain.model_copy(
        update={"out_dir": str(cache / f"{name}-{seed}")})})
    started = time.perf_counter()
    device = pick_device(params.pretrain.device)
    model, meta = load_checkpoint(pretrain(params), device)
    row: dict = {"recipe": name, "seed": seed, "best_epoch": meta["best_epoch"],
                 "train_min": round((time.perf_counter() - started) / 60, 1)}
    unseen = unseen_split(params, cache)
    engines = unseen.index["engine"].to_numpy()
    parts = {"test": Split.from_feature_set(load_split(params.features.out_dir, "testing")), "unseen": unseen}
    for engine in sorted(set(engines.tolist())):
        rows = np.flatnonzero(engines == engine)
        parts[f"unseen {engine}"] = Split(unseen.features[rows], unseen.frames[rows],
                                          unseen.index.iloc[rows].reset_index(drop=True))
    for label, split in parts.items():
        scores = validation_scores(model, split, device, seed, params.evaluate)
        row.update({f"{label} {k}": round(scores[f"val_{k}"], 4) for k in FIGURES})
    return row


def table(rows: list[dict]) -> pd.DataFrame:
    """Per recipe and figure: the mean over seeds ± half the seeds' spread ((max − min) / 2)."""
    frame = pd.DataFrame(rows)
    figures = [c for c in frame.columns if any(c.endswith(f) for f in FIGURES)]
    grouped = frame.groupby("recipe", sort=False)[figures]
    mean = grouped.mean().round(4).T
    half_spread = ((grouped.max() - grouped.min()) / 2).round(4).T
    return mean.astype(str) + " ±" + half_spread.astype(str)


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
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml",
                        help="its relative paths are relative to its folder (the checkout)")
    parser.add_argument("--recipe", action="append", default=[], help="NAME=JSON of params.yaml overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: params.yaml's seed and 11")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each in its own process)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--out", type=Path, help="also write one JSON line per run here")
    args = parser.parse_args()
    try:
        args.params = args.params.resolve()
        base = load_params(args.params).under(args.params.parent)  # validated before any run starts
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
            for (name, _, seed), future in zip(runs, futures):
                try:
                    rows.append(future.result())
                except Exception as e:  # one failed run: the others' queue is dropped, not waited for
                    pool.shutdown(wait=False, cancel_futures=True)
                    sys.exit(f"error: {name} at seed {seed}: {e}")
                print(json.dumps(rows[-1]), flush=True)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(rows[-1]) + "\n")
    print(f"\n{len(seeds)} seeds per recipe: mean ± half the spread")
    print(table(rows).to_string())


if __name__ == "__main__":
    main()
