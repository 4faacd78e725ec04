"""The service's logic without HTTP: users, uploads, persistence and the lockout, on the tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicelock.enrollment import Template, VoiceLock
from voicelock.errors import LockedOut, NotFound, TooLarge, VoicelockError
from voicelock.params import Params
from voicelock.store import EnrollmentStore
from voicelock.unlock_service import UnlockService


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wav_bytes(samples: np.ndarray, rate: int = 16000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture
def service(trained: Params, tmp_path: Path) -> tuple[UnlockService, Clock]:
    lock = VoiceLock(trained.evaluate.out_dir, trained.enroll)
    clock = Clock()
    return UnlockService(lock, EnrollmentStore(f"sqlite:///{tmp_path / 'db.sqlite'}"), trained, "voicelock:t1",
                         clock), clock


def owner_files(params: Params, word: str) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((Path(params.owner.out_dir) / word).glob("*.wav"))]


def test_enroll_persist_unlock_delete(service, trained: Params, tmp_path: Path):
    core, _ = service
    files = owner_files(trained, trained.owner.password)
    assert core.enroll("alice", files[:3]) == {"enrolled": True, "user": "alice", "clips": 3}
    # A new store on the same database sees the enrollment: it survives a restart.
    again = EnrollmentStore(f"sqlite:///{tmp_path / 'db.sqlite'}").get("alice")
    assert again is not None and isinstance(again[0], Template) and again[1] == "voicelock:t1"
    answer = core.unlock("alice", "probe.wav", files[4][1])
    assert set(answer) >= {"unlocked", "word_score", "speaker_score", "thresholds", "reason"}
    assert core.delete("alice") == {"deleted": True, "user": "alice"}
    with pytest.raises(NotFound):
        core.unlock("alice", "probe.wav", files[4][1])
    with pytest.raises(NotFound):
        core.delete("alice")


def test_lockout_after_consecutive_failures_then_expiry(service, trained: Params):
    core, clock = service
    files = owner_files(trained, trained.owner.password)
    core.enroll("bob", files[:3])
    # Force rejections: a template nobody can match (opposite of the enrolled one).
    template, model = core.store.get("bob")
    core.store.save("bob", Template([-x for x in template.word], [-x for x in template.speaker], 3), model)
    failures = trained.service.lockout_failures
    for i in range(failures):
        answer = core.unlock("bob", "probe.wav", files[4][1])
        assert answer["unlocked"] is False
    assert "locked for" in answer["reason"]
    with pytest.raises(LockedOut) as locked:
        core.unlock("bob", "probe.wav", files[4][1])
    assert locked.value.status == 429 and 0 < locked.value.retry_after_s <= trained.service.lockout_seconds
    clock.now += trained.service.lockout_seconds + 1
    assert core.unlock("bob", "probe.wav", files[4][1])["unlocked"] is False  # unlocked again, counting anew


def test_bad_uploads_are_refused_with_reasons(service, trained: Params):
    core, _ = service
    files = owner_files(trained, trained.owner.password)
    good = files[0][1]
    cases = {
        "empty": (b"", "empty file"),
        "text": (b"this is not audio at all" * 10, "not a readable"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "silent": (wav_bytes(np.zeros(16000)), "no speech"),
        "short": (wav_bytes(0.1 * np.ones(1000)), "too short"),
        "nan": (wav_bytes(np.full(16000, np.nan, dtype=np.float32), subtype="FLOAT"), "NaN"),
    }
    for name, (blob, message) in cases.items():
        with pytest.raises(VoicelockError, match=message):
            core.enroll("carol", [(name, blob), files[1], files[2]])
    with pytest.raises(VoicelockError, match="needs 3–10 recordings, got 2"):
        core.enroll("carol", files[:2])
    with pytest.raises(VoicelockError, match="needs 3–10 recordings, got 11"):
        core.enroll("carol", [files[0]] * 11)
    with pytest.raises(TooLarge):
        core.enroll("carol", [("big", b"\0" * (trained.service.max_file_bytes + 1)), files[1], files[2]])
    for user in ("", "../etc", "a" * 200, "semi;colon"):
        with pytest.raises(VoicelockError, match="user"):
            core.enroll(user, files[:3])
    with pytest.raises(NotFound):
        core.unlock("nobody", "probe.wav", good)


def test_any_rate_stereo_flac_and_ogg_are_accepted(service, trained: Params):
    core, _ = service
    x, _ = sf.read(Path(trained.owner.out_dir) / trained.owner.password /
                   sorted(p.name for p in (Path(trained.owner.out_dir) / trained.owner.password).iterdir())[0])
    import torch
    import torchaudio

    x48 = torchaudio.functional.resample(torch.from_numpy(x).float(), 16000, 48000).numpy()
    stereo = np.stack([x48, x48], axis=1)
    uploads = [("a.wav", wav_bytes(stereo, 48000)), ("b.flac", wav_bytes(stereo, 48000, "FLAC")),
               ("c.ogg", wav_bytes(x48, 48000, "OGG", "VORBIS"))]
    assert core.enroll("dave", uploads)["enrolled"] is True


def test_table_creation_retries_when_another_worker_won_the_race(tmp_path: Path, monkeypatch):
    # Two BentoML workers on a new SQLite file: one died with "table enrollments already exists".
    from sqlalchemy.exc import OperationalError

    from voicelock import store

    real, calls = store.metadata.create_all, []

    def racing(engine):
        calls.append(1)
        if len(calls) == 1:  # as if another process created the table between check and CREATE
            real(engine)
            raise OperationalError("CREATE TABLE enrollments", {}, Exception("table enrollments already exists"))
        real(engine)

    monkeypatch.setattr(store.metadata, "create_all", racing)
    EnrollmentStore(f"sqlite:///{tmp_path / 'e.db'}")
    assert len(calls) == 2
