"""Batches of P speakers × W words × K takes, so triplets can be mined inside each batch.

Drawing triplets at random per item wastes most of them on easy negatives; a structured batch holds
many positives and negatives for both heads at once. With several words per speaker and several
speakers per word, every speaker positive is a different word and every word positive a different
speaker: each head is pushed to ignore what the other one encodes.

Speakers can be drawn unevenly: each pick of a batch's speakers is proportional to their weights,
so a speaker of weight 3 is in about 3 times as many batches while a batch holds few of all the
speakers (voicelock/model/train.py weights speakers by the engine that made them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from voicelock.errors import VoicelockError


class SpeakerWordBatches:
    """Row indices of a feature index, drawn as P speakers × W words × K takes per batch."""

    def __init__(self, index: pd.DataFrame, speakers: int, words: int, takes: int, seed: int,
                 weights: dict[str, float] | None = None):
        self.groups: dict[tuple[str, str], np.ndarray] = {
            key: np.asarray(rows) for key, rows in index.groupby(["speaker", "word"]).indices.items()
        }
        self.words_of: dict[str, list[str]] = {}
        for speaker, word in self.groups:
            self.words_of.setdefault(speaker, []).append(word)
        self.all_words = sorted(index["word"].unique())
        self.speakers, self.words, self.takes = speakers, min(words, len(self.all_words)), takes
        if len(self.words_of) < 2 or len(self.all_words) < 2:
            raise VoicelockError("training data needs at least 2 speakers and 2 words — add data or check the split")
        self.rng = np.random.default_rng(seed)
        # None when every speaker weighs the same: then the draws are exactly the unweighted ones.
        self.weights = weights if weights and any(w != 1 for w in weights.values()) else None

    def batch(self) -> np.ndarray:
        words = self.rng.choice(self.all_words, size=self.words, replace=False)
        candidates = [s for s, ws in self.words_of.items() if len(set(ws) & set(words)) >= 2]
        chance = None
        if self.weights is not None:
            chance = np.asarray([self.weights.get(s, 1.0) for s in candidates])
            chance = chance / chance.sum()
        chosen = self.rng.choice(candidates, size=min(self.speakers, len(candidates)), replace=False, p=chance)
        rows = []
        for speaker in chosen:
            for word in words:
                group = self.groups.get((speaker, word))
                if group is not None:
                    rows.extend(self.rng.choice(group, size=self.takes, replace=len(group) < self.takes))
        return np.asarray(rows)
