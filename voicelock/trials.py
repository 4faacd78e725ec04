"""Trials built from embeddings of clips with known speaker and word labels.

Shared by early stopping (validation split, every epoch) and the evaluate stage (test split), so the
figure training optimises is the figure that is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voicelock.metrics import cosine_matrix
from voicelock.scoring import SpeakerScorer
from voicelock.verifier import Verifier, make_template, unit

UNLOCK_IMPOSTOR_KINDS = ("other_speaker_password", "owner_other_word", "other_speaker_other_word")


def _cap(a: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    return a if a.size <= max_n else rng.choice(a, size=max_n, replace=False)


def speaker_pair_scores(emb: np.ndarray, speakers: np.ndarray, words: np.ndarray, same_word_only: bool,
                        max_trials: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of clip pairs: (genuine = same speaker, impostor = other speaker).

    `same_word_only` keeps pairs of the same word: the voice-unlock case, where the password is fixed.
    """
    sims = cosine_matrix(emb, emb)
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    if same_word_only:
        upper &= words[:, None] == words[None, :]
    same = speakers[:, None] == speakers[None, :]
    genuine, impostor = sims[upper & same], sims[upper & ~same]
    return _cap(genuine, max_trials, rng), _cap(impostor, max_trials, rng)


def keyword_predictions(emb: np.ndarray, speakers: np.ndarray, words: np.ndarray, k: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Nearest word template per clip, each template the mean of k clips of that word by *other* speakers.

    A word must be recognised in a voice it was never enrolled with. Returns predicted labels and the
    word list (template order).
    """
    vocab = sorted(set(words.tolist()))
    predicted = np.empty(len(words), dtype=object)
    for speaker in np.unique(speakers):
        mine = speakers == speaker
        templates = []
        for word in vocab:
            pool = np.flatnonzero(~mine & (words == word))
            templates.append(emb[rng.choice(pool, size=min(k, pool.size), replace=False)].mean(axis=0))
        scores = cosine_matrix(emb[mine], np.stack(templates))
        predicted[mine] = np.asarray(vocab, dtype=object)[scores.argmax(axis=1)]
    return predicted, vocab


@dataclass
class UnlockTrials:
    """Word and speaker scores of each trial kind against (speaker, password) templates."""

    word: dict[str, np.ndarray]
    speaker: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]  # the raw speaker cosines of the same trials (the verifier's floor)
    rival: dict[str, np.ndarray]  # each probe's cosine to the nearest other word (Verifier.rival_templates)


def unlock_trials(word_emb: np.ndarray, speaker_emb: np.ndarray, speakers: np.ndarray, words: np.ndarray,
                  utterances: np.ndarray, enroll_clips: int, max_trials: int,
                  rng: np.random.Generator, scorer: SpeakerScorer | None = None,
                  word_templates: dict[str, np.ndarray] | None = None) -> UnlockTrials:
    """Every (speaker, word) with more than `enroll_clips` takes plays an owner with that password.

    The first `enroll_clips` takes (by utterance number) form the template; the rest are genuine
    trials; other clips give the three impostor kinds. Templates and scores come from the verifier
    (voicelock/verifier.py) with `scorer` (raw cosine by default) and the release's `word_templates`
    (the rival words): exactly what `verify` computes.
    """
    rule = Verifier(scorer or SpeakerScorer(), word_templates=word_templates)
    speaker_emb = unit(np.asarray(speaker_emb, dtype=np.float32))
    stats = rule.scorer.probe_stats(speaker_emb)  # once: they do not depend on the template
    kinds = ("genuine",) + UNLOCK_IMPOSTOR_KINDS
    word_scores: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    spk_scores: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    raw_scores: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    rival_scores: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for (speaker, word) in sorted(set(zip(speakers.tolist(), words.tolist()))):
        rows = np.flatnonzero((speakers == speaker) & (words == word))
        if rows.size <= enroll_clips:
            continue
        rows = rows[np.argsort(utterances[rows], kind="stable")]
        enrolled, probes = rows[:enroll_clips], rows[enroll_clips:]
        w_t, s_t = make_template(word_emb[enrolled], speaker_emb[enrolled])
        groups = {
            "genuine": probes,
            "other_speaker_password": np.flatnonzero((speakers != speaker) & (words == word)),
            "owner_other_word": np.flatnonzero((speakers == speaker) & (words != word)),
            "other_speaker_other_word": np.flatnonzero((speakers != speaker) & (words != word)),
        }
        for kind, idx in groups.items():
            w, s, r, v = rule.scores(w_t, s_t, word_emb[idx], speaker_emb[idx], stats[idx])
            word_scores[kind].append(w)
            spk_scores[kind].append(s)
            raw_scores[kind].append(r)
            rival_scores[kind].append(v)

    def pack(scores: dict[str, list[np.ndarray]], pick: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v)[pick[k]] if v else np.zeros(0) for k, v in scores.items()}

    sizes = {k: sum(a.size for a in v) for k, v in word_scores.items()}
    pick = {k: np.sort(_cap(np.arange(n), max_trials, rng)) for k, n in sizes.items()}
    return UnlockTrials(pack(word_scores, pick), pack(spk_scores, pick), pack(raw_scores, pick),
                        pack(rival_scores, pick))
