"""The verifier is the one accept rule: the CLI, the service's core and the evaluation all decide with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import find_unlock_case
from voicelock.audio import read_wav
from voicelock.cli import main as cli_main
from voicelock.errors import VoicelockError
from voicelock.params import Params, load_params
from voicelock.scoring import SpeakerScorer
from voicelock.verifier import Verifier, make_template

THRESHOLDS = {"word": 0.8, "word_margin": 0.0, "speaker": 0.5, "speaker_raw": 0.2, "replay": 0.99, "challenge_word": 0.7,
              "speaker_any_word": 0.3}


def test_rule_needs_both_scores_and_fails_closed():
    rule = Verifier(SpeakerScorer(), THRESHOLDS)
    word = np.array([0.9, 0.9, 0.7, np.nan, 0.9, np.inf, 0.9, 0.9])
    speaker = np.array([0.6, 0.4, 0.6, 0.9, np.nan, np.nan, 0.6, 0.6])
    raw = np.array([0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.1, np.nan])  # the raw floor binds on its own
    rival = np.full(8, -np.inf)  # no other word to lose to
    assert rule.accepts(word, speaker, raw, rival).tolist() == [True, False, False, False, False, False, False, False]
    # The word must also beat every other word: nearer another (0.95) or an unscorable rival (NaN) refuses.
    assert rule.accepts(word[:1].repeat(3), speaker[:1].repeat(3), raw[:1].repeat(3),
                        np.array([0.85, 0.95, np.nan])).tolist() == [True, False, False]
    assert rule.is_replay(0.995) and rule.is_replay(float("nan")) and not rule.is_replay(0.5)
    assert not rule.challenge_voice_ok(float("nan")) and not rule.challenge_word_ok(0.9, asked_is_nearest=False)
    with pytest.raises(VoicelockError, match="no calibrated 'word' threshold"):
        Verifier(SpeakerScorer()).accepts(word, speaker, raw, rival)


def test_a_remembered_take_reads_back_as_stored_and_a_damaged_one_refuses():
    """Sets are kept as float16 text: read back, the cosines are the stored ones to 1e-3; one fingerprint
    (a JSON list, as every voicelock writes beside a set) is a set of one; anything that is not whole
    unit-length fingerprints is a NaN row, which `max_similarity` turns into a match (refuse) — never
    into "nothing heard" (unlock), an exception (500) or a row that matches nothing (a zero row)."""
    from voicelock.replay import decode, encode, fingerprints, max_similarity, stored_rows

    rng = np.random.default_rng(0)
    sets = fingerprints(rng.normal(size=(8, 128)), rng.normal(size=(8, 48)))
    probe = sets[3] + 0.01 * rng.normal(size=176).astype(np.float32)
    back = decode(encode(sets), 176)
    assert back.shape == (8, 176) and back.dtype == np.float32
    np.testing.assert_allclose(back @ probe, sets @ probe, atol=1e-3)
    assert decode(json.dumps(sets[0].tolist()), 176).shape == (1, 176)
    assert decode(sets[0].tolist(), 176).shape == (1, 176)
    damaged = [encode(sets)[:-8], "f16:not base64!", encode(sets[:, :100]), "[1, 2", "", [], None, {"a": 1},
               [0.0] * 176, (2 * sets[0]).tolist(), encode(np.zeros((2, 176))), "[" + "9" * 400 + "]",
               "[" * 5000 + "]" * 5000, json.dumps([float("nan")] * 176), b"\x00" * 704]
    for entry in damaged:
        assert max_similarity(probe, decode(entry, 176)) == float("inf"), str(entry)[:40]
    rows, own, in_band = stored_rows([], 176)
    assert rows.shape == (0, 176) and max_similarity(probe, rows) == -1.0
    rows, own, in_band = stored_rows([encode(sets), sets[0].tolist()], 176)  # each take's own fingerprint first
    assert rows.shape == (9, 176) and own.tolist() == [True] + [False] * 7 + [True] and not in_band.any()
    # With a band-limited view and 4 shifts, a set of 8 rows is 4 of the full band, then 4 of the view;
    # a set of any other size (a take remembered alone, a damaged one) is the full band's.
    rows, own, in_band = stored_rows([encode(sets), sets[0].tolist(), "damaged"], 176, shifts=4, band=True)
    assert own.tolist() == [True] + [False] * 7 + [True, True]
    assert in_band.tolist() == [False] * 4 + [True] * 4 + [False, False]


def test_a_take_remembered_alone_is_judged_at_the_single_fingerprint_threshold():
    """A set's maximum over its shifted copies runs higher than one fingerprint's cosine, so the set
    rule's threshold (`replay`) would be too lenient for a take's own fingerprint; `replay_single` is
    calibrated for those. A release without it has the one threshold for both."""
    rule = Verifier(SpeakerScorer(), {**THRESHOLDS, "replay": 0.99, "replay_single": 0.98})
    assert rule.is_replay(0.985, single=True) and not rule.is_replay(0.985)
    assert not Verifier(SpeakerScorer(), THRESHOLDS).is_replay(0.985, single=True)
    # The whole rule: any part refuses, and each part reads only its own similarity.
    checks = rule.replay_checks
    assert checks(0.5, 0.985, -1) == {"replay": False, "replay_single": True} and rule.replays(0.5, 0.985, -1)
    assert checks(0.995, 0.5, -1) == {"replay": True, "replay_single": False} and rule.replays(0.995, 0.5, -1)
    assert not rule.replays(0.985, 0.975, 1.0)  # no band-limited view in this release: that part is not judged
    assert rule.replays(float("nan"), 0.5, -1) and rule.replays(0.5, float("nan"), -1)


def test_a_band_limited_view_is_judged_at_its_own_threshold():
    """Genuine takes come closer to each other below the view's cut than in the full band, so the view
    has its own threshold: the full band's `replay` stays as tight as before, and the view still refuses."""
    rule = Verifier(SpeakerScorer(), {**THRESHOLDS, "replay": 0.99, "replay_single": 0.98,
                                      "replay_band_hz": 3000, "replay_band": 0.995})
    assert rule.replay_checks(0.5, 0.5, 0.996) == {"replay": False, "replay_single": False, "replay_band": True}
    assert not rule.replays(0.5, 0.5, 0.993) and rule.replays(0.992, 0.5, 0.5) and rule.replays(0.5, 0.5, float("nan"))
    with pytest.raises(VoicelockError, match="replay_band"):  # a view without its threshold never decides
        Verifier(SpeakerScorer(), {**THRESHOLDS, "replay_band_hz": 3000}).replays(0.5, 0.5, 0.5)


