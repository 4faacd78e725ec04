"""Re-enrolling with an unlock token: how often a mix of the owner's takes and another voice's takes
the account over, against how often a genuine re-enrollment passes, under the same-voice rules measured.

For each speaker of a corpus: the owner's template is 3 takes of word A. A genuine re-enrollment is 4
takes of another word B (a new password: no recording shared with the template; the corpora have 4–5
takes of a word, too few for a same-word re-enrollment of other recordings). An attack re-enrolls with k of the owner's takes of B
and m of another speaker's (k, m in (2, 3), (3, 3), (4, 2), (3, 2), (4, 3)); it takes the account over
when the rule passes it *and* that speaker's held-out take of B then unlocks (`Verifier.accepts`).
Rules: "the mean" — the takes' mean against the enrolled voice at `speaker_any_word` (after the
agreement checks of `enroll`, as always); "+ every take" — each take too (what `Unlocker.same_voice`
does now); "+ agreement" — a stricter agreement between the takes instead; "every take ... below" — each
take at a looser threshold. Shipped thresholds throughout.

    python bench/reenroll_mix.py test      # the test speakers (feature cache)
    python bench/reenroll_mix.py unseen    # the unseen voices (data/unseen)
"""

from __future__ import annotations

import argparse

import numpy as np

from voicelock.enrollment import take_agreements
from voicelock.evaluation import embed_split, folder_split
from voicelock.features import load_split
from voicelock.model.train import Split
from voicelock.params import Params, load_params
from voicelock.release import Release
from voicelock.verifier import make_template, unit

MIXES = ((2, 3), (3, 3), (4, 2), (3, 2), (4, 3))  # (owner's takes, other voice's takes)


class Corpus:
    """A corpus's unit word and speaker embeddings, and the row numbers of each (speaker, word)."""

    def __init__(self, release: Release, split: Split):
        word, speaker = embed_split(release.model, split)
        self.word, self.speaker = unit(word), unit(speaker)
        index = split.index.reset_index(drop=True)
        self.takes = {key: np.asarray(rows) for key, rows in index.groupby(["speaker", "word"]).groups.items()}
        self.speakers = sorted(index["speaker"].unique())
        self.words = sorted(index["word"].unique())


def rules(release: Release, params: Params, corpus: Corpus, old: np.ndarray, new: np.ndarray) -> dict[str, bool]:
    """Which rules let `new` re-enroll the template of `old` (row numbers)."""
    th, scorer = release.thresholds, release.scorer
    # as Unlocker._check_takes_agree
    agreement = {name: float(take_agreements(emb[new]).min())
                 for name, emb in (("word", corpus.word), ("speaker", corpus.speaker))}
    _, old_voice = make_template(corpus.word[old], corpus.speaker[old])
    _, new_voice = make_template(corpus.word[new], corpus.speaker[new])
    any_word = th["speaker_any_word"]
    base = (agreement["word"] >= params.enroll.min_word_agreement
            and agreement["speaker"] >= params.enroll.min_speaker_agreement
            and float(scorer(old_voice, new_voice[None])[0]) >= any_word)
    each = scorer(old_voice, corpus.speaker[new])
    return {"the mean": base,
            # the shipped rule (`Unlocker.same_voice`, without an anchor: the template is the first enrollment)
            "+ every take": base and release.verifier.is_voice_of(old_voice, new_voice, corpus.speaker[new]),
            **{f"+ agreement >= {a}": base and agreement["speaker"] >= a for a in (0.6, 0.7, 0.8)},
            **{f"every take >= {d} below": base and bool(np.all(each >= any_word - d)) for d in (0.05, 0.1, 0.2)},
            "every take >= 0.1 below, agreement >= 0.6": (base and bool(np.all(each >= any_word - 0.1))
                                                             and agreement["speaker"] >= 0.6)}


def unlocks(release: Release, template: tuple[np.ndarray, np.ndarray], word: np.ndarray, speaker: np.ndarray) -> bool:
    scores = release.verifier.scores(template[0], template[1], word[None], speaker[None])
    return bool(release.verifier.accepts(*scores)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=["test", "unseen"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params(args.params)
    release = Release.load(params.evaluate.out_dir)
    split = (Split.from_feature_set(load_split(params.features.out_dir, "testing")) if args.corpus == "test"
             else folder_split(params.ood.out_dir, release.extractor()))
    corpus = Corpus(release, split)
    rng = np.random.default_rng(args.seed)
    genuine: dict[str, int] = {}
    taken: dict[str, int] = {}
    n_genuine = n_mixes = 0
    for owner in corpus.speakers:
        words = [w for w in corpus.words if len(corpus.takes.get((owner, w), [])) >= 4]
        if len(words) < 2:
            continue
        for _ in range(3):
            a, b = rng.choice(words, 2, replace=False)
            old = corpus.takes[(owner, a)][:3]
            n_genuine += 1  # the owner changes the password to b
            for rule, passed in rules(release, params, corpus, old, corpus.takes[(owner, b)][-4:]).items():
                genuine[rule] = genuine.get(rule, 0) + passed
            others = [x for x in corpus.speakers if x != owner and len(corpus.takes.get((x, b), [])) >= 4]
            for other in rng.choice(others, min(6, len(others)), replace=False):
                theirs = corpus.takes[(other, b)]
                for k, m in MIXES:
                    new = np.concatenate([corpus.takes[(owner, b)][:k], theirs[:m]])
                    n_mixes += 1
                    template = make_template(corpus.word[new], corpus.speaker[new])
                    if unlocks(release, template, corpus.word[theirs[-1]], corpus.speaker[theirs[-1]]):
                        for rule, passed in rules(release, params, corpus, old, new).items():
                            taken[rule] = taken.get(rule, 0) + passed
    print(f"{args.corpus}: {n_genuine} genuine re-enrollments, {n_mixes} mixes")
    for rule, passed in genuine.items():
        print(f"  {rule:46s} genuine pass {passed / n_genuine:.3f}   takeover {taken.get(rule, 0) / n_mixes:.4f} "
              f"({taken.get(rule, 0)})")


if __name__ == "__main__":
    main()
