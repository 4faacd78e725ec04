"""One-pole decays along time as a matrix product: the filter behind the room augmentation and PCEN.

Why a matrix: y[t] = x[t] + d·y[t-1] run as a recursion (`lfilter`) steps through time one frame at a
time; a clip here is ~100 frames, so one (T × T) product per row is ~6× faster on CPU, and a
gradient flows through it like through any matmul.
"""

from __future__ import annotations

import torch


def decay_matrix(t: int, log_decay: torch.Tensor) -> torch.Tensor:
    """(R,) log-decays per frame → (R, T, T) matrices M with M[r, s, u] = decay_r^(u − s) for u ≥ s, else 0.

    `power @ M` (power: (R, F, T)) is then Σ_{s ≤ u} decay^(u−s) · power[s]: the one-pole recursion
    started from rest. Index [s, u]: input frame s reaches output frame u, never an earlier one, so
    frames after a clip's last spoken frame change none of its spoken outputs.
    """
    steps = torch.arange(t, dtype=torch.float32, device=log_decay.device)
    lag = steps[None, :] - steps[:, None]  # [s, u] = u - s: how far output frame u lies after input s
    return torch.where(lag >= 0, torch.exp(lag.clamp(min=0)[None] * log_decay[:, None, None]), 0.0)
