"""The embedding step as its own BentoML service, with adaptive batching (params: service.batching).

With batching on, `Unlocker` keeps HTTP, decoding, checks and scoring, and sends each request's
prepared clips here; BentoML's dispatcher groups the clips of concurrent requests into one batch of
at most `max_batch_size`, waiting at most `max_latency_ms`, so features and network run once per
batch instead of once per request. Whether that pays is measured by bench/service.py (README).
"""

from __future__ import annotations

import bentoml
import numpy as np

from service.settings import SETTINGS
from voicelock.enrollment import Unlocker
from voicelock.runtime import limit_threads

PARAMS = SETTINGS.params


@bentoml.service(name="voicelock-embedder", workers=1, traffic={"timeout": 30})
class Embedder:
    """Word and speaker embeddings of prepared clips (float32 mono at the model's rate)."""

    model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        limit_threads(PARAMS.service.embedder_threads)
        self.lock = Unlocker(self.model.path, PARAMS.enroll)

    @bentoml.api(batchable=True, max_batch_size=PARAMS.service.max_batch_size,
                 max_latency_ms=PARAMS.service.max_latency_ms)
    def embed(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """One row per clip: the word embedding followed by the speaker embedding."""
        word, speaker = self.lock.embed_here([np.asarray(c, dtype=np.float32) for c in clips])
        return list(np.concatenate([word, speaker], axis=1))
