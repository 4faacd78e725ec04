"""The embedded default corpus: espeak-ng speaking Speech Commands words in many voices.

A speaker is one (voice, variant) pair with its own base pitch and speed — pairs are never reused,
so no two speakers differ by pitch alone (timbre is what tells synthetic speakers apart). Every take
varies speed, pitch and loudness and goes through its own random room and microphone, so one person
never says a word twice the same way. Each clip's randomness is seeded by (seed, speaker, word, take),
so the corpus is identical whatever the number of workers or the order they finish in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal
from tqdm import tqdm

import voicelock.data.espeak_server as espeak_server
from voicelock import effects
from voicelock.audio import write_wav
from voicelock.data.layout import BACKGROUND_DIR, SPEAKERS_FILE, split_for_speaker, write_split_lists
from voicelock.errors import VoicelockError
from voicelock.fsutil import atomic_dir
from voicelock.params import SynthParams

ESPEAK = "espeak-ng"
_BABBLE_SENTENCES = [
    "the meeting moved to thursday afternoon", "could you pass me the salt please",
    "we should leave before the traffic starts", "my sister bought a new bicycle last week",
    "the weather was much colder than expected", "turn left at the second traffic light",
    "i think the train is running late again", "she left her keys on the kitchen table",
    "nobody knew the answer to the last question", "the children played outside until dark",
]


@dataclass(frozen=True)
class Speaker:
    """One synthetic person: an espeak-ng voice and variant, with a base pitch and speed, and a vocal
    tract of their own (`formant_scale`: every frequency of the voice, formants and pitch, times this)."""

    id: str
    voice: str
    variant: str
    pitch: int
    speed: int
    formant_scale: float = 1.0


@dataclass(frozen=True)
class RecordedSpeaker:
    """One voice of a synthesizer built from a real person's recordings (festival, flite), at its own
    mean F0 (Hz) and duration stretch, and vocal tract (`formant_scale`, as for espeak-ng speakers)."""

    id: str
    voice: str
    f0: float
    stretch: float
    formant_scale: float = 1.0


def plan_recorded_speakers(engine: str, voices: dict[str, float], seed: int, stream: int,
                           scales: tuple[float, ...] = (),
                           extra: tuple[tuple[str, float, float], ...] = ()) -> list[RecordedSpeaker]:
    """One speaker per voice (voice → its natural mean F0): two F0s of one recording would be
    pitch-only twins, not two people. Each of `scales` adds one more speaker per voice with that
    vocal tract (every frequency × scale: another person, as speed-perturbed copies are in speaker
    recognition recipes), and each of `extra` (voice, F0, scale) one speaker of that voice at that F0
    and vocal tract (a recording moved to another F0 *and* vocal tract is no pitch-only twin: how the
    one English recorded voice also speaks as a woman). Each group draws from a stream of its own, so
    the natural voices stay as they were. Ids are 8 hex digits; `stream` keeps each engine's draws apart."""
    def draw(rng: np.random.Generator, voice: str, f0: float, scale: float) -> RecordedSpeaker:
        sp_f0, stretch = f0 * rng.uniform(0.92, 1.08), rng.uniform(0.9, 1.15)
        name = f"{engine}:{voice}/{sp_f0:.1f}/{stretch:.3f}" + ("" if scale == 1.0 else f"/x{scale:.3f}")
        return RecordedSpeaker(hashlib.sha1(name.encode()).hexdigest()[:8], voice, float(sp_f0), float(stretch),
                               float(scale))

    rng, copies = np.random.default_rng([seed, stream]), np.random.default_rng([seed, stream, 1])
    others = np.random.default_rng([seed, stream, 2])
    return ([draw(rng, voice, f0, 1.0) for voice, f0 in voices.items()]
            + [draw(copies, voice, f0, scale) for scale in scales for voice, f0 in voices.items()]
            + [draw(others, voice, f0, scale) for voice, f0, scale in extra])


@dataclass(frozen=True)
class Take:
    speaker: Speaker
    speaker_index: int
    word: str
    word_index: int
    take: int


