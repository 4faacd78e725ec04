"""Fetch and unpack the real Speech Commands archive, safely.

Three promises: an interrupted transfer resumes where it stopped (HTTP Range into a `.part` file that
survives between runs), nothing unverified is used (SHA-256 before extraction), and nothing half-made
or hostile lands where the next stage reads (extraction into a temporary sibling folder, members that
would escape it refused, renamed into place only when complete).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from voicelock.errors import VoicelockError
from voicelock.fsutil import atomic_dir

log = logging.getLogger(__name__)

# HTTP statuses worth another try: the server or a proxy is briefly unwell.
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str,
    retries: int = 5,
    timeout_s: float = 60,
    chunk_bytes: int = 1 << 20,
    backoff_s: float = 1.0,
) -> Path:
    """Download `url` to `dest`, resuming and retrying; return `dest` once its checksum matches.

    A `dest` already present with the right checksum is reused (a second run downloads nothing).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and sha256_of(dest) == sha256:
        log.info("%s: already downloaded and verified", dest)
        return dest
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_into(url, part, timeout_s, chunk_bytes)
            break
        except _Transient as e:
            attempt += 1
            if attempt > retries:
                raise VoicelockError(
                    f"{url}: download failed after {retries} retries ({e}); the partial file {part} is kept, "
                    f"re-run to resume"
                ) from None
            wait = backoff_s * 2 ** (attempt - 1)
            log.warning("%s: %s — retry %d/%d in %.1fs, resuming at byte %d",
                        url, e, attempt, retries, wait, part.stat().st_size if part.exists() else 0)
            time.sleep(wait)
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise VoicelockError(
            f"{url}: checksum mismatch (expected {sha256}, got {actual}); the download was deleted — "
            f"re-run to fetch it again, or fix data.speech_commands.sha256 if the archive changed"
        )
    os.replace(part, dest)
    return dest


class _Transient(Exception):
    """A failure that another attempt, resuming from the bytes we have, may get past."""


def _fetch_into(url: str, part: Path, timeout_s: float, chunk_bytes: int) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the .part file is already whole
            return
        if e.code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {e.code}") from None
        raise VoicelockError(f"{url}: HTTP {e.code} {e.reason} — check data.speech_commands.url") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Transient(str(getattr(e, "reason", e))) from None
    with response:
        if response.status == 200 and have:
            log.info("%s: server ignored the Range request; starting over", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with part.open(mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                           desc=f"download {PurePosixPath(url).name}") as bar:
            received = 0
            try:
                while block := response.read(chunk_bytes):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                raise _Transient(f"connection lost after {have + received} bytes ({e})") from None
        if length is not None and received < int(length):
            raise _Transient(f"connection closed after {have + received} of {total} bytes")


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse anything that could write outside the target folder or is not a plain file/folder."""
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts:
        raise VoicelockError(f"{archive}: member {name!r} would escape the target folder — archive refused")
    if member.issym() or member.islnk():
        raise VoicelockError(f"{archive}: member {name!r} is a link — archive refused (links are never extracted)")
    if not (member.isfile() or member.isdir()):
        raise VoicelockError(f"{archive}: member {name!r} is not a regular file or folder — archive refused")


def extract(archive: Path, target: Path) -> Path:
    """Unpack a .tar(.gz) into `target`, atomically: all of it appears there, or none of it does."""
    archive, target = Path(archive), Path(target)
    try:
        with atomic_dir(target) as staging, tarfile.open(archive) as tar, \
                tqdm(unit=" files", desc=f"extract {archive.name}") as bar:
            for member in tar:
                _check_member(archive, member)
                tar.extract(member, staging, filter="data")  # second line of defence
                bar.update(1)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise VoicelockError(f"{archive}: damaged archive ({e}) — delete it and re-run to download again") from None
    return target