def test_the_replay_threshold_is_calibrated_under_the_rule_it_is_served_with():
    """Calibration scores each genuine take against another take's remembered *set*: when a shifted copy
    in the set is nearer a genuine take than the take itself, the threshold must sit above that nearer
    score, or the service would refuse that genuine take as a replay."""
    from voicelock.replay import RememberedTakes, calibrate_replay_threshold, fingerprints, genuine_repeat_similarities

    rng = np.random.default_rng(1)
    word, speaker = rng.normal(size=(3, 8)), rng.normal(size=(3, 6))
    probes = fingerprints(word, speaker)
    near = probes[1] + 0.05 * probes[0]  # take 0's shifted copy, nearer take 1 than take 0 is
    sets = np.stack([np.stack([probes[i], near / np.linalg.norm(near)]) for i in range(3)])
    who, what = np.array(["a", "a", "b"]), np.array(["yes", "yes", "yes"])
    alone = genuine_repeat_similarities(word, speaker, who, what)
    served = genuine_repeat_similarities(word, speaker, who, what, RememberedTakes(probes, np.arange(3), sets))
    assert alone.tolist() == pytest.approx([float(probes[0] @ probes[1])])
    assert served.max() == pytest.approx(float(sets[0, 1] @ probes[1])) and served.max() > alone.max() + 0.01
    assert calibrate_replay_threshold(served, 0.002) > float(sets[0, 1] @ probes[1])


