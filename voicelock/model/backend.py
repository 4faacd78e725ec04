"""The speaker back-end: a linear map fitted on the training speakers after training, before scoring.

Why: the speaker head's embedding still moves with the word spoken (on the test speakers, the same
voice scored 0.58 cosine across words against 0.83 within a word), and cosine scoring treats every
direction of that movement like a change of voice. Linear discriminant analysis, fitted on the
training speakers' clean (unaugmented) embeddings, keeps the directions along which voices differ
most relative to how much one voice varies, so cross-word trials land closer together.

The within-speaker scatter is shrunk towards its mean variance (`backend_shrinkage`), because it was
measured on the speakers the network was trained on, which it knows better than any new voice; the
unshrunk map (0.0) overfitted them. The map is part of the network (buffers in the state dict), so
enrollment, the AS-norm cohort, thresholds and the service all score in the same space.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn


class SpeakerBackend(nn.Module):
    """Unit-length raw speaker embedding (B, D) → unit-length (B, dims) once fitted; identity before."""

    def __init__(self, dim: int, dims: int, shrinkage: float):
        super().__init__()
        if not 1 <= dims <= dim:
            raise ValueError(f"model.backend_dims {dims} must be between 1 and speaker_embedding {dim}")
        self.dims, self.shrinkage = dims, shrinkage
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("transform", torch.eye(dim)[:, :dims].clone())
        self.register_buffer("fitted", torch.tensor(False))

    def reset(self) -> None:
        """Back to identity: training shapes the raw embedding, and the map is fitted on it afterwards."""
        self.fitted.fill_(False)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            return raw
        return F.normalize((raw - self.mean.to(raw.dtype)) @ self.transform.to(raw.dtype), dim=1)

    @torch.no_grad()
    def fit(self, embeddings: np.ndarray, speakers: np.ndarray) -> None:
        """Shrinkage LDA on raw embeddings (N, D) of labelled speakers (at least two)."""
        x = np.asarray(embeddings, dtype=np.float64)
        labels, ids = np.unique(speakers, return_inverse=True)
        if len(labels) < 2:
            raise ValueError("the speaker back-end needs clips of at least two speakers to fit")
        mean = x.mean(0)
        centred = x - mean
        class_means = np.zeros((len(labels), x.shape[1]))
        np.add.at(class_means, ids, centred)
        class_means /= np.bincount(ids)[:, None]
        within_dev = centred - class_means[ids]
        within = within_dev.T @ within_dev / len(x)
        between = centred.T @ centred / len(x) - within
        dim = len(within)
        within = (1 - self.shrinkage) * within + self.shrinkage * np.trace(within) / dim * np.eye(dim)
        # Generalised eigenproblem between v = λ within v; eigh returns λ ascending, v with vᵀ·within·v = 1.
        _, vectors = scipy.linalg.eigh(between, within)
        transform = vectors[:, ::-1][:, : self.dims]
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.transform.copy_(torch.as_tensor(np.ascontiguousarray(transform), dtype=torch.float32))
        self.fitted.fill_(True)
