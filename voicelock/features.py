"""Log-mel (or MFCC) features, computed in batches with torchaudio and cached per split.

The same `FeatureExtractor` serves the cache (training) and a live clip (enroll/unlock), so the
model never sees features computed two different ways. Clips are trimmed to the spoken part and
left-aligned in a fixed number of frames; the true number of frames is kept so the model can pool
over speech only. The cache is a memory-mappable `.npy` per split plus a CSV index, so training reads
features without decoding audio again.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio
from tqdm import tqdm

from voicelock.audio import digital_silence_cut, read_into, read_wav
from voicelock.data.layout import BACKGROUND_DIR, SPEAKERS_FILE, SPLITS
from voicelock.errors import VoicelockError
from voicelock.fsutil import atomic_dir
from voicelock.params import FeatureParams

log = logging.getLogger(__name__)

CACHE_DTYPE = np.float16  # halves disk and RAM, dB values keep ~0.03 dB resolution; write_split casts to it
META_FILE = "meta.json"
NOISE_FILE = "noise.npy"


class FeatureExtractor(torch.nn.Module):
    """Waveforms (B, S) at `sample_rate` → trimmed, fixed-size features (B, F, T) and frame counts (B,)."""

    def __init__(self, params: FeatureParams, sample_rate: int):
        super().__init__()
        self.params = params
        self.sample_rate = sample_rate
        self.clip_samples = int(round(params.clip_seconds * sample_rate))
        self.frames = self.clip_samples // params.hop_length + 1
        self.margin = int(round(params.trim_margin_s * sample_rate / params.hop_length))
        self.silence_run = int(round(params.digital_silence_s * sample_rate))  # 0: nothing is cut
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=params.n_fft, win_length=params.win_length,
            hop_length=params.hop_length, f_min=params.f_min, f_max=min(params.f_max, sample_rate / 2),
            n_mels=params.n_mels, power=2.0,
        )
        if params.kind == "mfcc":
            self.register_buffer("dct", torchaudio.functional.create_dct(params.n_mfcc, params.n_mels, "ortho"))
        else:
            self.dct = None

    @property
    def n_features(self) -> int:
        return self.params.n_mfcc if self.params.kind == "mfcc" else self.params.n_mels

    def _log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """dB of mel power, as AmplitudeToDB(top_db=None) computes it, but in place: the allocating
        version cost a third of the mel transform itself (bench/features.py)."""
        return self.mel(waves).clamp_(min=1e-10).log10_().mul_(10.0)

    @torch.no_grad()
    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waves, lengths = self.without_digital_silence(waves, lengths)
        db = self._log_mel(waves)  # (B, M, T_all)
        valid = lengths // self.params.hop_length + 1
        feats, frames = self._trim(db, valid)
        if self.dct is not None:
            feats = torch.matmul(feats.transpose(1, 2), self.dct).transpose(1, 2)
        return feats, frames

    def without_digital_silence(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each clip without the digital silence at its ends (`audio.digital_silence_cut`), moved to
        start at sample 0, the rest of its row zero.

        Why here: every path to the network (the cache, an enrollment, an unlock, `evaluate --data`)
        comes through this extractor, so no path hears digital silence. An upload and a corpus clip
        to evaluate were already cut at their own rate (`audio.at_model_rate`), so for them this
        finds nothing; the feature cache's clips are cut here.
        """
        if self.silence_run <= 0:
            return waves, lengths
        spans = [digital_silence_cut(row[:n].numpy(), self.silence_run) for row, n in zip(waves, lengths.tolist())]
        if all(a == 0 and b == n for (a, b), n in zip(spans, lengths.tolist())):
            return waves, lengths
        out = torch.zeros_like(waves)
        for i, (a, b) in enumerate(spans):
            out[i, : b - a] = waves[i, a:b]
        return out, torch.tensor([max(b - a, 1) for a, b in spans], dtype=lengths.dtype)

    def _trim(self, db: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut each clip to its speech (frames within top_db of its loudest), keep a margin, left-align."""
        b, m, t_all = db.shape
        pos = torch.arange(t_all).expand(b, t_all)
        inside = pos < valid[:, None]
        energy = db.mean(dim=1).masked_fill(~inside, float("-inf"))
        loudest = energy.max(dim=1, keepdim=True).values
        active = energy > loudest - self.params.trim_top_db
        first = active.float().argmax(dim=1)
        last = t_all - 1 - active.flip(1).float().argmax(dim=1)
        start = (first - self.margin).clamp(min=0)
        end = torch.minimum(last + self.margin + 1, valid)
        frames = (end - start).clamp(min=1, max=self.frames)
        idx = (start[:, None] + torch.arange(self.frames)[None, :]).clamp(max=t_all - 1)
        out = db.gather(2, idx[:, None, :].expand(b, m, self.frames))
        floor = db.masked_fill(~inside[:, None, :], float("inf")).amin(dim=(1, 2))
        pad = torch.arange(self.frames)[None, :] >= frames[:, None]
        return out.masked_fill(pad[:, None, :], 0.0) + pad[:, None, :] * floor[:, None, None], frames

    @torch.no_grad()
    def untrimmed_logmel(self, waves: torch.Tensor) -> torch.Tensor:
        """Plain log-mel of fixed-length segments (no trimming): what noise augmentation mixes in."""
        return self._log_mel(waves)[..., : self.frames]

    def from_arrays(self, clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features for clips already decoded (float32 mono at `sample_rate`), any lengths: each clip's
        features exactly as it has them alone.

        Why batched by width: the mel transform pads a batch's ends by reflecting its last samples, so
        a clip as long as its batch hears its own end mirrored, and beside a longer clip hears zeros —
        the batching embedder's partners (other users' requests) moved a take's fingerprint by up to
        0.0035, near the replay threshold's margin. Clips of one padded width share a batch."""
        widths = [max(self.clip_samples, c.size) for c in clips]
        feats = torch.empty(len(clips), self.n_features, self.frames)
        frames = torch.empty(len(clips), dtype=torch.int64)
        for width in sorted(set(widths)):
            rows = [i for i, w in enumerate(widths) if w == width]
            waves = torch.zeros(len(rows), width)
            for j, i in enumerate(rows):
                waves[j, : clips[i].size] = torch.from_numpy(clips[i])
            feats[rows], frames[rows] = self(waves, torch.tensor([max(clips[i].size, 1) for i in rows]))
        return feats, frames


@dataclass
class FeatureSet:
    """One cached split: features (N, F, T) as a read-only memmap, its index, and the frame counts."""

    features: np.ndarray
    index: pd.DataFrame

    @property
    def frames(self) -> np.ndarray:
        return self.index["frames"].to_numpy()


def load_split(cache_dir: str | Path, split: str) -> FeatureSet:
    cache_dir = Path(cache_dir)
    npy, csv = cache_dir / f"{split}.npy", cache_dir / f"{split}.csv"
    if not npy.exists() or not csv.exists():
        raise VoicelockError(f"{npy}: feature cache not found — run the features stage (dvc repro features)")
    return FeatureSet(np.load(npy, mmap_mode="r"),
                      pd.read_csv(csv, dtype={"speaker": str, "word": str, "engine": str}))


def read_meta(cache_dir: str | Path) -> dict:
    return json.loads((Path(cache_dir) / META_FILE).read_text())


def read_batch_into(root: Path, paths: list[str], rate: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode a batch straight into one zero-padded (B, width) float32 array; return it and the lengths.

    Decoding into a preallocated buffer (no per-clip arrays, no stacking) keeps I/O well below the
    cost of the mel transform; clips longer than `width` are cut (the extractor keeps `clip_seconds`).
    """
    batch = np.zeros((len(paths), width), dtype=np.float32)
    lengths = np.array([max(read_into(root / p, batch[i], rate), 1) for i, p in enumerate(paths)], dtype=np.int64)
    return batch, lengths


def write_split(extractor: FeatureExtractor, root: Path, rows: pd.DataFrame, out_dir: Path, split: str,
                pool: ThreadPoolExecutor) -> None:
    """Features of `rows` into `<split>.npy` + `<split>.csv`; the next batch is decoded while this one computes.

    One reader thread is the right number: libsndfile decoding holds the GIL long enough that more
    threads only contend with torch's own threads (measured: 4 readers were slower than 1).
    """
    n, bs = len(rows), extractor.params.batch_size
    paths = rows["path"].tolist()
    width = extractor.clip_samples
    store = np.lib.format.open_memmap(out_dir / f"{split}.npy", mode="w+", dtype=CACHE_DTYPE,
                                      shape=(n, extractor.n_features, extractor.frames))
    frames = np.zeros(n, dtype=np.int32)
    starts = list(range(0, n, bs))
    read = lambda s: pool.submit(read_batch_into, root, paths[s: s + bs], extractor.sample_rate, width)  # noqa: E731
    pending = read(0) if n else None
    with tqdm(total=n, desc=f"features {split}", unit=" clips") as bar:
        for i, start in enumerate(starts):
            batch, lengths = pending.result()
            if i + 1 < len(starts):
                pending = read(starts[i + 1])
            feats, count = extractor(torch.from_numpy(batch), torch.from_numpy(lengths))
            store[start: start + len(batch)] = feats.to(torch.float16).numpy()  # torch casts on all cores
            frames[start: start + len(batch)] = count.numpy()
            bar.update(len(batch))
    store.flush()
    del store
    columns = ["path", "word", "speaker", "utterance"] + (["engine"] if "engine" in rows else [])
    index = rows[columns].reset_index(drop=True).assign(frames=frames)
    index.to_csv(out_dir / f"{split}.csv", index=False)


def write_noise(extractor: FeatureExtractor, raw_root: Path, out_dir: Path) -> int:
    """Log-mel of `_background_noise_/` cut into clip-length segments (half-overlapping) → noise.npy."""
    segments = []
    step = extractor.clip_samples // 2
    for path in sorted((raw_root / BACKGROUND_DIR).glob("*.wav")):
        x = torch.from_numpy(read_wav(path, expected_rate=extractor.sample_rate)[0])
        for start in range(0, max(x.numel() - extractor.clip_samples, 0) + 1, step):
            seg = x[start: start + extractor.clip_samples]
            if seg.numel() == extractor.clip_samples and seg.abs().max() > 0:
                segments.append(seg)
    n = len(segments)
    logmel = (extractor.untrimmed_logmel(torch.stack(segments)) if n
              else torch.zeros(0, extractor.params.n_mels, extractor.frames))
    np.save(out_dir / NOISE_FILE, logmel.to(torch.float16).numpy())
    return n


def load_noise(cache_dir: str | Path) -> torch.Tensor | None:
    """The cached background-noise log-mels (float32), or None when the corpus had none."""
    path = Path(cache_dir) / NOISE_FILE
    if not path.exists():
        return None
    noise = torch.from_numpy(np.load(path).astype(np.float32))
    return noise if len(noise) else None


def with_engines(manifest: pd.DataFrame, raw_root: Path) -> pd.DataFrame:
    """The manifest plus each clip's `engine` (the synthesizer that made its speaker), when the corpus
    has a speaker table (the generated one does; real Speech Commands does not: unchanged)."""
    table = raw_root / SPEAKERS_FILE
    if not table.exists():
        return manifest
    engines = pd.read_csv(table, dtype=str)
    if not {"id", "engine"} <= set(engines.columns):
        raise VoicelockError(f"{table}: needs columns id and engine — regenerate the corpus (dvc repro download)")
    engine = manifest["speaker"].astype(str).map(engines.set_index("id")["engine"])
    if engine.isna().any():
        log.warning("%s: %d clips' speakers are not in the table; their engine is 'unknown'", table,
                    int(engine.isna().sum()))
    return manifest.assign(engine=engine.fillna("unknown"))


def build_feature_cache(manifest: pd.DataFrame, raw_root: str | Path, params: FeatureParams, sample_rate: int,
                        out_dir: str | Path) -> Path:
    """Compute and cache features for every split of the manifest (atomically into `out_dir`)."""
    raw_root = Path(raw_root)
    extractor = FeatureExtractor(params, sample_rate)
    manifest = with_engines(manifest, raw_root)
    with atomic_dir(out_dir) as staging, ThreadPoolExecutor(1) as pool:
        counts = {}
        for split in SPLITS:
            rows = manifest[manifest["split"] == split].sort_values("path")
            write_split(extractor, raw_root, rows, staging, split, pool)
            counts[split] = len(rows)
        noise_segments = write_noise(extractor, raw_root, staging)
        meta = {"noise_segments": noise_segments, "params": params.model_dump(), "sample_rate": sample_rate, "n_features": extractor.n_features,
                "frames": extractor.frames, "dtype": np.dtype(CACHE_DTYPE).name, "clips": counts,
                "words": sorted(manifest["word"].unique().tolist())}
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    return Path(out_dir)