def test_the_reported_refusals_and_the_calibration_read_a_sets_band_limited_view():
    """A remembered set with the view: its view's rows meet only a probe's view. A genuine take that
    comes close to a remembered take in the view alone is refused by the whole rule, and the view's
    threshold is calibrated on the view's similarities, not the full band's."""
    from voicelock.replay import RememberedTakes, genuine_repeat_similarities, genuine_replay_refusals

    full, band, far, other = np.eye(4, dtype=np.float32)
    close = (band + 0.05 * other) / np.linalg.norm(band + 0.05 * other)  # 0.9988 to the take's view
    probes = np.stack([np.stack([full, band]), np.stack([far, close])])  # (takes, views, D)
    served = RememberedTakes(probes, np.array([0]), np.stack([np.stack([full, band])]))  # one shift, two views
    who, what = np.array(["a", "a"]), np.array(["w", "w"])
    view = {**THRESHOLDS, "replay": 0.99, "replay_single": 0.99, "replay_band_hz": 3000}
    assert genuine_replay_refusals(served, who, what, Verifier(SpeakerScorer(), {**view, "replay_band": 0.995})
                                   .replays).tolist() == [True]  # the full band is far: the view refused it
    assert genuine_replay_refusals(served, who, what, Verifier(SpeakerScorer(), {**view, "replay_band": 0.9995})
                                   .replays).tolist() == [False]
    none = np.zeros((2, 4), np.float32)
    assert genuine_repeat_similarities(none, none, who, what, served, view=1) == pytest.approx([float(close @ band)])
    assert genuine_repeat_similarities(none, none, who, what, served, view=0) == pytest.approx([0.0])
    with pytest.raises(VoicelockError, match="only in remembered sets"):
        genuine_repeat_similarities(none, none, who, what, None, view=1)


def test_reported_replay_refusals_apply_the_whole_served_rule():
    """The service refuses a take as close as `replay` to a remembered set *or* as close as
    `replay_single` to the remembered take's own fingerprint; `replay_false_refusals` must count both,
    or the figure would report a laxer rule than the one served."""
    from voicelock.replay import RememberedTakes, genuine_replay_refusals

    def unit(v):
        return v / np.linalg.norm(v)

    own, copy, far = np.eye(4)[0], np.eye(4)[1], np.eye(4)[3]
    close_to_own = unit(own + 0.12 * far)  # cosine 0.993 to the take's own fingerprint, 0 to its copy
    close_to_copy = unit(copy + 0.12 * far)  # 0.993 to the shifted copy, 0 to the take
    probes = np.stack([own, close_to_own, close_to_copy, unit(own + copy)])
    sets = np.stack([np.stack([own, copy])])  # take 0 remembered with one shifted copy
    served = RememberedTakes(probes, np.array([0]), sets)
    who, what = np.array(["a"] * 4), np.array(["yes"] * 4)
    rule = Verifier(SpeakerScorer(), {**THRESHOLDS, "replay": 0.995, "replay_single": 0.99})
    refused = genuine_replay_refusals(served, who, what, rule.replays)
    # probes 1-3 meet take 0: its own fingerprint at 0.99 refuses probe 1, the set at 0.995 neither 2 nor 3
    assert refused.tolist() == [True, False, False]
    strict = Verifier(SpeakerScorer(), {**THRESHOLDS, "replay": 0.99, "replay_single": 0.99})
    assert genuine_replay_refusals(served, who, what, strict.replays).tolist() == [True, True, False]


def test_replay_shifts_come_from_the_release_and_default_to_the_take_alone():
    assert Verifier(SpeakerScorer(), THRESHOLDS).replay_shifts == (0,)  # calibrated before shift sets
    assert Verifier(SpeakerScorer(), {**THRESHOLDS, "replay_shifts": [0, 40, 80]}).replay_shifts == (0, 40, 80)
    for damaged in ([], [40, 80], [0, 0.5], [0, 99999], "0,40", [0, True]):
        with pytest.raises(VoicelockError, match="replay_shifts"):
            Verifier(SpeakerScorer(), {**THRESHOLDS, "replay_shifts": damaged}).replay_shifts


def test_the_band_limited_view_keeps_the_band_and_removes_the_rest():
    """What an attacker's low-pass above the cut leaves is what the view keeps, so both copies meet."""
    from voicelock.replay import band_limited

    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 5000 * t)
    view = band_limited((low + high).astype(np.float32), 16000, 3000)
    assert view.dtype == np.float32 and view.shape == (16000,)
    assert np.abs(view - low).max() < 1e-4  # the 1 kHz tone intact, the 5 kHz one gone
    np.testing.assert_allclose(band_limited(view, 16000, 3000), view, atol=1e-5)  # the view of the view: itself


