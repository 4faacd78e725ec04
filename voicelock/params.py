"""Typed view of `params.yaml`, the one place every knob is set.

Pydantic validates the file once, so a typo or an out-of-range value fails with the dotted key at
fault ("params.yaml: features.n_mels: …") before any stage does work, instead of as a KeyError
deep inside a stage.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voicelock.errors import VoicelockError
from voicelock.promotion_rules import TOLERANCE_KEYS

DEFAULT_PARAMS = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpeechCommandsParams(_Section):
    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    retries: int = Field(ge=0, le=20)
    timeout_s: float = Field(gt=0)
    chunk_bytes: int = Field(ge=1024)


class FolderParams(_Section):
    path: str


class ExtraRecordedSpeaker(_Section):
    """One more speaker from a festival voice: its recording at another mean F0 and vocal tract."""

    voice: str
    f0: float = Field(gt=40, lt=400, description="mean F0 asked of festival (Hz), before the vocal tract scales it")
    scale: float = Field(ge=0.7, le=1.4, description="every frequency × this: the vocal tract (and F0 with it)")


# An espeak-ng MBROLA voice: mb-<database>, or mb-<database>-en (that person reading by English rules).
MBROLA_VOICE = re.compile(r"^mb-([a-z]+[0-9])(-en)?$")
# The recorded person's own language where a database's letters are not its ISO code (espeak-ng's
# voices/mb files): MBROLA's `ca` is Canadian French, not Catalan; `sw` Swedish, not Swahili.
MBROLA_LANGUAGE = {"br": "pt", "ca": "fr", "cr": "hr", "cz": "cs", "ee": "et", "gr": "el", "hb": "he", "in": "hi",
                   "ir": "fa", "jp": "ja", "ma": "ms", "mx": "es", "nz": "mi", "sw": "sv", "tl": "te", "us": "en",
                   "vz": "es"}


def mbrola_database(voice: str) -> str | None:
    """The MBROLA database (one recorded person) behind an espeak-ng voice, mb-de1-en → de1; None for
    a name that is not an MBROLA voice's."""
    match = MBROLA_VOICE.match(voice)
    return match.group(1) if match else None


def mbrola_language(voice: str) -> str:
    """The language the person recorded in an MBROLA voice speaks natively (mb-sw2-en → sv)."""
    letters = (mbrola_database(voice) or voice).rstrip("0123456789")
    return MBROLA_LANGUAGE.get(letters, letters)


