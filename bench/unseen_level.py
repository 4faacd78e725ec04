"""Whether a recording's level moves the released model's decisions, and whether it fools the replay memory.

1. The unseen-voices corpus (voicelock/data/unseen.py) written again at other levels — every take
   scaled by `--levels` dB, clipped at full scale and stored as 16-bit PCM, as a quieter or louder
   microphone would give it — and judged at the shipped thresholds (`evaluation.unseen_metrics`, as the
   evaluate_unseen stage does). A model that hears each clip at one level (`model.input_level_db`)
   gives the as-recorded figures at every level short of clipping.
2. The owner's takes (data/owner) each remembered as the service remembers an accepted take (its
   fingerprint set at `evaluate.replay_shifts`), then sent again at each level: how many such copies
   the replay rule (`Unlocker.replays_take`, every part of it) would take for a new recording.

    python bench/unseen_level.py [--params params.yaml] [--levels -24,-12,8] [--takes 30]

Run after `dvc repro` (it needs models/release, data/ood and data/owner); ~2 min on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from voicelock.enrollment import Unlocker
from voicelock.errors import VoicelockError
from voicelock.params import load_params
from voicelock.promotion_rules import RULES
from voicelock.release import Release
from voicelock.replay import fingerprints

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.unseen_noise import judged  # noqa: E402 — the release judged on a corpus as evaluate_unseen does


def scaled_copy(src: Path, dst: Path, db: float) -> None:
    """`src` (a corpus in Speech Commands layout) at `db` relative level, into `dst`; background noise
    and the listing files copied as they are."""
    gain = 10 ** (db / 20)
    for path in src.rglob("*"):
        out = dst / path.relative_to(src)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".wav" and "_background_noise_" not in path.parts:
            samples, rate = sf.read(path, dtype="float64")
            sf.write(out, np.clip(samples * gain, -1.0, 1.0), rate, subtype="PCM_16")
        else:
            shutil.copy2(path, out)


def replays_passing(lock: Unlocker, takes: list[Path], levels: list[float]) -> dict[float, int]:
    """For each level: how many of `takes`, remembered as an accepted unlock's take is and sent again at
    that level, the replay rule would take for a new recording (a copy too quiet to upload is refused
    anyway, and does not count)."""
    passing = dict.fromkeys(levels, 0)
    for path in takes:
        samples, rate = sf.read(path, dtype="float32")
        take = lock.prepare(samples, rate, path.name)
        word, speaker, band = lock.embed_views([take], [path.name])
        remembered = lock.fingerprint_sets([take], fingerprints(word, speaker), band, [path.name])[0]
        for db in levels:
            copy = np.clip(samples * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)
            try:
                heard = lock.prepare(copy, rate, path.name)
            except VoicelockError:  # too quiet to hold a word (enroll.min_rms): refused before any replay check
                continue
            word, speaker, band = lock.embed_views([heard], [path.name])
            probe = np.concatenate([fingerprints(word, speaker), band])  # its views: the full band first
            if not lock.replays_take(probe, [remembered]):
                passing[db] += 1
    return passing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--levels", default="-24,-12,8", help="dB relative to the recording, comma-separated")
    parser.add_argument("--takes", type=int, default=30, help="owner takes to replay at each level")
    args = parser.parse_args()
    params = load_params(args.params)
    levels = [float(x) for x in args.levels.split(",")]
    release = Release.load(params.evaluate.out_dir)
    work = Path(tempfile.mkdtemp(prefix="voicelock-level-"))
    try:
        figures = {0.0: judged(release, params, params.ood.out_dir)}
        for db in levels:
            scaled_copy(Path(params.ood.out_dir), work / f"{db:+g}", db)
            figures[db] = judged(release, params, str(work / f"{db:+g}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("unseen voices at the shipped thresholds, as recorded → " + " / ".join(f"{db:+g} dB" for db in levels))
    for key in RULES:  # the figures the promotion gate weighs
        print(f"  {key:28s} " + " / ".join(f"{figures[db][key]:.4f}" for db in [0.0] + levels))
    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    owner = sorted(Path(params.owner.out_dir).rglob("*.wav"))
    takes = [owner[i] for i in np.random.default_rng(params.seed).choice(len(owner), min(args.takes, len(owner)),
                                                                         replace=False)]
    passing = replays_passing(lock, takes, levels + [-6.0, -3.0, 3.0, 6.0])
    print(f"replay memory: copies of {len(takes)} owner takes at another level that pass as new recordings")
    for db, n in sorted(passing.items()):
        print(f"  {db:+g} dB: {n} of {len(takes)}")


if __name__ == "__main__":
    main()
