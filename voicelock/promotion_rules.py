"""The promotion gate's rules, in a module of their own: the gate (voicelock/promotion.py), the
package stage (which checks a candidate carries every figure) and params validation (which checks
each tolerance names a rule) all read this one list, and none of them pulls in the others."""

import math

# metric → True when higher is better
RULES = {"keyword_accuracy": True, "speaker_eer": False, "speaker_eer_all_trials": False, "frr": False,
         "far_other_speaker_password": False, "far_owner_other_word": False, "far_other_speaker_other_word": False}

# What a tolerance may name: a rule, or `far` for every FAR without a tolerance of its own.
TOLERANCE_KEYS = frozenset(RULES) | {"far"}


def finite_number(value: object) -> float | None:
    """A figure as a finite number, or None: missing, NaN, infinite or not a number cannot be compared
    (the gate fails a candidate's rule on it, the package stage refuses to carry it)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