class SynthParams(_Section):
    words: list[str] = Field(min_length=2)
    n_speakers: int = Field(ge=3)
    takes_per_word: int = Field(ge=1)
    voices: list[str] = Field(min_length=1)
    variants: list[str] = Field(min_length=1)
    festival_voices: dict[str, float] = Field(default_factory=dict, description="festival voice → mean F0 (Hz)")
    festival_speaker_scales: list[float] = Field(
        default_factory=list, description="one more speaker per festival voice and factor: all frequencies × it")
    festival_extra_speakers: list[ExtraRecordedSpeaker] = Field(
        default_factory=list, description="more festival speakers, each a voice at its own F0 and vocal tract")
    mbrola_voices: list[str] = Field(
        default_factory=list, description="espeak-ng's MBROLA voices (mb-…): recorded people, one speaker each")
    mbrola_copies: int = Field(default=0, ge=0, le=3,
                               description="more speakers per MBROLA voice, each at another vocal tract")
    pitch_range: tuple[int, int]
    formant_scale_range: tuple[float, float] = Field(
        default=(1.0, 1.0), description="each espeak-ng speaker's vocal tract: all frequencies times this")
    pitch_jitter: int = Field(ge=0, le=30)
    speed_range: tuple[int, int]
    speed_jitter: float = Field(ge=0, lt=0.5)
    gain_db_range: tuple[float, float]
    room_probability: float = Field(ge=0, le=1)
    rt60_range: tuple[float, float]
    direct_to_reverb_db_range: tuple[float, float]
    mic_low_hz_range: tuple[float, float]
    mic_high_hz_range: tuple[float, float]
    mic_tilt_db_range: tuple[float, float]
    noise_snr_db_range: tuple[float, float]
    background_files: int = Field(ge=1)
    background_seconds: float = Field(gt=1)
    workers: int = Field(ge=0, description="0 = one per CPU core")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> "SynthParams":
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.endswith("_range") and value[0] > value[1]:
                raise ValueError(f"{name}: low end {value[0]} is above high end {value[1]}")
        if any(not 0.7 <= s <= 1.4 or s == 1.0 for s in self.festival_speaker_scales):
            raise ValueError(f"festival_speaker_scales: {self.festival_speaker_scales} — each factor within "
                             f"[0.7, 1.4] and not 1.0 (the voice itself is always a speaker)")
        if twins := [e.voice for e in self.festival_extra_speakers
                     if e.voice in self.festival_voices and abs(e.scale - 1.0) < 0.03]:
            raise ValueError(f"festival_extra_speakers: {twins} at scale ~1.0 — the voice at its own vocal tract is "
                             f"a pitch-only twin of its festival_voices speaker; give it a scale beyond ±3%")
        people: dict[str, list[str]] = {}
        for voice in self.mbrola_voices:
            if (db := mbrola_database(voice)) is None:
                raise ValueError(f"mbrola_voices: {voice!r} is not an espeak-ng MBROLA voice (mb-<database> or "
                                 f"mb-<database>-en, e.g. mb-us1, mb-de2-en: `espeak-ng --voices=mb`)")
            people.setdefault(db, []).append(voice)
        if twins := [v for v in people.values() if len(v) > 1]:
            raise ValueError(f"mbrola_voices: {twins} are one recorded person each — keep one voice per database")
        if not 0.7 <= self.formant_scale_range[0] <= self.formant_scale_range[1] <= 1.4:
            raise ValueError(f"formant_scale_range: {list(self.formant_scale_range)} must lie within [0.7, 1.4] "
                             f"(1.0 = the voice as espeak-ng renders it; beyond ±30% it no longer sounds human)")
        if len(self.voices) * len(self.variants) < self.n_speakers:
            raise ValueError(
                f"n_speakers={self.n_speakers} needs at least that many voice×variant pairs, "
                f"but voices×variants gives {len(self.voices) * len(self.variants)}: add variants"
            )
        return self


class DataParams(_Section):
    source: Literal["synth", "speech_commands", "folder"]
    raw_dir: str
    download_dir: str
    sample_rate: int = Field(ge=8000, le=48000)
    validation_percentage: float = Field(gt=0, lt=50)
    testing_percentage: float = Field(gt=0, lt=50)
    speech_commands: SpeechCommandsParams
    folder: FolderParams
    synth: SynthParams


class PrepareParams(_Section):
    out_dir: str
    min_duration_s: float = Field(gt=0)
    max_duration_s: float = Field(gt=0)
    silence_rms: float = Field(ge=0)
    clipping_peak: float = Field(gt=0, le=1)
    max_bad_fraction: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _durations_ordered(self) -> "PrepareParams":
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be below max_duration_s")
        return self


class FeatureParams(_Section):
    out_dir: str
    kind: Literal["logmel", "mfcc"]
    n_fft: int = Field(ge=64)
    win_length: int = Field(ge=16)
    hop_length: int = Field(ge=1)
    n_mels: int = Field(ge=8, le=256)
    n_mfcc: int = Field(ge=4)
    f_min: float = Field(ge=0)
    f_max: float = Field(gt=0)
    clip_seconds: float = Field(gt=0, le=10)
    trim_top_db: float = Field(gt=0)
    trim_margin_s: float = Field(ge=0)
    # A release made before this knob ran without it; loading it must not change what it computes.
    digital_silence_s: float = Field(0.0, ge=0, le=1, description="exact zeros this long at either end of "
                                                                   "a clip are cut before its features; 0: never")
    batch_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "FeatureParams":
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min {self.f_min} must be below f_max {self.f_max}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} exceeds n_mels {self.n_mels}")
        return self


