"""Speakers from MBROLA's recorded voices, spoken through espeak-ng (`data.synth.mbrola_voices`).

Why: a natural voice unlike the corpus's was told apart from other such voices far worse than the
unseen-voices figures said (SVOX Pico's six women: a stranger let in 2.6–6.4% of the time, where
`data/ood` says 0.1%), and each of them landed by the same few espeak-ng women's timbres: the corpus
had ten recorded people (festival's voices), three of them women. MBROLA's diphone databases are
recordings of real people — dozens, men and women, in many languages — and espeak-ng drives them
with its own text rules and prosody, so each one says the English words at a pitch and tempo we
choose, in its own voice (the `-en` voices read them by English rules in a foreign voice). Each
voice is one speaker at its own vocal tract, and `mbrola_copies` more at other vocal tracts (every
frequency × scale: new identities, as speaker-verification recipes make them).

Every MBROLA speaker trains; none validates or tests. In validation they set the thresholds for
everyone: with the 19 English-rule voices split by the Speech Commands rule, one pair of recorded
women (mb-de1-en, mb-sw2-en) owned the impostor tail a FAR-0.001 threshold sits on, and the speaker
threshold rose 0.727 → 0.781 — the unseen voices' FRR 0.024 → 0.049 (`bench/calibration_anatomy.py`,
docs/decisions.md). In test they changed what the in-domain figures measure from one release to the
next. The unseen voices (`data/ood`) and SVOX Pico judge what they add.

MBROLA and its voices are in Debian's contrib and non-free components (scripts/setup.sh installs them
without adding those components to the machine's sources); the databases are licensed for
non-commercial use — a commercial deployment trains on its own data (`data.source`).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from voicelock.audio import write_wav
from voicelock.data.synth import ESPEAK, Speaker, jittered, place_in_room, scaled_rate
from voicelock.errors import VoicelockError
from voicelock.params import SynthParams, mbrola_database

MBROLA_DIR = Path("/usr/share/mbrola")
# A copy's vocal tract is this far from its voice's, up or down (the scale drawn uniformly within).
COPY_SCALE = (0.06, 0.12)


def require_mbrola(voices: list[str]) -> None:
    """The mbrola program and every voice's database must be installed; the error names the packages.

    `voices` are params.yaml's, whose names `SynthParams` has already checked, so each has a database."""
    if not voices:
        return
    if shutil.which("mbrola") is None:
        raise VoicelockError("params.yaml: data.synth.mbrola_voices: the mbrola program is not installed — run "
                             "scripts/setup.sh (Debian contrib: mbrola) or empty the list")
    databases = {mbrola_database(voice) or voice for voice in voices}  # a name params refuses reads as missing
    missing = sorted(db for db in databases if not (MBROLA_DIR / db / db).exists())
    if missing:
        packages = " ".join(f"mbrola-{m}" for m in missing)
        raise VoicelockError(f"params.yaml: data.synth.mbrola_voices: databases {missing} not installed under "
                             f"{MBROLA_DIR} — run scripts/setup.sh (Debian non-free: mbrola {packages}) or "
                             f"remove those voices")


def plan_mbrola_speakers(voices: list[str], copies: int, seed: int) -> list[Speaker]:
    """Each voice at its own vocal tract, then `copies` more of it, every one a training speaker.

    Pitches (espeak-ng's 25–75: MBROLA voices are recorded near the middle) and speeds are drawn per
    voice from a stream of its own, so adding a voice leaves the others as they were."""
    planned = []
    for voice in voices:
        rng = np.random.default_rng([seed, 21, int(hashlib.sha1(voice.encode()).hexdigest()[:8], 16)])
        for copy in range(copies + 1):
            scale = 1.0 if copy == 0 else float(1 + rng.choice([-1, 1]) * rng.uniform(*COPY_SCALE))
            pitch, speed = int(rng.integers(25, 76)), int(rng.integers(130, 181))
            sid = hashlib.sha1(f"mbrola:{voice}/{pitch}/{speed}/{scale:.3f}".encode()).hexdigest()[:8]
            planned.append(Speaker(sid, voice, "", pitch, speed, scale))
    return planned


def mbrola_speak(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """`text` in an MBROLA voice → float32 samples at the database's own rate (16 or 22.05 kHz)."""
    result = subprocess.run([ESPEAK, "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
                            capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or len(result.stdout) < 1000:
        raise VoicelockError(f"espeak-ng with MBROLA voice {voice} said nothing for {text!r} "
                             f"({result.stderr.decode(errors='replace').strip()[-200:]}) — check "
                             f"data.synth.mbrola_voices against `espeak-ng --voices=mb`")
    samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return samples, int(rate)


def render_mbrola_speaker(args: tuple[Speaker, int, list[str], SynthParams, int, int, int, Path]) -> list[str]:
    """Every take of one MBROLA speaker into `root/<word>/<id>_nohash_<n>.wav`, each with its own pitch
    and tempo jitter, room, microphone and level, as an espeak-ng speaker's; returns the paths.

    A take's draws are seeded by the speaker's id, not its place in the list (`_index`), so another
    voice added, removed or moved, or a copy more or fewer, leaves this speaker's takes as they were."""
    speaker, _index, words, params, seed, rate, clip_samples, root = args
    relatives = []
    for wi, word in enumerate(words):
        for take in range(params.takes_per_word):
            rng = np.random.default_rng([seed, 22, int(speaker.id, 16), wi, take])
            pitch, speed = jittered(speaker, params, rng)
            raw, raw_rate = mbrola_speak(word, speaker.voice, pitch, speed)
            relative = f"{word}/{speaker.id}_nohash_{take}.wav"
            write_wav(root / relative, place_in_room(raw, scaled_rate(raw_rate, speaker.formant_scale), rate,
                                                     clip_samples, params, rng), rate)
            relatives.append(relative)
    return relatives
