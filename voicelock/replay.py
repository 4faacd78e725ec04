"""Replay detection: a probe that is (nearly) a copy of an earlier recording of the same user.

A recording played back from an attacker's phone scores as the owner saying the password — that is
what a replay is. What gives it away is that it is *too* close: two genuine takes of a word are never
the same sound (pitch, timing and room differ every time), so their embeddings never coincide, while
a copy of a recording the service has already heard (an accepted unlock, an enrollment take) lands on
or next to that recording's embedding, even after re-encoding or a little added noise.

A probe's *fingerprint* is its word and speaker embeddings, each unit length, concatenated and
re-normalised: the cosine of two fingerprints is the mean of their word and speaker cosines. The
threshold is calibrated at evaluation on genuine repeated takes of the validation speakers (the
highest similarity two distinct genuine takes of one word by one voice ever reach, plus a margin) and
shipped with the model, so it is never tuned by hand.

A take the service *remembers* (an enrollment take, an accepted unlock's) is kept as a *set* of
fingerprints: the take itself and copies of it delayed by the release's `replay_shifts` (a few ms of
zeros in front). Why: the network's frames are 10 ms apart and its front halves them again, so the
same recording padded by a few ms (zeros, or a faint hiss) lands on another phase of that grid and
embeds like a new take — 5 ms of zeros moved 27 of 30 copies of the owner's takes under the
threshold. Against the set, a padded copy meets the delayed copy on its own phase. The probe is
not shifted: the shifted copies' embeddings are paid only when a take is remembered — after an
accepted unlock, or for an enrollment whose takes passed every other check. The threshold (`replay`)
is calibrated under the same rule, each genuine take against the set of another, so a new take is
still never mistaken for a copy. A take remembered alone — by an older voicelock or a release without
shifts, or another take of the same request — is judged at `replay_single`, calibrated on pairs of
single fingerprints as the one threshold was before sets: a set's maximum runs higher, so its
threshold would be too lenient for one fingerprint.

A release may also give a *band-limited view* (`replay_band_hz`): the take with everything above that
frequency removed (`band_limited`, before the features), fingerprinted as any take. Why: a copy of a
heard take low-passed (resampled through 8 kHz, or filtered at 3.5–6 kHz) embeds like a new take in
the full band — a tester unlocked one account six times from one recording — while below the cut it
is still the same sound. So a probe is fingerprinted twice (the full band and the view), a remembered
set holds the view at every shift after the full band's rows, and the view is judged against the
view's rows at a threshold of its own (`replay_band`), calibrated the same way: genuine takes come
closer to each other below 3 kHz (0.994 on the validation voices against 0.989 in the full band), so
one threshold for both would have loosened the full band's.

Sets are stored beside each take's own fingerprint (`encode`: float16, base64 — a user's 50
remembered takes are read on every unlock), which stays a JSON list that every version reads. A set
with the view is 2 × shifts rows, the full band's first (`stored_rows`); a voicelock without views
reads them all as the full band's, and a view row is far from any full-band probe (at most 0.84).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from voicelock.errors import VoicelockError

log = logging.getLogger(__name__)

_ENCODED = "f16:"  # prefix of a stored fingerprint set; anything else is one fingerprint as JSON


def fingerprints(word: np.ndarray, speaker: np.ndarray) -> np.ndarray:
    """(N, Dw) word and (N, Ds) speaker embeddings → (N, Dw + Ds) unit-length fingerprints."""
    w = word / (np.linalg.norm(word, axis=1, keepdims=True) + 1e-12)
    s = speaker / (np.linalg.norm(speaker, axis=1, keepdims=True) + 1e-12)
    both = np.concatenate([w, s], axis=1) / np.sqrt(2.0)
    return both.astype(np.float32)


def speaker_halves(fps: np.ndarray, word_dim: int) -> np.ndarray:
    """The unit speaker embeddings inside (N, Dw + Ds) fingerprints (`fingerprints`' speaker half):
    what a template keeps of each take's voice."""
    speaker = np.asarray(fps, dtype=np.float32).reshape(len(fps), -1)[:, word_dim:]
    return speaker / (np.linalg.norm(speaker, axis=1, keepdims=True) + 1e-12)


def delayed(clip: np.ndarray, shifts: Sequence[int]) -> list[np.ndarray]:
    """The clip after `s` zero samples, for each s of `shifts` (0: the clip itself)."""
    return [np.concatenate([np.zeros(s, dtype=clip.dtype), clip]) if s else clip for s in shifts]


def band_limited(clip: np.ndarray, rate: int, cut_hz: float) -> np.ndarray:
    """The clip with every frequency above `cut_hz` removed (zero-phase, in one FFT): what is left of a
    recording after any low-pass at or above the cut, so a copy low-passed by an attacker and the take
    it copies meet in this view. The FFT runs at the next fast length past the clip (zeros after it,
    cut off again): an upload's length is the caller's choice, and a prime one took 25 ms against 1."""
    size = scipy.fft.next_fast_len(clip.size, real=True)
    spectrum = scipy.fft.rfft(np.asarray(clip, dtype=np.float64), n=size)
    spectrum[scipy.fft.rfftfreq(size, 1.0 / rate) > cut_hz] = 0
    return scipy.fft.irfft(spectrum, n=size)[: clip.size].astype(np.float32)


def views(clip: np.ndarray, shifts: Sequence[int], rate: int, band_hz: float) -> list[np.ndarray]:
    """The clips a take is remembered by (its set's rows, in order): delayed by each of `shifts`, then,
    with a band-limited view (`band_hz` > 0), each of those band-limited."""
    late = delayed(clip, shifts)
    return late + ([band_limited(c, rate, band_hz) for c in late] if band_hz else [])


def remembered_set(at_zero: np.ndarray, late: np.ndarray) -> np.ndarray:
    """A take's set as `views` orders its rows: for each view (full band, then band-limited), the take's
    own fingerprint (`at_zero`, (V, D)) followed by its delayed copies' (`late`, (V, S - 1, D)). The
    service (`Unlocker.fingerprint_sets`) and the evaluation (`evaluation.remembered_takes`) both build
    sets here, so the threshold is calibrated on the sets the service keeps."""
    return np.concatenate([np.concatenate([own[None, :], rest]) for own, rest in zip(at_zero, late, strict=True)])


def encode(fingerprint_set: np.ndarray) -> str:
    """(K, D) fingerprints of one take → the text the store and templates keep (float16: a cosine moves
    by ~1e-4 at most, against a margin of 0.002 between a threshold and the genuine takes under it)."""
    return _ENCODED + base64.b64encode(np.asarray(fingerprint_set, dtype="<f2").tobytes()).decode("ascii")


def decode(entry: object, dim: int) -> np.ndarray:
    """A remembered take (`encode`'s text, or one fingerprint as a JSON list or text) → (K, dim) rows.

    Anything that is not whole unit-length fingerprints becomes one NaN row, which `max_similarity`
    treats as a match: a damaged memory refuses, it never opens the lock (a zero row, say, would
    match nothing and so remember nothing)."""
    try:
        if isinstance(entry, str) and entry.startswith(_ENCODED):
            flat = np.frombuffer(base64.b64decode(entry[len(_ENCODED):], validate=True), dtype="<f2")
        else:
            flat = np.asarray(json.loads(entry) if isinstance(entry, str) else entry, dtype=np.float32).reshape(-1)
        rows = flat.astype(np.float32).reshape(-1, dim)
        norms = np.linalg.norm(rows, axis=1)
        if rows.size and np.all(np.abs(norms - 1) < 1e-2):  # float16 moves a norm by ~1e-4
            return rows
    except Exception:  # noqa: BLE001 — whatever is stored, a damaged row must refuse, not raise
        pass
    log.warning("replay memory: a remembered take is damaged (%.60r…): every probe of that user is refused "
                "until the administrator deletes the enrollment or a model promotion re-embeds it", entry)
    return np.full((1, dim), np.nan, dtype=np.float32)


def stored_rows(entries: Iterable[object], dim: int, shifts: int = 1,
                band: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every fingerprint of every remembered take, as (N, dim) rows; which rows are a take's own
    fingerprint (the first of its set, or a take remembered alone); and which are of the band-limited
    view (`band`: the release has one; then a set of 2 × `shifts` rows is the full band's rows and the
    view's, as `views` orders them — any other set, damaged ones included, is the full band's).

    The replay rule judges the full band's rows at `replay`, the takes' own fingerprints also at
    `replay_single`, as before sets (a copy that does not move the frames — a level change — is
    nearest the take itself, and the set's threshold would let more of those through), and the
    view's rows at `replay_band`."""
    sets = [decode(e, dim) for e in entries]
    if not sets:
        return np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    in_band = [np.arange(len(s)) >= shifts if band and len(s) == 2 * shifts else np.zeros(len(s), dtype=bool)
               for s in sets]
    return np.concatenate(sets), np.concatenate([np.arange(len(s)) == 0 for s in sets]), np.concatenate(in_band)


def replay_similarities(take: np.ndarray, rows: np.ndarray, own: np.ndarray,
                        in_band: np.ndarray) -> tuple[float, float, float]:
    """What the replay rule (`Verifier.replay_checks`) judges one take by, against remembered `rows`
    (`stored_rows`): `take` is its fingerprints (V, D), the full band first, then its band-limited
    view if any. Returns the full band's closest similarity to the full band's rows (`to_sets`), to
    the takes' own fingerprints (`to_own`), and the view's to the view's rows (`to_band`; -1 with no
    view or no such rows)."""
    take = np.asarray(take, dtype=np.float32).reshape(-1, np.shape(take)[-1])
    to_band = max_similarity(take[1], rows[in_band]) if len(take) > 1 else -1.0
    return max_similarity(take[0], rows[~in_band]), max_similarity(take[0], rows[own]), to_band


def max_similarity(probe: np.ndarray, history: np.ndarray | None) -> float:
    """The probe's highest cosine to any earlier fingerprint (-1 with no history).

    A non-finite similarity (a corrupt stored row) is treated as a match: it must not open the lock.
    """
    if history is None or len(history) == 0:
        return -1.0
    history = np.asarray(history, dtype=np.float32).reshape(-1, probe.size)
    sims = history @ probe.reshape(-1)
    if not np.all(np.isfinite(sims)):
        return float("inf")
    return float(sims.max())


@dataclass
class RememberedTakes:
    """A split's takes as the service fingerprints them, from their audio: every take as heard, in
    each view (`probes`, (N, V, D): the full band, then the band-limited view when the release has
    one) and, for the takes taken as remembered (rows `stored`), their fingerprint sets (`sets`,
    (G, V × S, D): the rows `views` gives at the S replay shifts)."""

    probes: np.ndarray
    stored: np.ndarray
    sets: np.ndarray

    def __post_init__(self) -> None:
        # (N, D) probes are takes of one view each
        self.probes = np.asarray(self.probes).reshape(len(self.probes), -1, np.shape(self.sets)[-1])

    def set_views(self, g: int) -> np.ndarray:
        """Remembered set `g` as (V, S, D): each view's rows at the shifts."""
        return self.sets[g].reshape(self.probes.shape[1], -1, self.sets.shape[-1])


def genuine_repeat_similarities(word: np.ndarray, speaker: np.ndarray, speakers: np.ndarray,
                                words: np.ndarray, served: RememberedTakes | None = None, view: int = 0) -> np.ndarray:
    """What the replay rule scores genuine new takes at, for each word of each speaker.

    Without `served`: the cosine of every pair of distinct takes (each take remembered as it came).
    With it: every other take of the word against each remembered take's set, in one `view` (0: the
    full band, 1: the band-limited one) — the rule the service applies once takes are remembered
    with their shifted copies."""
    if view and served is None:
        raise VoicelockError("a view other than the full band is only in remembered sets: pass `served`")
    if served is not None:
        out = [(probes[:, view] @ fingerprint_set[view].T).max(axis=1)
               for probes, fingerprint_set in _later_takes(served, speakers, words)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    fp = fingerprints(word, speaker)
    out = []
    for key in sorted(set(zip(speakers.tolist(), words.tolist()))):
        rows = np.flatnonzero((speakers == key[0]) & (words == key[1]))
        if rows.size < 2:
            continue
        sims = fp[rows] @ fp[rows].T
        out.append(sims[np.triu_indices(rows.size, k=1)])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _later_takes(served: RememberedTakes, speakers: np.ndarray,
                 words: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each remembered take's set, (V, S, D), with the fingerprints of the other takes of its speaker's
    word, (n, V, D): the genuine new takes that meet it."""
    for g, row in enumerate(served.stored.tolist()):
        others = np.flatnonzero((speakers == speakers[row]) & (words == words[row]))
        others = others[others != row]
        if others.size:
            yield served.probes[others], served.set_views(g)


def genuine_replay_refusals(served: RememberedTakes, speakers: np.ndarray, words: np.ndarray,
                            replays: Callable[[float, float, float], bool]) -> np.ndarray:
    """For each genuine new take against each earlier remembered take of its word: refused as a replay
    by the service's rule (`Verifier.replays`) — the full band against the set's full-band rows and
    the take's own fingerprint (row 0), the band-limited view against the view's rows. What is
    reported is then what the service does."""
    out = []
    for probes, fingerprint_set in _later_takes(served, speakers, words):
        for probe in probes:  # (V, D)
            full = fingerprint_set[0] @ probe[0]
            band = float((fingerprint_set[1] @ probe[1]).max()) if len(probe) > 1 else -1.0
            out.append(replays(float(full.max()), float(full[0]), band))
    return np.asarray(out, dtype=bool)


def calibrate_replay_threshold(genuine_repeats: np.ndarray, margin: float) -> float:
    """Just above the closest pair of genuine repeated takes, plus `margin` (capped below 1.0 so an
    exact copy, similarity 1.0, is always caught)."""
    if genuine_repeats.size == 0:
        raise VoicelockError("evaluate: no speaker has two takes of a word in the validation split — "
                             "the replay threshold cannot be calibrated; use a corpus with repeated takes")
    return float(min(float(np.max(genuine_repeats)) + margin, 0.9999))
