"""Triplet mining inside a batch, and the triplet margin loss on the batch's distance matrix.

`batch_all` keeps every valid triplet that still violates the margin (trained both heads here);
`semi_hard` keeps negatives further than the positive but inside the margin; `batch_hard` takes the
hardest positive and negative per anchor (known to stall a speaker head at the margin on this data).

The loss is torch's TripletMarginLoss (mean of max(d(a,p) - d(a,n) + margin, 0), Euclidean), read off one
B×B distance matrix instead of three gathered (triplets × dim) copies of the embeddings: with 10,000
triplets that gather and its backward scatter were ~30 ms of a ~380 ms pre-training batch on CPU, the
matrix ~8 ms (measured on 256 × 192 embeddings). Mining reads the same matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Squared distances below this count as zero: keeps sqrt's gradient finite for identical embeddings.
_MIN_SQUARED = 1e-12


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between all rows, differentiable (‖a‖² + ‖b‖² − 2a·b, as torch.cdist computes
    them for batches this size, and mining always has). Cancellation makes distances below ~1e-3 coarse
    (1e-3 comes out ~10% off, 1e-4 as 0 with no gradient); the loss is decided by the 0.3 margin, far
    above that, and the clamp keeps sqrt's gradient finite for identical embeddings."""
    sq = emb.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * emb @ emb.T).clamp_min(_MIN_SQUARED).sqrt()


def mine(labels: torch.Tensor, dist: torch.Tensor, margin: float, strategy: str, max_triplets: int,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (anchor, positive, negative) of the triplets to learn from, given the batch's labels and
    its distance matrix (`pairwise_distances`)."""
    with torch.no_grad():  # indices only: no gradient flows through the choice
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=dist.device)
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
            pick = distinct_sample(a.numel(), max_triplets, generator).to(a.device)
            a, p, n = a[pick], p[pick], n[pick]
        return a, p, n


def distinct_sample(n: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct indices drawn uniformly from range(n) (k <= n), in the order drawn.

    Why not `randperm(n)[:k]`: early in pre-training a head has ~10⁶ active triplets for 10⁴ kept,
    and permuting all of them was ~10 ms a head and batch on CPU. Drawing with replacement and keeping
    each index's first draw is the same distribution (every new distinct index is uniform over those
    not yet drawn) at a cost that grows with k alone (O(k log k), a sort of the draws); for n near k,
    where repeats would need many draws, it permutes.
    """
    if n <= 4 * k:
        return torch.randperm(n, generator=generator)[:k]
    picked = torch.empty(0, dtype=torch.long)
    while picked.numel() < k:
        draws = torch.cat([picked, torch.randint(n, (k + k // 8,), generator=generator)])
        values, inverse = torch.unique(draws, return_inverse=True)
        first = torch.full((len(values),), len(draws)).scatter_reduce(0, inverse, torch.arange(len(draws)), "amin")
        picked = values[torch.argsort(first)]  # distinct, in the order first drawn
    return picked[:k]


def triplet_loss(labels: torch.Tensor, emb: torch.Tensor, margin: float, strategy: str, max_triplets: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Mean triplet margin loss over the mined triplets, and their number (zero, with gradient, when
    none is left)."""
    dist = pairwise_distances(emb)
    a, p, n = mine(labels, dist, margin, strategy, max_triplets, generator)
    if a.numel() == 0:
        return emb.sum() * 0.0, 0
    return F.relu(dist[a, p] - dist[a, n] + margin).mean(), int(a.numel())
