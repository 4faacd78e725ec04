"""Reading and writing clips. soundfile does the I/O (torchaudio.load needs CUDA-linked torchcodec here).

Everything returned is float32 mono in [-1, 1]; errors name the file and say what would fix it.
"""

from __future__ import annotations

import io
import wave
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
    if expected_rate is not None:
        check_rate(path, rate, expected_rate)
    return to_mono(data), rate


def decode_bytes(blob: bytes, name: str = "upload") -> tuple[np.ndarray, int]:
    """Decode audio held in memory (WAV/FLAC/OGG) to float32 mono; refuse empty or truncated files."""
    if not blob:
        raise VoicelockError(f"{name}: empty file")
    try:
        with sf.SoundFile(io.BytesIO(blob)) as f:
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        detail = str(e).split(">: ", 1)[-1]  # drop libsndfile's "Error opening <BytesIO at 0x…>" prefix
        raise VoicelockError(f"{name}: not a readable WAV/FLAC/OGG file ({detail})") from None
    missing = _wav_bytes_missing(blob)
    if missing:
        raise VoicelockError(f"{name}: truncated WAV ({missing} bytes of audio missing) — upload the whole file")
    if data.shape[0] == 0:
        raise VoicelockError(f"{name}: contains no audio samples")
    return to_mono(data), rate


def _wav_bytes_missing(blob: bytes) -> int:
    """How many bytes of a WAV's data chunk are missing (0 when whole, or not a WAV).

    libsndfile reads a cut-off WAV without complaint, so a truncated upload would be scored on part of
    a word; the RIFF header still says how long the data should be.
    """
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(blob):
        chunk, size = blob[pos: pos + 4], int.from_bytes(blob[pos + 4: pos + 8], "little")
        if chunk == b"data":
            if size in (0, 0xFFFFFFFF):  # streaming writers leave the size unknown
                return 0
            return max(size - (len(blob) - pos - 8), 0)
        pos += 8 + size + (size & 1)
    return 0


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


def read_into(path: str | Path, out: np.ndarray, expected_rate: int) -> int:
    """Decode a clip into the 1-D float32 buffer `out` (cut to its size); return the samples written.

    The features stage decodes every clip of the corpus, so 16-bit PCM (the Speech Commands format)
    takes the stdlib `wave` path, twice as fast as libsndfile here; any other format falls back to
    soundfile. Both refuse another sample rate and name the file.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() == 2:
                rate, channels = w.getframerate(), w.getnchannels()
                check_rate(path, rate, expected_rate)
                n = min(w.getnframes(), out.size)
                pcm = np.frombuffer(w.readframes(n), dtype="<i2")
                n = pcm.size // channels
                if channels == 1:
                    np.multiply(pcm, 1 / 32768, out=out[:n], casting="unsafe")
                else:
                    out[:n] = pcm.reshape(n, channels).mean(axis=1) / 32768
                return n
    except (wave.Error, EOFError):
        pass  # not plain PCM WAV: let libsndfile decide
    except FileNotFoundError:
        raise VoicelockError(f"{path}: file not found") from None
    try:
        with sf.SoundFile(str(path)) as f:
            check_rate(path, f.samplerate, expected_rate)
            n = min(f.frames, out.size)
            out[:n] = to_mono(f.read(n, dtype="float32", always_2d=True))
            return n
    except (sf.LibsndfileError, RuntimeError) as e:
        raise VoicelockError(f"{path}: not a readable audio file ({e}) — delete or re-export it") from None


def check_rate(path: Path, rate: int, expected: int) -> None:
    if rate != expected:
        raise VoicelockError(f"{path}: sample rate {rate} Hz, expected {expected} Hz — resample the corpus "
                             f"or set data.sample_rate in params.yaml")
