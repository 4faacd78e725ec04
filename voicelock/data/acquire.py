"""Where the corpus and the owner's recordings come from: the real archive, a local folder, or the generator.

Whatever the source, the result is the same thing at `data.raw_dir`: a corpus in Speech Commands
layout, written atomically.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from voicelock.audio import check_rate, info
from voicelock.data.download import download, extract
from voicelock.data.layout import BACKGROUND_DIR, TESTING_LIST, VALIDATION_LIST, scan_corpus
from voicelock.data.owner import check_owner_clips
from voicelock.data.synth import synthesize_corpus, synthesize_owner
from voicelock.errors import VoicelockError
from voicelock.fsutil import atomic_dir
from voicelock.params import Params

log = logging.getLogger(__name__)


def check_folder(root: str | Path, sample_rate: int) -> int:
    """Validate a folder in Speech Commands layout: names, readable WAV headers, sample rate.

    Returns the number of clips. Reads only headers: the prepare stage measures the audio itself.
    """
    root = Path(root)
    clips = scan_corpus(root)
    for clip in clips:
        check_rate(root / clip.path, info(root / clip.path).samplerate, sample_rate)
    return len(clips)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def import_folder(source: str | Path, target: str | Path, sample_rate: int) -> Path:
    """Bring a validated local corpus into `target` (hard links where possible, else copies)."""
    source = Path(source)
    if not str(source) or str(source) == ".":
        raise VoicelockError("params.yaml: data.folder.path is empty — set it to a corpus in Speech Commands layout")
    n = check_folder(source, sample_rate)
    log.info("%s: %d clips in Speech Commands layout", source, n)
    with atomic_dir(target) as staging:
        for clip in scan_corpus(source):
            (staging / clip.word).mkdir(exist_ok=True)
            _link_or_copy(source / clip.path, staging / clip.path)
        for name in (VALIDATION_LIST, TESTING_LIST):
            if (source / name).exists():
                shutil.copy2(source / name, staging / name)
        if (source / BACKGROUND_DIR).is_dir():
            shutil.copytree(source / BACKGROUND_DIR, staging / BACKGROUND_DIR, copy_function=_link_or_copy)
    return Path(target)


def acquire_corpus(params: Params) -> Path:
    """Make `data.raw_dir` hold the corpus named by `data.source`."""
    data = params.data
    target = Path(data.raw_dir)
    if data.source == "synth":
        return synthesize_corpus(data.synth, target, params.seed, data.sample_rate, data.validation_percentage,
                                 data.testing_percentage, params.features.clip_seconds)
    if data.source == "folder":
        return import_folder(data.folder.path, target, data.sample_rate)
    sc = data.speech_commands
    archive = Path(data.download_dir) / PurePosixPath(sc.url).name
    download(sc.url, archive, sc.sha256, sc.retries, sc.timeout_s, sc.chunk_bytes)
    extract(archive, target)
    check_folder(target, data.sample_rate)
    return target


def acquire_owner(params: Params) -> Path:
    """The owner's recordings at owner.out_dir: a synthetic speaker held out of the corpus
    (`owner.source: synth`) or the user's own (`owner.source: folder`), checked."""
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