class ModelParams(_Section):
    input_norm: Literal["cmn", "batchnorm", "pcen", "log+pcen"]
    channels: int = Field(ge=8)
    stem_kernel: int = Field(ge=1)
    stem_stride: int = Field(ge=1, le=4)
    kernel_size: int = Field(ge=1)
    dilations: list[int] = Field(min_length=1)
    attention_hidden: int = Field(ge=4)
    word_embedding: int = Field(ge=8)
    speaker_embedding: int = Field(ge=8)
    pooled_blocks: int = Field(1, ge=1, description="the heads pool the last N blocks' outputs, side by side")
    front_channels: int = Field(0, ge=0, description="0: none; else two 2-D convolutions (frequency × time) "
                                                     "with this many channels before the stem")
    input_level_db: float | None = Field(
        None, ge=-60, le=0, description="each clip shifted so its loudest frame sits at this level (dB, the "
                                        "bands' mean) before the network reads it; None: as recorded")
    speaker_backend: Literal["none", "lda"] = Field(
        "none", description="linear map fitted on the training speakers after training (voicelock/model/backend.py)")
    backend_dims: int = Field(48, ge=1)
    backend_shrinkage: float = Field(0.6, ge=0, le=1)

    @model_validator(mode="after")
    def _stem_sees_every_spoken_frame(self) -> "ModelParams":
        # network.strided_frames counts the outputs centred on spoken frames; with an even kernel, or
        # one narrower than its stride, a clip's last spoken frames would reach none of them.
        if self.stem_kernel % 2 == 0 or self.stem_kernel < 2 * self.stem_stride - 1:
            raise ValueError(f"stem_kernel {self.stem_kernel} at stem_stride {self.stem_stride}: the kernel must be odd "
                             f"and at least 2 × stride − 1 ({2 * self.stem_stride - 1}), or the clip's last spoken "
                             "frames reach no output")
        return self

    @model_validator(mode="after")
    def _pooled_blocks_exist(self) -> "ModelParams":
        if self.pooled_blocks > len(self.dilations):
            raise ValueError(f"pooled_blocks {self.pooled_blocks} exceeds the {len(self.dilations)} blocks of dilations: "
                             "pool at most one block per dilation")
        return self

    @model_validator(mode="after")
    def _backend_fits(self) -> "ModelParams":
        if self.speaker_backend != "none" and self.backend_dims > self.speaker_embedding:
            raise ValueError(f"backend_dims {self.backend_dims} exceeds speaker_embedding {self.speaker_embedding}: "
                             "the back-end can only keep or reduce dimensions")
        return self


class AugmentParams(_Section):
    enabled: bool
    shift_frames: int = Field(ge=0)
    speed_range: tuple[float, float]
    warp_range: tuple[float, float]
    speaker_warps: list[float] = Field(default_factory=list)
    room_probability: float = Field(ge=0, le=1)
    rt60_range: tuple[float, float]
    reverb_gain_db_range: tuple[float, float]
    mic_tilt_db_range: tuple[float, float]
    mic_ripple_db: float = Field(ge=0)
    noise_probability: float = Field(ge=0, le=1)
    noise_snr_db_range: tuple[float, float]
    freq_masks: int = Field(ge=0)
    freq_mask_width: int = Field(ge=1)
    time_masks: int = Field(ge=0)
    time_mask_width: int = Field(ge=1)

    @model_validator(mode="after")
    def _warps_make_new_voices(self) -> "AugmentParams":
        bad = [w for w in self.speaker_warps if not (0.7 <= w <= 1.4) or abs(w - 1) < 0.02]
        if bad:
            raise ValueError(f"speaker_warps: {bad} — each factor must lie in 0.7–1.4 and differ from 1 by at "
                             f"least 0.02, or the copy is no new voice")
        return self


