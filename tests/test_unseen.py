"""The unseen-voices corpus shares no accent or timbre with training, and is judged at shipped thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from tests.conftest import write_params
from voicelock.errors import VoicelockError
from voicelock.params import Params, load_params


def test_params_refuse_an_unseen_voice_that_training_has(tiny_params_path: Path, tmp_path: Path):
    raw = yaml.safe_load(tiny_params_path.read_text())
    raw["ood"]["espeak_variants"] = raw["ood"]["espeak_variants"] + [raw["data"]["synth"]["variants"][0]]
    with pytest.raises(VoicelockError, match=r"ood\.espeak_variants: \['m1'\] also in data\.synth\.variants"):
        load_params(write_params(tmp_path, raw))
    raw = yaml.safe_load(tiny_params_path.read_text())
    raw["ood"]["espeak_speakers"] = len(raw["ood"]["espeak_variants"]) + 1  # two would share a variant: twins
    with pytest.raises(VoicelockError, match=r"ood: .*espeak_speakers: \d+ is more than the \d+ espeak_variants .* would be twins"):
        load_params(write_params(tmp_path, raw))
    raw = yaml.safe_load(tiny_params_path.read_text())
    raw["ood"]["espeak_voices"] = ["en-us"]
    with pytest.raises(VoicelockError, match=r"ood\.espeak_voices: \['en-us'\] also in data\.synth\.voices"):
        load_params(write_params(tmp_path, raw))


@pytest.fixture(scope="session")
def unseen_corpus(tiny_params: Params) -> Path:
    from tests.conftest import unseen_corpus_of

    return unseen_corpus_of(tiny_params)


def test_unseen_corpus_is_all_test_speakers_of_both_engines(unseen_corpus: Path, tiny_params: Params):
    ood, synth = tiny_params.ood, tiny_params.data.synth
    speakers = pd.read_csv(unseen_corpus / "speakers.csv", dtype=str, keep_default_na=False)
    assert (speakers["engine"] == "espeak-ng").sum() == ood.espeak_speakers
    assert sorted(speakers.loc[speakers["engine"] == "flite", "voice"]) == sorted(ood.flite_voices)
    espeak = speakers[speakers["engine"] == "espeak-ng"]
    assert not set(espeak["voice"]) & set(synth.voices) and not set(espeak["variant"]) & set(synth.variants)
    clips = sorted(unseen_corpus.glob("*/*.wav"))
    assert len(clips) == len(speakers) * len(synth.words) * ood.takes_per_word
    listed = (unseen_corpus / "testing_list.txt").read_text().split()
    assert sorted(listed) == sorted(str(c.relative_to(unseen_corpus)) for c in clips)
    assert not (unseen_corpus / "validation_list.txt").read_text().split()
    for clip in clips[:: max(1, len(clips) // 20)]:
        x, rate = sf.read(clip, dtype="float32")
        assert rate == tiny_params.data.sample_rate and x.size == rate * tiny_params.features.clip_seconds
        assert 0.01 < np.abs(x).max() <= 1.0  # a word, not silence, not clipped
    # Two flite voices are different people: their takes of one word differ.
    a, b = (sf.read(next(unseen_corpus.glob(f"yes/{sid}_nohash_0.wav")))[0]
            for sid in speakers.loc[speakers["engine"] == "flite", "id"])
    assert not np.allclose(a, b)


def test_unseen_evaluation_uses_the_shipped_thresholds(trained: Params, unseen_corpus: Path):
    from voicelock.evaluation import evaluate_unseen
    from voicelock.metrics_files import split_details

    metrics = evaluate_unseen(trained)
    in_domain = json.loads(Path(trained.evaluate.metrics_file).read_text())
    assert set(in_domain) <= set(metrics)
    in_domain_details = json.loads(Path(trained.evaluate.details_file).read_text())
    assert metrics["thresholds"] == in_domain_details["thresholds"]  # never re-calibrated on the unseen voices
    assert set(metrics["by_engine"]) == {"espeak-ng", "flite"}
    assert metrics["speakers"] == sum(m["speakers"] for m in metrics["by_engine"].values())
    assert metrics["trials_other_speaker_password"] > 0 and 0 <= metrics["far_other_speaker_password"] <= 1
    # The metrics file holds rates only (what `dvc metrics show` compares); counts and thresholds beside it.
    rates, details = split_details(metrics)
    assert json.loads(Path(trained.ood.metrics_file).read_text()) == rates
    assert json.loads(Path(trained.ood.details_file).read_text()) == details
    assert "thresholds" not in rates and not any(k.startswith("trials_") or k == "speakers" for k in rates)
    assert "far_other_speaker_password" in rates["by_engine"]["flite"]
    assert "trials_genuine" in details["by_engine"]["flite"] and "trials_genuine" not in rates["by_engine"]["flite"]
    assert (Path(trained.ood.plots_dir) / "det.csv").exists()
