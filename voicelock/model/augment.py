"""Augmentation on cached log-mel features, batched, so training never decodes audio again.

Each transform is the log-mel image of a waveform effect:
- time shift, speed (time stretch) and pitch / vocal-tract warp (a stretch of the mel axis, as in
  VTLP) — one `grid_sample` for the whole batch;
- a microphone: a smooth EQ curve across mel bands, added in dB (a linear filter is additive there);
- a room: late reverberation as a decaying smear of power along time (a one-pole filter per band);
- background noise from `_background_noise_`, added in the power domain at a random SNR;
- SpecAugment masks (torchaudio), filled with the clip's mean so they carry no level cue.
Voices unlike the training voices differ exactly along these axes, which is why they are on by default.

Speaker augmentation (`speaker_warps`): every training speaker also appears as new speakers whose
log-mels are warped along frequency by a fixed factor — a shorter or longer vocal tract, i.e. another
person, as speed-perturbed copies are new speakers in Kaldi / WeSpeaker recipes. The speaker head must
then tell voices apart by formant scale too, and it meets more identities than the corpus holds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchaudio

from voicelock.features import load_noise
from voicelock.model.one_pole import decay_matrix
from voicelock.params import AugmentParams, Params


def _uniform(gen: torch.Generator, n: int, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=gen)


def _spoken(frames: torch.Tensor, t: int) -> torch.Tensor:
    """(B,) frame counts → (B, 1, T) mask of each clip's own frames (the rest is padding)."""
    return (torch.arange(t)[None, :] < frames[:, None])[:, None, :]


def _add_power(feats: torch.Tensor, rows: torch.Tensor, power: torch.Tensor, added: torch.Tensor) -> torch.Tensor:
    """`feats` with `added` power mixed into `rows` (whose power is `power`), back in dB; other rows as
    they were. Room and noise are both sums in the power domain."""
    out = feats.clone()
    out[rows] = 10 * torch.log10(power + added + 1e-10)
    return out


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)  # torchaudio's default ("htk") mel scale


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10 ** (mel / 2595.0) - 1.0)


def warp_source_bins(n_mels: int, band: tuple[float, float], factors: torch.Tensor) -> torch.Tensor:
    """(B,) frequency warp factors → (B, n_mels) fractional mel bins each output bin reads from.

    Warping by α moves energy at f to α·f (α > 1: a shorter vocal tract, formants up), so the output
    bin centred at c reads the source at c / α, located on the same mel scale the features used.
    """
    edges = torch.linspace(float(_hz_to_mel(torch.tensor(band[0]))), float(_hz_to_mel(torch.tensor(band[1]))),
                           n_mels + 2)
    centres = _mel_to_hz(edges[1:-1])
    source = _hz_to_mel(centres[None, :] / factors[:, None])
    return (source - edges[1]) / (edges[1] - edges[0])


def with_warped_speakers(index: pd.DataFrame, warps: list[float]) -> pd.DataFrame:
    """The training index plus one copy per warp factor, each a new speaker (`<id>~<factor>`).

    `source` is the feature row a row reads, `speaker_warp` the factor the augmenter applies (1 for
    the real speakers)."""
    base = index.assign(source=np.arange(len(index)), speaker_warp=1.0)
    copies = [base.assign(speaker=base["speaker"].astype(str) + f"~{w:g}", speaker_warp=float(w)) for w in warps]
    return pd.concat([base, *copies], ignore_index=True)


