"""Feature extraction: trimming, fixed shape, MFCC option, and the cache matching live extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from voicelock.audio import read_wav
from voicelock.data.manifest import build_manifest
from voicelock.errors import VoicelockError
from voicelock.features import FeatureExtractor, build_feature_cache, load_split, read_meta, with_engines
from voicelock.params import Params


def _tone(rate: int, start_s: float, dur_s: float, total_s: float = 1.0) -> np.ndarray:
    x = np.zeros(int(total_s * rate), dtype=np.float32)
    t = np.arange(int(dur_s * rate)) / rate
    s = int(start_s * rate)
    x[s: s + t.size] = 0.5 * np.sin(2 * np.pi * 440 * t)
    return x + 1e-4 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)


def test_trim_finds_the_spoken_part(tiny_params: Params):
    fx = FeatureExtractor(tiny_params.features, 16000)
    feats, frames = fx.from_arrays([_tone(16000, 0.6, 0.2), _tone(16000, 0.0, 0.2)])
    assert feats.shape == (2, tiny_params.features.n_mels, fx.frames)
    # 0.2 s of tone + 2 × 50 ms margin ≈ 30 frames (10 ms hop), wherever the word sits in the clip.
    assert 26 <= frames[0] <= 34 and 22 <= frames[1] <= 34
    energy = feats[0].mean(dim=0)
    assert energy[5:frames[0] - 5].min() > energy[frames[0] + 5:].max() + 20  # speech left-aligned, then padding
    assert torch.allclose(feats[0, :, frames[0] + 1:], feats[0, :, -1:].expand(-1, fx.frames - frames[0] - 1))


def test_digital_silence_around_a_clip_is_cut_before_its_features(tiny_params: Params):
    """A file padded with exact zeros holds the same recording: its features are the unpadded
    file's, bit for bit, in a batch with other clips of other lengths. A run shorter than
    `digital_silence_s`, and a microphone's quiet (never exactly zero), are left as they are."""
    fx = FeatureExtractor(tiny_params.features.model_copy(update={"digital_silence_s": 0.025}), 16000)
    voice = _tone(16000, 0.05, 0.3, total_s=0.6)
    zeros = lambda seconds: np.zeros(int(seconds * 16000), np.float32)  # noqa: E731
    clips = [voice, np.concatenate([zeros(1.0), voice, zeros(0.5)]), np.concatenate([zeros(0.03), voice]),
             np.concatenate([zeros(0.02), voice]), np.concatenate([1e-4 * np.ones(800, np.float32), voice]),
             zeros(0.5)]
    feats, frames = fx.from_arrays(clips)
    for padded in (1, 2):
        assert torch.equal(feats[padded], feats[0]) and frames[padded] == frames[0]
    for kept in (3, 4):  # 20 ms of zeros, 50 ms of a quiet hum: another recording's start, kept
        assert not torch.equal(feats[kept], feats[0])
    assert torch.isfinite(feats[5]).all() and frames[5] >= 1  # nothing but zeros: left as it was
    off = FeatureExtractor(tiny_params.features.model_copy(update={"digital_silence_s": 0.0}), 16000)
    feats_off, _ = off.from_arrays(clips[:2])
    assert not torch.equal(feats_off[1], feats_off[0])


def test_long_clip_is_cut_and_short_clip_padded(tiny_params: Params):
    fx = FeatureExtractor(tiny_params.features, 16000)
    feats, frames = fx.from_arrays([_tone(16000, 0.1, 1.8, total_s=2.0), _tone(16000, 0.0, 0.1, total_s=0.15)])
    assert feats.shape[-1] == fx.frames and frames[0] == fx.frames and frames[1] < 25
    assert torch.isfinite(feats).all()


def test_mfcc_option(tiny_params: Params):
    mfcc = tiny_params.features.model_copy(update={"kind": "mfcc"})
    fx = FeatureExtractor(mfcc, 16000)
    feats, _ = fx.from_arrays([_tone(16000, 0.2, 0.3)])
    assert feats.shape == (1, mfcc.n_mfcc, fx.frames)


