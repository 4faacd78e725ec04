"""The rules of the owner's recordings: one speaker, Speech Commands layout, the password among the
words (`voicelock/data/acquire.py: acquire_owner` makes or imports them). The owner's last takes of
each word are held out of fine-tuning so the evaluation can test the owner on clips the model never saw.
"""

from __future__ import annotations

import math
from pathlib import Path

from voicelock.data.layout import Clip
from voicelock.errors import VoicelockError


def check_owner_clips(clips: list[Clip], root: str | Path, password: str, min_clips: int) -> str:
    """The owner folder must hold one speaker with enough takes of the password; return that speaker."""
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) != 1:
        raise VoicelockError(f"{root}: owner recordings must come from one speaker, found {len(speakers)} "
                             f"({', '.join(speakers[:5])}) — keep only the owner's clips")
    n = sum(c.word == password for c in clips)
    if n < min_clips + 1:
        raise VoicelockError(f"{root}: {n} recordings of the password '{password}', need at least {min_clips + 1} "
                             f"(enrollment plus one to test) — record more or change owner.password")
    return speakers[0]


def split_owner_clips(clips: list[Clip], holdout_fraction: float) -> tuple[list[Clip], list[Clip]]:
    """(fine-tuning clips, held-out clips): per word, the last takes by utterance number are held out."""
    tune, held = [], []
    for word in sorted({c.word for c in clips}):
        takes = sorted((c for c in clips if c.word == word), key=lambda c: c.utterance)
        k = math.ceil(len(takes) * holdout_fraction) if len(takes) > 1 else 0
        tune.extend(takes[: len(takes) - k])
        held.extend(takes[len(takes) - k:])
    return tune, held
