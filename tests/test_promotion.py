"""The promotion rules on hand-made metrics."""

import math

from voicelock.promotion import OOD, compare, gated_metrics

GOOD = {"keyword_accuracy": 0.99, "speaker_eer": 0.02, "speaker_eer_all_trials": 0.05, "frr": 0.10,
        "far_other_speaker_password": 0.001, "far_owner_other_word": 0.0, "far_other_speaker_other_word": 0.0}
TOL = {"keyword_accuracy": 0.002, "speaker_eer": 0.002, "speaker_eer_all_trials": 0.003, "frr": 0.01, "far": 0.0005}


def test_first_model_and_equal_model_are_promoted():
    assert compare(GOOD, None, TOL, None)[0] is True
    assert compare(GOOD, dict(GOOD), TOL, None)[0] is True


def test_within_tolerance_is_promoted_beyond_it_is_not():
    assert compare({**GOOD, "speaker_eer": 0.0215}, GOOD, TOL, None)[0] is True
    ok, reasons = compare({**GOOD, "speaker_eer": 0.03}, GOOD, TOL, None)
    assert ok is False and any(r.startswith("speaker_eer:") for r in reasons)
    ok, reasons = compare({**GOOD, "keyword_accuracy": 0.95}, GOOD, TOL, None)
    assert ok is False and "keyword_accuracy" in reasons[0]
    ok, reasons = compare({**GOOD, "far_owner_other_word": 0.002}, GOOD, TOL, None)
    assert ok is False and "far_owner_other_word" in reasons[0]
    for far in ("far_other_speaker_password", "far_owner_other_word", "far_other_speaker_other_word"):
        assert compare({**GOOD, far: GOOD[far] + 0.0004}, GOOD, TOL, None)[0] is True, far  # within tolerance.far


def test_better_everywhere_is_promoted_and_missing_or_nan_is_worse():
    better = {k: (v + 0.005 if k == "keyword_accuracy" else max(v - 0.005, 0)) for k, v in GOOD.items()}
    assert compare(better, GOOD, TOL, None)[0] is True
    assert compare({**GOOD, "frr": math.nan}, GOOD, TOL, None)[0] is False
    missing = dict(GOOD)
    del missing["speaker_eer"]
    assert compare(missing, GOOD, TOL, None)[0] is False


def test_the_unseen_voices_are_gated_with_their_own_tolerance():
    """A candidate better in-domain but worse on the unseen voices beyond `ood_tolerance` is refused;
    within it, promoted; an unseen figure the candidate lacks counts as worse."""
    ood_tol = {**TOL, "keyword_accuracy": 0.015, "far": 0.0012, "far_other_speaker_password": 0.0005}
    prod = {**GOOD, **{OOD + k: v for k, v in GOOD.items()}}
    better_in_domain = {**prod, "keyword_accuracy": 0.999}
    assert compare(better_in_domain, prod, TOL, ood_tol)[0] is True
    ok, reasons = compare({**better_in_domain, "ood.keyword_accuracy": 0.97}, prod, TOL, ood_tol)
    assert ok is False and reasons == ["ood.keyword_accuracy: 0.9700 vs production 0.9900 (worse by 0.0200 > "
                                       "tolerance 0.015)"]
    assert compare({**prod, "ood.keyword_accuracy": 0.98}, prod, TOL, ood_tol)[0] is True  # a draw, not a step back
    # Each FAR: its own tolerance where set, else `far` (in-domain's 0.0005 would refuse +0.0010).
    assert compare({**prod, "ood.far_owner_other_word": 0.0010}, prod, TOL, ood_tol)[0] is True
    ok, reasons = compare({**prod, "ood.far_owner_other_word": 0.0015}, prod, TOL, ood_tol)
    assert ok is False and reasons[0].startswith("ood.far_owner_other_word")
    assert compare({**prod, "ood.far_other_speaker_password": 0.0014}, prod, TOL, ood_tol)[0] is True
    ok, reasons = compare({**prod, "ood.far_other_speaker_password": 0.0016}, prod, TOL, ood_tol)
    assert ok is False and "tolerance 0.0005" in reasons[0]
    missing = dict(prod)
    del missing["ood.frr"]
    ok, reasons = compare(missing, prod, TOL, ood_tol)
    assert ok is False and reasons == ["ood.frr: candidate has no value"]
    # Only with ood_tolerance=None (said by the caller) do the unseen figures go unjudged.
    assert compare({**prod, "ood.keyword_accuracy": 0.5}, prod, TOL, None)[0] is True
    assert gated_metrics() == list(GOOD) + [OOD + k for k in GOOD]


def test_no_unseen_far_passes_the_ceiling_and_odd_numbers_never_pass():
    """max_unseen_far holds whatever production scores (tolerated steps cannot add up past it);
    infinite candidate figures fail their rule; a production figure that cannot be compared is named."""
    prod = {**GOOD, **{OOD + k: v for k, v in GOOD.items()}, "ood.far_owner_other_word": 0.0029}
    ood_tol = {**TOL, "far": 0.0012}
    assert compare({**prod, "ood.far_owner_other_word": 0.0030}, prod, TOL, ood_tol, max_unseen_far=0.003)[0] is True
    ok, reasons = compare({**prod, "ood.far_owner_other_word": 0.0035}, prod, TOL, ood_tol, max_unseen_far=0.003)
    assert ok is False and reasons == ["ood.far_owner_other_word: 0.0035 above promotion.max_unseen_far 0.003"]
    inf = float("inf")
    ok, reasons = compare({**prod, "frr": inf}, {**prod, "frr": inf}, TOL, ood_tol)
    assert ok is False and reasons == ["frr: candidate has no value"]
    ok, reasons = compare(prod, {**prod, "ood.speaker_eer": math.nan}, TOL, ood_tol)
    assert ok is True and "ood.speaker_eer: production has no value (not compared)" in reasons


