"""Verification metrics: EER, minDCF, FAR/FRR at a threshold, threshold for a target FAR, DET points.

Convention everywhere: a trial is accepted when its score is >= the threshold; FAR is the share of
impostor trials accepted, FRR the share of genuine trials rejected; all figures are fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def far_at_threshold(impostor: np.ndarray, threshold: float) -> float:
    impostor = np.asarray(impostor, dtype=np.float64)
    return float(np.mean(impostor >= threshold)) if impostor.size else 0.0


def frr_at_threshold(genuine: np.ndarray, threshold: float) -> float:
    genuine = np.asarray(genuine, dtype=np.float64)
    return float(np.mean(genuine < threshold)) if genuine.size else 0.0


def threshold_for_far(impostor: np.ndarray, target_far: float) -> float:
    """The lowest threshold whose FAR on `impostor` is at most `target_far`.

    With n impostor scores at most floor(target·n) may be accepted, so the threshold sits just above
    the (floor(target·n)+1)-th highest impostor score.
    """
    scores = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("no impostor scores to calibrate a threshold on")
    allowed = int(np.floor(target_far * scores.size + 1e-9))
    if allowed >= scores.size:
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))


@dataclass(frozen=True)
class ErrorCurve:
    """FAR and FRR at every distinct threshold, thresholds ascending."""

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray


def error_curve(genuine: np.ndarray, impostor: np.ndarray) -> ErrorCurve:
    genuine = np.sort(np.asarray(genuine, dtype=np.float64))
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("need both genuine and impostor scores")
    thresholds = np.unique(np.concatenate([genuine, impostor, [np.inf]]))
    far = 1.0 - np.searchsorted(impostor, thresholds, side="left") / impostor.size
    frr = np.searchsorted(genuine, thresholds, side="left") / genuine.size
    return ErrorCurve(thresholds, far, frr)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold: where FAR and FRR cross (linearly interpolated)."""
    curve = error_curve(genuine, impostor)
    diff = curve.far - curve.frr  # decreasing from ≥0 to ≤0 as the threshold rises
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float((curve.far[i] + curve.frr[i]) / 2), float(curve.thresholds[i])
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = (1 - w) * curve.far[i - 1] + w * curve.far[i]
    rate_frr = (1 - w) * curve.frr[i - 1] + w * curve.frr[i]
    return float((rate + rate_frr) / 2), float(curve.thresholds[i - 1] if w < 0.5 else curve.thresholds[i])


def min_dcf(genuine: np.ndarray, impostor: np.ndarray, p_target: float, c_miss: float = 1.0,
            c_fa: float = 1.0) -> float:
    """Minimum normalised detection cost over all thresholds (NIST SRE definition)."""
    curve = error_curve(genuine, impostor)
    cost = c_miss * p_target * curve.frr + c_fa * (1 - p_target) * curve.far
    return float(cost.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b` (inputs need not be unit length)."""
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return a @ b.T
