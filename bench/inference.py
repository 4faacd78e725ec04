"""Unlock latency on CPU: one clip, one thread, from samples in memory to the decision.

Prints p50/p99 of `Unlocker.verify` for a 1 s clip (feature extraction + both embeddings + scoring;
with a band-limited replay view, the network also reads the clip's view) and batch throughput of
features + embeddings. Target: p50 <= 5 ms. A release with a band-limited view is also timed without
it, and with the network run by PyTorch eagerly instead of ONNX Runtime (voicelock/served_network.py),
alternating in the same run, so the view's cost and the engine's gain are ratios on one machine.

Uses the evaluated model at evaluate.out_dir (run `dvc repro` first), or an untrained network of the
same size when there is none (latency does not depend on the weights). `--model DIR` times another
release folder: run two alternately to compare networks as a ratio (this host's speed wanders).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from voicelock.enrollment import Template, Unlocker
from voicelock.model.checkpoint import save_checkpoint
from voicelock.model.network import VoiceLockNet, count_parameters
from voicelock.params import load_params
from voicelock.runtime import limit_threads
from voicelock.verifier import REQUIRED_THRESHOLDS, make_template


def _model_dir(params, tmp: Path) -> Path:
    release = Path(params.evaluate.out_dir)
    if (release / "model.pt").exists():
        return release
    print(f"(no model at {release}: timing an untrained network of the configured size)")
    fx_dims = params.features.n_mfcc if params.features.kind == "mfcc" else params.features.n_mels
    net = VoiceLockNet(fx_dims, params.model)
    save_checkpoint(tmp / "model.pt", net, params.model, params.features, params.data.sample_rate, fx_dims,
                    thresholds={name: 0.5 for name in REQUIRED_THRESHOLDS})
    return tmp


def _eager(model: torch.nn.Module):
    """`ServedNetwork`'s call, run by PyTorch on `model` itself (what every unlock ran before)."""
    @torch.no_grad()
    def run(feats: torch.Tensor, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        out = model(feats, frames)
        return out.word.numpy(), out.speaker.numpy()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=500, help="single-clip unlocks to time")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--model", type=Path, help="a release folder to time instead of evaluate.out_dir "
                                                   "(compare two networks in one sitting, as a ratio)")
    args = parser.parse_args()
    params = load_params()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        lock = Unlocker(args.model or _model_dir(params, Path(tmp)), params.enroll)
        rate = lock.sample_rate
        clips = [(0.1 * rng.standard_normal(rate)).astype(np.float32) for _ in range(16)]
        # A template straight from the embeddings: noise clips are no enrollment the checks would take
        # (they look like one recording), and only verify's cost is timed here.
        t_word, t_speaker = make_template(*lock.embed_here(clips[:3]))
        template = Template(t_word.tolist(), t_speaker.tolist(), 3, model=lock.model_id)

        default_threads = torch.get_num_threads()
        limit_threads(1)  # torch and numpy's BLAS: "one thread" means both (voicelock/runtime.py)
        # The same release without its band-limited view (if it has one): the view's cost, alternating.
        full_band = Unlocker(args.model or _model_dir(params, Path(tmp)), params.enroll)
        full_band.verifier.thresholds["replay_band_hz"] = 0
        has_view = bool(lock.verifier.replay_band_hz)
        # The same release with its network run by PyTorch, as before ONNX Runtime ran it.
        eager = Unlocker(args.model or _model_dir(params, Path(tmp)), params.enroll)
        eager.network = _eager(eager.model)
        for c in clips:  # warm-up
            lock.verify(template, c, rate)
            full_band.verify(template, c, rate)
            eager.verify(template, c, rate)
        times, without, by_torch = [], [], []
        runs = [(lock, times), (eager, by_torch)] + ([(full_band, without)] if has_view else [])
        for i in range(args.clips):
            for unlocker, out in runs:
                t0 = time.perf_counter()
                unlocker.verify(template, clips[i % len(clips)], rate)
                out.append(time.perf_counter() - t0)
        p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
        # The service then remembers an accepted unlock's take at every replay shift
        # (`Unlocker.remembered`, voicelock/replay.py): timed apart, on decisions that unlocked.
        accepted = [d for d in (lock.verify(template, c, rate) for c in clips) if d.unlocked]
        remember = []
        for i in range(max(args.clips // 5, 20) if accepted else 0):
            t0 = time.perf_counter()
            lock.remembered(accepted[i % len(accepted)])
            remember.append(time.perf_counter() - t0)
        remember_p50 = float(np.median(remember) * 1000) if remember else float("nan")

        limit_threads(default_threads)
        batch = [clips[i % len(clips)] for i in range(args.batch)]
        lock.embed(batch)
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            lock.embed(batch)
        throughput = reps * args.batch / (time.perf_counter() - t0)
    print(f"model: {count_parameters(lock.model):,} parameters as served (BatchNorms folded into their layers)")
    print(f"single-clip unlock (1 s clip, 1 thread): p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p50 <= 5 ms)")
    if without:
        base = float(np.median(without) * 1000)
        print(f"  the same without the band-limited replay view ({lock.verifier.replay_band_hz:g} Hz), alternating: "
              f"p50 {base:.2f} ms — the view costs {p50 / base:.2f}× the decision")
    torch_p50 = float(np.median(by_torch) * 1000)
    print(f"  the same with the network run by PyTorch (eager) instead of ONNX Runtime, alternating: p50 "
          f"{torch_p50:.2f} ms — ONNX Runtime takes {p50 / torch_p50:.2f}× its time")
    shifts = lock.verifier.replay_shifts
    views = 2 if lock.verifier.replay_band_hz else 1
    print(f"an accepted unlock's replay memory ({len(shifts) * views - views} shifted copies of its take, "
          f"`replay_shifts`, in {views} view(s)): "
          f"p50 {remember_p50:.2f} ms more, once the decision is made "
          f"({len(accepted)} of {len(clips)} probes accepted)")
    print(f"batch of {args.batch} (features + embeddings by ONNX Runtime, {torch.get_num_threads()} threads): "
          f"{throughput:.0f} clips/s")


if __name__ == "__main__":
    main()
