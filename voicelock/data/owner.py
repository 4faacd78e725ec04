"""The owner's own recordings: one speaker, Speech Commands layout, the password among the words.

By default a synthetic speaker held out of the corpus plays the owner; `owner.source: folder` takes
real recordings instead. The owner's last takes of each word are held out of fine-tuning so the
evaluation can test the owner on clips the model never saw.
"""

from __future__ import annotations

import math
from pathlib import Path

from voicelock.data.acquire import import_folder
from voicelock.data.layout import Clip, scan_corpus
from voicelock.data.synth import synthesize_owner
from voicelock.errors import VoicelockError
from voicelock.params import Params


def acquire_owner(params: Params) -> Path:
    o = params.owner
    if o.source == "synth":
        synthesize_owner(params.data.synth, o.out_dir, params.seed, params.data.sample_rate, o.password,
                         o.takes_password, o.takes_other, params.features.clip_seconds)
    else:
        if not o.folder:
            raise VoicelockError("params.yaml: owner.folder is empty — set it to your recordings "
                                 "(<word>/<you>_nohash_<n>.wav) or use owner.source: synth")
        import_folder(o.folder, o.out_dir, params.data.sample_rate)
    check_owner_clips(scan_corpus(o.out_dir), o.out_dir, o.password, params.enroll.min_clips)
    return Path(o.out_dir)


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
