"""Additive-margin softmax (CosFace) over a head's training classes — speakers for the speaker
head, words for the word head — as an auxiliary loss next to the triplets.

Why next to the triplets: batch-all triplets stop pulling a take once it is `margin` closer to its
class than to the impostors in the same batch, so the validation EER plateaued with the loss still
near the margin. A centre per class, with a margin on the cosine to it, keeps pulling every take of
a class together against all other classes at once. The centres are training-only: the saved model
and enrollment use the embeddings alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # target of a clip that belongs to no class (the owner in fine-tuning)


class MarginSoftmax(nn.Module):
    def __init__(self, dim: int, classes: int, margin: float, scale: float):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(classes, dim) * dim ** -0.5)
        self.margin, self.scale = margin, scale

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """embeddings (B, D), targets (B,) class ids or IGNORE → mean cross-entropy with margin."""
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(self.centres, dim=1).T
        known = targets != IGNORE
        if not bool(known.any()):
            return cosine.sum() * 0.0
        margin = F.one_hot(targets.clamp(min=0), cosine.shape[1]).to(cosine.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosine - margin * known[:, None]), targets, ignore_index=IGNORE)