class TrainParams(_Section):
    """Shared by pretrain and finetune: how batches are drawn and how the optimiser runs."""

    out_dir: str
    device: Literal["auto", "cpu", "cuda"]
    speakers_per_batch: int = Field(ge=2)
    words_per_batch: int = Field(ge=2)
    takes_per_pair: int = Field(ge=1)
    batches_per_epoch: int = Field(ge=1)
    max_epochs: int = Field(ge=1)
    validate_from_epoch: int = Field(1, ge=1, description="epochs before this one are not scored on validation")
    patience: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    margin: float = Field(gt=0)
    mining: Literal["batch_all", "batch_hard", "semi_hard"]
    max_triplets: int = Field(ge=1)
    speaker_class_weight: float = Field(ge=0, description="0 = triplet loss only for the speaker head")
    word_class_weight: float = Field(ge=0, description="0 = triplet loss only for the word head")
    class_margin: float = Field(ge=0, lt=1)
    class_scale: float = Field(gt=0)
    threads: int = Field(ge=0, description="torch CPU threads; 0 = torch's default")
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    class_centres: Literal["random", "class_means"] = Field(
        "random", description="start of the margin-softmax centres: random, or each class's mean embedding")
    engine_weights: dict[str, float] = Field(
        default_factory=dict, description="speakers of these engines (the corpus's speakers.csv) are drawn "
        "with this weight (others 1): about this many times as often while a batch holds few speakers")

    @model_validator(mode="after")
    def _positive_weights(self) -> "TrainParams":
        bad = {engine: w for engine, w in self.engine_weights.items() if not (math.isfinite(w) and w > 0)}
        if bad:
            raise ValueError(f"engine_weights {bad}: a weight must be a finite number above 0 "
                             "(1 = drawn as often as any other speaker)")
        return self

    @model_validator(mode="after")
    def _validated_at_least_once(self) -> "TrainParams":
        if self.validate_from_epoch > self.max_epochs:
            raise ValueError(f"validate_from_epoch ({self.validate_from_epoch}) is after max_epochs "
                             f"({self.max_epochs}): no epoch would be scored, so none could be kept — lower it")
        return self


class FinetuneParams(TrainParams):
    owner_clips_per_batch: int = Field(ge=1)
    decision_loss_weight: float = Field(ge=0)


class OwnerParams(_Section):
    source: Literal["synth", "folder"]
    folder: str
    out_dir: str
    password: str
    takes_password: int = Field(ge=4)
    takes_other: int = Field(ge=1)
    holdout_fraction: float = Field(gt=0, lt=1)


class EnrollParams(_Section):
    min_clips: int = Field(ge=1)
    max_clips: int = Field(ge=1)
    min_duration_s: float = Field(gt=0)
    max_duration_s: float = Field(gt=0)
    min_rms: float = Field(ge=0)
    min_word_agreement: float = Field(ge=-1, le=1)
    min_speaker_agreement: float = Field(ge=-1, le=1)


