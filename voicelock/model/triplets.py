"""Triplet mining inside a batch, fed to torch's TripletMarginLoss.

`batch_all` keeps every valid triplet that still violates the margin (trained both heads here);
`semi_hard` keeps negatives further than the positive but inside the margin; `batch_hard` takes the
hardest positive and negative per anchor (known to stall a speaker head at the margin on this data).
"""

from __future__ import annotations

import torch
from torch import nn


def mine(labels: torch.Tensor, emb: torch.Tensor, margin: float, strategy: str, max_triplets: int,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (anchor, positive, negative) of the triplets to learn from in this batch."""
    with torch.no_grad():
        dist = torch.cdist(emb, emb)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
        pos, neg = same & ~eye, ~same
        if strategy == "batch_hard":
            has = pos.any(1) & neg.any(1)
            p = dist.masked_fill(~pos, float("-inf")).argmax(1)
            n = dist.masked_fill(~neg, float("inf")).argmin(1)
            a = torch.nonzero(has).squeeze(1)
            return a, p[a], n[a]
        # Anchor-positive pairs first, then their negatives: (pairs × B) instead of a (B × B × B) cube,
        # 17–30× fewer elements for the P×W×K batches here, and the same triplets in the same order.
        a, p = torch.nonzero(pos, as_tuple=True)
        d_ap, d_an = dist[a, p][:, None], dist[a]
        if strategy == "semi_hard":
            keep = neg[a] & (d_an > d_ap) & (d_an < d_ap + margin)
        else:  # batch_all: every triplet with a non-zero loss
            keep = neg[a] & (d_ap - d_an + margin > 0)
        pair, n = torch.nonzero(keep, as_tuple=True)
        a, p = a[pair], p[pair]
        if a.numel() > max_triplets:
            pick = torch.randperm(a.numel(), generator=generator, device="cpu")[:max_triplets].to(a.device)
            a, p, n = a[pick], p[pick], n[pick]
        return a, p, n


def triplet_loss(labels: torch.Tensor, emb: torch.Tensor, loss_fn: nn.TripletMarginLoss, strategy: str,
                 max_triplets: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Mean TripletMarginLoss over the mined triplets (zero, with gradient, when none is left)."""
    a, p, n = mine(labels, emb, loss_fn.margin, strategy, max_triplets, generator)
    if a.numel() == 0:
        return emb.sum() * 0.0, 0
    return loss_fn(emb[a], emb[p], emb[n]), int(a.numel())
