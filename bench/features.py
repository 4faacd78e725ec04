"""Throughput of the features stage against the bare torchaudio mel transform (this machine's limit).

Both run on the same clips in one process: the stage's path from WAV files on disk to the cached
features (decode, batch, mel, trim, write), and `MelSpectrogram` alone on the same clips already in
memory as one tensor. The ratio is the figure to watch (target ≥ 0.7).

Uses the corpus at data.raw_dir (run `dvc repro features` first) or generates a small one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchaudio

from voicelock.audio import read_wav
from voicelock.data.manifest import read_manifest
from voicelock.features import FeatureExtractor, write_split
from voicelock.params import load_params


def _corpus(params, tmp: Path):
    manifest_path = Path(params.prepare.out_dir) / "manifest.csv"
    if manifest_path.exists():
        return read_manifest(manifest_path), Path(params.data.raw_dir)
    from voicelock.data.manifest import build_manifest
    from voicelock.data.synth import synthesize_corpus

    synth = params.data.synth.model_copy(update={"n_speakers": 40, "background_files": 1})
    root = synthesize_corpus(synth, tmp / "raw", params.seed, params.data.sample_rate, 10, 10)
    return build_manifest(root, 10, 10), root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each side")
    args = parser.parse_args()
    params = load_params()
    fp, rate = params.features, params.data.sample_rate
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest, root = _corpus(params, tmp)
        rows = manifest.sort_values("path").head(args.clips)
        n = len(rows)
        fx = FeatureExtractor(fp, rate)

        stage_best = float("inf")
        with ThreadPoolExecutor(1) as pool:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                write_split(fx, root, rows, tmp, "bench", pool)
                stage_best = min(stage_best, time.perf_counter() - t0)

        clips = [read_wav(root / p)[0] for p in rows["path"]]
        width = max(fx.clip_samples, max(c.size for c in clips))
        waves = torch.zeros(n, width)
        for i, c in enumerate(clips):
            waves[i, : c.size] = torch.from_numpy(c)
        mel = torchaudio.transforms.MelSpectrogram(rate, n_fft=fp.n_fft, win_length=fp.win_length,
                                                   hop_length=fp.hop_length, f_min=fp.f_min, f_max=fp.f_max,
                                                   n_mels=fp.n_mels)
        bare_best = float("inf")
        with torch.no_grad():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for s in range(0, n, fp.batch_size):
                    mel(waves[s: s + fp.batch_size])
                bare_best = min(bare_best, time.perf_counter() - t0)

    stage_rate, bare_rate = n / stage_best, n / bare_best
    print(f"clips: {n} ({fp.kind}, {fp.n_mels} mels, batch {fp.batch_size}, {torch.get_num_threads()} torch threads)")
    print(f"features stage (WAV on disk -> cache): {stage_rate:8.0f} clips/s")
    print(f"bare torchaudio mel (in memory):       {bare_rate:8.0f} clips/s")
    print(f"ratio stage / bare: {stage_rate / bare_rate:.2f} (target >= 0.70)")


if __name__ == "__main__":
    np.random.seed(0)
    main()
