"""The real download path, against a local HTTP server on 127.0.0.1 serving an archive the test builds."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_params_dict, write_params
from voicelock.data.acquire import acquire_corpus
from voicelock.data.download import download, extract
from voicelock.errors import VoicelockError
from voicelock.params import load_params


class ArchiveServer(ThreadingHTTPServer):
    """Serves one payload with HTTP Range support; can cut the first transfer short to test resuming."""

    def __init__(self, payload: bytes, cut_first_after: int | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        self.cut_first_after = cut_first_after
        self.range_headers: list[str | None] = []
        self.requests = 0  # every GET, answered or refused

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/speech_commands_test.tar.gz"


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.requests += 1
        if not self.path.endswith(".tar.gz"):
            self.send_error(404)
            return
        payload = self.server.payload
        header = self.headers.get("Range")
        self.server.range_headers.append(header)
        start = int(header.split("=")[1].split("-")[0]) if header else 0
        if start >= len(payload):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.end_headers()
            return
        body = payload[start:]
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut_first_after
        if cut is not None:
            self.server.cut_first_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes, cut_first_after: int | None = None) -> ArchiveServer:
        server = ArchiveServer(payload, cut_first_after)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    import soundfile as sf

    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_archive(extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A tiny Speech Commands-like archive: two words, two speakers, split lists, background noise."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {f"{w}/{s}_nohash_0.wav": _wav_bytes() for w in ("yes", "no") for s in ("aaaa1111", "bbbb2222")}
        files["_background_noise_/white.wav"] = _wav_bytes(2.0)
        files["validation_list.txt"] = b"yes/bbbb2222_nohash_0.wav\nno/bbbb2222_nohash_0.wav\n"
        files["testing_list.txt"] = b""
        # Incompressible padding so a transfer can be cut in the middle of real bytes.
        files["LICENSE"] = rng.bytes(200_000)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _params_for(tmp_path: Path, url: str, sha: str):
    raw = tiny_params_dict(tmp_path)
    raw["data"]["source"] = "speech_commands"
    raw["data"]["speech_commands"].update({"url": url, "sha256": sha, "retries": 3, "timeout_s": 5})
    return load_params(write_params(tmp_path, raw))


def test_download_verify_extract_success(tmp_path: Path, serve):
    payload = make_archive()
    server = serve(payload)
    params = _params_for(tmp_path, server.url, _sha(payload))
    root = acquire_corpus(params)
    assert sorted(p.name for p in (root / "yes").iterdir()) == ["aaaa1111_nohash_0.wav", "bbbb2222_nohash_0.wav"]
    assert (root / "_background_noise_" / "white.wav").exists()
    archive = tmp_path / "downloads" / "speech_commands_test.tar.gz"
    assert _sha(archive.read_bytes()) == _sha(payload)
    # A second run reuses the verified archive: no new request.
    requests = len(server.range_headers)
    acquire_corpus(params)
    assert len(server.range_headers) == requests


def test_checksum_mismatch_leaves_nothing_behind(tmp_path: Path, serve):
    server = serve(make_archive())
    params = _params_for(tmp_path, server.url, "0" * 64)
    with pytest.raises(VoicelockError, match="checksum mismatch"):
        acquire_corpus(params)
    assert not (tmp_path / "raw").exists()
    assert list((tmp_path / "downloads").iterdir()) == []


def test_interrupted_transfer_resumes_with_range(tmp_path: Path, serve):
    payload = make_archive()
    server = serve(payload, cut_first_after=len(payload) // 3)
    dest = download(server.url, tmp_path / "a.tar.gz", _sha(payload), retries=2, timeout_s=5, backoff_s=0.01)
    assert dest.read_bytes() == payload
    assert server.range_headers[0] is None
    assert server.range_headers[1] == f"bytes={len(payload) // 3}-"
    assert not (tmp_path / "a.tar.gz.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path: Path, serve):
    payload = make_archive()
    server = serve(payload)
    (tmp_path / "a.tar.gz.part").write_bytes(payload[:1000])
    download(server.url, tmp_path / "a.tar.gz", _sha(payload), retries=0, timeout_s=5)
    assert server.range_headers == ["bytes=1000-"]


def test_unreachable_server_fails_clearly(tmp_path: Path):
    with pytest.raises(VoicelockError, match="after 1 retries"):
        download("http://127.0.0.1:9/x.tar.gz", tmp_path / "x.tar.gz", "0" * 64, retries=1, timeout_s=1,
                 backoff_s=0.01)


def test_a_cut_download_keeps_its_partial_file_and_the_next_run_resumes_it(tmp_path: Path, serve):
    payload = make_archive()
    sha = hashlib.sha256(payload).hexdigest()
    server = serve(payload, cut_first_after=1000)
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(VoicelockError, match=r"after 0 retries.*partial file .*a\.tar\.gz\.part is kept"):
        download(server.url, dest, sha, retries=0, timeout_s=5, backoff_s=0.01)
    part = dest.with_name("a.tar.gz.part")
    assert part.read_bytes() == payload[:1000]
    download(server.url, dest, sha, retries=0, timeout_s=5)  # "re-run to resume"
    assert dest.read_bytes() == payload and server.range_headers[-1] == "bytes=1000-"


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../evil.wav", tarfile.REGTYPE, "escape"),
        ("/etc/evil.wav", tarfile.REGTYPE, "escape"),
        ("yes/link.wav", tarfile.SYMTYPE, "is a link"),
        ("yes/hard.wav", tarfile.LNKTYPE, "is a link"),
        ("yes/fifo", tarfile.FIFOTYPE, "not a regular file"),
    ],
)
def test_hostile_members_are_refused(tmp_path: Path, name, kind, message):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = 4 if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "../../outside.wav"
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_archive(extra=[info]))
    target = tmp_path / "sub" / "raw"
    with pytest.raises(VoicelockError, match=message):
        extract(archive, target)
    assert not target.exists()
    assert not (tmp_path / "sub" / "evil.wav").exists() and not (tmp_path / "evil.wav").exists()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == []  # no staging folder left


def test_damaged_archive_is_a_clear_error(tmp_path: Path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(make_archive()[:5000])
    with pytest.raises(VoicelockError, match="damaged archive"):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_http_404_is_not_retried(tmp_path: Path, serve):
    server = serve(make_archive())
    with pytest.raises(VoicelockError, match="HTTP 404.*data.speech_commands.url"):
        download(server.url + ".missing", tmp_path / "e.tar.gz", "0" * 64, retries=3)
    assert server.requests == 1  # one request: a 404 is final, never retried
