"""Reading and writing clips. soundfile does the I/O (torchaudio.load needs CUDA-linked torchcodec here).

Everything returned is float32 mono in [-1, 1]; errors name the file and say what would fix it.
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from fractions import Fraction
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


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may declare and contain before any sample is decoded.

    A few hundred bytes of FLAC can decode to minutes of audio, and a header can declare any rate,
    channel count and length; checking the decoded array afterwards is too late (the worker already
    spent the memory and time). The rate range also bounds the cost of `resample`.
    """

    max_seconds: float
    min_rate: int = 8000
    max_rate: int = 192000
    max_channels: int = 8


_BLOCK_FRAMES = 16384  # decode step: small enough that overshooting the cap by one block costs little
_SF_COUNT_MAX = 2**63 - 1  # libsndfile's frame count for "unknown length"
_MAX_DENOMINATOR = 2000  # 1000 would allow 0.05% pitch error at 176 kHz; 2000 halves it, still ms


UPLOAD_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "FLAC", "OGG"})  # libsndfile's names for them


def decode_bytes(blob: bytes, name: str = "upload",
                 limits: DecodeLimits = DecodeLimits(max_seconds=10.0)) -> tuple[np.ndarray, int]:
    """Decode audio held in memory (WAV/FLAC/OGG) to float32 mono within `limits`.

    Refuses empty, unreadable or truncated files, and anything outside `limits`: first on what the
    header declares, then on what the stream really holds, decoding block by block and stopping one
    frame past `max_seconds`. Time and memory stay O(limits), whatever the header claims.
    """
    if not blob:
        raise VoicelockError(f"{name}: empty file")
    try:
        with sf.SoundFile(io.BytesIO(blob)) as f:
            rate, channels, declared, container = f.samplerate, f.channels, f.frames, f.format
        if container not in UPLOAD_FORMATS:  # libsndfile reads ~25 formats: fewer parsers, fewer doors
            raise VoicelockError(f"{name}: a {container} file — upload WAV, FLAC or OGG")
        _check_header(name, rate, channels, declared, limits)
        cap = math.ceil(limits.max_seconds * rate)
        with sf.SoundFile(io.BytesIO(_flac_length_unknown(blob))) as f:
            data = _read_at_most(f, cap + 1)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        detail = str(e).split(">: ", 1)[-1]  # drop libsndfile's "Error opening <BytesIO at 0x…>" prefix
        raise VoicelockError(f"{name}: not a readable WAV/FLAC/OGG file ({detail})") from None
    if data.shape[0] > cap:
        raise VoicelockError(f"{name}: too long (more than {limits.max_seconds:g} s of audio, at most "
                             f"{limits.max_seconds:g} s) — record a shorter clip")
    missing = _wav_bytes_missing(blob)
    if missing:
        raise VoicelockError(f"{name}: truncated WAV ({missing} bytes of audio missing) — upload the whole file")
    if data.shape[0] == 0:
        raise VoicelockError(f"{name}: contains no audio samples")
    return to_mono(data), rate


def _check_header(name: str, rate: int, channels: int, frames: int, limits: DecodeLimits) -> None:
    """Refuse what the header declares out of bounds, before decoding a sample."""
    _check_rate_bounds(name, rate, limits)
    if not 1 <= channels <= limits.max_channels:
        raise VoicelockError(f"{name}: {channels} audio channels, allowed 1–{limits.max_channels} — "
                             f"export a mono or stereo file")
    # libsndfile reports an unknown length (FLAC total_samples 0, streamed files) as SF_COUNT_MAX
    if 0 < frames < _SF_COUNT_MAX and frames > limits.max_seconds * rate:
        raise VoicelockError(f"{name}: too long ({frames / rate:.1f} s declared, at most "
                             f"{limits.max_seconds:g} s) — record a shorter clip")



def _check_rate_bounds(name: str, rate: int, limits: DecodeLimits) -> None:
    """A rate inside `limits`: what an upload may declare, and what bounds `resample`'s cost."""
    if not limits.min_rate <= rate <= limits.max_rate:
        raise VoicelockError(f"{name}: sample rate {rate} Hz is outside the allowed {limits.min_rate}–"
                             f"{limits.max_rate} Hz — record or export at 16000 Hz")


