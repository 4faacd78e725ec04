from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_params_dict, write_params
from voicelock.errors import VoicelockError
from voicelock.params import load_params


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synth"
    assert params.data.synth.n_speakers >= 150
    assert len(params.data.synth.words) >= 20


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("features", "n_mels", 2, "features.n_mels"),
        ("features", "kind", "wavelet", "features.kind"),
        ("features", "win_length", 4096, "win_length"),
        ("data", "source", "ftp", "data.source"),
        ("prepare", "min_duration_s", 5.0, "min_duration_s"),
        ("features", "bogus_key", 1, "features.bogus_key"),
        ("page", "enroll_takes", 2, "page.enroll_takes"),  # below enroll.min_clips: every enrollment refused
        ("page", "clip_seconds", 4.95, "page.clip_seconds"),  # with the pre-roll over enroll.max_duration_s
        ("page", "speech_level_db", 3.0, "page.speech_level_db"),
        ("model", "backend_dims", 17, "backend_dims"),  # more than speaker_embedding (16)
        ("pretrain", "validate_from_epoch", 3, "validate_from_epoch"),  # after max_epochs (2): nothing kept
        ("pretrain", "engine_weights", {"festival": 0}, "engine_weights"),
        ("finetune", "engine_weights", {"festival": float("inf")}, "engine_weights"),  # would make p NaN
        ("promotion", "ood_tolerance", {"keyword": 0.01}, r"ood_tolerance: unknown metrics \['keyword'\]"),
        ("promotion", "ood_tolerance", {"far": float("inf")}, "ood_tolerance: .'far'. must be finite"),
        ("promotion", "tolerance", {"frr": float("nan")}, "tolerance: .'frr'. must be finite"),
        ("evaluate", "replay_shifts", [40, 80], "replay_shifts"),  # without the take itself
        ("evaluate", "replay_shifts", [0, 80, 40], "replay_shifts"),
        ("evaluate", "replay_shifts", [0, 16000], "replay_shifts"),  # a second of delay: not a padded copy
        ("evaluate", "replay_shifts", [0, 400], "replay_shifts: 400 samples of zeros or more are cut"),
        ("evaluate", "replay_shifts", list(range(0, 680, 40)), "replay_shifts"),  # 17 embeddings a take
        ("evaluate", "replay_band_hz", 8000, "replay_band_hz: 8000 Hz"),  # the whole band at 16 kHz
        ("evaluate", "replay_band_hz", 100, "replay_band_hz: 100 Hz"),  # no voice is left below it
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, section, key, value, named):
    raw = tiny_params_dict(tmp_path)
    raw[section][key] = value
    with pytest.raises(VoicelockError, match=named):
        load_params(write_params(tmp_path, raw))


def test_unquoted_yes_no_words_are_caught(tmp_path: Path):
    text = yaml.safe_dump(tiny_params_dict(tmp_path)).replace("- 'yes'", "- yes").replace("- 'no'", "- no")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(VoicelockError, match=r"data\.synth\.words\.0"):
        load_params(tmp_path / "params.yaml")


def test_missing_file_and_missing_section(tmp_path: Path):
    with pytest.raises(VoicelockError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    raw = tiny_params_dict(tmp_path)
    del raw["features"]
    with pytest.raises(VoicelockError, match="features: Field required"):
        load_params(write_params(tmp_path, raw))


def test_too_many_speakers_for_the_voice_pairs(tmp_path: Path):
    raw = tiny_params_dict(tmp_path)
    raw["data"]["synth"]["voices"] = ["en-us"]
    raw["data"]["synth"]["variants"] = ["m1", "m2"]
    with pytest.raises(VoicelockError, match="voice×variant"):
        load_params(write_params(tmp_path, raw))


def test_raw_floor_must_be_looser_than_the_target(tmp_path: Path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"]["raw_floor_far"] = raw["evaluate"]["target_far"] / 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(VoicelockError, match=r"evaluate: .*raw_floor_far: .* is below target_far"):
        load_params(path)


def test_under_makes_every_path_absolute_under_the_checkout(tmp_path: Path):
    """The promotion gate runs in a Prefect worker whose working directory is not the checkout: with
    `under`, it reads the checkout's files without changing the process's directory."""
    params = load_params(REPO / "params.yaml")
    moved = params.under(tmp_path)
    assert moved.features.out_dir == str(tmp_path.resolve() / params.features.out_dir)
    assert moved.service.package_record == str(tmp_path.resolve() / params.service.package_record)
    assert moved.evaluate.metrics_file == str(tmp_path.resolve() / params.evaluate.metrics_file)
    assert moved.data.folder.path == params.data.folder.path == ""  # unset stays unset
    assert moved.service.database_url == params.service.database_url  # a URL, not a path
    assert moved.under("/elsewhere") == moved  # absolute paths stay
    assert moved.model_dump().keys() == params.model_dump().keys() and moved.seed == params.seed


def test_a_clip_level_is_only_set_on_log_mel(tmp_path: Path):
    # To MFCCs a level change is a change of c0 alone: shifting every coefficient would distort them.
    raw = tiny_params_dict(tmp_path)
    raw["features"]["kind"], raw["model"]["input_norm"], raw["model"]["input_level_db"] = "mfcc", "batchnorm", -12
    with pytest.raises(VoicelockError, match="model.input_level_db needs features.kind: logmel"):
        load_params(write_params(tmp_path, raw))
    raw["model"]["input_level_db"] = None
    assert load_params(write_params(tmp_path, raw)).model.input_level_db is None
