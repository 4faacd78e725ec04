"""Unseen voices: an evaluation-only corpus of speakers unlike any training speaker.

Every in-domain figure is measured on espeak-ng speakers whose accents and timbres also occur in
training. A person enrolling with their own voice is not such a speaker, so the thresholds' promise
is judged here on voices the model never met, at the *shipped* thresholds (never re-calibrated):

- espeak-ng speakers whose accent (a language's voice reading the English words) **and** timbre
  (variant) are both absent from `data.synth` — `params` refuses any overlap — one per variant, since
  two speakers sharing a variant are one vocal tract with two accents (twins, not two people);
- speakers of another synthesizer, flite (CMU voices built from recordings of real people), which
  shares nothing with espeak-ng's formant synthesis.

Takes go through the same random rooms and microphones as the corpus, then background noise at
`ood.noise_snr_db_range` (real rooms are noisier than the corpus). Layout and split files are the
Speech Commands ones, so `voicelock evaluate --data data/ood` judges it like any other folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from voicelock import effects
from voicelock.audio import write_wav
from voicelock.data.layout import SPEAKERS_FILE, write_split_lists
from voicelock.data.synth import (
    RecordedSpeaker,
    Take,
    check_timbres,
    place_in_room,
    plan_recorded_speakers,
    plan_speakers,
    render_take,
    require_espeak,
)
from voicelock.errors import VoicelockError
from voicelock.fsutil import atomic_dir
from voicelock.params import OodParams, SynthParams

FLITE = "flite"


def require_flite() -> None:
    if shutil.which(FLITE) is None:
        raise VoicelockError(f"{FLITE}: not installed — run scripts/setup.sh (or apt-get install flite)")


def flite_speak(text: str, voice: str, f0: float, stretch: float) -> tuple[np.ndarray, int]:
    """Render `text` with flite to float32 samples (8 or 16 kHz, by voice)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        cmd = [FLITE, "-voice", voice, "--setf", f"int_f0_target_mean={f0:.1f}",
               "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, check=False)
        if result.returncode != 0 or not out.exists():
            raise VoicelockError(f"flite failed for voice {voice}: {result.stderr.decode().strip()} — check "
                                 f"ood.flite_voices against `flite -lv`")
        data, rate = sf.read(out, dtype="float32")
    return data, rate


def plan_flite_speakers(voices: dict[str, float], seed: int) -> list[RecordedSpeaker]:
    return plan_recorded_speakers("flite", voices, seed, stream=7)


def _noisy(clip: np.ndarray, rng: np.random.Generator, snr_range: tuple[float, float]) -> np.ndarray:
    """Coloured background noise (white to brown) at a random SNR, keeping the take's peak level."""
    peak = float(np.max(np.abs(clip))) + 1e-9
    noise = effects.coloured_noise(rng, clip.size, rng.uniform(0, 2))
    mixed = effects.add_noise(clip, noise, rng.uniform(*snr_range))
    return (mixed * (peak / (float(np.max(np.abs(mixed))) + 1e-9))).astype(np.float32)


def _render_espeak(args: tuple[Take, SynthParams, OodParams, int, int, int, Path]) -> str:
    take, synth, ood, seed, rate, clip_samples, root = args
    clip = render_take(take, synth, seed, rate, clip_samples)
    rng = np.random.default_rng([seed, 8, take.speaker_index, take.word_index, take.take])
    relative = f"{take.word}/{take.speaker.id}_nohash_{take.take}.wav"
    write_wav(root / relative, _noisy(clip, rng, ood.noise_snr_db_range), rate)
    return relative


def _render_flite(args: tuple[RecordedSpeaker, int, str, int, int, SynthParams, OodParams, int, int, int, Path]) -> str:
    sp, si, word, wi, take, synth, ood, seed, rate, clip_samples, root = args
    rng = np.random.default_rng([seed, 9, si, wi, take])
    f0 = sp.f0 * (1 + rng.uniform(-0.06, 0.06))
    stretch = sp.stretch * (1 + rng.uniform(-synth.speed_jitter, synth.speed_jitter))
    raw, raw_rate = flite_speak(word, sp.voice, f0, stretch)
    clip = place_in_room(raw, raw_rate, rate, clip_samples, synth, rng)
    relative = f"{word}/{sp.id}_nohash_{take}.wav"
    write_wav(root / relative, _noisy(clip, rng, ood.noise_snr_db_range), rate)
    return relative


def espeak_params(synth: SynthParams, ood: OodParams) -> SynthParams:
    """The corpus's synthesis settings with only the unseen accents and timbres, each variant's vocal
    tract as espeak-ng renders it (formant scale 1): scaled copies of training timbres stay out."""
    return synth.model_copy(update={"voices": list(ood.espeak_voices), "variants": list(ood.espeak_variants),
                                    "n_speakers": ood.espeak_speakers, "takes_per_word": ood.takes_per_word,
                                    "formant_scale_range": (1.0, 1.0)})


def synthesize_unseen(synth: SynthParams, ood: OodParams, seed: int, rate: int, clip_seconds: float) -> Path:
    """Generate the unseen-voices corpus at `ood.out_dir` (atomically), every speaker in `testing`."""
    require_espeak()
    require_flite()
    es = espeak_params(synth, ood)
    check_timbres(es)
    espeak_speakers = plan_speakers(es, seed + 2)
    flite_speakers = plan_flite_speakers(dict(ood.flite_voices), seed)
    clip_samples = int(clip_seconds * rate)
    out = Path(ood.out_dir)
    workers = synth.workers or os.cpu_count() or 1
    with atomic_dir(out) as staging:
        for word in synth.words:
            (staging / word).mkdir()
        jobs_e = [(Take(sp, si, w, wi, t), es, ood, seed, rate, clip_samples, staging)
                  for si, sp in enumerate(espeak_speakers) for wi, w in enumerate(synth.words)
                  for t in range(ood.takes_per_word)]
        jobs_f = [(sp, si, w, wi, t, synth, ood, seed, rate, clip_samples, staging)
                  for si, sp in enumerate(flite_speakers) for wi, w in enumerate(synth.words)
                  for t in range(ood.takes_per_word)]
        relatives: list[str] = []
        with ProcessPoolExecutor(workers) as pool:
            for fn, jobs, desc in ((_render_espeak, jobs_e, "unseen espeak-ng voices"),
                                   (_render_flite, jobs_f, "unseen flite voices")):
                relatives += list(tqdm(pool.map(fn, jobs, chunksize=16), total=len(jobs), desc=desc, unit=" clips"))
        # Every unseen speaker is a test speaker: nothing here may ever train or calibrate a model.
        write_split_lists(staging, {r: "testing" for r in relatives})
        rows = [{"id": s.id, "engine": "espeak-ng", "voice": s.voice, "variant": s.variant, "pitch": s.pitch,
                 "speed": s.speed} for s in espeak_speakers]
        rows += [{"id": s.id, "engine": "flite", "voice": s.voice, "variant": "", "pitch": round(s.f0, 1),
                  "speed": round(s.stretch, 3)} for s in flite_speakers]
        pd.DataFrame(rows).to_csv(staging / SPEAKERS_FILE, index=False)
    return out
