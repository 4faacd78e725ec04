"""Bounded decoding: crafted uploads are refused before they cost the worker time or memory.

Each test builds its hostile file itself: FLACs whose STREAMINFO lies about their length, FLAC
"bombs" (minutes of constant audio in a few kB), WAV headers declaring rates and channel counts no
recorder produces. Before DecodeLimits these took seconds and gigabytes, or crashed with a 500.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc

import numpy as np
import pytest
import scipy.signal  # noqa: F401  (1 s to import: outside the timed resample calls)
import soundfile as sf

from voicelock.audio import DecodeLimits, decode_bytes, resample
from voicelock.errors import VoicelockError

LIMITS = DecodeLimits(max_seconds=10.0)
BOMB_MINUTES = 30  # 28.8 M samples at 16 kHz in ~90 kB of FLAC; written in ~0.5 s


def flac(samples: np.ndarray, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def set_total_samples(blob: bytes, total: int) -> bytes:
    """Overwrite STREAMINFO's 36-bit total_samples (low bits of bytes 18–25 of the file)."""
    assert blob[:4] == b"fLaC" and blob[4] & 0x7F == 0 and blob[5:8] == b"\x00\x00\x22"
    packed = int.from_bytes(blob[18:26], "big") & ~((1 << 36) - 1) | total
    return blob[:18] + packed.to_bytes(8, "big") + blob[26:]


