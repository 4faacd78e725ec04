"""Acoustic colouring shared by the synthetic corpus and training augmentation.

A real person never says a word twice the same way, nor in the same room with the same microphone.
These functions give a clip a random room (reverberation), microphone (band-pass and tilt) and
self-noise at realistic strengths. They take a numpy Generator so callers stay deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def room_impulse_response(rng: np.random.Generator, rate: int, rt60: float, direct_to_reverb_db: float) -> np.ndarray:
    """A statistical room: a direct path followed by exponentially decaying diffuse noise.

    The decay reaches -60 dB at `rt60` seconds; early reflections come from sparse taps in the first
    tens of milliseconds. Good enough to smear a voice the way a real room does, cheap to draw.
    """
    n = max(int(rt60 * rate), 16)
    t = np.arange(n) / rate
    decay = np.exp(-6.9078 * t / rt60)  # ln(1000): amplitude -60 dB at rt60
    tail = rng.standard_normal(n) * decay
    early = np.zeros(n)
    taps = rng.integers(int(0.002 * rate), max(int(0.03 * rate), int(0.002 * rate) + 2), size=6)
    early[np.minimum(taps, n - 1)] = rng.uniform(-0.6, 0.6, size=taps.size)
    reverb = tail + early
    reverb[0] = 0.0
    reverb_energy = np.sqrt(np.sum(reverb**2)) + 1e-12
    rir = reverb / reverb_energy * 10 ** (-direct_to_reverb_db / 20)
    rir[0] = 1.0
    return rir.astype(np.float32)


def apply_room(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room response, keeping the clip's length (the tail past the end is cut)."""
    return signal.fftconvolve(x, rir, mode="full")[: x.size].astype(np.float32)


def apply_microphone(x: np.ndarray, rate: int, low_hz: float, high_hz: float, tilt_db: float) -> np.ndarray:
    """A cheap microphone: 2nd-order band-pass plus a spectral tilt of `tilt_db` across the band."""
    high_hz = min(high_hz, 0.45 * rate)
    sos = signal.butter(2, [low_hz, high_hz], btype="bandpass", fs=rate, output="sos")
    y = signal.sosfilt(sos, x)
    if tilt_db:
        spec = np.fft.rfft(y)
        freqs = np.fft.rfftfreq(y.size, 1 / rate)
        octaves = np.log2(np.clip(freqs, low_hz, high_hz) / np.sqrt(low_hz * high_hz))
        span = max(np.log2(high_hz / low_hz), 1e-6)
        spec *= 10 ** (tilt_db * octaves / span / 20)
        y = np.fft.irfft(spec, n=y.size)
    return y.astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix `noise` (at least as long as `x`) at a signal-to-noise ratio measured on the whole clip."""
    noise = noise[: x.size]
    p_signal = np.mean(x**2) + 1e-12
    p_noise = np.mean(noise**2) + 1e-12
    return (x + noise * np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power ∝ 1/f**exponent: 0 white, 1 pink, 2 brown. Unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    spec /= freqs ** (exponent / 2)
    y = np.fft.irfft(spec, n=n)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def set_peak_db(x: np.ndarray, peak_db: float) -> np.ndarray:
    """Scale so the peak sits at `peak_db` dBFS (how loud the person spoke / the gain was set)."""
    peak = float(np.max(np.abs(x))) + 1e-12
    return (x * (10 ** (peak_db / 20) / peak)).astype(np.float32)