def require_espeak() -> None:
    if shutil.which(ESPEAK) is None:
        raise VoicelockError(f"{ESPEAK}: not installed — run scripts/setup.sh (or apt-get install espeak-ng)")


def plan_speakers(params: SynthParams, seed: int, n_speakers: int | None = None,
                  exclude: set[tuple[str, str]] = frozenset()) -> list[Speaker]:
    """Distinct (voice, variant) pairs with a base pitch and speed each; ids are 8 hex digits.

    Variants (timbres) are dealt out evenly, and the speakers who share one get base pitches from
    separate slices of `pitch_range`; formant scales are spread within each timbre family
    (`_formant_scales`), so two speakers of one timbre differ in vocal tract, pitch and accent:
    otherwise they are near-duplicates that no model can tell apart (measured: 27% EER on such pairs
    when pitches were drawn independently; with pitch apart but one vocal tract, en-gb-x-rp+Denis and
    en-gb-x-gbclan+Denis still set the validation threshold that refused the owner).
    """
    n = params.n_speakers if n_speakers is None else n_speakers
    rng = np.random.default_rng([seed, 1])
    free = {var: [v for v in params.voices if (v, var) not in exclude] for var in params.variants}
    if n > sum(len(v) for v in free.values()):
        raise VoicelockError(f"params.yaml: data.synth: {n} speakers need {n} voice×variant pairs, "
                             f"have {sum(len(v) for v in free.values())}")
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        for variant in rng.permutation(params.variants):
            if free[variant] and len(pairs) < n:
                voice = free[variant].pop(int(rng.integers(len(free[variant]))))
                pairs.append((voice, str(variant)))
    low, high = params.pitch_range
    pitches: dict[int, int] = {}
    for variant in params.variants:
        group = [i for i, (_, var) in enumerate(pairs) if var == variant]
        edges = np.linspace(low, high, len(group) + 1)
        for i, slot in zip(group, rng.permutation(len(group))):
            width = edges[slot + 1] - edges[slot]
            pitches[i] = int(round(edges[slot] + width * rng.uniform(0.25, 0.75)))
    scales = _formant_scales(pairs, pitches, params.pitch_range, params.formant_scale_range,
                             np.random.default_rng([seed, 4]))
    speakers = []
    for i, (voice, variant) in enumerate(pairs):
        speed = int(rng.integers(params.speed_range[0], params.speed_range[1] + 1))
        sid = hashlib.sha1(f"{voice}+{variant}/{pitches[i]}/{speed}".encode()).hexdigest()[:8]
        speakers.append(Speaker(sid, voice, variant, pitches[i], speed, scales[i]))
    return speakers


def timbre_family(variant: str) -> str:
    """Variants that differ by a trailing number (Gene, Gene2; iven … iven4; m1 … m8) are one family:
    espeak-ng derives them from one another, and two of them can sound alike (pl+Gene2 at pitch 81
    and sw+Gene at 77 were the validation split's closest impostors)."""
    return variant.rstrip("0123456789") or variant


def _formant_scales(pairs: list[tuple[str, str]], pitches: dict[int, int], pitch_range: tuple[int, int],
                    scale_range: tuple[float, float], rng: np.random.Generator) -> dict[int, float]:
    """A vocal tract per speaker, from its own random stream (so pitches, speeds and ids do not move).

    Within a timbre family the range is cut into one slice per speaker, and the slices are dealt so
    that the closest two speakers (pitch and scale, each relative to its range) are as far apart as a
    few swaps can make them: no two speakers of one family are close in both pitch and vocal tract.
    """
    scales: dict[int, float] = {}
    for family in sorted({timbre_family(var) for _, var in pairs}):
        group = sorted((i for i, (_, var) in enumerate(pairs) if timbre_family(var) == family),
                       key=lambda i: (pitches[i], i))
        pitch = np.array([pitches[i] for i in group], dtype=float) / max(pitch_range[1] - pitch_range[0], 1)
        slots = _spread_slots(pitch)
        edges = np.linspace(scale_range[0], scale_range[1], len(group) + 1)
        for i, slot in zip(group, slots):
            scales[i] = round(float(edges[slot] + (edges[slot + 1] - edges[slot]) * rng.uniform(0.25, 0.75)), 4)
    return scales