def test_the_replay_band_comes_from_the_release_and_defaults_to_none():
    assert Verifier(SpeakerScorer(), THRESHOLDS).replay_band_hz == 0.0  # calibrated before the view
    assert Verifier(SpeakerScorer(), {**THRESHOLDS, "replay_band_hz": 3000}).replay_band_hz == 3000.0
    for damaged in (-1, 100, "3000", None, True, float("nan")):
        with pytest.raises(VoicelockError, match="replay_band_hz"):
            Verifier(SpeakerScorer(), {**THRESHOLDS, "replay_band_hz": damaged}).replay_band_hz


def test_each_view_of_a_take_meets_only_the_remembered_rows_of_its_own_view():
    """`replay_similarities`: the full band against the full band's rows and the takes' own rows, the
    band-limited view against the view's rows; a damaged row still refuses."""
    from voicelock.replay import replay_similarities, stored_rows

    full, band, other, own = np.eye(4, dtype=np.float32)
    rows, is_own, in_band = stored_rows([np.stack([own, other, band, full])], 4, shifts=2, band=True)
    assert replay_similarities(np.stack([full, band]), rows, is_own, in_band) == (0.0, 0.0, 1.0)
    assert replay_similarities(np.stack([own, other]), rows, is_own, in_band) == (1.0, 1.0, 0.0)
    assert replay_similarities(own[None, :], rows, is_own, in_band)[2] == -1.0  # no view of the take: not judged
    rows, is_own, in_band = stored_rows(["damaged"], 4, shifts=2, band=True)
    assert replay_similarities(np.stack([full, band]), rows, is_own, in_band)[:2] == (float("inf"), float("inf"))


def test_template_is_the_unit_centroid_and_scores_are_cosines():
    rng = np.random.default_rng(0)
    word, speaker = rng.normal(size=(3, 8)), rng.normal(size=(3, 6))
    t_word, t_speaker = make_template(word, speaker)
    assert np.isclose(np.linalg.norm(t_word), 1) and np.isclose(np.linalg.norm(t_speaker), 1)
    w, s, r, v = Verifier(SpeakerScorer()).scores(t_word, t_speaker, 5 * word, speaker)  # scale-free
    expected = (word / np.linalg.norm(word, axis=1, keepdims=True)) @ t_word
    assert np.allclose(w, expected, atol=1e-5) and s.shape == (3,)
    assert np.allclose(r, (speaker / np.linalg.norm(speaker, axis=1, keepdims=True)) @ t_speaker, atol=1e-5)
    assert np.all(v == -np.inf)  # no vocabulary: no rival words


def test_the_rivals_are_every_vocabulary_word_but_the_passwords_own():
    """The password's own word (the vocabulary template nearest its template) is no rival, so saying
    the password is never refused for resembling itself; every other word is."""
    e = np.eye(4, dtype=np.float32)
    rule = Verifier(SpeakerScorer(), THRESHOLDS, {"dog": 2 * e[0], "down": e[1], "go": e[2]})
    t_word = e[0] + 0.1 * e[3]  # the owner's "dog": near the training speakers' "dog", not on it
    t_speaker = np.ones(3)
    probes = np.stack([e[0] + 0.2 * e[3],   # "dog" again: nearer the password than "down" or "go"
                       e[1] + 0.3 * e[0]])  # "down", a little like "dog": nearer "down"
    word, _, _, rival = rule.scores(t_word, t_speaker, probes, np.ones((2, 3)))
    assert np.allclose(rival, [0.0, np.cos(np.arctan(0.3))], atol=1e-5)  # "dog" is not among them
    checks = rule.password_checks(word, np.ones(2), np.ones(2), rival)
    assert checks["word_margin"].tolist() == [True, False]
    assert np.allclose(rule.rival_templates(t_word), e[[1, 2]])


def test_damaged_or_foreign_word_templates_stop_instead_of_dropping_the_rival_check():
    """A rival set that silently came out empty would let every word past this check: a non-finite
    vocabulary template, templates of two sizes, or a password template of another model's size stop."""
    e = np.eye(4, dtype=np.float32)
    for vocabulary in ({"dog": e[0], "down": np.full(4, np.nan)}, {"dog": e[0], "down": e[1, :3]}):
        with pytest.raises(VoicelockError, match="word templates are damaged"):
            Verifier(SpeakerScorer(), THRESHOLDS, vocabulary)
    rule = Verifier(SpeakerScorer(), THRESHOLDS, {"dog": e[0], "down": e[1]})
    with pytest.raises(VoicelockError, match="different models"):
        rule.scores(np.ones(8), np.ones(3), np.ones((1, 8)), np.ones((1, 3)))


