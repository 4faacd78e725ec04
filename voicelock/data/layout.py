"""The Speech Commands layout: `<word>/<speaker>_nohash_<n>.wav`, split lists, `_background_noise_/`.

The split rule is the official one (a SHA-1 of the speaker id, so a speaker never straddles splits
and adding data never moves one): implemented here once for every source.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from voicelock.errors import VoicelockError

BACKGROUND_DIR = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
# A generated corpus's speaker table (id, engine, voice, …); a downloaded corpus has none.
SPEAKERS_FILE = "speakers.csv"
SPLITS = ("training", "validation", "testing")
_MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # the constant in TensorFlow's speech_commands input_data.py
# `.WAV` too: `scan_corpus` takes either case, and a corpus copied from Windows may have it.
_CLIP_NAME = re.compile(r"^(?P<speaker>[0-9A-Za-z]+)_nohash_(?P<utterance>\d+)\.(?i:wav)$")


@dataclass(frozen=True)
class Clip:
    """One clip of the corpus, by its path relative to the corpus root."""

    path: str
    word: str
    speaker: str
    utterance: int


def split_for_speaker(speaker: str, validation_percentage: float, testing_percentage: float) -> str:
    """The Speech Commands rule: hash the speaker id into [0, 100] and cut at the two percentages."""
    digest = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    percentage = (digest % (_MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / _MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def parse_clip(relative: str) -> Clip:
    """`word/speaker_nohash_n.wav` → Clip; a misnamed file is an error that says the expected form."""
    parts = relative.split("/")
    match = _CLIP_NAME.match(parts[-1]) if len(parts) == 2 else None
    if match is None:
        raise VoicelockError(
            f"{relative}: not named like <word>/<speaker>_nohash_<n>.wav — rename it or move it out of the corpus"
        )
    return Clip(relative, parts[0], match["speaker"], int(match["utterance"]))


def scan_corpus(root: str | Path) -> list[Clip]:
    """Every clip under `root`, sorted by path. Refuses a missing root, no word folders, empty ones."""
    root = Path(root)
    if not root.is_dir():
        raise VoicelockError(f"{root}: corpus folder not found — check data.raw_dir / data.folder.path")
    word_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not word_dirs:
        raise VoicelockError(f"{root}: no word folders — expected <word>/<speaker>_nohash_<n>.wav inside")
    clips: list[Clip] = []
    for word_dir in word_dirs:
        wavs = sorted(p.name for p in word_dir.iterdir() if p.suffix.lower() == ".wav")
        if not wavs:
            raise VoicelockError(f"{word_dir}: word folder has no .wav clips — add recordings or remove it")
        clips.extend(parse_clip(f"{word_dir.name}/{name}") for name in wavs)
    return clips


def _listed(path: str) -> str:
    """A clip path as split lists are compared: `.WAV` and `.wav` name the same clip (a clip renamed
    by a copy must not slip from its test or validation list into training)."""
    return path[:-4] + ".wav" if path.lower().endswith(".wav") else path


def read_list(path: Path) -> set[str]:
    """A split list: one relative path per line (blank lines ignored)."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def assign_splits(
    root: str | Path, clips: list[Clip], validation_percentage: float, testing_percentage: float
) -> dict[str, str]:
    """path → split. Uses the corpus's own lists when it has both, else the hash rule."""
    root = Path(root)
    val_path, test_path = root / VALIDATION_LIST, root / TESTING_LIST
    if val_path.exists() != test_path.exists():
        have, missing = (val_path, test_path) if val_path.exists() else (test_path, val_path)
        raise VoicelockError(f"{missing}: missing while {have.name} exists — provide both split lists or neither")
    if val_path.exists():
        validation, testing = ({_listed(p) for p in read_list(path)} for path in (val_path, test_path))
        return {c.path: "validation" if _listed(c.path) in validation else "testing" if _listed(c.path) in testing
                else "training" for c in clips}
    return {c.path: split_for_speaker(c.speaker, validation_percentage, testing_percentage) for c in clips}


def write_split_lists(root: str | Path, splits: dict[str, str]) -> None:
    """Write validation_list.txt and testing_list.txt the way Speech Commands ships them."""
    root = Path(root)
    for name, split in ((VALIDATION_LIST, "validation"), (TESTING_LIST, "testing")):
        paths = sorted(p for p, s in splits.items() if s == split)
        (root / name).write_text("".join(f"{p}\n" for p in paths))