class EvaluateParams(_Section):
    out_dir: str
    metrics_file: str
    details_file: str
    plots_dir: str
    enroll_clips: int = Field(ge=1)
    keyword_enroll_clips: int = Field(ge=1)
    target_far: float = Field(gt=0, lt=1)
    raw_floor_far: float = Field(gt=0, lt=1)
    word_margin: float = Field(ge=-2, le=2)
    p_target: float = Field(gt=0, lt=1)
    max_trials: int = Field(ge=100)
    score_norm: Literal["asnorm", "none"]
    cohort_top_k: int = Field(ge=2)
    challenge_word_far: float = Field(gt=0, lt=1)
    challenge_speaker_far: float = Field(gt=0, lt=1)
    replay_margin: float = Field(ge=0, lt=0.5)
    replay_shifts: list[int] = Field([0], min_length=1, max_length=16,
                                     description="delays (samples) a remembered take is also fingerprinted at")
    replay_band_hz: float = Field(0, ge=0, description="cut of the band-limited view (0: none)")

    @field_validator("replay_shifts")
    @classmethod
    def _shifts_start_at_zero(cls, v: list[int]) -> list[int]:
        if v[0] != 0 or any(b <= a for a, b in zip(v, v[1:])) or v[-1] > 1600:
            raise ValueError(f"{v}: give increasing whole delays in samples, starting at 0 (the take itself), "
                             f"at most 1600 (0.1 s)")
        return v

    @model_validator(mode="after")
    def _floor_looser_than_target(self) -> "EvaluateParams":
        if self.raw_floor_far < self.target_far:
            raise ValueError(f"raw_floor_far: {self.raw_floor_far} is below target_far {self.target_far} — the "
                             f"raw-cosine floor alone would then decide; set it at or above target_far")
        return self


class OodParams(_Section):
    """The unseen-voices evaluation corpus (voicelock/data/unseen.py): evaluation only, never training."""

    out_dir: str
    metrics_file: str
    details_file: str
    plots_dir: str
    espeak_voices: list[str] = Field(min_length=1)
    espeak_variants: list[str] = Field(min_length=2)
    espeak_speakers: int = Field(ge=2)
    flite_voices: dict[str, float] = Field(description="flite voice → its natural mean F0 in Hz")
    takes_per_word: int = Field(ge=2)
    noise_snr_db_range: tuple[float, float]

    @model_validator(mode="after")
    def _enough_pairs(self) -> "OodParams":
        if self.espeak_speakers > len(self.espeak_variants):
            raise ValueError(f"espeak_speakers: {self.espeak_speakers} is more than the {len(self.espeak_variants)} "
                             f"espeak_variants — two unseen speakers sharing a variant would be twins (one vocal "
                             f"tract, two accents), not two people; add variants or lower espeak_speakers")
        if self.noise_snr_db_range[0] > self.noise_snr_db_range[1]:
            raise ValueError("noise_snr_db_range: low end above high end — swap them")
        return self


class ServiceParams(_Section):
    model_name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    model_tag: str
    package_record: str
    database_url: str
    api_key_env: str
    admin_key_env: str
    takes_key_env: str
    proof_token_seconds: float = Field(gt=0, le=3600)
    retire_deleted_names: bool
    lockout_failures: int = Field(ge=1)
    lockout_seconds: float = Field(gt=0)
    lockout_max_seconds: float = Field(gt=0)
    replay_history: int = Field(ge=1, le=10000)
    replay_same_take: float = Field(gt=0.99, le=1.0, description="row-for-row cosine at which a remembered take "
                                    "is the same take as another (kept once in a window of replaced takes)")
    liveness: Literal["off", "challenge"]
    challenge_words: int = Field(ge=1, le=3)
    challenge_seconds: float = Field(gt=0, le=600)
    max_open_challenges: int = Field(ge=1, le=20)
    explain: bool
    max_request_bytes: int = Field(ge=1024)
    max_file_bytes: int = Field(ge=1024)
    min_sample_rate: int = Field(ge=1000)
    max_sample_rate: int = Field(le=1_000_000)
    max_channels: int = Field(ge=1, le=64)
    compute_threads: int = Field(ge=1, le=64)
    max_queued: int = Field(ge=0)
    request_timeout_s: float = Field(gt=0)
    audit_max_rows: int = Field(default=100_000, ge=100)
    max_user_length: int = Field(ge=1, le=128)
    workers: int = Field(ge=1)
    torch_threads: int = Field(ge=1)
    batching: bool
    embedder_threads: int = Field(ge=1)
    max_batch_size: int = Field(ge=1)
    max_latency_ms: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ServiceParams":
        if self.lockout_max_seconds < self.lockout_seconds:
            raise ValueError("lockout_max_seconds: below lockout_seconds — raise it to at least lockout_seconds")
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("min_sample_rate: above max_sample_rate — swap them")
        return self