def wav(rate: int, channels: int = 1, frames: int = 8000) -> bytes:
    """A 16-bit PCM WAV built by hand: the header may declare rates libsndfile refuses to write."""
    pcm = (np.sin(np.arange(frames * channels) * 0.05) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def refusal(blob: bytes, name: str, limits: DecodeLimits = LIMITS) -> tuple[str, float, int]:
    """Decode expecting a refusal: (message, seconds taken, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(VoicelockError) as e:
            decode_bytes(blob, name, limits)
        return str(e.value), time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def flac_bomb(minutes: int) -> bytes:
    """A FLAC holding `minutes` of one constant sample: every frame compresses to a few bytes."""
    out, chunk = io.BytesIO(), np.full(1 << 20, 0.25, dtype=np.float32)
    with sf.SoundFile(out, "w", samplerate=16000, channels=1, format="FLAC", subtype="PCM_16") as f:
        left = minutes * 60 * 16000
        while left:
            f.write(chunk[: min(left, chunk.size)])
            left -= min(left, chunk.size)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return flac_bomb(BOMB_MINUTES)


# --- length: header and stream ---------------------------------------------------------------


def test_flac_declaring_2_to_the_36_samples_is_refused_from_its_header():
    blob = set_total_samples(flac(tone(440, 16000, 0.5)), (1 << 36) - 1)
    assert len(blob) < 20_000
    msg, seconds, peak = refusal(blob, "liar.flac")
    assert msg.startswith("liar.flac: too long") and "at most 10 s" in msg, msg
    assert seconds < 0.5 and peak < 1_000_000, (seconds, peak)


@pytest.mark.parametrize("declared", [None, 0, 16000], ids=["honest", "unknown", "claims-1s"])
def test_flac_bomb_is_refused_fast_in_bounded_memory(bomb: bytes, declared: int | None):
    """The header may be honest (refused before decoding), unknown (0) or a small lie: the cap must
    hold on the decoded stream, stopping one frame past 10 s instead of decoding 30 minutes."""
    blob = bomb if declared is None else set_total_samples(bomb, declared)
    assert len(blob) < 200_000
    msg, seconds, peak = refusal(blob, "bomb.flac")
    assert msg.startswith("bomb.flac: too long") and "at most 10 s" in msg, msg
    # decoding it all: ~8 s and 115 MB of float32 here; the cap: 160,001 frames (0.6 MB) at most
    assert seconds < 2.0, seconds
    assert peak < 50_000_000, peak


def test_length_cap_is_exact_on_the_decoded_stream():
    limits = DecodeLimits(max_seconds=1.0)
    x = tone(440, 16000, 1.0)
    samples, rate = decode_bytes(set_total_samples(flac(x), 0), "one-second.flac", limits)
    assert rate == 16000 and samples.size == 16000
    over = set_total_samples(flac(np.append(x, x[:1])), 100)  # 16,001 samples claiming 100
    msg, _, _ = refusal(over, "over.flac", limits)
    assert "too long" in msg and "at most 1 s" in msg, msg


def test_honest_flac_decodes_exactly_as_before():
    x = np.stack([tone(440, 16000, 2.0), tone(660, 16000, 2.0)], axis=1)
    blob = flac(x)
    reference, _ = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    samples, rate = decode_bytes(blob, "stereo.flac", LIMITS)
    assert rate == 16000
    np.testing.assert_array_equal(samples, reference.mean(axis=1).astype(np.float32))


def test_flac_overstating_its_length_decodes_what_it_holds():
    """Header says 3 s, stream holds 2 s: soundfile's f.read raised "psf_fseek() failed" at the end."""
    x = tone(440, 16000, 2.0)
    samples, _ = decode_bytes(set_total_samples(flac(x), 48000), "long-header.flac", LIMITS)
    assert samples.size == x.size
    np.testing.assert_allclose(samples, x, atol=1 / 32768)


# --- sample rate and channels ----------------------------------------------------------------


@pytest.mark.parametrize("rate", [7999, 192001, 1_000_003])
def test_rate_outside_range_is_refused_naming_the_range(rate: int):
    msg, seconds, _ = refusal(wav(rate), "odd.wav")
    assert msg.startswith(f"odd.wav: sample rate {rate} Hz") and "8000–192000 Hz" in msg, msg
    assert seconds < 0.5


def test_rate_range_comes_from_the_limits():
    msg, _, _ = refusal(wav(8000), "phone.wav", DecodeLimits(max_seconds=5, min_rate=16000, max_rate=48000))
    assert "16000–48000 Hz" in msg, msg


@pytest.mark.parametrize("rate", [16001, 48001, 44100, 8000, 192000])
def test_odd_rates_in_range_decode_and_resample_fast(rate: int):
    """16001 Hz (coprime with 16 kHz) made torchaudio.functional.resample take 6–12 s and 4.5 GB."""
    blob = wav(rate, frames=5 * rate)
    samples, got = decode_bytes(blob, "odd.wav", LIMITS)
    assert got == rate and samples.size == 5 * rate
    t0 = time.perf_counter()
    out = resample(samples, rate, 16000)
    seconds = time.perf_counter() - t0
    assert out.dtype == np.float32
    assert abs(out.size - 80000) <= 80000 * 0.0005 + 1, out.size
    assert seconds < 0.5, seconds


@pytest.mark.parametrize("channels", [9, 64])
def test_too_many_channels_are_refused(channels: int):
    msg, _, _ = refusal(wav(16000, channels=channels), "surround.wav")
    assert msg.startswith(f"surround.wav: {channels} audio channels") and "1–8" in msg, msg


def test_stereo_is_still_mixed_down():
    samples, rate = decode_bytes(wav(16000, channels=2, frames=4000), "stereo.wav", LIMITS)
    assert rate == 16000 and samples.shape == (4000,) and samples.dtype == np.float32


# --- behaviour kept from before --------------------------------------------------------------


def test_existing_refusals_still_name_the_file():
    whole = wav(16000, frames=8000)
    cases = {b"": "empty file", b"not audio at all" * 10: "not a readable WAV/FLAC/OGG file",
             whole[:-1000]: "truncated WAV (1000 bytes of audio missing)", wav(16000, frames=0): "no audio samples"}
    for blob, expected in cases.items():
        with pytest.raises(VoicelockError, match="^clip.wav: ") as e:
            decode_bytes(blob, "clip.wav", LIMITS)
        assert expected in str(e.value), str(e.value)


def test_non_finite_samples_decode_without_crashing():
    out = io.BytesIO()
    sf.write(out, np.array([0.1, np.nan, np.inf, -np.inf] * 100, np.float32), 16000, format="WAV", subtype="FLOAT")
    samples, _ = decode_bytes(out.getvalue(), "nan.wav", LIMITS)
    assert samples.size == 400 and np.isnan(samples[1]) and np.isinf(samples[2])


def test_limits_argument_is_optional_and_defaults_to_10_s():
    samples, rate = decode_bytes(wav(16000, frames=9 * 16000), "nine.wav")
    assert rate == 16000 and samples.size == 9 * 16000
    with pytest.raises(VoicelockError, match="too long.*at most 10 s"):
        decode_bytes(wav(16000, frames=11 * 16000), "eleven.wav")


# --- resample ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [44100, 16001, 48001, 8000, 22050, 191999])
def test_resample_keeps_pitch_and_duration(rate: int):
    x = tone(440, rate, 2.0)
    y = resample(x, rate, 16000)
    assert abs(y.size - 32000) <= 32000 * 0.0005 + 1, y.size
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * 16000 / y.size
    assert abs(peak_hz - 440) < 2, peak_hz
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resample_same_rate_is_the_input():
    x = tone(440, 16000, 0.5)
    assert resample(x, 16000, 16000) is x


def test_a_corpus_clip_is_decoded_as_an_upload_is(tmp_path):
    """`voicelock evaluate --data` reads clips through `as_heard`: any rate within the upload bounds
    (resampled), stereo to mono, beyond full scale scaled back — and refused, by name, where an upload
    would be."""
    from voicelock.audio import as_heard

    t = np.arange(22050) / 22050
    tone = (1.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # a float file may go past 1.0
    sf.write(tmp_path / "loud.wav", np.stack([tone, tone], axis=1), 22050, subtype="FLOAT")
    heard = as_heard(tmp_path / "loud.wav", 16000)
    assert heard.dtype == np.float32 and heard.shape == (16000,)
    assert 0.95 < np.abs(heard).max() <= 1.01  # scaled back to full scale, then resampled

    broken = tone.copy()
    broken[100] = np.nan
    sf.write(tmp_path / "nan.wav", broken, 22050, subtype="FLOAT")
    with pytest.raises(VoicelockError, match="nan.wav: audio contains NaN or infinite samples"):
        as_heard(tmp_path / "nan.wav", 16000)
    sf.write(tmp_path / "slow.wav", tone[:4000], 4000, subtype="PCM_16")
    with pytest.raises(VoicelockError, match="slow.wav: sample rate 4000 Hz is outside the allowed 8000–192000 Hz"):
        as_heard(tmp_path / "slow.wav", 16000)