def _read_at_most(f: sf.SoundFile, limit: int) -> np.ndarray:
    """Decode at most `limit` frames as float32 (frames, channels), one block at a time.

    Calls libsndfile's sf_readf_float through soundfile's cffi handle rather than f.read: f.read()
    with no count allocates what the header declares (2^36 frames: 256 GiB) before decoding, and
    after every read soundfile seeks to the new position, which fails ("Internal psf_fseek()
    failed") once a FLAC stream of unknown or overstated length reaches its real end, losing the
    block. Peak memory is about twice the decoded audio (blocks, then their concatenation).
    """
    blocks, n = [], 0
    while n < limit:
        want = min(_BLOCK_FRAMES, limit - n)
        block = np.empty((want, f.channels), dtype=np.float32)
        got = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", block.ctypes.data), want)
        error = sf._snd.sf_error(f._file)
        if error:
            raise sf.LibsndfileError(error)
        if got <= 0:
            break
        blocks.append(block[:got])
        n += got
    if not blocks:
        return np.zeros((0, f.channels), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _flac_length_unknown(blob: bytes) -> bytes:
    """A copy of a native FLAC with STREAMINFO's total_samples set to 0 (unknown); other files as is.

    libsndfile stops reading at the declared total, so a FLAC declaring 1 s but holding an hour
    would be silently cut to its first second. With the total unknown it decodes the real stream,
    and the cap in `decode_bytes` decides. The field is the low 36 bits of STREAMINFO bytes 10–17;
    STREAMINFO is always the first metadata block (type 0, 34 bytes) right after "fLaC".
    """
    if blob[:4] != b"fLaC" or len(blob) < 42 or blob[4] & 0x7F != 0 or blob[5:8] != b"\x00\x00\x22":
        return blob
    packed = int.from_bytes(blob[18:26], "big") & ~((1 << 36) - 1)
    return blob[:18] + packed.to_bytes(8, "big") + blob[26:]


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase-resample float32 `samples` from `rate` to `target` Hz, at bounded cost for any rate.

    torchaudio.functional.resample builds a filter over gcd(rate, target): a rate coprime with the
    target (16001 Hz) makes it take seconds and gigabytes. Here the ratio is rounded to a fraction
    with denominator at most _MAX_DENOMINATOR, so the filter stays below ~80k taps and the work stays
    near 20–40 multiply-adds per input sample; the pitch error this rounding adds is at most 0.025%
    over 8–192 kHz → 16 kHz (a ratio that rounds to 1, e.g. 16001 Hz, returns the input as is: 0.006%).
    Measured for a 5 s clip → 16 kHz (scipy 1.17, 2 shared cores): 16001 Hz 0 ms, 8000 Hz 1.2 ms,
    22050 Hz 2.2 ms, 44100 Hz 3.4 ms, 48000/48001 Hz 2.8 ms, 96000 Hz 6.2 ms, 191999 Hz 13.7 ms;
    the largest filters (8002 Hz: 3999/2000, 176089 Hz: 180/1981) 7.6 and 15.6 ms.
    """
    if rate == target:
        return samples
    ratio = Fraction(target, rate).limit_denominator(_MAX_DENOMINATOR)
    if ratio == 1:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly  # 1 s to import: only paid by callers that resample

    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)



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


def within_full_scale(samples: np.ndarray) -> np.ndarray:
    """Finite samples scaled back to a peak of 1.0 when they go beyond it (float files may)."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return samples / np.float32(peak) if peak > 1.0 else samples


def digital_silence_cut(samples: np.ndarray, min_run: int) -> tuple[int, int]:
    """(start, stop) of a clip without the runs of exact zeros, at least `min_run` samples long, at
    either end; (0, len) when there are none, or when the clip is nothing but zeros.

    Why: no microphone records exact zeros for long — a file padded with them (a recorder's start,
    an editor, an attacker) holds the same recording. Left in, the zeros shift the clip's frames and
    make a first frame the network never heard in training: 1 s of zeros before the unseen voices'
    takes cost FRR 0.030 → 0.041, and an owner's recording padded with 50 ms of zeros passed as a new
    take instead of a replay (docs/decisions.md, "Digital silence"). Shorter runs are left alone:
    the corpus's clips begin or end with up to 316 zeros (20 ms) now and then, as they were trained.
    """
    n = int(samples.size)
    sound = samples != 0  # a byte a sample, not the 8 of an index array
    if min_run <= 0 or not sound.any():
        return 0, n
    first, stop = int(sound.argmax()), n - int(sound[::-1].argmax())
    return (first if first >= min_run else 0), (stop if n - stop >= min_run else n)


def as_recorded(samples: np.ndarray, rate: int, digital_silence_s: float) -> np.ndarray:
    """Finite samples within full scale, without the digital silence at their ends
    (`digital_silence_cut`, runs of at least `digital_silence_s`): the recording an upload holds.
    An upload's length and level are judged on it (`Unlocker.check`) and it is what is resampled."""
    samples = within_full_scale(np.asarray(samples, dtype=np.float32))
    start, stop = digital_silence_cut(samples, int(round(digital_silence_s * rate)))
    return samples[start:stop]


def at_model_rate(samples: np.ndarray, rate: int, target: int, digital_silence_s: float = 0.0) -> np.ndarray:
    """Finite samples as the network hears them: the recording (`as_recorded`), resampled to
    `target`, float32. Cut before resampling, so a padded upload at any rate is resampled from the
    same first sample as the unpadded file (resampled zeros are no longer exact zeros at the edge).

    The one place for it: `Unlocker.prepare` (every enrollment and unlock) and `as_heard` (a corpus
    to evaluate) both end here, so a figure measured on a corpus sees each clip as the service does."""
    return resample(as_recorded(samples, rate, digital_silence_s), rate, target).astype(np.float32)


def as_heard(path: str | Path, rate: int, limits: DecodeLimits = DecodeLimits(max_seconds=10.0),
             digital_silence_s: float = 0.0) -> np.ndarray:
    """A clip file decoded the way an unlock decodes an upload: mono, within full scale, resampled to
    `rate` — refused, naming the file, where an upload would be (non-finite samples, a rate outside
    `limits`, whose bounds also bound the resampling's cost).

    Why: a corpus given to `voicelock evaluate --data` is recordings a user brings, at whatever rate
    their device wrote; the service takes any rate and resamples (`Unlocker.prepare`), so a figure
    measured on a corpus sees each clip at the model's rate rather than refusing the corpus. (Clips
    the service refuses before scoring — too short, too long, silent — are still scored here: each
    is a trial like any other.)"""
    path = Path(path)
    samples, own_rate = read_wav(path)
    _check_rate_bounds(str(path), own_rate, limits)
    if not np.all(np.isfinite(samples)):
        raise VoicelockError(f"{path}: audio contains NaN or infinite samples — re-export it")
    return at_model_rate(samples, own_rate, rate, digital_silence_s)


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
