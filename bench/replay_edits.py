"""Which edits of a heard recording the replay memory still recognises, and what it costs new takes.

Each of `--takes` owner takes (data/owner) is remembered as the service remembers an accepted take
(`Unlocker.fingerprint_sets`: the take at every `evaluate.replay_shifts` delay and, when the release has
one, in its band-limited view), then sent again edited as an attacker holding the recording might: padded,
low-passed, resampled through 8 kHz (sent at 8 kHz), high-passed, band-passed to a phone line's band,
turned up until it clips, with noise added. Each copy
is judged by the service's replay rule (`Unlocker.replays_take`: `Verifier.replays` on the copy's
views, as `Unlocker.verify` compares them); a copy "passes" when the rule takes it for a new recording. The
owner's *other* takes of the same word, judged the same way against each remembered take, show the
price: a genuine take refused as a copy.

    python bench/replay_edits.py [--params params.yaml] [--takes 30] [--full-band-only]

Run after `dvc repro` (it needs models/release and data/owner); ~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from voicelock.audio import resample
from voicelock.enrollment import Unlocker
from voicelock.errors import VoicelockError
from voicelock.params import load_params
from voicelock.replay import fingerprints

Edit = Callable[[np.ndarray], tuple[np.ndarray, int]]  # 16 kHz samples → (copy, the rate it is sent at)


def low_pass(cut: float) -> Edit:
    sos = signal.butter(10, cut, fs=16000, output="sos")
    return lambda x: (signal.sosfilt(sos, x).astype(np.float32), 16000)


def high_pass(cut: float) -> Edit:
    sos = signal.butter(4, cut, "highpass", fs=16000, output="sos")
    return lambda x: (signal.sosfilt(sos, x).astype(np.float32), 16000)


def telephone_band(x: np.ndarray) -> tuple[np.ndarray, int]:
    sos = signal.butter(6, [300, 3400], "bandpass", fs=16000, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32), 16000


def with_noise(snr_db: float) -> Edit:
    def edit(x: np.ndarray) -> tuple[np.ndarray, int]:
        rms = float(np.sqrt(np.mean(np.square(x))))
        noise = np.random.default_rng(int(snr_db)).normal(0, rms * 10 ** (-snr_db / 20), x.size)
        return (x + noise).astype(np.float32), 16000
    return edit


def clipped(db: float) -> Edit:
    return lambda x: (np.clip(x * 10 ** (db / 20), -1, 1).astype(np.float32), 16000)


EDITS: dict[str, Edit] = {
    "the recording itself": lambda x: (x, 16000),
    "5 ms of zeros in front": lambda x: (np.concatenate([np.zeros(80, np.float32), x]), 16000),
    "sent at 8 kHz": lambda x: (resample(x, 16000, 8000), 8000),
    **{f"low-passed at {cut / 1000:g} kHz": low_pass(cut) for cut in (2500, 3500, 4000, 5000, 6000)},
    "low-passed at 4 kHz, 5 ms of zeros": lambda x: (np.concatenate([np.zeros(80, np.float32), low_pass(4000)(x)[0]]),
                                                      16000),
    **{f"high-passed at {cut:g} Hz": high_pass(cut) for cut in (150, 300)},
    "telephone band (300-3400 Hz)": telephone_band,
    **{f"turned up {db:g} dB, clipped": clipped(db) for db in (6, 8)},
    **{f"noise at {snr:g} dB SNR": with_noise(snr) for snr in (40, 30)},
}


def views_of(lock: Unlocker, clip: np.ndarray, name: str) -> np.ndarray:
    """A prepared clip's fingerprints as `Unlocker.verify` compares them: the full band, then its views."""
    word, speaker, band = lock.embed_views([clip], [name])
    return np.concatenate([fingerprints(word, speaker), band])


def is_new(lock: Unlocker, views: np.ndarray, remembered: np.ndarray) -> bool:
    """The replay rule's verdict for one take against one remembered take's set (row 0: its own)."""
    return not lock.replays_take(views, [remembered])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--takes", type=int, default=30, help="owner takes to remember and edit")
    parser.add_argument("--full-band-only", action="store_true",
                        help="judge without the release's band-limited view, as a release without one would")
    args = parser.parse_args()
    params = load_params(args.params)
    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    if args.full_band_only:
        lock.verifier.thresholds["replay_band_hz"] = 0
    owner = sorted(Path(params.owner.out_dir).rglob("*.wav"))
    picked = np.random.default_rng(params.seed).choice(len(owner), min(args.takes, len(owner)), replace=False)
    passing = dict.fromkeys(EDITS, 0)
    sent = dict.fromkeys(EDITS, 0)
    genuine_refused = genuine = 0
    for path in (owner[i] for i in picked):
        samples, rate = sf.read(path, dtype="float32")
        take = lock.prepare(samples, rate, path.name)
        own = views_of(lock, take, path.name)
        remembered = lock.fingerprint_sets([take], own[:1], own[1:], [path.name])[0]
        for what, edit in EDITS.items():
            copy, copy_rate = edit(resample(samples, rate, 16000) if rate != 16000 else samples)
            try:
                heard = lock.prepare(copy, copy_rate, what)
            except VoicelockError:  # refused before any replay check (too quiet, too short)
                continue
            sent[what] += 1
            passing[what] += is_new(lock, views_of(lock, heard, what), remembered)
        for other in sorted(path.parent.glob("*.wav")):
            if other != path:
                x, r = sf.read(other, dtype="float32")
                genuine += 1
                genuine_refused += not is_new(lock, views_of(lock, lock.prepare(x, r, other.name), other.name),
                                              remembered)
    band = lock.verifier.replay_band_hz
    print(f"release: replay {lock.thresholds['replay']:.4f}, replay_single {lock.thresholds['replay_single']:.4f}, "
          f"{len(lock.verifier.replay_shifts)} shifts, band-limited view "
          + (f"below {band:g} Hz" if band else "none"))
    print(f"copies of {len(picked)} owner takes, each remembered as an accepted take, that pass as new recordings:")
    for what in EDITS:
        print(f"  {what:36s} {passing[what]:3d} of {sent[what]}")
    print(f"the owner's other takes of the word refused as copies: {genuine_refused} of {genuine}")


if __name__ == "__main__":
    main()