def _spread_slots(pitch: np.ndarray) -> list[int]:
    """Slices 0…n-1 for speakers at (relative) `pitch`, spread in (pitch, slice / n): start from the
    pitch ranks interleaved (neighbours half the range apart), then swap slices while a swap lowers
    the pairs' crowding Σ exp(-d²/σ²), σ the spacing n points would have on a square grid.
    Deterministic; n is a family's size (at most a few dozen)."""
    n = len(pitch)
    if n < 2:
        return [0] * n
    slots = np.array([k // 2 + (n // 2 if k % 2 == 0 else 0) for k in range(n)])
    width2 = 1.0 / n
    upper = np.triu_indices(n, 1)

    def crowding(order: np.ndarray) -> float:
        d2 = (pitch[:, None] - pitch[None, :]) ** 2 + ((order[:, None] - order[None, :]) / n) ** 2
        return float(np.exp(-d2[upper] / width2).sum())

    best, improved = crowding(slots), True
    while improved:
        improved = False
        for a, b in zip(*upper):
            slots[a], slots[b] = slots[b], slots[a]
            score = crowding(slots)
            if score < best - 1e-12:
                best, improved = score, True
            else:
                slots[a], slots[b] = slots[b], slots[a]
    return [int(s) for s in slots]


class _EspeakServer:
    """This process's connection to voicelock/data/espeak_server.py (see there for why it exists)."""

    def __init__(self) -> None:
        # Run by its file (standard library only, `-S`: small and quick to fork); imported here so the
        # stages that render takes list it as theirs (tests/test_dvc_deps.py).
        self.proc = subprocess.Popen([sys.executable, "-S", espeak_server.__file__],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        header = self.proc.stdout.read(4)
        self.rate = struct.unpack("<i", header)[0] if len(header) == 4 else 0
        if self.rate <= 0:
            self.close()
            raise VoicelockError("espeak-ng: its library (libespeak-ng.so.1) or its voice data does not load — "
                                 "run scripts/setup.sh (or apt-get install espeak-ng)")

    def render(self, text: str, voice: str, pitch: int, speed: int) -> bytes | None:
        """The take's 16-bit samples, None when espeak-ng could not render it; VoicelockError when the
        server is gone or its answer is cut short (the caller must then start a new one)."""
        try:
            self.proc.stdin.write(json.dumps([text, voice, int(pitch), int(speed)]).encode() + b"\n")
            self.proc.stdin.flush()
            header = self.proc.stdout.read(8)
            if len(header) == 8:
                status, size = struct.unpack("<iI", header)
                pcm = self.proc.stdout.read(size)
                if len(pcm) == size:
                    return pcm if status == 0 and pcm else None
            problem = "its answer was cut short"
        except OSError as exc:
            problem = str(exc)
        code = self.proc.poll()
        self.close()
        raise VoicelockError(f"espeak-ng: the synthesis server stopped ({problem}; exit code {code}) "
                             f"— out of memory or killed? Run the stage again")

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):  # a dead server's pipe cannot take the unsent rest
                pipe.close()

    def close(self) -> None:
        self.close_pipes()
        self.proc.kill()
        self.proc.wait()


_server: _EspeakServer | None = None


def _forget_inherited_server() -> None:
    """A forked worker must not talk to (or hold open) its parent's server: it starts its own."""
    global _server
    if _server is not None:
        _server.close_pipes()
        _server.proc.returncode = 0  # not this process's child: nothing for it to wait for
        _server = None


os.register_at_fork(after_in_child=_forget_inherited_server)


def speak(text: str, voice: str, variant: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """Render `text` with espeak-ng to float32 samples (22,050 Hz): the samples `espeak-ng -v voice+variant
    -p pitch -s speed --stdout text` writes, without starting that program each time."""
    global _server
    if _server is None or _server.proc.poll() is not None:  # one that has exited (killed, out of memory) is replaced
        _server = _EspeakServer()
    server = _server
    try:
        pcm = server.render(text, f"{voice}+{variant}", pitch, speed)
    except VoicelockError:
        _server = None
        raise
    if pcm is None:
        raise VoicelockError(f"espeak-ng failed for voice {voice}+{variant} "
                             f"— check data.synth.voices / variants against `espeak-ng --voices`")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, server.rate


def check_timbres(params: SynthParams, probe: str = "seven") -> None:
    """Refuse voice or variant lists under which two "speakers" would be the same voice.

    espeak-ng silently ignores a variant on some voice names: `en-gb+f1` renders exactly what `en-gb`
    does (while `en+f1`, the same British voice, honours it). Such a voice made all its speakers
    differ by pitch and speed alone — near-twins no model can tell apart, and an owner who never
    unlocked. Some variants are also byte-identical to others (klatt6 and caleb to klatt).
    """
    def render(voice: str, variant: str) -> str:
        return hashlib.sha1(speak(probe, voice, variant, 50, 160)[0].tobytes()).hexdigest()

    two = params.variants[:2]
    if len(two) == 2:
        for voice in params.voices:
            if render(voice, two[0]) == render(voice, two[1]):
                raise VoicelockError(
                    f"params.yaml: data.synth.voices: espeak-ng ignores variants on voice '{voice}' "
                    f"({voice}+{two[0]} sounds exactly like {voice}+{two[1]}), so its speakers would differ "
                    f"by pitch alone — use a voice name that takes variants (e.g. 'en' for 'en-gb')")
    seen: dict[str, str] = {}
    for variant in params.variants:
        digest = render(params.voices[0], variant)
        if digest in seen:
            raise VoicelockError(f"params.yaml: data.synth.variants: '{variant}' renders the same audio as "
                                 f"'{seen[digest]}' — keep one of them")
        seen[digest] = variant


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    g = np.gcd(rate, target)
    return signal.resample_poly(x, target // g, rate // g).astype(np.float32)


def _trim(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """espeak-ng pads words with silence; cut it so placement in the clip is ours to choose."""
    idx = np.flatnonzero(np.abs(x) > threshold * (np.max(np.abs(x)) + 1e-12))
    return x[idx[0]: idx[-1] + 1] if idx.size else x


def render_take(take: Take, params: SynthParams, seed: int, rate: int, clip_samples: int) -> np.ndarray:
    """One take: jittered voice, then room, microphone, self-noise, placed at random in a 1 s clip."""
    rng = np.random.default_rng([seed, 2, take.speaker_index, take.word_index, take.take])
    sp = take.speaker
    pitch, speed = jittered(sp, params, rng)
    raw, raw_rate = speak(take.word, sp.voice, sp.variant, pitch, speed)
    # The speaker's vocal tract: samples read at formant_scale × their rate play every frequency that
    # much higher (and the word that much faster), as speed perturbation does in speaker-verification
    # recipes. The rate is rounded to 100 Hz so resampling to `rate` stays a short polyphase filter.
    return place_in_room(raw, scaled_rate(raw_rate, sp.formant_scale), rate, clip_samples, params, rng)


def jittered(speaker: Speaker, params: SynthParams, rng: np.random.Generator) -> tuple[int, int]:
    """A take's espeak-ng pitch and speed, drawn around the speaker's own: one person never says a word
    twice alike, and a model that met only identical takes would take a new take's drift for another
    speaker. Any espeak-ng-driven speaker (its own voices, MBROLA's) draws its takes here."""
    pitch = int(np.clip(speaker.pitch + rng.integers(-params.pitch_jitter, params.pitch_jitter + 1), 0, 99))
    speed = int(speaker.speed * (1 + rng.uniform(-params.speed_jitter, params.speed_jitter)))
    return pitch, max(speed, 80)


def scaled_rate(rate: int, scale: float) -> int:
    """The sample rate at which `rate` audio sounds `scale` times higher, rounded to 100 Hz."""
    return int(round(rate * scale / 100)) * 100 if scale != 1.0 else rate


def place_in_room(raw: np.ndarray, raw_rate: int, rate: int, clip_samples: int, params: SynthParams,
                  rng: np.random.Generator) -> np.ndarray:
    """A synthesizer's dry word → a recorded take: trimmed, placed at random in the clip, through a
    random room and microphone with self-noise, at a random peak level. Any synthesizer's output
    goes through here, so two engines differ only in their voices."""
    voice = _trim(_resample(raw, raw_rate, rate))
    # Leave room for the reverb tail inside the clip; a word longer than the clip is cut (as in real data).
    voice = voice[: int(clip_samples * 0.9)]
    clip = np.zeros(clip_samples, dtype=np.float32)
    start = int(rng.integers(0, max(clip_samples - voice.size, 0) + 1) * 0.8)
    clip[start: start + voice.size] = voice
    if rng.random() < params.room_probability:
        rir = effects.room_impulse_response(rng, rate, rng.uniform(*params.rt60_range),
                                            rng.uniform(*params.direct_to_reverb_db_range))
        clip = effects.apply_room(clip, rir)
    clip = effects.apply_microphone(clip, rate, rng.uniform(*params.mic_low_hz_range),
                                    rng.uniform(*params.mic_high_hz_range), rng.uniform(*params.mic_tilt_db_range))
    noise = effects.coloured_noise(rng, clip_samples, rng.uniform(0, 2))
    clip = effects.add_noise(clip, noise, rng.uniform(*params.noise_snr_db_range))
    return effects.set_peak_db(clip, rng.uniform(*params.gain_db_range))


def _render_to_file(args: tuple[Take, SynthParams, int, int, int, Path]) -> str:
    take, params, seed, rate, clip_samples, root = args
    relative = f"{take.word}/{take.speaker.id}_nohash_{take.take}.wav"
    write_wav(root / relative, render_take(take, params, seed, rate, clip_samples), rate)
    return relative


def background_noise(kind: str, rng: np.random.Generator, params: SynthParams, rate: int) -> np.ndarray:
    """A long noise file: white/pink/brown noise, or babble of overlapping espeak-ng sentences."""
    n = int(params.background_seconds * rate)
    if kind != "babble":
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        return effects.set_peak_db(effects.coloured_noise(rng, n, exponent), -6)
    mix = np.zeros(n, dtype=np.float32)
    talkers = 6
    for _ in range(talkers * int(max(params.background_seconds / 3, 1))):
        voice = params.voices[int(rng.integers(len(params.voices)))]
        variant = params.variants[int(rng.integers(len(params.variants)))]
        text = _BABBLE_SENTENCES[int(rng.integers(len(_BABBLE_SENTENCES)))]
        pitch, speed = int(rng.integers(20, 80)), int(rng.integers(140, 190))
        x, r = speak(text, voice, variant, pitch, speed)
        x = _resample(x, r, rate)[:n]
        x /= np.sqrt(np.mean(x**2)) + 1e-9
        start = int(rng.integers(0, max(n - x.size, 1)))
        mix[start: start + x.size] += x
    return effects.set_peak_db(mix, -6)


def render_takes(takes: list[Take], params: SynthParams, seed: int, rate: int, clip_samples: int, root: Path,
                 desc: str) -> None:
    """Render `takes` into `root/<word>/<speaker>_nohash_<take>.wav` in parallel, with a progress bar."""
    for word in sorted({t.word for t in takes}):
        (root / word).mkdir(exist_ok=True)
    workers = params.workers or os.cpu_count() or 1
    jobs = [(t, params, seed, rate, clip_samples, root) for t in takes]
    with ProcessPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(_render_to_file, jobs, chunksize=32), total=len(jobs), desc=desc, unit=" clips"):
            pass


def synthesize_corpus(params: SynthParams, out_dir: str | Path, seed: int, rate: int,
                      validation_percentage: float, testing_percentage: float,
                      clip_seconds: float = 1.0) -> Path:
    """Generate the whole corpus into `out_dir` (atomically), in parallel, with a progress bar."""
    from voicelock.data.festival import plan_festival_speakers, render_festival_speaker, require_festival
    from voicelock.data.mbrola import plan_mbrola_speakers, render_mbrola_speaker, require_mbrola

    require_espeak()
    check_timbres(params)
    require_festival(sorted(set(params.festival_voices) | {e.voice for e in params.festival_extra_speakers}))
    require_mbrola(params.mbrola_voices)
    speakers = plan_speakers(params, seed)
    festival = plan_festival_speakers(dict(params.festival_voices), seed, tuple(params.festival_speaker_scales),
                                      tuple((e.voice, e.f0, e.scale) for e in params.festival_extra_speakers))
    mbrola = plan_mbrola_speakers(params.mbrola_voices, params.mbrola_copies, seed)
    training_only = {sp.id for sp in mbrola}  # why MBROLA never validates or tests: voicelock/data/mbrola.py

    def split(speaker_id: str) -> str:
        if speaker_id in training_only:
            return "training"
        return split_for_speaker(speaker_id, validation_percentage, testing_percentage)

    takes = [Take(sp, si, w, wi, t) for si, sp in enumerate(speakers)
             for wi, w in enumerate(params.words) for t in range(params.takes_per_word)]
    out_dir, clip_samples = Path(out_dir), int(clip_seconds * rate)
    with atomic_dir(out_dir) as staging:
        render_takes(takes, params, seed, rate, clip_samples, staging, "synthesize clips")
        relatives = [f"{t.word}/{t.speaker.id}_nohash_{t.take}.wav" for t in takes]
        with ProcessPoolExecutor(params.workers or os.cpu_count() or 1) as pool:
            for render, planned, desc in ((render_festival_speaker, festival, "festival speakers"),
                                          (render_mbrola_speaker, mbrola, "mbrola speakers")):
                jobs = [(sp, i, list(params.words), params, seed, rate, clip_samples, staging)
                        for i, sp in enumerate(planned)]
                for done in tqdm(pool.map(render, jobs), total=len(jobs), desc=desc, unit=" speakers"):
                    relatives += done
        (staging / BACKGROUND_DIR).mkdir()
        kinds = ["white", "pink", "brown", "babble"]
        for i in tqdm(range(params.background_files), desc="background noise", unit=" files"):
            kind = kinds[i % len(kinds)]
            rng = np.random.default_rng([seed, 3, i])
            write_wav(staging / BACKGROUND_DIR / f"{kind}_{i}.wav", background_noise(kind, rng, params, rate), rate)
        splits = {r: split(r.split("/")[1].split("_nohash_")[0]) for r in relatives}
        write_split_lists(staging, splits)
        rows = [{**sp.__dict__, "engine": "espeak-ng"} for sp in speakers]
        rows += [{"id": sp.id, "voice": sp.voice, "variant": "", "pitch": round(sp.f0, 1), "speed": round(sp.stretch, 3),
                  "formant_scale": sp.formant_scale, "engine": "festival"} for sp in festival]
        rows += [{**sp.__dict__, "engine": "mbrola"} for sp in mbrola]
        pd.DataFrame(rows).assign(split=lambda d: [split(s) for s in d["id"]]).to_csv(staging / SPEAKERS_FILE,
                                                                                      index=False)
    return out_dir


def synthesize_owner(params: SynthParams, out_dir: str | Path, seed: int, rate: int, password: str,
                     takes_password: int, takes_other: int, clip_seconds: float = 1.0) -> Speaker:
    """One more speaker, held out of the corpus (a voice×variant pair no corpus speaker has), as the owner.

    They say the password `takes_password` times and every other corpus word `takes_other` times.
    """
    require_espeak()
    check_timbres(params)
    used = {(sp.voice, sp.variant) for sp in plan_speakers(params, seed)}
    owner = plan_speakers(params, seed + 1, n_speakers=1, exclude=used)[0]
    words = [password] + [w for w in params.words if w != password]
    takes = [Take(owner, 10_000, w, wi, t) for wi, w in enumerate(words)
             for t in range(takes_password if w == password else takes_other)]
    with atomic_dir(out_dir) as staging:
        render_takes(takes, params, seed, rate, int(clip_seconds * rate), staging, "synthesize owner")
        pd.DataFrame([owner.__dict__]).to_csv(staging / SPEAKERS_FILE, index=False)
    return owner
