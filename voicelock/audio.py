"""Reading and writing clips. soundfile does the I/O (torchaudio.load needs CUDA-linked torchcodec here).

Everything returned is float32 mono in [-1, 1]; errors name the file and say what would fix it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from voicelock.errors import VoicelockError


def read_wav(path: str | Path, expected_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a clip to float32 mono; refuse unreadable files and (if given) another sample rate."""
    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise VoicelockError(f"{path}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise VoicelockError(f"{path}: not a readable audio file ({e}) — delete or re-export it") from None
    if expected_rate is not None and rate != expected_rate:
        raise VoicelockError(
            f"{path}: sample rate {rate} Hz, expected {expected_rate} Hz — resample the corpus "
            f"or set data.sample_rate in params.yaml"
        )
    return to_mono(data), rate


def decode_bytes(blob: bytes, name: str = "upload") -> tuple[np.ndarray, int]:
    """Decode audio held in memory (WAV/FLAC/OGG) to float32 mono."""
    if not blob:
        raise VoicelockError(f"{name}: empty file")
    try:
        data, rate = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise VoicelockError(f"{name}: not a readable WAV/FLAC/OGG file ({e})") from None
    return to_mono(data), rate


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels: a stereo phone recording carries the same voice on both."""
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(data, dtype=np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write 16-bit PCM, the Speech Commands format."""
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")


def info(path: str | Path) -> sf._SoundFileInfo:
    """Header of a clip (rate, channels, frames) without decoding it."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise VoicelockError(f"{path}: not a readable audio file ({e}) — delete or re-export it") from None
