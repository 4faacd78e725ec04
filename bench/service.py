"""Load and fuzz the running voice-unlock service (only ever on this machine's loopback).

1. Enrolls a user from the owner's recordings, then drives POST /unlock with N concurrent clients for a
   bounded time and prints requests/s and p50/p99 latency (targets on 2 cores: p50 <= 20 ms,
   p99 <= 60 ms at 16 clients).
2. Sends at least 2,000 malformed requests of many kinds; the run fails unless every answer is below
   500 and the server is still healthy afterwards.

    python bench/service.py --url http://127.0.0.1:3000 [--api-key KEY] [--clients 16] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import soundfile as sf

from voicelock.errors import VoicelockError
from voicelock.features import load_split
from voicelock.params import load_params


def _wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


async def load(url: str, headers: dict, user: str, probe: bytes, clients: int, seconds: float,
               route: str = "/unlock") -> list[float]:
    latencies: list[float] = []
    failures: Counter = Counter()
    deadline = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = await c.post(f"{url}{route}", data={"user": user}, files={"file": ("p.wav", probe, "audio/wav")})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                failures[r.status_code] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    cpu = time.process_time()
    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as c:
        await asyncio.gather(*(worker(c) for _ in range(clients)))
    cpu = time.process_time() - cpu
    # The load generator shares the server's cores: say how much of them it took.
    print(f"load generator: {cpu / seconds:.2f} cores, {1000 * cpu / max(1, len(latencies)):.2f} ms CPU per request")
    if failures:
        print(f"non-200 answers under load: {dict(failures)}")
    return latencies


def malformed_requests(user: str, good: bytes, n: int, seed: int = 0) -> list[dict]:
    """A mix of broken uploads, broken forms and broken HTTP, each a kwargs dict for httpx."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    blobs = [
        b"", b"RIFF", good[:44], good[: len(good) // 3], good[:-7], b"\x00" * 5000, bytes(np_rng.bytes(4000)),
        b"fLaC" + bytes(np_rng.bytes(500)), b"OggS" + bytes(np_rng.bytes(500)), b"<html>not audio</html>",
        _wav(np.full(16000, np.nan, dtype=np.float32), subtype="FLOAT"),
        _wav(np.full(16000, np.inf, dtype=np.float32), subtype="FLOAT"),
        _wav(np.zeros(16000)), _wav(np.ones(10) * 0.5), _wav(np_rng.uniform(-1, 1, 16000), rate=8000),
        good[:20] + bytes(np_rng.bytes(3000)), good.replace(b"data", b"dada", 1),
    ]
    users = [user, "", " ", "a" * 5000, "../../etc/passwd", "ユーザー", "x;DROP TABLE enrollments", "\x00", "nobody"]
    kinds = []
    for i in range(n):
        kind = i % 12
        u = rng.choice(users)
        b = rng.choice(blobs)
        if kind == 0:
            kinds.append(dict(method="POST", path="/unlock", data={"user": u}, files={"file": ("f.wav", b)}))
        elif kind == 1:
            kinds.append(dict(method="POST", path="/enroll", data={"user": u},
                              files=[("files", (f"f{j}.wav", rng.choice(blobs))) for j in range(rng.randint(0, 12))]))
        elif kind == 2:
            kinds.append(dict(method="POST", path="/unlock", data={"usr": u}, files={"fil": ("f.wav", b)}))
        elif kind == 3:
            kinds.append(dict(method="POST", path="/unlock", content=b, headers={"Content-Type": "audio/wav"}))
        elif kind == 4:
            kinds.append(dict(method="POST", path="/unlock", content=b"--b\r\nContent-Disposition: form-data\r\n\r\n"
                              + b[:200], headers={"Content-Type": "multipart/form-data; boundary=b"}))
        elif kind == 5:
            kinds.append(dict(method="POST", path="/unlock", json={"user": u, "file": "/etc/passwd"}))
        elif kind == 6:
            kinds.append(dict(method="POST", path="/enroll", json={"user": u, "files": [1, 2, {"x": None}]}))
        elif kind == 7:
            kinds.append(dict(method=rng.choice(["GET", "PUT", "PATCH"]), path=rng.choice(["/unlock", "/enroll"])))
        elif kind == 8:
            kinds.append(dict(method="DELETE", path="/users/" + rng.choice(["nobody", "%00", "a" * 300, "..%2F.."])))
        elif kind == 9:
            kinds.append(dict(method="POST", path="/unlock", content=bytes(np_rng.bytes(rng.randint(0, 2000))),
                              headers={"Content-Type": rng.choice(["multipart/form-data", "application/json",
                                                                   "text/plain", "application/x-www-form-urlencoded"])}))
        elif kind == 10:
            kinds.append(dict(method="POST", path="/unlock", data={"user": u},
                              files={"file": ("f.wav", b, rng.choice(["image/png", "audio/wav", ""]))}))
        else:
            kinds.append(dict(method="GET", path=rng.choice(["/nope", "/users", "/users/", "/%ff", "/docs.json"])))
    return kinds


