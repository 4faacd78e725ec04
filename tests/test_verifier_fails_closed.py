"""The one verifier fails closed: no scale of a clip, finite or not, decides differently or unlocks.

A float WAV may hold any value; before the fix, a clip scaled by 1e20 overflowed the network to NaN
and NaN passed the accept rule (NaN < threshold is false), so anything unlocked. Property-based: the
verifier must give the same decision for every scale above full scale (it scales such a clip back to
its peak), never unlock a clip it refuses at full scale, and refuse non-finite audio with an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import find_unlock_case
from voicelock.enrollment import Decision, Template, Unlocker
from voicelock.errors import VoicelockError
from voicelock.params import load_params


@pytest.fixture(scope="module")
def setup(lenient_params_path: Path) -> tuple[Unlocker, Template, list[np.ndarray]]:
    """The tiny model at FAR 0.3, a template, and clips it refuses when scaled to full scale: tones,
    noise and other voices."""
    params = load_params(lenient_params_path)
    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    case = find_unlock_case(params)
    template = lock.enroll_files(case.enroll)
    t = np.arange(16000) / 16000
    rng = np.random.default_rng(7)
    clips = [0.5 * np.sin(2 * np.pi * 440 * t), rng.normal(0, 0.3, 16000)]
    clips += [sf.read(p, dtype="float32")[0] for p in case.impostors[:6]]
    refused = []
    for x in clips:
        x = (x / np.abs(x).max()).astype(np.float32)
        if not lock.verify(template, x, 16000).unlocked:
            refused.append(x)
    assert len(refused) >= 4
    return lock, template, refused


def same(a: Decision, b: Decision) -> bool:
    return a.unlocked == b.unlocked and abs(a.word_score - b.word_score) < 1e-2 and \
        abs(a.speaker_score - b.speaker_score) < 1e-2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), exponent=st.floats(0.0, 38.0))
def test_any_finite_scale_above_full_scale_decides_as_full_scale(setup, which: int, exponent: float):
    lock, template, refused = setup
    x = refused[which % len(refused)]
    scale = np.float32(10.0 ** exponent * 0.999)  # up to 1e38, just inside float32
    scaled = x * scale
    if not np.all(np.isfinite(scaled)):
        return  # overflowed: the non-finite property below covers it
    decision = lock.verify(template, scaled, 16000)
    assert decision.unlocked is False
    assert same(decision, lock.verify(template, x, 16000))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.floats(0.0, 1.0), count=st.integers(1, 100))
def test_non_finite_samples_raise_instead_of_deciding(setup, which: int, bad: float, where: float, count: int):
    lock, template, refused = setup
    x = refused[which % len(refused)].copy()
    start = int(where * (x.size - count))
    x[start: start + count] = bad
    with pytest.raises(VoicelockError, match="NaN or infinite"):
        lock.verify(template, x, 16000)


def test_a_non_finite_embedding_or_score_raises(setup, monkeypatch):
    """Even if the network itself produced NaN (a corrupt model, an overflow we did not foresee),
    the decision is an error, never an unlock."""
    lock, template, refused = setup

    def nan_embed(clips):
        word, speaker = lock.embed_here(clips)
        return np.full_like(word, np.nan), speaker

    monkeypatch.setattr(lock, "embed", nan_embed)
    with pytest.raises(VoicelockError, match="could not be scored"):
        lock.verify(template, refused[0], 16000)
    with pytest.raises(VoicelockError, match="could not be scored"):
        lock.enroll([(x, 16000) for x in refused[:3]])
    monkeypatch.undo()
    nan_template = Template([float("nan")] * len(template.word), template.speaker, 3, template.takes, template.model)
    with pytest.raises(VoicelockError, match="could not be scored"):
        lock.verify(nan_template, refused[0], 16000)