@pytest.fixture(scope="module")
def case(lenient_params_path: Path):
    return find_unlock_case(load_params(lenient_params_path))


def _cli_unlock(params_path: Path, probe: Path, template: Path, capsys) -> tuple[int, dict]:
    try:
        cli_main(["--params", str(params_path), "unlock", str(probe), "--template", str(template),
                  "--model", load_params(params_path).evaluate.out_dir])
        code = 0
    except SystemExit as e:
        code = int(e.code)
    return code, json.loads(capsys.readouterr().out)


def test_cli_unlocks_the_owner_and_refuses_another_voice_saying_the_password(lenient_params_path: Path, case,
                                                                             tmp_path: Path, capsys):
    params = load_params(lenient_params_path)
    template = tmp_path / "me.json"
    cli_main(["--params", str(lenient_params_path), "enroll", *map(str, case.enroll), "--template", str(template),
              "--model", params.evaluate.out_dir])
    capsys.readouterr()
    code, decision = _cli_unlock(lenient_params_path, case.genuine[0], template, capsys)
    assert (code, decision["unlocked"]) == (0, True)
    password = params.owner.password
    stranger = [p for p in case.impostors if p.parent.name == password]
    assert stranger, "no other voice's take of the password among the refused takes"
    code, decision = _cli_unlock(lenient_params_path, stranger[0], template, capsys)
    assert (code, decision["unlocked"]) == (1, False)
    assert decision["reason"] != "password and voice match"  # the refusal names what failed


def test_every_path_decides_through_the_one_rule(lenient_params_path: Path, case, monkeypatch):
    """Break the rule and every path follows it: if a second formula decided anywhere, it would not."""
    from voicelock.enrollment import Unlocker
    from voicelock.evaluation import unlock_rates
    from voicelock.trials import UnlockTrials

    params: Params = load_params(lenient_params_path)
    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    template = lock.enroll_files(case.enroll)
    assert lock.verify_file(template, case.genuine[0]).unlocked
    kinds = ("genuine", "other_speaker_password", "owner_other_word", "other_speaker_other_word")
    trials = UnlockTrials(*({k: np.full(4, 1e3) for k in kinds} for _ in range(3)), {k: np.full(4, -1e3) for k in kinds})
    assert unlock_rates(trials, lock.thresholds)["frr"] == 0.0
    monkeypatch.setattr(Verifier, "accepts", lambda self, w, s, r, v: np.zeros(np.shape(w), dtype=bool))
    assert not lock.verify_file(template, case.genuine[0]).unlocked
    assert unlock_rates(trials, lock.thresholds)["frr"] == 1.0


def test_every_replay_decision_follows_the_one_replay_rule(lenient_params_path: Path, case, monkeypatch):
    """The replay rule broken to fire on nothing, then on everything: the unlock, the check for a recording
    accepted twice at once and the reported false refusals all follow it."""
    from voicelock.enrollment import Unlocker
    from voicelock.replay import RememberedTakes, genuine_replay_refusals

    params: Params = load_params(lenient_params_path)
    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    template = lock.enroll_files(case.enroll)
    heard = lock.verify_file(template, case.genuine[0])
    assert heard.unlocked
    remembered = lock.remembered(heard)
    assert remembered  # the lenient release has replay shifts: the take is kept as a set
    served = RememberedTakes(np.asarray(heard.fingerprints * 2, np.float32), np.array([0]),
                             np.stack([np.asarray(np.atleast_2d(heard.fingerprints[0]), np.float32)]))
    who, what = np.array(["a", "a"]), np.array(["w", "w"])
    samples, rate = read_wav(str(case.genuine[0]))
    assert not lock.verify(template, samples, rate, recent=remembered).unlocked  # the same take again
    assert lock.replays_any(heard, remembered)
    assert genuine_replay_refusals(served, who, what, lock.verifier.replays).tolist() == [True]
    monkeypatch.setattr(Verifier, "replay_checks", lambda self, a, b, c: {"replay": False, "replay_single": False})
    assert lock.verify(template, samples, rate, recent=remembered).unlocked
    assert not lock.replays_any(heard, remembered)
    assert genuine_replay_refusals(served, who, what, lock.verifier.replays).tolist() == [False]
    monkeypatch.setattr(Verifier, "replay_checks", lambda self, a, b, c: {"replay": True, "replay_single": False})
    other = lock.verify_file(template, case.genuine[1])
    assert not other.unlocked and "replayed recording" in other.reason


