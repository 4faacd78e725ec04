"""Metric code on hand-made scores whose EER, FAR and FRR are known exactly."""

import numpy as np
import pytest

from voicelock.metrics import eer, far_at_threshold, frr_at_threshold, min_dcf, threshold_for_far


def test_eer_where_far_equals_frr_exactly():
    genuine = np.array([0.6, 0.7, 0.8, 0.9])
    impostor = np.array([0.1, 0.2, 0.3, 0.65])
    # At 0.65: impostor 0.65 accepted (FAR 1/4), genuine 0.6 rejected (FRR 1/4).
    rate, threshold = eer(genuine, impostor)
    assert rate == pytest.approx(0.25)
    assert far_at_threshold(impostor, 0.65) == 0.25 and frr_at_threshold(genuine, 0.65) == 0.25


def test_perfect_separation_and_total_overlap():
    assert eer(np.array([0.9, 0.8]), np.array([0.1, 0.2]))[0] == 0.0
    assert eer(np.array([0.5, 0.5]), np.array([0.5, 0.5]))[0] == pytest.approx(0.5)


def test_eer_interpolates_between_thresholds():
    genuine = np.array([0.2, 0.6, 0.7, 0.9])
    impostor = np.array([0.1, 0.3, 0.4, 0.8])
    # Rates step: threshold 0.3 → FAR .75 FRR .25; 0.4 → .5/.25; 0.6 → .25/.25 → EER 0.25.
    assert eer(genuine, impostor)[0] == pytest.approx(0.25)


def test_threshold_for_target_far():
    impostor = np.arange(1000) / 1000.0  # 0.000 … 0.999
    t = threshold_for_far(impostor, 0.001)
    assert far_at_threshold(impostor, t) == pytest.approx(0.001)  # only 0.999 accepted
    assert 0.998 < t <= 0.999
    t0 = threshold_for_far(impostor, 0.0001)  # fewer than one trial allowed: accept none
    assert far_at_threshold(impostor, t0) == 0.0 and t0 > 0.999


def test_min_dcf_known_value():
    genuine = np.array([0.6, 0.7, 0.8, 0.9])
    impostor = np.array([0.1, 0.2, 0.3, 0.65])
    # Best is FRR 0 / FAR 0.25 (cost .75·.25=.1875... normalised by .25 → .75) vs FRR .25 / FAR 0
    # (cost .25·.25=.0625 → .25): min normalised DCF at p_target 0.25 is 0.25.
    assert min_dcf(genuine, impostor, p_target=0.25) == pytest.approx(0.25)


def test_asnorm_discounts_templates_in_crowded_regions():
    from voicelock.scoring import SpeakerScorer

    rng = np.random.default_rng(0)
    crowd = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.standard_normal((50, 3))
    cohort = np.vstack([crowd, rng.standard_normal((50, 3))])
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    crowded, lonely = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    probe_c = np.array([[0.9, np.sqrt(1 - 0.81), 0.0]])  # raw cosine 0.9 with each template
    probe_l = np.array([[0.0, np.sqrt(1 - 0.81), 0.9]])
    raw = SpeakerScorer()
    assert raw(crowded, probe_c)[0] == pytest.approx(0.9) and raw(lonely, probe_l)[0] == pytest.approx(0.9)
    norm = SpeakerScorer(cohort, top_k=20)
    # The same raw 0.9 is weak evidence where many other voices also score ~0.9, strong where none do.
    assert norm(lonely, probe_l)[0] > norm(crowded, probe_c)[0] + 1.0
