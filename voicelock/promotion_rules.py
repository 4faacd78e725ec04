"""The promotion gate's rules, in a module of their own: the gate (voicelock/promotion.py), the
package stage (which checks a candidate carries every figure) and params validation (which checks
each tolerance names a rule) all read this one list, and none of them pulls in the others."""

# metric → True when higher is better
RULES = {"keyword_accuracy": True, "speaker_eer": False, "speaker_eer_all_trials": False, "frr": False,
         "far_other_speaker_password": False, "far_owner_other_word": False, "far_other_speaker_other_word": False}

# What a tolerance may name: a rule, or `far` for every FAR without a tolerance of its own.
TOLERANCE_KEYS = frozenset(RULES) | {"far"}