def test_calibration_sets_the_raw_floor_then_holds_the_target_jointly():
    """The floor lets `raw_floor_far` of impostors past it; the normalised threshold then keeps the
    two checks together at the target FAR, on the same impostors."""
    from voicelock.evaluation import calibrate
    from voicelock.trials import UnlockTrials

    rng = np.random.default_rng(1)
    n = 20_000
    kinds = ("genuine", "other_speaker_password", "owner_other_word", "other_speaker_other_word")
    raw = {k: rng.normal(0.2, 0.15, n) for k in kinds}
    norm = {k: 3 * raw[k] + rng.normal(0, 0.5, n) for k in kinds}  # correlated, as AS-norm and cosine are
    word = {k: rng.normal(0.3, 0.1, n) for k in kinds}
    rival = {k: np.full(n, -np.inf) for k in kinds}
    trials = UnlockTrials(word, norm, raw, rival)
    th = calibrate(trials, target_far=0.001, raw_floor_far=0.01)
    imp = "other_speaker_password"
    assert np.mean(raw[imp] >= th["speaker_raw"]) <= 0.01
    joint = Verifier(SpeakerScorer(), {**THRESHOLDS, **th, "word": -1.0}).accepts(word[imp], norm[imp], raw[imp], rival[imp])
    assert 0.0005 <= joint.mean() <= 0.001  # the target, not far below it


def test_cli_templates_follow_a_promotion(lenient_params_path: Path, retrained_release: Path, case, tmp_path: Path,
                                          capsys, monkeypatch):
    """A template enrolled with last week's model unlocks with this week's: re-made from the sealed
    recordings in it and written back; without the key it names the fix instead of misreading it."""
    from cryptography.fernet import Fernet

    from voicelock.enrollment import Unlocker
    from voicelock.sealing import Sealer

    params = load_params(lenient_params_path)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(params.service.takes_key_env, key)
    template = tmp_path / "me.json"
    cli_main(["--params", str(lenient_params_path), "enroll", *map(str, case.enroll), "--template", str(template),
              "--model", params.evaluate.out_dir])
    assert "recordings sealed" in capsys.readouterr().out
    old = json.loads(template.read_text())
    assert old["model"] == Unlocker(params.evaluate.out_dir, params.enroll).model_id
    clips, rate = Sealer(key, params.service.takes_key_env).open(old["sealed_takes"].encode())  # sealed with it
    assert len(clips) == len(case.enroll) and rate == params.data.sample_rate
    new = ["--params", str(lenient_params_path), "unlock", str(case.genuine[0]), "--template", str(template),
           "--model", str(retrained_release)]
    monkeypatch.delenv(params.service.takes_key_env)
    with pytest.raises(SystemExit) as stop:
        cli_main(new)
    assert stop.value.code == 2 and "no takes key is set" in capsys.readouterr().err
    monkeypatch.setenv(params.service.takes_key_env, Fernet.generate_key().decode())
    with pytest.raises(SystemExit) as stop:  # another key: the recordings stay closed
        cli_main(new)
    assert stop.value.code == 2 and "cannot be opened" in capsys.readouterr().err
    assert json.loads(template.read_text()) == old  # a failed move leaves the template as it was
    monkeypatch.setenv(params.service.takes_key_env, key)
    try:
        cli_main(new)
        code = 0
    except SystemExit as e:
        code = int(e.code)
    out = capsys.readouterr()
    assert (code, json.loads(out.out)["unlocked"]) == (0, True)
    assert "re-made with model" in out.err
    moved = json.loads(template.read_text())
    assert moved["model"] != old["model"] and moved["sealed_takes"] == old["sealed_takes"]
