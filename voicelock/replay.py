"""Replay detection: a probe that is (nearly) a copy of an earlier recording of the same user.

A recording played back from an attacker's phone scores as the owner saying the password — that is
what a replay is. What gives it away is that it is *too* close: two genuine takes of a word are never
the same sound (pitch, timing and room differ every time), so their embeddings never coincide, while
a copy of a recording the service has already heard (an accepted unlock, an enrollment take) lands on
or next to that recording's embedding, even after re-encoding or a little added noise.

A probe's *fingerprint* is its word and speaker embeddings, each unit length, concatenated and
re-normalised: the cosine of two fingerprints is the mean of their word and speaker cosines. The
threshold is calibrated at evaluation on genuine repeated takes of the validation speakers (the
highest similarity two distinct genuine takes of one word by one voice ever reach, plus a margin) and
shipped with the model, so it is never tuned by hand.
"""

from __future__ import annotations

import numpy as np

from voicelock.errors import VoicelockError


def fingerprints(word: np.ndarray, speaker: np.ndarray) -> np.ndarray:
    """(N, Dw) word and (N, Ds) speaker embeddings → (N, Dw + Ds) unit-length fingerprints."""
    w = word / (np.linalg.norm(word, axis=1, keepdims=True) + 1e-12)
    s = speaker / (np.linalg.norm(speaker, axis=1, keepdims=True) + 1e-12)
    both = np.concatenate([w, s], axis=1) / np.sqrt(2.0)
    return both.astype(np.float32)


def max_similarity(probe: np.ndarray, history: np.ndarray | None) -> float:
    """The probe's highest cosine to any earlier fingerprint (-1 with no history).

    A non-finite similarity (a corrupt stored row) is treated as a match: it must not open the lock.
    """
    if history is None or len(history) == 0:
        return -1.0
    history = np.asarray(history, dtype=np.float32).reshape(-1, probe.size)
    sims = history @ probe.reshape(-1)
    if not np.all(np.isfinite(sims)):
        return float("inf")
    return float(sims.max())


def genuine_repeat_similarities(word: np.ndarray, speaker: np.ndarray, speakers: np.ndarray,
                                words: np.ndarray) -> np.ndarray:
    """Fingerprint cosines of every pair of distinct takes of the same word by the same speaker."""
    fp = fingerprints(word, speaker)
    out = []
    for key in sorted(set(zip(speakers.tolist(), words.tolist()))):
        rows = np.flatnonzero((speakers == key[0]) & (words == key[1]))
        if rows.size < 2:
            continue
        sims = fp[rows] @ fp[rows].T
        out.append(sims[np.triu_indices(rows.size, k=1)])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def calibrate_replay_threshold(genuine_repeats: np.ndarray, margin: float) -> float:
    """Just above the closest pair of genuine repeated takes, plus `margin` (capped below 1.0 so an
    exact copy, similarity 1.0, is always caught)."""
    if genuine_repeats.size == 0:
        raise VoicelockError("evaluate: no speaker has two takes of a word in the validation split — "
                             "the replay threshold cannot be calibrated; use a corpus with repeated takes")
    return float(min(float(np.max(genuine_repeats)) + margin, 0.9999))
