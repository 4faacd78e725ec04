"""What sets the speaker threshold, and what it costs: the validation speaker pairs whose impostor
trials make the tail the threshold is calibrated on, and which check of the password rule refuses the
genuine takes of another corpus (the unseen voices by default) at the release's own thresholds.

Why: a threshold calibrated for FAR 0.001 sits where the highest 0.1% of the validation impostor
trials do, and one pair of voices that the network cannot tell apart can own that tail — two of
MBROLA's recorded women did (docs/decisions.md, data.synth). Everyone then pays for that pair in
false refusals. Reading which pairs sit there, and which check (word, word margin, normalised
speaker score, raw-cosine floor) refuses the genuine takes, tells a calibration change from a
network change before a 20-minute `dvc repro` is spent on either.

    python bench/calibration_anatomy.py [--model models/release] [--data data/ood] [--tail 0.003]

Run after `dvc repro` (it needs the release and the features cache); ~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from unseen_draw import password_trials

from voicelock.data.layout import SPEAKERS_FILE
from voicelock.evaluation import embed_split, folder_split, split_unlock_trials
from voicelock.features import load_split
from voicelock.model.train import Split
from voicelock.params import load_params
from voicelock.release import Release
from voicelock.scoring import SpeakerScorer
from voicelock.verifier import Verifier


def speaker_names(raw_dir: str) -> dict[str, str]:
    """Speaker id → 'engine voice/variant ×scale', from the corpus's speakers.csv (ids alone if none)."""
    path = Path(raw_dir) / SPEAKERS_FILE
    if not path.exists():
        return {}
    table = pd.read_csv(path, dtype=str).fillna("").set_index("id")
    scale = table["formant_scale"].astype(float) if "formant_scale" in table else pd.Series(1.0, table.index)
    return {i: f"{r.get('engine', '')} {r.get('voice', '')}/{r.get('variant', '')} ×{scale[i]:.2f}"
            for i, r in table.iterrows()}


def validation_pairs(release: Release, val: Split, enroll_clips: int) -> pd.DataFrame:
    """Every 'other speaker says the password' trial of the validation speakers, with who and its scores:
    the verifier's own templates and scores, as calibration meets them."""
    word, speaker = embed_split(release.model, val)
    rows = [(owner, impostor, s, r)
            for owner, impostors, (_, score, raw, _) in password_trials(release, word, speaker, val.index, enroll_clips)
            for impostor, s, r in zip(impostors, score, raw)]
    return pd.DataFrame(rows, columns=["owner", "impostor", "score", "raw"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", help="the release (default: params.yaml's evaluate.out_dir)")
    parser.add_argument("--data", help="a corpus whose genuine refusals to break down (default: ood.out_dir)")
    parser.add_argument("--tail", type=float, default=0.003, help="share of impostor trials to attribute")
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    params = load_params(args.params)
    release = Release.load(args.model or params.evaluate.out_dir)
    names = speaker_names(params.data.raw_dir)

    val = Split.from_feature_set(load_split(params.features.out_dir, "validation"))
    trials = validation_pairs(release, val, params.evaluate.enroll_clips)
    top = trials.nlargest(max(int(len(trials) * args.tail), 1), "score")
    print(f"validation: {len(trials)} impostor trials; thresholds speaker {release.thresholds['speaker']:.3f}, "
          f"raw floor {release.thresholds['speaker_raw']:.3f}; the highest {len(top)} ({args.tail:.1%}) by pair:")
    for pair, n in Counter(frozenset(p) for p in zip(top["owner"], top["impostor"])).most_common(args.pairs):
        a, b = sorted(pair)
        print(f"  {n:5d}  {names.get(a, a)}  ↔  {names.get(b, b)}")

    data = args.data or params.ood.out_dir
    split = folder_split(data, release.extractor())
    word, speaker = embed_split(release.model, split)
    unlock = split_unlock_trials(word, speaker, split, params.evaluate, np.random.default_rng(params.seed),
                                 release.scorer, release.word_templates)
    rule = Verifier(SpeakerScorer(), release.thresholds)  # scored already: only the rule is used
    g = "genuine"
    checks = rule.password_checks(unlock.word[g], unlock.speaker[g], unlock.raw[g], unlock.rival[g])
    refused = 1 - np.logical_and.reduce(list(checks.values())).mean()
    print(f"{data}: {unlock.word[g].size} genuine trials, FRR {refused:.4f}; refused by each check alone:")
    for name, passed in checks.items():
        print(f"  {name:12s} {1 - passed.mean():.4f}  (threshold {rule.threshold(name):.3f})")


if __name__ == "__main__":
    main()
