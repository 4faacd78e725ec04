"""The promotion rules on hand-made metrics."""

import math

from voicelock.promotion import compare

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
