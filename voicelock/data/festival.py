"""Festival speakers in the training corpus: voices built from real people's recordings.

espeak-ng is formant synthesis: every one of its voices shares one acoustic model, and a network trained
on it alone learns espeak-ng's sound as much as people's voices (measured on flite's CMU voices, the
unseen-voices corpus: keyword accuracy 0.75, FAR 0.13 at the shipped thresholds). Festival's diphone and
unit-selection voices are recordings of real speakers — American English, Italian, Czech, Finnish
and Russian — reading the English words with their own language's rules. None of them is a voice
of the unseen-voices corpus (flite's kal, awb, rms and slt; `params` refuses festival's kal and slt).

A festival speaker is one voice at its own tempo (and mean F0 where the voice follows it: see
`festival_render`), and (`data.synth.festival_speaker_scales`) more speakers per voice with other
vocal tracts; takes jitter tempo (and F0) and then go through the corpus's random rooms and
microphones (`synth.place_in_room`). One festival process renders all of a
speaker's takes (a Scheme script), so start-up is paid once per speaker, not per take.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from voicelock.audio import write_wav
from voicelock.data.agreement import agreed
from voicelock.data.synth import RecordedSpeaker, place_in_room, plan_recorded_speakers, scaled_rate
from voicelock.errors import VoicelockError
from voicelock.params import SynthParams

FESTIVAL = "festival"


def require_festival(voices: list[str]) -> None:
    """Festival and every voice asked for must be installed (scripts/setup.sh installs them)."""
    if not voices:
        return
    if shutil.which(FESTIVAL) is None:
        raise VoicelockError(f"{FESTIVAL}: not installed — run scripts/setup.sh (or apt-get install festival and "
                             f"the festvox-* voices of data.synth.festival_voices)")
    result = subprocess.run([FESTIVAL, "--pipe"], input="(print (voice.list))\n", capture_output=True, text=True,
                            check=False, timeout=60)
    installed = set(result.stdout.replace("(", " ").replace(")", " ").split())
    missing = [v for v in voices if v not in installed]
    if missing:
        raise VoicelockError(f"params.yaml: data.synth.festival_voices: {missing} not installed (festival has "
                             f"{sorted(installed)}) — run scripts/setup.sh or remove them")


def plan_festival_speakers(voices: dict[str, float], seed: int, scales: tuple[float, ...] = (),
                           extra: tuple[tuple[str, float, float], ...] = ()) -> list[RecordedSpeaker]:
    return plan_recorded_speakers("festival", voices, seed, stream=11, scales=scales, extra=extra)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_render(speaker: RecordedSpeaker, takes: list[tuple[str, float, float, int]]) -> list[tuple[np.ndarray, int]]:
    """(word, F0 factor, stretch factor, seed) per take → dry samples and rate, all in one festival process.

    F0 is set through the linear-regression intonation targets (`int_lr_params`), which only
    `ked_diphone` follows: the Italian, Finnish and Czech voices use intonation models of their own
    and ignore them (measured: byte-identical takes at target means 100 and 300 Hz), so their speakers
    differ by tempo and vocal tract, and unit-selection voices keep their own melody.

    The Czech voices draw pause lengths and melody contours from festival's one random stream
    (`czech.scm`: `czech-rand`), so unseeded, a take depended on every take rendered before it in that
    process. Each take seeds the stream itself (`srand`, which takes 1 ≤ seed < 2³¹: glibc folds 0
    into 1 and wraps larger ones), so it is a function of its own seed only — nearly always: see
    `agreed_render` for the rare run where it is not."""
    if bad := [seed for *_, seed in takes if not 0 < int(seed) < 2**31]:
        raise ValueError(f"festival seeds must lie in 1 .. 2**31-1 (srand folds others together): {bad[:3]}")
    with tempfile.TemporaryDirectory() as tmp:
        # One utterance spoken and thrown away first: the Czech voices use up 100 random draws on their
        # first word (calibrating a range that always comes out 1), which would otherwise land in one take.
        lines = [f"(voice_{speaker.voice})", "(utt.synth (Utterance Text \"a\"))"]
        outs = []
        for i, (word, f0, stretch, seed) in enumerate(takes):
            out = Path(tmp) / f"{i}.wav"
            outs.append(out)
            lines += [f"(Parameter.set 'Duration_Stretch {speaker.stretch * stretch:.3f})",
                      f"(set! int_lr_params (list (list 'target_f0_mean {speaker.f0 * f0:.1f}) "
                      f"(list 'target_f0_std {0.12 * speaker.f0 * f0:.1f}) (list 'model_f0_mean 170) "
                      f"(list 'model_f0_std 34)))",
                      f"(set! utt (Utterance Text {_scheme_string(word)}))", f"(srand {int(seed)})", "(utt.synth utt)",
                      f"(utt.save.wave utt {_scheme_string(str(out))} 'riff)"]
        script = Path(tmp) / "render.scm"
        script.write_text("\n".join(lines) + "\n")
        result = subprocess.run([FESTIVAL, "-b", str(script)], capture_output=True, text=True, check=False,
                                timeout=600)
        if result.returncode != 0 or not all(o.exists() for o in outs):
            why = result.stderr.strip()[-300:] or f"exit code {result.returncode}"
            raise VoicelockError(f"festival failed for voice {speaker.voice} ({why}) — remove it from "
                                 f"data.synth.festival_voices or check it against festival's (voice.list)")
        return [sf.read(o, dtype="float32") for o in outs]


def agreed_render(speaker: RecordedSpeaker, takes: list[tuple[str, float, float, int]]) -> list[tuple[np.ndarray, int]]:
    """`festival_render` run in two festival processes, a take they disagree on in a third: each take is
    the version two renders agree on (voicelock/data/agreement.py).

    Why: festival's output is not always a function of its input. Twice in CI (a `dvc repro --force`
    of the tiny project) a Czech speaker's first takes came out with other pause lengths (czech.scm
    draws pauses from festival's random stream), though each take seeds that stream;
    hundreds of renders of the same script since, quiet or under load, with any MALLOC_PERTURB_,
    OMP_NUM_THREADS or environment size, were all identical. Valgrind finds one read past a track's end in
    festival's C code, which may be it. Festival took 9 s of the corpus on 2 cores, 11–14 s with the
    second render."""
    return agreed(lambda: festival_render(speaker, takes), [word for word, *_ in takes],
                  f"festival: voice {speaker.voice}", "remove it from data.synth.festival_voices")


def render_festival_speaker(args: tuple[RecordedSpeaker, int, list[str], SynthParams, int, int, int, Path]) -> list[str]:
    """Every take of one festival speaker into `root/<word>/<id>_nohash_<n>.wav`; returns the paths."""
    speaker, index, words, params, seed, rate, clip_samples, root = args
    plan = [(w, wi, t) for wi, w in enumerate(words) for t in range(params.takes_per_word)]
    rngs = [np.random.default_rng([seed, 12, index, wi, t]) for _, wi, t in plan]
    jitter = [(1 + rng.uniform(-0.06, 0.06), 1 + rng.uniform(-params.speed_jitter, params.speed_jitter)) for rng in rngs]
    # A stream of their own, so adding the seeds left every other draw (and non-Czech takes) as they were.
    seeds = [int(np.random.default_rng([seed, 13, index, wi, t]).integers(1, 2**31 - 1)) for _, wi, t in plan]
    raws = agreed_render(speaker, [(w, f0, st, s) for (w, _, _), (f0, st), s in zip(plan, jitter, seeds)])
    relatives = []
    for (word, _, take), (raw, raw_rate), rng in zip(plan, raws, rngs):
        if raw.ndim > 1:
            raw = raw.mean(axis=1)
        relative = f"{word}/{speaker.id}_nohash_{take}.wav"
        voice_rate = scaled_rate(raw_rate, speaker.formant_scale)  # the speaker's vocal tract
        write_wav(root / relative, place_in_room(raw, voice_rate, rate, clip_samples, params, rng), rate)
        relatives.append(relative)
    return relatives
