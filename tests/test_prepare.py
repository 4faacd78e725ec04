"""Manifest and data checks: a good corpus passes, each kind of bad input is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicelock.data.manifest import COLUMNS, build_manifest
from voicelock.data.validation import validate_manifest
from voicelock.errors import VoicelockError
from voicelock.params import Params


@pytest.fixture
def corpus_copy(tiny_corpus: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_corpus, tmp_path / "raw"))


def _manifest(root: Path):
    return build_manifest(root, 20, 20, threads=2)


def test_manifest_of_good_corpus_passes(tiny_corpus: Path, tiny_params: Params):
    manifest = _manifest(tiny_corpus)
    assert list(manifest.columns) == COLUMNS
    assert set(manifest["split"]) == {"training", "validation", "testing"}
    assert (manifest["sample_rate"] == 16000).all() and (manifest["duration"] == 1.0).all()
    outcome = validate_manifest(manifest, tiny_params.prepare, 16000)
    assert outcome.success, outcome.failures
    assert set(outcome.report["views"]) == {"clips", "speakers", "words"}


def test_the_validation_report_is_the_same_bytes_on_every_run(tiny_corpus: Path, tiny_params: Params,
                                                             tmp_path: Path):
    """A tracked output with run ids and clock times never matches the committed dvc.lock."""
    from voicelock.data.validation import write_report

    manifest = _manifest(tiny_corpus)
    for name in ("a.json", "b.json"):
        write_report(validate_manifest(manifest, tiny_params.prepare, 16000), tmp_path / name)
    first = (tmp_path / "a.json").read_text()
    assert first == (tmp_path / "b.json").read_text()
    assert "element_count" in first and "validation_time" not in first and "run_id" not in first


def test_silent_clip_is_named(corpus_copy: Path, tiny_params: Params):
    victim = sorted((corpus_copy / "dog").glob("*.wav"))[0]
    sf.write(victim, np.zeros(16000), 16000, subtype="PCM_16")
    strict = tiny_params.prepare.model_copy(update={"max_bad_fraction": 0.0})
    outcome = validate_manifest(_manifest(corpus_copy), strict, 16000)
    assert not outcome.success
    assert any("column': 'rms'" in f and f"dog/{victim.name}" in f for f in outcome.failures), outcome.failures


def test_wrong_sample_rate_and_clipping_are_named(corpus_copy: Path, tiny_params: Params):
    slow = sorted((corpus_copy / "yes").glob("*.wav"))[0]
    sf.write(slow, 0.1 * np.ones(8000), 8000, subtype="PCM_16")
    loud = sorted((corpus_copy / "no").glob("*.wav"))[0]
    sf.write(loud, np.clip(5 * np.random.default_rng(0).standard_normal(16000), -1, 1), 16000, subtype="PCM_16")
    strict = tiny_params.prepare.model_copy(update={"max_bad_fraction": 0.0})
    failures = validate_manifest(_manifest(corpus_copy), strict, 16000).failures
    assert any("sample_rate" in f and f"yes/{slow.name}" in f for f in failures), failures
    assert any("'peak'" in f and f"no/{loud.name}" in f for f in failures), failures


def test_speaker_in_two_splits_and_missing_word_in_split(corpus_copy: Path, tiny_params: Params):
    manifest = _manifest(corpus_copy)
    speaker = manifest.loc[manifest["split"] == "training", "speaker"].iloc[0]
    manifest.loc[(manifest["speaker"] == speaker) & (manifest["word"] == "dog"), "split"] = "testing"
    manifest = manifest[~((manifest["word"] == "seven") & (manifest["split"] == "validation"))]
    failures = validate_manifest(manifest, tiny_params.prepare, 16000).failures
    assert any("two splits" in f and speaker in f for f in failures), failures
    assert any("every word" in f and "seven" in f for f in failures), failures


def test_corrupt_wav_is_one_clear_error(corpus_copy: Path):
    victim = sorted((corpus_copy / "yes").glob("*.wav"))[1]
    victim.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(VoicelockError, match=f"yes/{victim.name}: not a readable WAV"):
        _manifest(corpus_copy)


def test_layout_errors(corpus_copy: Path, tmp_path: Path):
    with pytest.raises(VoicelockError, match="corpus folder not found"):
        _manifest(tmp_path / "nowhere")
    (corpus_copy / "empty").mkdir()
    with pytest.raises(VoicelockError, match="empty: word folder has no .wav"):
        _manifest(corpus_copy)
    (corpus_copy / "empty").rmdir()
    (corpus_copy / "dog" / "not-a-speech-commands-name.wav").write_bytes(b"")
    with pytest.raises(VoicelockError, match="not named like"):
        _manifest(corpus_copy)


def test_a_clip_renamed_to_upper_case_wav_stays_in_its_split_list(tmp_path: Path):
    """A corpus copied with `.WAV` names keeps the lists' `.wav` entries: its test and validation
    speakers must not slip into training."""
    from voicelock.data.layout import assign_splits, parse_clip

    (tmp_path / "validation_list.txt").write_text("dog/aa_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("dog/bb_nohash_0.WAV\n")
    clips = [parse_clip(p) for p in ("dog/aa_nohash_0.WAV", "dog/bb_nohash_0.wav", "dog/cc_nohash_0.WAV")]
    assert assign_splits(tmp_path, clips, 10, 10) == {"dog/aa_nohash_0.WAV": "validation",
                                                      "dog/bb_nohash_0.wav": "testing",
                                                      "dog/cc_nohash_0.WAV": "training"}


def test_one_split_list_without_the_other(corpus_copy: Path):
    (corpus_copy / "testing_list.txt").unlink()
    with pytest.raises(VoicelockError, match="testing_list.txt: missing"):
        _manifest(corpus_copy)