def test_cache_matches_live_extraction(tiny_corpus: Path, tiny_params: Params, tmp_path: Path):
    manifest = build_manifest(tiny_corpus, 20, 20, threads=2)
    out = build_feature_cache(manifest, tiny_corpus, tiny_params.features, 16000, tmp_path / "features")
    meta = read_meta(out)
    assert meta["clips"]["training"] + meta["clips"]["validation"] + meta["clips"]["testing"] == len(manifest)
    test = load_split(out, "testing")
    assert isinstance(test.features, np.memmap) and test.features.shape[0] == len(test.index)
    fx = FeatureExtractor(tiny_params.features, 16000)
    row = 3
    live, frames = fx.from_arrays([read_wav(tiny_corpus / test.index["path"][row])[0]])
    assert int(frames[0]) == test.frames[row]
    np.testing.assert_allclose(test.features[row].astype(np.float32), live[0].numpy(), atol=0.1)
    assert not list(tmp_path.glob(".features*"))  # no staging folder left behind


def test_wrong_sample_rate_stops_features(tiny_corpus: Path, tiny_params: Params, tmp_path: Path):
    manifest = build_manifest(tiny_corpus, 20, 20, threads=2)
    with pytest.raises(VoicelockError, match="sample rate 16000 Hz, expected 22050 Hz"):
        build_feature_cache(manifest, tiny_corpus, tiny_params.features, 22050, tmp_path / "f")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT", "PCM_24"])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_into_every_wav_flavour(tmp_path: Path, subtype: str, channels: int):
    import soundfile as sf

    from voicelock.audio import read_into

    x = _tone(16000, 0.1, 0.3)
    sf.write(tmp_path / "c.wav", np.stack([x] * channels, axis=1), 16000, subtype=subtype)
    out = np.zeros(20000, dtype=np.float32)
    assert read_into(tmp_path / "c.wav", out, 16000) == x.size
    np.testing.assert_allclose(out[: x.size], x, atol=1e-3)
    assert not out[x.size:].any()
    with pytest.raises(VoicelockError, match="c.wav: sample rate 16000 Hz, expected 8000 Hz"):
        read_into(tmp_path / "c.wav", out, 8000)


def test_a_generated_corpus_s_engines_reach_the_cache(tiny_corpus: Path, tiny_params: Params, tmp_path: Path):
    manifest = build_manifest(tiny_corpus, 20, 20, threads=2)
    out = build_feature_cache(manifest, tiny_corpus, tiny_params.features, 16000, tmp_path / "features")
    engines = pd.read_csv(tiny_corpus / "speakers.csv", dtype=str).set_index("id")["engine"]
    train = load_split(out, "training").index
    assert (train["engine"] == train["speaker"].map(engines)).all()


def test_engines_are_optional_but_a_table_without_them_is_named(tmp_path: Path):
    manifest = pd.DataFrame({"path": ["yes/a_nohash_0.wav"], "speaker": ["a"], "word": ["yes"]})
    assert "engine" not in with_engines(manifest, tmp_path)  # no speakers.csv: e.g. real Speech Commands
    (tmp_path / "speakers.csv").write_text("id,voice\na,en-us\n")
    with pytest.raises(VoicelockError, match=r"speakers\.csv: needs columns id and engine"):
        with_engines(manifest, tmp_path)


def test_a_clips_features_do_not_depend_on_the_clips_beside_it(tiny_params: Params):
    # The batching embedder puts concurrent requests' clips in one batch: a clip as long as the batch
    # would otherwise hear its own end mirrored when alone and zeros beside a longer clip.
    fx = FeatureExtractor(tiny_params.features, 16000)
    rng = np.random.default_rng(3)
    t = np.arange(20000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + rng.normal(0, 0.1, t.size))).astype(np.float32)
    clips = [speech[:16000], speech[:19000], speech[:9000], speech[:16000] * 0.5, speech[:20000]]
    together, n_together = fx.from_arrays(clips)
    for i, clip in enumerate(clips):
        alone, n_alone = fx.from_arrays([clip])
        assert n_together[i] == n_alone[0]
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=0)
