"""The promotion rules on hand-made metrics."""

import math

from voicelock.promotion import OOD, compare, gated_metrics

GOOD = {"keyword_accuracy": 0.99, "speaker_eer": 0.02, "speaker_eer_all_trials": 0.05, "frr": 0.10,
        "far_other_speaker_password": 0.001, "far_owner_other_word": 0.0, "far_other_speaker_other_word": 0.0}
TOL = {"keyword_accuracy": 0.002, "speaker_eer": 0.002, "speaker_eer_all_trials": 0.003, "frr": 0.01, "far": 0.0005}


def test_first_model_and_equal_model_are_promoted():
    assert compare(GOOD, None, TOL)[0] is True
    assert compare(GOOD, dict(GOOD), TOL)[0] is True


def test_within_tolerance_is_promoted_beyond_it_is_not():
    assert compare({**GOOD, "speaker_eer": 0.0215}, GOOD, TOL)[0] is True
    ok, reasons = compare({**GOOD, "speaker_eer": 0.03}, GOOD, TOL)
    assert ok is False and any(r.startswith("speaker_eer:") for r in reasons)
    ok, reasons = compare({**GOOD, "keyword_accuracy": 0.95}, GOOD, TOL)
    assert ok is False and "keyword_accuracy" in reasons[0]
    ok, reasons = compare({**GOOD, "far_owner_other_word": 0.002}, GOOD, TOL)
    assert ok is False and "far_owner_other_word" in reasons[0]
    for far in ("far_other_speaker_password", "far_owner_other_word", "far_other_speaker_other_word"):
        assert compare({**GOOD, far: GOOD[far] + 0.0004}, GOOD, TOL)[0] is True, far  # within tolerance.far


def test_better_everywhere_is_promoted_and_missing_or_nan_is_worse():
    better = {k: (v + 0.005 if k == "keyword_accuracy" else max(v - 0.005, 0)) for k, v in GOOD.items()}
    assert compare(better, GOOD, TOL)[0] is True
    assert compare({**GOOD, "frr": math.nan}, GOOD, TOL)[0] is False
    missing = dict(GOOD)
    del missing["speaker_eer"]
    assert compare(missing, GOOD, TOL)[0] is False


def test_the_unseen_voices_are_gated_with_their_own_tolerance():
    """A candidate better in-domain but worse on the unseen voices beyond `ood_tolerance` is refused;
    within it, promoted; an unseen figure the candidate lacks counts as worse."""
    ood_tol = {**TOL, "keyword_accuracy": 0.015, "far": 0.0012}
    prod = {**GOOD, **{OOD + k: v for k, v in GOOD.items()}}
    better_in_domain = {**prod, "keyword_accuracy": 0.999}
    assert compare(better_in_domain, prod, TOL, ood_tol)[0] is True
    ok, reasons = compare({**better_in_domain, "ood.keyword_accuracy": 0.97}, prod, TOL, ood_tol)
    assert ok is False and reasons == ["ood.keyword_accuracy: 0.9700 vs production 0.9900 (worse by 0.0200 > "
                                       "tolerance 0.015)"]
    assert compare({**prod, "ood.keyword_accuracy": 0.98}, prod, TOL, ood_tol)[0] is True  # a draw, not a step back
    ok, reasons = compare({**prod, "ood.far_owner_other_word": 0.0015}, prod, TOL, ood_tol)
    assert ok is False and reasons[0].startswith("ood.far_owner_other_word")
    missing = dict(prod)
    del missing["ood.frr"]
    ok, reasons = compare(missing, prod, TOL, ood_tol)
    assert ok is False and reasons == ["ood.frr: candidate has no value"]
    # Without ood_tolerance only the in-domain rules count (and the decision table lists what was gated).
    assert compare({**prod, "ood.keyword_accuracy": 0.5}, prod, TOL)[0] is True
    assert gated_metrics() == list(GOOD) + [OOD + k for k in GOOD]
