"""Liveness challenge: words the service asks for at random, which a recording made earlier cannot hold.

An attacker who holds recordings of the owner saying the password passes voice and word checks; a
challenge asks, per unlock, for 1–3 words drawn at random from the model's vocabulary, said in the
owner's voice. A replay attacker then needs a recording of the owner saying each drawn word — the
more words and the larger the vocabulary, the less likely (bench/replay_attack.py measures it).

Each challenge take is checked twice: its word against speaker-independent word templates shipped
with the model (the mean word embedding of the training speakers' takes of that word: the take must
be nearest to the asked word's template and clear a calibrated threshold), and its voice against the
user's enrolled speaker template with a threshold calibrated on *other-word* trials — a speaker
embedding moves with the word spoken, so the password's speaker threshold would refuse the owner.
"""

from __future__ import annotations

import secrets

import numpy as np
import pandas as pd


def word_templates(word_emb: np.ndarray, index: pd.DataFrame) -> dict[str, np.ndarray]:
    """One unit-length template per vocabulary word: the mean of every training take of it."""
    out = {}
    for word, rows in sorted(index.groupby("word").indices.items()):
        centre = word_emb[rows].mean(axis=0)
        out[str(word)] = (centre / (np.linalg.norm(centre) + 1e-12)).astype(np.float32)
    return out


def template_scores(word_emb: np.ndarray, templates: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """(vocabulary, (N, V) cosines of each take to each word template)."""
    vocab = list(templates)
    return vocab, word_emb @ np.stack([templates[w] for w in vocab]).T


def challenge_word_trials(word_emb: np.ndarray, words: np.ndarray,
                          templates: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Scores for calibrating the challenge word threshold: (genuine = each take against its own word's
    template, impostor = each take against every other word's template)."""
    vocab, scores = template_scores(word_emb, templates)
    own = np.asarray([vocab.index(w) if w in vocab else -1 for w in words])
    known = own >= 0
    scores, own = scores[known], own[known]
    mask = np.zeros_like(scores, dtype=bool)
    mask[np.arange(len(own)), own] = True
    return scores[mask], scores[~mask]


def draw_challenge(vocabulary: list[str], n_words: int) -> list[str]:
    """`n_words` distinct words at random from `vocabulary`, with a CSPRNG: an attacker must not
    predict them."""
    return secrets.SystemRandom().sample(vocabulary, min(n_words, len(vocabulary)))
