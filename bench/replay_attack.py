"""How well the liveness challenge stops a replay attacker, and what it costs the genuine owner.

The attacker knows the password and holds N genuine recordings of the owner (password and other
words, drawn at random from the owner's takes — none of them ever heard by the service, so replay
memory cannot help). Per attempt the service draws a random challenge of `--words` words; the
attacker plays a held password take and, for each challenge word, a held recording of that word if
they have one, else their best guess (a held recording of another word). The genuine owner answers
with fresh takes. Every decision is `Unlocker.verify`, the service's own verifier, with the released
model's thresholds; embeddings are computed once per recording and reused (same numbers, less time).

    python bench/replay_attack.py [--params params.yaml] [--attempts 2000] [--words 1 2 3]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

import numpy as np

from voicelock.audio import read_wav
from voicelock.enrollment import ChallengeTake, Unlocker
from voicelock.errors import VoicelockError
from voicelock.liveness import draw_challenge
from voicelock.params import load_params


def cached(lock: Unlocker):
    """An embedder that computes each distinct clip once (keyed by its samples)."""
    memo: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def embed(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        keys = [hashlib.sha1(c.tobytes()).digest() for c in clips]
        todo = [(k, c) for k, c in zip(keys, clips) if k not in memo]
        if todo:
            word, speaker = lock.embed_here([c for _, c in todo])
            for i, (k, _) in enumerate(todo):
                memo[k] = (word[i], speaker[i])
        return np.stack([memo[k][0] for k in keys]), np.stack([memo[k][1] for k in keys])

    return embed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--words", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--held", type=int, nargs="+", default=[1, 5, 10, 20, 40, 80])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        lock = Unlocker(params.evaluate.out_dir, params.enroll)
    except VoicelockError as e:
        sys.exit(f"error: {e}")
    lock.embedder = cached(lock)
    owner_dir, password = Path(params.owner.out_dir), params.owner.password
    takes = {w.name: [read_wav(p)[0] for p in sorted(w.glob("*.wav"))] for w in sorted(owner_dir.iterdir())
             if w.is_dir()}
    n_enroll = max(params.evaluate.enroll_clips, params.enroll.min_clips)
    template = lock.enroll([(x, lock.sample_rate) for x in takes[password][:n_enroll]])
    fresh_pw = takes[password][n_enroll:]
    pool = [(w, x) for w, xs in takes.items() for x in (xs[n_enroll:] if w == password else xs)]
    vocab = lock.vocabulary
    rng = random.Random(args.seed)
    print(f"owner: {len(fresh_pw)} held-out password takes, {len(pool)} recordings in all; vocabulary "
          f"{len(vocab)} words; {args.attempts} attempts per row")

    def attempt(password_take: np.ndarray, answers: list[tuple[str, np.ndarray]]) -> bool:
        challenge = [ChallengeTake(w, x, lock.sample_rate, f"challenge {i + 1}") for i, (w, x) in enumerate(answers)]
        return lock.verify(template, password_take, lock.sample_rate, "password", [], challenge).unlocked

    print("\n| challenge words | owner FRR | " + " | ".join(f"attacker with {n}" for n in args.held) + " |")
    print("|---|---|" + "---|" * len(args.held))
    for n_words in [0] + args.words:
        rejected, wins = 0, {n: 0 for n in args.held}
        for _ in range(args.attempts):
            words = draw_challenge(vocab, n_words) if n_words else []
            words = [w for w in words if w in takes]  # the owner has takes of the training words
            # The owner: a fresh password take and a fresh take of each asked word.
            owner_answers = [(w, rng.choice(takes[w])) for w in words]
            rejected += not attempt(rng.choice(fresh_pw), owner_answers)
            for n in args.held:
                held = rng.sample(pool, min(n, len(pool)))
                held_pw = [x for w, x in held if w == password]
                if not held_pw:
                    continue
                answers = []
                for w in words:
                    matching = [x for hw, x in held if hw == w]
                    answers.append((w, rng.choice(matching) if matching else rng.choice(held)[1]))
                wins[n] += attempt(rng.choice(held_pw), answers)
        row = " | ".join(f"{wins[n] / args.attempts:.3f}" for n in args.held)
        print(f"| {n_words or 'off'} | {rejected / args.attempts:.3f} | {row} |", flush=True)


if __name__ == "__main__":
    main()