async def fuzz(url: str, headers: dict, requests: list[dict], clients: int) -> Counter:
    statuses: Counter = Counter()
    queue = list(requests)

    async def worker(c: httpx.AsyncClient) -> None:
        while queue:
            spec = dict(queue.pop())
            method, path = spec.pop("method"), spec.pop("path")
            extra = spec.pop("headers", {})
            try:
                r = await c.request(method, f"{url}{path}", headers={**headers, **extra}, **spec)
                statuses[r.status_code] += 1
            except httpx.HTTPError as e:
                statuses[f"client error: {type(e).__name__}"] += 1

    async with httpx.AsyncClient(timeout=30) as c:
        await asyncio.gather(*(worker(c) for _ in range(clients)))
    return statuses


def find_probe(c: httpx.Client, url: str, params) -> tuple[bytes, str] | None:
    """Enroll the bench user and return a recording that unlocks it.

    A user who keeps failing is locked out (429), which would end the load test early, so the load
    test times a probe that unlocks (the whole path runs either way: decode, features, both
    embeddings, scoring, database). Speakers in order: the owner, then the test speakers saying the
    password; each is enrolled from 3 takes (re-enrolling clears the failure count) and tried with
    at most lockout_failures - 1 of those takes, the likeliest to unlock."""
    word = params.owner.password
    speakers = [(sorted((Path(params.owner.out_dir) / word).glob("*.wav")), "an owner enrollment take")]
    try:  # the test split as the pipeline made it, for any corpus
        index = load_split(params.features.out_dir, "testing").index
    except VoicelockError:
        index = None
    if index is not None:
        takes = index[index["word"] == word].sort_values(["speaker", "utterance"]).groupby("speaker")["path"]
        speakers += [([Path(params.data.raw_dir) / p for p in paths], f"an enrollment take of test speaker {s}")
                     for s, paths in takes]
    for clips, what in speakers:
        if len(clips) < 3:
            continue
        r = c.post(f"{url}/enroll", data={"user": "bench"},
                   files=[("files", (p.name, p.read_bytes(), "audio/wav")) for p in clips[:3]])
        if r.status_code != 200:
            continue
        for path in clips[: min(3, params.service.lockout_failures - 1)]:
            answer = c.post(f"{url}/unlock", data={"user": "bench"},
                            files={"file": ("p.wav", path.read_bytes(), "audio/wav")}).json()
            if answer.get("unlocked"):
                return path.read_bytes(), what
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fuzz", type=int, default=2400)
    args = parser.parse_args()
    host = urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("refusing to load anything but a service on this machine's loopback")
    params = load_params()
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(headers=headers, timeout=60) as c:
        found = find_probe(c, args.url, params)
    if found is None:
        sys.exit("no speaker's recording unlocks their own enrollment, so the load test would only measure "
                 "the lockout")
    probe, what = found
    print(f"probe: {what}")
    lat = asyncio.run(load(args.url, headers, "bench", probe, args.clients, args.seconds))
    if lat:
        p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99])
        print(f"/unlock, {args.clients} concurrent clients, {args.seconds:g} s: {len(lat) / args.seconds:.1f} req/s, "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets: p50 <= 20 ms, p99 <= 60 ms)")
    statuses = asyncio.run(fuzz(args.url, headers, malformed_requests("bench", probe, args.fuzz), args.clients))
    server_errors = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
    healthy = httpx.get(f"{args.url}/healthz", timeout=10).status_code == 200
    print(f"fuzz: {sum(statuses.values())} malformed requests, answers {dict(sorted(statuses.items(), key=str))}")
    print(f"fuzz: {server_errors} answers >= 500, server healthy afterwards: {healthy}")
    if server_errors or not healthy:
        sys.exit(1)


if __name__ == "__main__":
    main()
