"""The manifest: one row per clip with what later stages and the data checks need to know.

Reading every clip once here (peak, RMS, length) lets the checks catch silent, clipped or misshapen
clips before anything trains on them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from voicelock.data.layout import Clip, assign_splits, scan_corpus
from voicelock.errors import VoicelockError

COLUMNS = ["path", "word", "speaker", "utterance", "split", "sample_rate", "channels",
           "samples", "duration", "peak", "rms"]


def _measure(root: Path, clip: Clip) -> tuple[int, int, int, float, float]:
    path = root / clip.path
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise VoicelockError(f"{path}: not a readable WAV file ({e}) — delete or re-export it") from None
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64)))) if data.size else 0.0
    return rate, data.shape[1], data.shape[0], peak, rms


def build_manifest(root: str | Path, validation_percentage: float, testing_percentage: float,
                   threads: int = 4) -> pd.DataFrame:
    """Scan `root` (Speech Commands layout) and measure every clip; one row per clip, sorted by path."""
    root = Path(root)
    clips = scan_corpus(root)
    splits = assign_splits(root, clips, validation_percentage, testing_percentage)
    with ThreadPoolExecutor(threads) as pool:
        measured = list(tqdm(pool.map(lambda c: _measure(root, c), clips), total=len(clips),
                             desc="measure clips", unit=" clips"))
    rows = [(c.path, c.word, c.speaker, c.utterance, splits[c.path], rate, ch, n, n / rate if rate else 0.0, pk, rms)
            for c, (rate, ch, n, pk, rms) in zip(clips, measured)]
    return pd.DataFrame(rows, columns=COLUMNS)


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise VoicelockError(f"{path}: manifest not found — run the prepare stage first (dvc repro prepare)")
    frame = pd.read_csv(path, dtype={"speaker": str, "word": str, "path": str})
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise VoicelockError(f"{path}: manifest lacks columns {sorted(missing)} — re-run the prepare stage")
    return frame
