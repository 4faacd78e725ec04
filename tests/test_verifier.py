"""The verifier is the one accept rule: the CLI, the service's core and the evaluation all decide with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import find_unlock_case
from voicelock.cli import main as cli_main
from voicelock.errors import VoicelockError
from voicelock.params import Params, load_params
from voicelock.scoring import SpeakerScorer
from voicelock.verifier import Verifier, make_template

THRESHOLDS = {"word": 0.8, "speaker": 0.5, "replay": 0.99, "challenge_word": 0.7, "speaker_any_word": 0.3}


def test_rule_needs_both_scores_and_fails_closed():
    rule = Verifier(SpeakerScorer(), THRESHOLDS)
    word = np.array([0.9, 0.9, 0.7, np.nan, 0.9, np.inf])
    speaker = np.array([0.6, 0.4, 0.6, 0.9, np.nan, np.nan])
    assert rule.accepts(word, speaker).tolist() == [True, False, False, False, False, False]
    assert rule.is_replay(0.995) and rule.is_replay(float("nan")) and not rule.is_replay(0.5)
    assert not rule.challenge_voice_ok(float("nan")) and not rule.challenge_word_ok(0.9, asked_is_nearest=False)
    with pytest.raises(VoicelockError, match="no calibrated 'word' threshold"):
        Verifier(SpeakerScorer()).accepts(word, speaker)


def test_template_is_the_unit_centroid_and_scores_are_cosines():
    rng = np.random.default_rng(0)
    word, speaker = rng.normal(size=(3, 8)), rng.normal(size=(3, 6))
    t_word, t_speaker = make_template(word, speaker)
    assert np.isclose(np.linalg.norm(t_word), 1) and np.isclose(np.linalg.norm(t_speaker), 1)
    w, s = Verifier(SpeakerScorer()).scores(t_word, t_speaker, 5 * word, speaker)  # scale-free
    expected = (word / np.linalg.norm(word, axis=1, keepdims=True)) @ t_word
    assert np.allclose(w, expected, atol=1e-5) and s.shape == (3,)


@pytest.fixture(scope="module")
def case(lenient_params_path: Path):
    return find_unlock_case(load_params(lenient_params_path))


def _cli_unlock(params_path: Path, probe: Path, template: Path, capsys) -> tuple[int, dict]:
    try:
        cli_main(["--params", str(params_path), "unlock", str(probe), "--template", str(template)])
        code = 0
    except SystemExit as e:
        code = int(e.code)
    return code, json.loads(capsys.readouterr().out)


def test_cli_unlocks_the_owner_and_refuses_another_voice_saying_the_password(lenient_params_path: Path, case,
                                                                             tmp_path: Path, capsys):
    params = load_params(lenient_params_path)
    template = tmp_path / "me.json"
    cli_main(["--params", str(lenient_params_path), "enroll", *map(str, case.enroll), "--template", str(template)])
    capsys.readouterr()
    code, decision = _cli_unlock(lenient_params_path, case.genuine[0], template, capsys)
    assert (code, decision["unlocked"]) == (0, True)
    password = params.owner.password
    stranger = [p for p in case.impostors if p.parent.name == password]
    assert stranger, "no other voice's take of the password among the refused takes"
    code, decision = _cli_unlock(lenient_params_path, stranger[0], template, capsys)
    assert (code, decision["unlocked"]) == (1, False)
    assert "voice not recognised" in decision["reason"]


def test_every_path_decides_through_the_one_rule(lenient_params_path: Path, case, monkeypatch):
    """Break the rule and every path follows it: if a second formula decided anywhere, it would not."""
    from voicelock.enrollment import VoiceLock
    from voicelock.evaluation import unlock_rates
    from voicelock.trials import UnlockTrials

    params: Params = load_params(lenient_params_path)
    lock = VoiceLock(params.evaluate.out_dir, params.enroll)
    template = lock.enroll_files(case.enroll)
    assert lock.verify_file(template, case.genuine[0]).unlocked
    trials = UnlockTrials({k: np.ones(4) for k in ("genuine", "other_speaker_password", "owner_other_word",
                                                    "other_speaker_other_word")},
                          {k: np.ones(4) for k in ("genuine", "other_speaker_password", "owner_other_word",
                                                   "other_speaker_other_word")})
    assert unlock_rates(trials, lock.thresholds)["frr"] == 0.0
    monkeypatch.setattr(Verifier, "accepts", lambda self, w, s: np.zeros(np.shape(w), dtype=bool))
    assert not lock.verify_file(template, case.genuine[0]).unlocked
    assert unlock_rates(trials, lock.thresholds)["frr"] == 1.0
