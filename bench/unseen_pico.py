"""The released model on the voices of a synthesizer that no stage ever uses: SVOX Pico (`pico2wave`).

Why: `data/ood` (held-out espeak-ng accents and timbres, flite's four people) is the pipeline's
unseen-voices yardstick, and every recipe change of the last sittings was judged on it — so it has
become a little less unseen with each choice. Pico is a third method (HMM synthesis from recordings
of six women: en-US, en-GB, and de-DE, es-ES, fr-FR, it-IT reading the English words), never trained
on, never calibrated on, never used to pick a recipe: kept that way, its figures stay out-of-domain
evidence of what a new user's voice meets. Each voice is one speaker (pitch and speed of its own,
jittered per take), through the same rooms, microphones and 10–30 dB noise as `data/ood`; `--scales`
adds each voice again at other vocal tracts (every frequency × scale, as speaker-verification recipes
make new identities) — near-twins of the natural six, reported apart from them.

It judges the corpus at the shipped thresholds (`evaluation.evaluate_folder`, as `voicelock evaluate
--data` does), lists the (owner, impostor) pairs that carry the stranger FAR, and gives each voice's
keyword accuracy against templates of the other Pico voices and, with `--with data/ood`, of every
other unseen speaker.

Pico is in Debian's non-free component; to install it without adding that component to the
machine's sources (the package lists go in a folder of their own: `apt-get update` empties its lists
folder of everything else, this sources.list included; the folder readable by apt's `_apt` user):

    d=$(mktemp -d); mkdir -p $d/lists/partial; chmod -R 755 $d
    echo "deb http://deb.debian.org/debian bookworm non-free" > $d/sources.list
    o="-o Dir::Etc::SourceList=$d/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$d/lists"
    apt-get $o update && (cd $d && apt-get $o download libttspico0 libttspico-data libttspico-utils)
    apt-get install -y $d/*.deb

    python bench/unseen_pico.py [--model models/release] [--scales 0.88,1.12] [--with data/ood]

~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from unseen_draw import SHOWN, pair_false_accepts

from voicelock.audio import write_wav
from voicelock.data.layout import SPEAKERS_FILE, write_split_lists
from voicelock.data.synth import place_in_room, scaled_rate
from voicelock.data.unseen import _noisy
from voicelock.evaluation import embed_split, evaluate_folder, folder_split
from voicelock.params import OodParams, SynthParams, load_params
from voicelock.release import Release
from voicelock.trials import keyword_predictions

VOICES = ("en-US", "en-GB", "de-DE", "es-ES", "fr-FR", "it-IT")
PICO = "pico2wave"


def plan_speakers(scales: list[float], seed: int) -> list[dict]:
    """One speaker per voice and scale: a pitch (%) and speed (%) of its own, drawn per (voice, scale)."""
    speakers = []
    for scale in [1.0, *scales]:
        for i, voice in enumerate(VOICES):
            rng = np.random.default_rng([seed, i, round(scale * 1000)])
            pitch, speed = float(rng.uniform(90, 110)), float(rng.uniform(85, 115))
            sid = hashlib.sha1(f"pico:{voice}/{pitch:.1f}/{speed:.1f}/{scale}".encode()).hexdigest()[:8]
            speakers.append({"id": sid, "engine": "pico" if scale == 1.0 else f"pico x{scale:g}", "voice": voice,
                             "variant": "", "pitch": round(pitch, 1), "speed": round(speed, 1), "scale": scale})
    return speakers


def render(job: tuple[dict, int, str, int, int, SynthParams, OodParams, int, Path]) -> str:
    """One take: Pico's word at the take's pitch and speed, then room, microphone and background noise."""
    sp, si, word, wi, take, synth, ood, seed, root = job
    rng = np.random.default_rng([seed, 1, si, wi, take])
    pitch = sp["pitch"] * (1 + rng.uniform(-0.06, 0.06))
    speed = sp["speed"] * (1 + rng.uniform(-synth.speed_jitter, synth.speed_jitter))
    text = f'<pitch level="{pitch:.0f}"><speed level="{speed:.0f}">{word}</speed></pitch>'
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "take.wav"
        subprocess.run([PICO, "-l", sp["voice"], "-w", str(wav), text], check=True, capture_output=True, timeout=60)
        raw, rate = sf.read(wav, dtype="float32")
    clip = place_in_room(raw, scaled_rate(rate, sp["scale"]), 16000, 16000, synth, rng)
    relative = f"{word}/{sp['id']}_nohash_{take}.wav"
    # data/ood's own background noise (the unseen stage's, private to it: the same noise, not a copy of it)
    write_wav(root / relative, _noisy(clip, rng, ood.noise_snr_db_range), 16000)
    return relative


def synthesize(root: Path, speakers: list[dict], synth: SynthParams, ood: OodParams, seed: int) -> None:
    """The corpus in Speech Commands layout, every speaker a test speaker, with `speakers.csv`."""
    for word in synth.words:
        (root / word).mkdir(parents=True)
    jobs = [(sp, si, w, wi, t, synth, ood, seed, root) for si, sp in enumerate(speakers)
            for wi, w in enumerate(synth.words) for t in range(ood.takes_per_word)]
    with ProcessPoolExecutor() as pool:
        relatives = list(pool.map(render, jobs, chunksize=16))
    write_split_lists(root, {r: "testing" for r in relatives})
    pd.DataFrame(speakers).drop(columns="scale").to_csv(root / SPEAKERS_FILE, index=False)


def pooled(root: Path, other: Path, into: Path) -> Path:
    """`root` and `other` (two corpora in Speech Commands layout, test speakers only) as one corpus."""
    shutil.copytree(other, into)
    for wav in root.glob("*/*.wav"):
        shutil.copy2(wav, into / wav.parent.name / wav.name)
    for name in ("testing_list.txt", SPEAKERS_FILE):
        lines = (root / name).read_text().splitlines()
        with open(into / name, "a") as out:
            out.write("\n".join(lines[1:] if name == SPEAKERS_FILE else lines) + "\n")
    return into


def keyword_by_voice(release: Release, data: Path, enroll_clips: int, seed: int) -> pd.Series:
    """Each speaker's share of takes whose nearest word template (other speakers' takes) is its word."""
    split = folder_split(data, release.extractor())
    word, _ = embed_split(release.model, split)
    speakers, words = split.index["speaker"].to_numpy(), split.index["word"].to_numpy()
    predicted, _ = keyword_predictions(word, speakers, words, enroll_clips, np.random.default_rng(seed))
    return pd.Series(predicted == words).groupby(speakers).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", help="the release to judge (default: params.yaml's evaluate.out_dir)")
    parser.add_argument("--seed", type=int, default=77, help="the draw's pitches, speeds, rooms and noise")
    parser.add_argument("--scales", default="", help="more speakers per voice at these vocal tracts, e.g. 0.88,1.12")
    parser.add_argument("--with", dest="other", help="pool with this unseen corpus for keyword templates (data/ood)")
    parser.add_argument("--pairs", type=int, default=6, help="pairs with the most false accepts to list")
    args = parser.parse_args()
    if shutil.which(PICO) is None:
        raise SystemExit(f"{PICO}: not installed — see this script's docstring (Debian non-free: libttspico-utils)")
    params = load_params(args.params)
    model = args.model or params.evaluate.out_dir
    speakers = plan_speakers([float(s) for s in args.scales.split(",") if s], args.seed)
    work = Path(tempfile.mkdtemp(prefix="voicelock-pico-"))
    try:
        data = work / "pico"
        synthesize(data, speakers, params.data.synth, params.ood, args.seed)
        metrics = evaluate_folder(model, data, params.evaluate, args.seed)
        release = Release.load(model)
        accepted, scored = pair_false_accepts(release, data, params.evaluate.enroll_clips)
        by_voice = {"pico alone": keyword_by_voice(release, data, params.evaluate.keyword_enroll_clips, args.seed)}
        if args.other:
            mixed = pooled(data, Path(args.other), work / "pooled")
            by_voice[f"with {args.other}"] = keyword_by_voice(release, mixed, params.evaluate.keyword_enroll_clips,
                                                             args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    who = pd.DataFrame(speakers).set_index("id")
    print(f"Pico voices ({len(speakers)} speakers; model {model}), shipped thresholds:")
    for key in SHOWN:
        print(f"  {key:28s} {metrics[key]:.4f}")
    print("keyword accuracy by speaker (templates from other speakers' takes):")
    table = pd.DataFrame({name: series.reindex(who.index) for name, series in by_voice.items()})
    table.index = [f"{who.loc[s, 'engine']} {who.loc[s, 'voice']}" for s in table.index]
    print(table.round(3).to_string())
    total = sum(accepted.values())
    print(f"other speaker says the password: {total} of {sum(scored.values())} trials accepted; by pair:")
    for (owner, impostor), n in accepted.most_common(args.pairs):
        if n:
            print(f"  {n:4d} of {scored[(owner, impostor)]:3d}  owner {who.loc[owner, 'engine']} "
                  f"{who.loc[owner, 'voice']} ← {who.loc[impostor, 'engine']} {who.loc[impostor, 'voice']}")


if __name__ == "__main__":
    main()
