"""Renders that two synthesizer runs agree on, so that the corpus stays a function of params.yaml.

Festival takes have come out otherwise than in every other run (twice, in CI); the cause is not found
(docs/decisions.md, data.synth). A corpus that changes from run to run changes every stage after it.
So each festival take is rendered twice, a take the two disagree on a third time, and the version
two renders agree on is kept. What the vote catches is a render going astray in its own process
(festival's renders are separate festival processes). It would not have caught the espeak-ng babble
background that came out otherwise on every machine's first run: both renders of that run agreed.
That cause was found — the C library's random state, which the espeak-ng server now re-seeds
(voicelock/data/espeak_server.py) — and espeak-ng renders are not voted on."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import numpy as np

from voicelock.errors import VoicelockError

log = logging.getLogger(__name__)
Rendered = tuple[np.ndarray, int]  # a take's samples and their rate


def same(a: Rendered, b: Rendered) -> bool:
    return a[1] == b[1] and np.array_equal(a[0], b[0])


def agreed(render: Callable[[], list[Rendered]], names: list[str], source: str, remedy: str) -> list[Rendered]:
    """`render()` (the takes called `names`) twice and, where the two differ, a third time: each take is
    the version two renders agree on. Three versions of one take stop the stage: `source` renders it
    differently every time, and `remedy` says what to change."""
    first, second = render(), render()
    if not len(first) == len(second) == len(names):
        raise VoicelockError(f"{source}: {len(first)} and {len(second)} takes rendered for {len(names)} asked")
    agree = [same(a, b) for a, b in zip(first, second)]
    if all(agree):
        return first
    log.warning("%s rendered %d of %d takes differently in two runs; a third render decides", source,
                agree.count(False), len(agree))
    third = render()
    if len(third) != len(names):
        raise VoicelockError(f"{source}: {len(third)} takes rendered for {len(names)} asked")
    kept = []
    for name, versions in zip(names, zip(first, second, third)):
        pair = next((a for a, b in itertools.combinations(versions, 2) if same(a, b)), None)
        if pair is None:
            raise VoicelockError(f"{source} renders {name!r} differently every time (3 renders) — {remedy}")
        kept.append(pair)
    return kept
