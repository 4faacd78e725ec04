"""A second draw of unseen voices: the released model's figures on voices the pipeline never made, and
which pairs of voices its false accepts come from.

`data/ood` is one draw (one seed, ten held-out accents). A lock's promise should hold on the next
draw too, so this writes another — the same held-out timbres (`ood.espeak_variants`, one speaker
each) speaking through *other* languages' voices that neither training nor `data/ood` uses, with
their own pitches, speeds, rooms and noise from another seed, and flite's voices again at other
F0s — then judges it at the shipped thresholds (`evaluation.evaluate_folder`, as `voicelock evaluate
--data` does) and counts each (owner, impostor) pair's accepted "other speaker says the password"
trials with the verifier's own rule. One pair of near-identical voices can carry a whole FAR.
Some espeak-ng voices do not say the English words at all: it notes those that spell them letter by
letter (ja, he, be, my); vi and mk read them as their own language's text, which it cannot tell.

    python bench/unseen_draw.py [--params params.yaml] [--seed 777] [--voices ru,hi,vi,bg,el,lv,sl,sq,uk,ga]

Run after `dvc repro` (it needs models/release); ~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from voicelock.data.layout import SPEAKERS_FILE
from voicelock.data.unseen import synthesize_unseen
from voicelock.evaluation import embed_split, evaluate_folder, folder_split
from voicelock.params import load_params
from voicelock.release import Release
from voicelock.trials import unit
from voicelock.verifier import Verifier, make_template

def spelling_voices(voices: list[str], word: str) -> list[str]:
    """The voices that spell `word` letter by letter instead of saying it: espeak-ng marks each spelled
    letter with a pause (`_:`) in its phoneme output (`espeak-ng -x -v ja down`: "dee oh double-u en").
    Such a draw measures letter names, not an accent."""
    spelled = []
    for voice in voices:
        out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, word], capture_output=True, text=True,
                             timeout=30).stdout
        if out.count("_:") > 1:
            spelled.append(voice)
    return spelled


SHOWN = ("keyword_accuracy", "speaker_eer", "speaker_eer_all_trials", "frr", "far_other_speaker_password",
         "far_owner_other_word")


def password_trials(release: Release, word: np.ndarray, speaker: np.ndarray, index: pd.DataFrame,
                    enroll_clips: int) -> Iterator[tuple[str, np.ndarray, tuple[np.ndarray, ...]]]:
    """Each (owner, word) template's "other speaker says the password" trials: (owner, impostor per
    trial, the verifier's (word, speaker, raw, rival) scores) — each speaker's first `enroll_clips`
    takes of a word its template, every other speaker's takes of that word probes. What it keeps of
    a trial that `trials.unlock_trials` does not is who the two speakers were."""
    speakers, words, utterances = index["speaker"].to_numpy(), index["word"].to_numpy(), index["utterance"].to_numpy()
    rule = Verifier(release.scorer, release.thresholds, word_templates=release.word_templates)
    speaker = unit(np.asarray(speaker, dtype=np.float32))
    stats = rule.scorer.probe_stats(speaker)
    for owner, w in sorted(set(zip(speakers.tolist(), words.tolist()))):
        rows = np.flatnonzero((speakers == owner) & (words == w))
        rows = rows[np.argsort(utterances[rows], kind="stable")][:enroll_clips]
        word_t, speaker_t = make_template(word[rows], speaker[rows])
        probes = np.flatnonzero((speakers != owner) & (words == w))
        yield owner, speakers[probes], rule.scores(word_t, speaker_t, word[probes], speaker[probes], stats[probes])


def pair_false_accepts(release: Release, data: Path, enroll_clips: int) -> tuple[Counter, Counter]:
    """(owner, impostor) → accepted and scored "other speaker says the password" trials of a corpus."""
    split = folder_split(data, release.extractor())
    word, speaker = embed_split(release.model, split)
    rule = Verifier(release.scorer, release.thresholds)  # the trials are scored already: only the rule is used
    accepted, scored = Counter(), Counter()
    for owner, impostors, scores in password_trials(release, word, speaker, split.index, enroll_clips):
        for impostor, ok in zip(impostors.tolist(), rule.accepts(*scores).tolist()):
            scored[(owner, impostor)] += 1
            accepted[(owner, impostor)] += int(ok)
    return accepted, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=777, help="the draw's seed (the pipeline's is params.seed)")
    parser.add_argument("--voices", default="ru,hi,vi,bg,el,lv,sl,sq,uk,ga",
                        help="espeak-ng voices (languages) reading the words: none of data.synth.voices or "
                             "ood.espeak_voices")
    parser.add_argument("--pairs", type=int, default=8, help="pairs with the most false accepts to list")
    args = parser.parse_args()
    params = load_params(args.params)
    voices = args.voices.split(",")
    used = sorted(set(voices) & (set(params.data.synth.voices) | set(params.ood.espeak_voices)))
    if used:
        raise SystemExit(f"--voices: {used} already speak in training or data/ood — pick others (espeak-ng --voices)")
    spelled = spelling_voices(voices, params.data.synth.words[0])
    if spelled:
        print(f"note: {','.join(spelled)} spell the words letter by letter — their speakers do not say the words")
    work = Path(tempfile.mkdtemp(prefix="voicelock-draw-"))
    try:
        ood = params.ood.model_copy(update={"out_dir": str(work / "data"), "espeak_voices": voices})
        data = synthesize_unseen(params.data.synth, ood, args.seed, params.data.sample_rate,
                                 params.features.clip_seconds)
        metrics = evaluate_folder(params.evaluate.out_dir, data, params.evaluate, args.seed)
        accepted, scored = pair_false_accepts(Release.load(params.evaluate.out_dir), data,
                                              params.evaluate.enroll_clips)
        who = pd.read_csv(data / SPEAKERS_FILE, dtype=str, keep_default_na=False).set_index("id")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"a second draw of unseen voices (seed {args.seed}, voices {','.join(voices)}), shipped thresholds:")
    for key in SHOWN:
        print(f"  {key:28s} {metrics[key]:.4f}")

    def name(s: str) -> str:
        variant = f"+{who.loc[s, 'variant']}" if who.loc[s, 'variant'] else ""
        return (f"{who.loc[s, 'engine']} {who.loc[s, 'voice']}{variant} "
                f"(pitch {who.loc[s, 'pitch']}, speed {who.loc[s, 'speed']})")

    total = sum(accepted.values())
    print(f"other speaker says the password: {total} of {sum(scored.values())} trials accepted; by pair:")
    for (owner, impostor), n in accepted.most_common(args.pairs):
        if n:
            print(f"  {n:4d} of {scored[(owner, impostor)]:3d}  owner {name(owner)} ← {name(impostor)}")
    top = sum(n for _, n in accepted.most_common(2))
    if total:
        print(f"  the two most-accepted pairs (one pair, both ways round, when they mirror) carry {top / total:.0%}")


if __name__ == "__main__":
    main()
