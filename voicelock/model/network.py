"""A small 2-D front, one shared 1-D convolutional backbone over its frames, two L2-normalised heads.

In the backbone, channels stand for frequencies and convolutions run over time (a 2-D CNN of similar
size was far slower on CPU); the 2-D front before it (`front_channels`) shares its filters across
frequency, which the backbone cannot (FrequencyFront). Each head pools the backbone's frames with its
own attentive statistics pooling, over the spoken frames only, so the embedding size does not depend
on clip length and the padding written by the features stage never leaks into an embedding. Two
binary outputs (owner, password) sit on the embeddings for fine-tuning on the owner's recordings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from voicelock.model.backend import SpeakerBackend
from voicelock.model.one_pole import decay_matrix
from voicelock.params import ModelParams

# The decision outputs read unit-length embeddings; scaled up, their logits can reach confident values
# at fine-tuning learning rates (unscaled, the class-weighted BCE barely moved in 6 epochs).
DECISION_SCALE = 10.0


def frame_mask(frames: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) frame counts → (B, 1, T) bool mask of the spoken frames."""
    return (torch.arange(length, device=frames.device)[None, :] < frames[:, None])[:, None, :]


def strided_frames(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Spoken-frame counts after a convolution of this stride with an odd kernel padded by kernel // 2:
    the outputs centred on a spoken frame, ceil(frames / stride) — the length the convolution gives
    the clip cut to its spoken frames. (That every spoken frame reaches a counted output needs
    kernel ≥ 2 · stride − 1: `ModelParams` refuses a stem without it; the front is 3 at stride 2.)"""
    return torch.div(frames + stride - 1, stride, rounding_mode="floor")


def at_level(feats: torch.Tensor, frames: torch.Tensor, level_db: float) -> torch.Tensor:
    """(B, F, T) dB features shifted so each clip's loudest spoken frame (the bands' mean dB, as the
    features' trim measures a frame) sits at `level_db`.

    Why: a recording's level says nothing about who speaks or what, yet the network read it — the
    unseen voices 12 dB quieter cost keyword 0.938 → 0.918 and owner + other word FAR 0.0021 → 0.0043,
    24 dB quieter FRR 0.030 → 0.083 — and a replayed take turned down 12 dB embedded as another
    recording. Shifted, a level change is no change at all (but for the noise floor of the digits).
    """
    energy = feats.mean(dim=1, keepdim=True).masked_fill(~frame_mask(frames, feats.shape[-1]), float("-inf"))
    return feats + (level_db - energy.amax(dim=2, keepdim=True))


def normalise_input(feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Cepstral mean normalisation over the spoken frames, then silence set to zero.

    Subtracting each band's mean removes a fixed microphone/room colouring (convolutive in the wave,
    additive in log-mel), which is variation a voice lock must ignore.
    """
    mask = frame_mask(frames, feats.shape[-1]).to(feats.dtype)
    mean = (feats * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    return (feats - mean) * mask / 10.0  # dB / 10: unit-ish scale for the first BatchNorm


class PCEN(nn.Module):
    """Per-channel energy normalisation (Wang et al., 2017) of the log-mel input, trainable per band.

    Why: each band's power is divided by its own running average — a gain control per band — and
    then root-compressed, so a steady background flattens to a constant while onsets stand out; the
    log keeps the same background as a level under the voice. Background noise is what costs the
    unseen voices most of their refusals (`bench/unseen_noise.py`). The smoother runs forward in
    time only, so the padding after a clip's spoken frames changes none of them. `eps` (1e-6, −60 dB
    on the features' scale, whose floor is −100 dB) keeps quieter backgrounds from being lifted: the
    gain control acts above about −55 dB on the scale the network reads: with `model.input_level_db`
    (−12), about 43 dB below the clip's loudest frame, whatever level it was recorded at. `smoothing`
    is per 10 ms frame (`features.hop_length` 160 at 16 kHz); another hop wants another value.
    """

    MAX_KEPT = 8  # smoother matrices kept, one per clip length and device

    def __init__(self, n_bands: int, smoothing: float = 0.025, alpha: float = 0.98, delta: float = 2.0,
                 root: float = 0.5, eps: float = 1e-6):
        super().__init__()
        self.smoothing, self.eps = smoothing, eps  # 0.025 a 10 ms frame: a 0.4 s time constant (librosa's)
        self.log_alpha = nn.Parameter(torch.full((n_bands, 1), math.log(alpha)))
        self.log_delta = nn.Parameter(torch.full((n_bands, 1), math.log(delta)))
        self.log_root = nn.Parameter(torch.full((n_bands, 1), math.log(root)))
        self._smoothers: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _smoother(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The smoother's (T, T) kernel and the decay of its start value, kept per clip length and device.

        Why kept: they depend on T alone (the smoothing is a constant), and rebuilding two (T × T)
        matrices on every forward pass cost more than the product itself at inference's batch of one.
        At most `MAX_KEPT` lengths are kept: training pads every clip to one length, and a service sees a
        few (a batch pads to its longest clip). Read once, never read back after storing: another
        thread's `clear()` between the two would otherwise lose the entry (the service may run forward
        passes on several threads).
        """
        key = (t, str(device))
        found = self._smoothers.get(key)
        if found is None:
            keep = 1 - self.smoothing
            # Built as ordinary tensors even under inference_mode, so a later training step may use them.
            with torch.inference_mode(False):
                kernel = self.smoothing * decay_matrix(t, torch.tensor([math.log(keep)], device=device))[0]
                start = keep ** (torch.arange(t, device=device, dtype=torch.float32) + 1)
            found = (kernel, start)
            if len(self._smoothers) >= self.MAX_KEPT:
                self._smoothers.clear()
            self._smoothers[key] = found
        return found

    def forward(self, db: torch.Tensor) -> torch.Tensor:
        with torch.autocast(db.device.type, enabled=False):  # powers span 1e-10..1e3: float32 throughout
            power = torch.pow(10.0, db.float() / 10)  # (B, F, T)
            kernel, start = self._smoother(power.shape[-1], power.device)
            # M[t] = (1 - s) M[t-1] + s E[t], started at M[-1] = E[0] (librosa's steady state)
            smooth = power @ kernel + power[..., :1] * start
            alpha, delta, root = self.log_alpha.exp(), self.log_delta.exp(), self.log_root.exp()
            return (power / (self.eps + smooth) ** alpha + delta) ** root - delta ** root


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel // 2))
        self.bn1 = nn.BatchNorm1d(channels)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.mix(F.relu(self.bn1(self.conv(x)))))
        return F.relu(x + y) * mask


class FrequencyFront(nn.Module):
    """Two 2-D convolutions over (frequency, time) in front of the 1-D backbone.

    The 1-D backbone treats each mel band as its own channel, so the same formant pattern a few
    bands higher (another vocal tract saying the same word) is, to it, a different input. A small
    2-D front shares its filters across frequency (CNN-TDNN, Thienpondt et al. 2021), then hands the
    backbone its channels × frequencies as channels. Halves both axes. Its input channels are the
    views of the input (`VoiceLockNet.input_views`: log-mel, PCEN, or both).
    """

    def __init__(self, n_features: int, channels: int, views: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(views, channels, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_features = channels * ((n_features + 1) // 2)

    def forward(self, x: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, views, F, T) → (B, channels · F/2, T/2) and the halved frame counts."""
        y = F.relu(self.bn1(self.conv1(x)))
        frames = strided_frames(frames, 2)
        mask = frame_mask(frames, y.shape[-1])[:, :, None, :]
        y = F.relu(self.bn2(self.conv2(y * mask))) * mask
        return y.flatten(1, 2), frames


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over the spoken frames."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.attention(x).masked_fill(~mask, float("-inf"))
        w = torch.softmax(logits, dim=-1)
        mean = (w * x).sum(-1)
        std = ((w * x * x).sum(-1) - mean**2).clamp(min=1e-5).sqrt()
        return torch.cat([mean, std], dim=1)


class Head(nn.Module):
    def __init__(self, channels: int, hidden: int, size: int):
        super().__init__()
        self.pool = AttentiveStatsPool(channels, hidden)
        self.project = nn.Linear(2 * channels, size)
        self.bn = nn.BatchNorm1d(size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.bn(self.project(self.pool(x, mask))), dim=1)


@dataclass
class Outputs:
    word: torch.Tensor  # (B, word_embedding), unit length
    speaker: torch.Tensor  # (B, backend_dims) once the speaker back-end is fitted, else (B, speaker_embedding)
    password_logit: torch.Tensor  # (B,)
    owner_logit: torch.Tensor  # (B,)


class VoiceLockNet(nn.Module):
    """(B, F, T) features + (B,) spoken-frame counts → word and speaker embeddings (+ two logits)."""

    def __init__(self, n_features: int, params: ModelParams):
        super().__init__()
        c = params.channels
        # Embedding sizes, named: the speaker's is the head's own, before any back-end projection.
        self.word_dim, self.speaker_dim = params.word_embedding, params.speaker_embedding
        self.input_norm = params.input_norm
        self.input_level_db = params.input_level_db
        self.views = 2 if params.input_norm == "log+pcen" else 1
        self.pcen = PCEN(n_features) if "pcen" in params.input_norm else None
        self.input_bn = nn.BatchNorm1d(n_features)  # the first view's: log-mel, or PCEN alone
        # log+pcen: PCEN's own normalisation, as its values sit on another scale than log-mel's
        self.pcen_bn = nn.BatchNorm1d(n_features) if self.views == 2 else None
        self.stride = params.stem_stride
        self.front = (FrequencyFront(n_features, params.front_channels, self.views)
                      if params.front_channels else None)
        stem_in = self.front.out_features if self.front is not None else n_features * self.views
        self.stem = nn.Sequential(nn.Conv1d(stem_in, c, params.stem_kernel, stride=params.stem_stride,
                                            padding=params.stem_kernel // 2),
                                  nn.BatchNorm1d(c), nn.ReLU())
        self.blocks = nn.ModuleList(ResidualBlock(c, params.kernel_size, d) for d in params.dilations)
        self.pooled_blocks = params.pooled_blocks
        self.word_head = Head(c * self.pooled_blocks, params.attention_hidden, params.word_embedding)
        self.speaker_head = Head(c * self.pooled_blocks, params.attention_hidden, params.speaker_embedding)
        # Logits on cosine-like scores: a scale and a bias per decision, learned in fine-tuning.
        self.password_out = nn.Linear(self.word_dim, 1)
        self.owner_out = nn.Linear(self.speaker_dim, 1)
        self.speaker_backend = (SpeakerBackend(params.speaker_embedding, params.backend_dims, params.backend_shrinkage)
                                if params.speaker_backend == "lda" else None)

    def input_views(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, T) features (log-mel; MFCCs too under cmn / batchnorm) → (B, views, F, T), each view
        normalised, silence set to zero.

        Why two views (`input_norm: log+pcen`): the log keeps a steady background as a level under the
        voice, PCEN's per-band gain control flattens it and lifts onsets; each alone lost something
        the other kept on the unseen voices (docs/decisions.md), so the front reads both.
        """
        if self.input_level_db is not None:
            feats = at_level(feats, frames, self.input_level_db)
        mask = frame_mask(frames, feats.shape[-1])[:, None]  # (B, 1, 1, T)
        if self.input_norm == "log+pcen":
            views = [self.input_bn(feats / 10.0), self.pcen_bn(self.pcen(feats))]
        elif self.input_norm == "pcen":
            views = [self.input_bn(self.pcen(feats))]
        elif self.input_norm == "cmn":
            views = [self.input_bn(normalise_input(feats, frames))]
        else:  # batchnorm
            views = [self.input_bn(feats / 10.0)]  # dB / 10: unit-ish scale for the BatchNorm
        return torch.stack(views, dim=1) * mask

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> Outputs:
        x = self.input_views(feats, frames)
        if self.front is not None:
            x, frames = self.front(x, frames)
        else:
            x = x.flatten(1, 2)  # (B, views · F, T): each view's bands as channels of the stem
        x = self.stem(x)
        frames = strided_frames(frames, self.stride)
        mask = frame_mask(frames, x.shape[-1])
        x = x * mask
        pooled = []  # the last pooled_blocks outputs only: in eval, earlier ones are freed once read
        for i, block in enumerate(self.blocks):
            x = block(x, mask)
            if i >= len(self.blocks) - self.pooled_blocks:
                pooled.append(x)
        x = torch.cat(pooled, dim=1) if len(pooled) > 1 else x
        word, speaker = self.word_head(x, mask), self.speaker_head(x, mask)
        # The owner decision was trained on the raw embedding (training runs with the back-end unfitted).
        scored = speaker if self.speaker_backend is None else self.speaker_backend(speaker)
        return Outputs(word, scored, self.password_out(word * DECISION_SCALE).squeeze(1),
                       self.owner_out(speaker * DECISION_SCALE).squeeze(1))


def inference_copy(model: VoiceLockNet) -> VoiceLockNet:
    """An eval-mode copy of `model` with each BatchNorm that follows a convolution or projection folded
    into it (torch's own `fuse_conv_bn_eval` / `fuse_linear_bn_eval`): what the served graph is traced
    from (voicelock/served_network.py).

    Why: an unlock is a batch of one or two clips, where each BatchNorm is a separate pass over a small
    tensor; folded, the graph has none to run. The copy computes the same function (float rounding
    aside, ~1e-6) and is never trained or saved: its BatchNorms are gone, so its state dict is no
    checkpoint's.
    """
    fused = copy.deepcopy(model).eval()
    for block in fused.blocks:
        block.conv, block.bn1 = fuse_conv_bn_eval(block.conv, block.bn1), nn.Identity()
        block.mix, block.bn2 = fuse_conv_bn_eval(block.mix, block.bn2), nn.Identity()
    fused.stem = nn.Sequential(fuse_conv_bn_eval(fused.stem[0], fused.stem[1]), fused.stem[2])
    if fused.front is not None:
        front = fused.front
        front.conv1, front.bn1 = fuse_conv_bn_eval(front.conv1, front.bn1), nn.Identity()
        front.conv2, front.bn2 = fuse_conv_bn_eval(front.conv2, front.bn2), nn.Identity()
    for head in (fused.word_head, fused.speaker_head):
        head.project, head.bn = fuse_linear_bn_eval(head.project, head.bn), nn.Identity()
    return fused


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
