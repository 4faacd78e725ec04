"""How much of the unseen voices' shortfall is their background noise, and how much the voices.

The unseen-voices corpus (voicelock/data/unseen.py) puts every take through a room and microphone and
then background noise at `ood.noise_snr_db_range` (10–30 dB SNR). This renders the same corpus again
with the noise at 300 dB SNR, i.e. none (15 orders of magnitude below the voice, under float32's
resolution) — the same voices, words, pitches, rooms and microphones, take for take, as the
random draws are the same, only no noise added — and judges the released model on both at its
shipped thresholds (`evaluation.unseen_metrics`, as the evaluate_unseen stage does). A figure that is
good in quiet and bad in noise asks for noise robustness; one that is bad in both asks for voices.

    python bench/unseen_noise.py [--params params.yaml] [--keep DIR]

Run after `dvc repro` (it needs models/release); it takes ~30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from voicelock.data.unseen import synthesize_unseen
from voicelock.evaluation import unseen_metrics
from voicelock.params import Params, load_params
from voicelock.promotion_rules import RULES
from voicelock.release import Release

QUIET_SNR_DB = 300.0  # finite, so the corpus's random draws (and with them every take) stay the same


def judged(release: Release, params: Params, corpus: str) -> dict:
    """The released model's unseen-voice figures on `corpus`, at its shipped thresholds."""
    metrics, _ = unseen_metrics(release.model, release.extractor(), release.thresholds, release.scorer,
                                release.word_templates, params.model_copy(update={
                                    "ood": params.ood.model_copy(update={"out_dir": corpus})}))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--keep", help="write the quiet corpus here instead of a temporary folder")
    args = parser.parse_args()
    params = load_params(args.params)
    release = Release.load(params.evaluate.out_dir)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="voicelock-quiet-"))
    quiet = params.ood.model_copy(update={"out_dir": str(work / "ood"),
                                          "noise_snr_db_range": (QUIET_SNR_DB, QUIET_SNR_DB)})
    try:
        synthesize_unseen(params.data.synth, quiet, params.seed, params.data.sample_rate,
                          params.features.clip_seconds)
        noisy, clean = judged(release, params, params.ood.out_dir), judged(release, params, quiet.out_dir)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    snr = params.ood.noise_snr_db_range
    print(f"unseen voices at the shipped thresholds: with noise at {snr[0]:g}–{snr[1]:g} dB SNR → without")
    for scope, a, b in [("all", noisy, clean)] + [(e, noisy["by_engine"][e], clean["by_engine"][e])
                                                   for e in sorted(noisy["by_engine"])]:
        print(f"  {scope}")
        for key in RULES:  # the figures the promotion gate weighs
            print(f"    {key:28s} {a[key]:.4f} → {b[key]:.4f}")


if __name__ == "__main__":
    main()