class PageParams(_Section):
    """The browser page's recording behaviour; sent to the page as /app/config.json."""

    enroll_takes: int = Field(ge=1, le=10)
    countdown_seconds: int = Field(ge=0, le=10)
    listen_seconds: float = Field(gt=0, le=30)
    clip_seconds: float = Field(gt=0.2, le=5)
    preroll_seconds: float = Field(ge=0, le=1)
    speech_level_db: float = Field(lt=0)
    noise_margin_db: float = Field(ge=0)
    quiet_ms: int = Field(ge=0, le=2000)
    mic_idle_seconds: float = Field(ge=0, le=600)


class PromotionParams(_Section):
    candidate_name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    tolerance: dict[str, float]
    ood_tolerance: dict[str, float]
    max_unseen_far: float = Field(gt=0, le=1)
    schedule_cron: str
    schedule_timezone: str = "UTC"
    enroll_data_interval_s: int = Field(ge=10)
    checkout_wait_s: float = Field(default=3600, ge=0)
    push_timeout_s: float = Field(default=1800, gt=0)
    download_retries: int = Field(ge=0)
    retry_delay_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _known_rules(self) -> "PromotionParams":
        for key, tolerances in (("tolerance", self.tolerance), ("ood_tolerance", self.ood_tolerance)):
            if unknown := set(tolerances) - TOLERANCE_KEYS:
                raise ValueError(f"{key}: unknown metrics {sorted(unknown)} — the rules are {sorted(TOLERANCE_KEYS)}")
            if bad := [k for k, v in tolerances.items() if not math.isfinite(v)]:
                raise ValueError(f"{key}: {bad} must be finite numbers (an infinite tolerance gates nothing)")
        return self