def test_a_candidate_carries_only_its_own_complete_unseen_figures(tmp_path):
    """The package stage refuses unseen-voices figures that are missing, incomplete, not finite or
    measured at another release's thresholds (a stale metrics/ood.json), naming the file and the fix."""
    import json

    import pytest

    from voicelock.errors import VoicelockError
    from voicelock.packaging import unseen_figures

    figures, details = tmp_path / "ood.json", tmp_path / "ood.details.json"
    thresholds = {"speaker": 0.74, "word": 0.68}
    figures.write_text(json.dumps({**GOOD, "min_dcf": 0.2}))
    details.write_text(json.dumps({"thresholds": thresholds, "speakers": 18}))
    assert unseen_figures(figures, details, thresholds) == {**GOOD, "min_dcf": 0.2}
    with pytest.raises(VoicelockError, match=r"ood\.details\.json: measured at other thresholds.*evaluate_unseen"):
        unseen_figures(figures, details, {**thresholds, "speaker": 0.75})
    figures.write_text(json.dumps({**GOOD, "frr": float("nan")}))
    with pytest.raises(VoicelockError, match=r"ood\.json: \['frr'\] missing or not finite"):
        unseen_figures(figures, details, thresholds)
    figures.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "speaker_eer"}))
    with pytest.raises(VoicelockError, match=r"\['speaker_eer'\] missing"):
        unseen_figures(figures, details, thresholds)
    figures.unlink()
    with pytest.raises(VoicelockError, match=r"ood\.json: no unseen-voices figures for this release"):
        unseen_figures(figures, details, thresholds)


def test_the_gate_measures_a_production_model_from_before_a_threshold_existed(lenient_params_path, tmp_path):
    """Production was evaluated by an older voicelock (here: before `word_margin`). Serving it is
    refused (it cannot be decided by this rule), but the gate re-calibrates it on the current splits
    anyway, so it must be measured, not crash the promotion of its successor."""
    import pytest

    from voicelock.errors import VoicelockError
    from voicelock.params import load_params
    from voicelock.promotion import production_metrics
    from voicelock.release import Release

    params = load_params(lenient_params_path)
    release = Release.load(params.evaluate.out_dir)
    release.thresholds = {k: v for k, v in release.thresholds.items() if k != "word_margin"}
    old = release.save(tmp_path / "old")
    with pytest.raises(VoicelockError, match="no calibrated 'word_margin' threshold"):
        Release.load(old)
    metrics = production_metrics(old, params)
    assert metrics["thresholds"]["word_margin"] == params.evaluate.word_margin
    assert math.isfinite(metrics[OOD + "far_owner_other_word"]) and math.isfinite(metrics["frr"])


def test_a_production_model_this_voicelock_cannot_serve_is_replaced_on_the_candidates_own_figures(
        lenient_params_path, tmp_path, monkeypatch):
    """After an upgrade that added a threshold, the old production model would keep the service from
    starting; keeping it because the candidate is "worse" than it would leave no service at all. The
    candidate's own ceilings still hold."""
    from types import SimpleNamespace

    from voicelock import promotion
    from voicelock.params import load_params
    from voicelock.release import Release

    params = load_params(lenient_params_path)
    release = Release.load(params.evaluate.out_dir)
    release.thresholds = {k: v for k, v in release.thresholds.items() if k != "word_margin"}
    old = release.save(tmp_path / "old")
    figures = {**GOOD, **{OOD + k: v for k, v in GOOD.items()}}

    def model(tag: str, path, metrics: dict, labels: dict | None = None):
        ood = {k.removeprefix(OOD): v for k, v in metrics.items() if k.startswith(OOD)}
        rest = {k: v for k, v in metrics.items() if not k.startswith(OOD)}
        return SimpleNamespace(tag=tag, path=str(path), info=SimpleNamespace(
            metadata={"metrics": rest, "ood_metrics": ood}, labels=labels or {}))

    def measured(*_):  # production must not be measured: this voicelock cannot read its thresholds
        raise AssertionError("production_metrics called")

    monkeypatch.setattr(promotion, "production_metrics", measured)
    monkeypatch.setattr(promotion, "production_model", lambda name: model("voicelock:old", old, {}))
    new = params.evaluate.out_dir
    monkeypatch.setattr(promotion, "candidate_model", lambda p: model("voicelock-candidate:new", new, figures))
    decision = promotion.decide(params)
    assert decision.promote is True and decision.production is None
    assert "cannot be served by this voicelock" in decision.reasons[0] and "'word_margin' threshold" in decision.reasons[0]
    too_open = {**figures, OOD + "far_other_speaker_password": params.promotion.max_unseen_far * 2}
    monkeypatch.setattr(promotion, "candidate_model", lambda p: model("voicelock-candidate:new", new, too_open))
    decision = promotion.decide(params)
    assert decision.promote is False and any("above promotion.max_unseen_far" in r for r in decision.reasons)
    assert promotion.unservable(params.evaluate.out_dir) is None  # today's release is served as it is
    # A candidate the service would refuse to start on is never promoted, whatever its figures.
    monkeypatch.setattr(promotion, "production_model", lambda name: None)
    monkeypatch.setattr(promotion, "candidate_model", lambda p: model("voicelock-candidate:old", old, figures))
    decision = promotion.decide(params)
    assert decision.promote is False and "voicelock-candidate:old cannot be served" in decision.reasons[0]