class FeatureAugmenter:
    """(B, F, T) dB features + (B,) frame counts → augmented features and new frame counts.

    `mel_band` (f_min, f_max in Hz) places frequency warps on the features' own mel scale; without it
    a warp stretches the bin axis linearly."""

    def __init__(self, params: AugmentParams, hop_seconds: float, noise: torch.Tensor | None, logmel: bool, seed: int,
                 mel_band: tuple[float, float] | None = None):
        self.p = params
        self.mel_band = mel_band
        self.hop = hop_seconds
        self.noise = noise if noise is not None and len(noise) else None
        self.logmel = logmel  # power-domain effects (room, noise) only make sense on log-mel
        self.gen = torch.Generator().manual_seed(seed)
        self.freq_mask = torchaudio.transforms.FrequencyMasking(params.freq_mask_width, iid_masks=True)
        self.time_mask = torchaudio.transforms.TimeMasking(params.time_mask_width, iid_masks=True)

    @property
    def speaker_warps(self) -> list[float]:
        """The new-speaker warp factors in force (none when augmentation is off)."""
        return list(self.p.speaker_warps) if self.p.enabled else []

    def __call__(self, feats: torch.Tensor, frames: torch.Tensor,
                 speaker_warp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`speaker_warp` (B,): each row's new-speaker factor (`with_warped_speakers`), 1 = itself."""
        if not self.p.enabled:
            return feats, frames
        floor = feats.amin(dim=(1, 2), keepdim=True)
        feats, frames = self._geometry(feats, frames, speaker_warp)
        feats = self._microphone(feats)
        if self.logmel:
            feats = self._room(feats)
            feats = self._noise(feats, frames)
        feats = self._masks(feats, frames)
        return torch.where(_spoken(frames, feats.shape[-1]), feats, floor), frames

    def _geometry(self, feats: torch.Tensor, frames: torch.Tensor,
                  speaker_warp: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, f, t = feats.shape
        speed = _uniform(self.gen, b, self.p.speed_range)
        warp = _uniform(self.gen, b, self.p.warp_range)
        if speaker_warp is not None:
            warp = warp * speaker_warp.to(torch.float32)
        shift = torch.randint(0, self.p.shift_frames + 1, (b,), generator=self.gen)
        out_t = torch.arange(t, dtype=torch.float32)
        out_f = torch.arange(f, dtype=torch.float32)
        src_t = (out_t[None, :] - shift[:, None]) * speed[:, None]  # (B, T)
        if self.mel_band is not None:
            src_f = warp_source_bins(f, self.mel_band, warp)  # (B, F)
        else:
            src_f = out_f[None, :] / warp[:, None]
        grid = torch.stack([
            (2 * src_t / (t - 1) - 1)[:, None, :].expand(b, f, t),
            (2 * src_f / (f - 1) - 1)[:, :, None].expand(b, f, t),
        ], dim=-1)
        out = F.grid_sample(feats[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
        new_frames = (torch.ceil(frames / speed).long() + shift).clamp(1, t)
        return out, new_frames

    def _microphone(self, feats: torch.Tensor) -> torch.Tensor:
        b, f, _ = feats.shape
        bands = torch.linspace(-0.5, 0.5, f)
        curve = _uniform(self.gen, b, self.p.mic_tilt_db_range)[:, None] * bands[None, :]
        for k in range(1, 4):
            amp = self.p.mic_ripple_db * (2 * torch.rand(b, generator=self.gen) - 1) / k
            phase = 2 * math.pi * torch.rand(b, generator=self.gen)
            curve = curve + amp[:, None] * torch.cos(math.pi * k * (bands[None, :] + 0.5) + phase[:, None])
        return feats + curve[:, :, None]

    def _room(self, feats: torch.Tensor) -> torch.Tensor:
        """Late reverberation on the rows that draw a room: each band's power smeared along time by a
        one-pole decay, y[t] = x[t] + decay·y[t-1] (`one_pole.decay_matrix`); only the rows in a room
        are filtered."""
        b, _, t = feats.shape
        use = torch.rand(b, generator=self.gen) < self.p.room_probability
        if not use.any():
            return feats
        rt60 = _uniform(self.gen, b, self.p.rt60_range)
        wet_db = _uniform(self.gen, b, self.p.reverb_gain_db_range)
        rows = torch.nonzero(use).squeeze(1)
        log_decay = -6 * self.hop / rt60[rows] * math.log(10)  # power falls 60 dB over rt60
        smear = decay_matrix(t, log_decay)
        power = 10 ** (feats[rows] / 10)
        tail = (power @ smear - power) * (1 - torch.exp(log_decay))[:, None, None]
        return _add_power(feats, rows, power, 10 ** (wet_db[rows] / 10)[:, None, None] * tail)

    def _noise(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Background noise, on the rows that draw it, at a random SNR over the clip's spoken frames."""
        if self.noise is None:
            return feats
        b, _, t = feats.shape
        use = torch.rand(b, generator=self.gen) < self.p.noise_probability
        if not use.any():
            return feats
        pick = torch.randint(0, len(self.noise), (b,), generator=self.gen)
        snr = _uniform(self.gen, b, self.p.noise_snr_db_range)
        rows = torch.nonzero(use).squeeze(1)
        noise = 10 ** (self.noise[pick[rows]][..., :t] / 10)
        power = 10 ** (feats[rows] / 10)
        mask = _spoken(frames[rows], t)
        # Mean power per (band, spoken frame), as the noise's is per (band, frame). Before commit 3a6e3cf
        # the bands were summed, not averaged: noise n_mels times (64: 18 dB) louder than the SNR drawn.
        p_sig = (power * mask).sum(dim=(1, 2)) / (mask.sum(dim=(1, 2)) * power.shape[1]).clamp(min=1)
        p_noise = noise.mean(dim=(1, 2))
        scale = p_sig / (p_noise * 10 ** (snr[rows] / 10))
        return _add_power(feats, rows, power, scale[:, None, None] * noise)

    def _masks(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        mask = _spoken(frames, feats.shape[-1])
        mean = (feats * mask).sum(dim=(1, 2), keepdim=True) / (mask.sum(dim=(1, 2), keepdim=True) * feats.shape[1])
        centred = (feats - mean)[:, None]
        for _ in range(self.p.freq_masks):
            centred = self.freq_mask(centred)
        for _ in range(self.p.time_masks):
            centred = self.time_mask(centred)
        return centred[:, 0] + mean


def make_augmenter(params: Params, seed: int) -> FeatureAugmenter:
    """The augmenter for the cached features: their hop and band, the background noise cached beside them."""
    cache = params.features.out_dir
    hop_s = params.features.hop_length / params.data.sample_rate
    band = (params.features.f_min, min(params.features.f_max, params.data.sample_rate / 2))
    return FeatureAugmenter(params.augment, hop_s, load_noise(cache), params.features.kind == "logmel", seed,
                            band if params.features.kind == "logmel" else None)