class Params(BaseModel):
    """The whole params.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    data: DataParams
    prepare: PrepareParams
    features: FeatureParams
    model: ModelParams
    augment: AugmentParams
    pretrain: TrainParams
    owner: OwnerParams
    finetune: FinetuneParams
    enroll: EnrollParams
    evaluate: EvaluateParams
    ood: OodParams
    service: ServiceParams
    page: PageParams
    promotion: PromotionParams

    @model_validator(mode="after")
    def _pcen_reads_log_mel(self) -> "Params":
        # PCEN turns its input back into mel power (10^(dB / 10)): meaningless for MFCCs.
        norm = self.model.input_norm
        if "pcen" in norm and self.features.kind != "logmel":
            raise ValueError(f"model.input_norm: {norm} needs features.kind: logmel (it is {self.features.kind}) — "
                             "choose batchnorm or cmn for MFCCs")
        return self

    @model_validator(mode="after")
    def _level_reads_log_mel(self) -> "Params":
        # A level change is one constant added to every log-mel band; to MFCCs it is a change of c0 alone.
        if self.model.input_level_db is not None and self.features.kind != "logmel":
            raise ValueError(f"model.input_level_db needs features.kind: logmel (it is {self.features.kind}) — "
                             "set model.input_level_db: null for MFCCs")
        return self

    @model_validator(mode="after")
    def _unseen_voices_unseen(self) -> "Params":
        """The unseen-voices corpus is only worth its name if no training speaker shares its accent or
        its timbre: refuse any overlap, naming it."""
        for key, ours, theirs in (("espeak_voices", self.ood.espeak_voices, self.data.synth.voices),
                                  ("espeak_variants", self.ood.espeak_variants, self.data.synth.variants)):
            shared = sorted(set(ours) & set(theirs))
            if shared:
                raise ValueError(f"ood.{key}: {shared} also in data.synth.{key.removeprefix('espeak_')} — an unseen "
                                 f"voice must share neither accent nor timbre with training; remove them from one list")
        # A native speaker of a held-out accent's language reading English is that accent, recorded.
        synth = self.data.synth
        held_out = {v.split("-")[0] for v in self.ood.espeak_voices}
        if native := sorted(v for v in synth.mbrola_voices if mbrola_language(v) in held_out):
            raise ValueError(f"data.synth.mbrola_voices: {native} speak natively a language of ood.espeak_voices "
                             f"({sorted(held_out)}) — an unseen accent must not train; remove them")
        # Festival ships some of flite's people (kal_diphone, cmu_us_slt_*): they must not train.
        for key, voices in (("festival_voices", list(synth.festival_voices)),
                            ("festival_extra_speakers", [e.voice for e in synth.festival_extra_speakers])):
            if same := sorted({v for v in voices if set(v.lower().split("_")) & set(self.ood.flite_voices)}):
                raise ValueError(f"data.synth.{key}: {same} record the same people as ood.flite_voices — an "
                                 f"unseen voice must not train; remove them")
        return self

    def under(self, root: str | Path) -> "Params":
        """These params with every relative file or folder key (PATH_KEYS; not the database URL) made
        absolute under `root`, the checkout they belong to: code that runs elsewhere (a Prefect
        worker, a test) reads the checkout's files without changing the process's working directory."""
        return _under(self, Path(root).resolve())

    @model_validator(mode="after")
    def _page_fits_enrollment(self) -> "Params":
        e, page = self.enroll, self.page
        if not e.min_clips <= page.enroll_takes <= e.max_clips:
            raise ValueError(f"page.enroll_takes: {page.enroll_takes} is outside enroll.min_clips–max_clips "
                             f"({e.min_clips}–{e.max_clips}); the service would refuse every enrollment")
        if page.clip_seconds + page.preroll_seconds > e.max_duration_s:
            raise ValueError(f"page.clip_seconds + page.preroll_seconds is over enroll.max_duration_s "
                             f"({e.max_duration_s}); the service would refuse every recording")
        return self

    @model_validator(mode="after")
    def _replay_shifts_under_the_silence_cut(self) -> "Params":
        cut = self.features.digital_silence_s * self.data.sample_rate
        if cut and self.evaluate.replay_shifts[-1] >= cut:
            raise ValueError(f"evaluate.replay_shifts: {self.evaluate.replay_shifts[-1]} samples of zeros or more are "
                             f"cut before the features (features.digital_silence_s × data.sample_rate = {cut:g}), so "
                             f"that copy would be the take itself — keep every shift below {cut:g}")
        band = self.evaluate.replay_band_hz
        if band and not 500 <= band < self.data.sample_rate / 2:
            raise ValueError(f"evaluate.replay_band_hz: {band:g} Hz — give 0 (no band-limited view) or a cut from "
                             f"500 Hz to below half data.sample_rate ({self.data.sample_rate / 2:g} Hz)")
        return self


# Every key that names a file or folder (relative ones are relative to the checkout's root).
PATH_KEYS = frozenset({"path", "raw_dir", "download_dir", "out_dir", "folder", "metrics_file", "details_file",
                       "plots_dir", "package_record"})


def _under(section: BaseModel, root: Path) -> BaseModel:
    updates: dict[str, object] = {}
    for name, value in section:
        if isinstance(value, BaseModel):
            updates[name] = _under(value, root)
        elif name in PATH_KEYS and isinstance(value, str) and value and not Path(value).is_absolute():
            updates[name] = str(root / value)
    return section.model_copy(update=updates)


def _format_validation_error(path: Path, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        problems.append(f"{key}: {e['msg']}")
    return f"{path}: " + "; ".join(problems) + " — fix these keys and re-run"


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; raise VoicelockError naming the key at fault."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VoicelockError(f"{path}: not found — run from the repository root or pass --params") from None
    except yaml.YAMLError as e:
        raise VoicelockError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise VoicelockError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise VoicelockError(_format_validation_error(path, e)) from None
