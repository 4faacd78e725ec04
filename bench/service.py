"""Load and fuzz the running voice-unlock service (only ever on this machine's loopback).

1. Enrolls a user from the owner's recordings, then drives POST /unlock with N concurrent clients for a
   bounded time and prints requests/s and p50/p99 latency (targets on 2 cores: p50 <= 20 ms,
   p99 <= 60 ms at 16 clients). The probe unlocks once; its repeats are then refused as replays after
   the whole path has run (decode, features, embeddings, scoring, database), so the service under load
   should have a high `service.lockout_failures` (`--serve` starts one so, see below).
2. Sends at least 5,000 malformed and hostile requests of many kinds — broken uploads and forms,
   float WAVs scaled to 1e20 and beyond, FLAC bombs, odd and absurd sample rates, 300-character file
   names, odd and whitespace user names, forged proofs — while a watcher in a process of its own
   polls /healthz every 50 ms.
   The run fails unless every answer is below 500, /healthz answered within 100 ms throughout, and the
   workers' memory is back within 200 MB of its baseline afterwards.

    python bench/service.py --url http://127.0.0.1:3000 [--api-key KEY] [--clients 16] [--seconds 20]
    python bench/service.py --url http://127.0.0.1:3000 --url http://127.0.0.1:3001   # load spread over replicas
    python bench/service.py --serve     # starts `bentoml serve` itself (the promoted model, a scratch
                                        # database, lockout_failures 10^9), measures, stops it
    python bench/service.py --scaleout  # one run: the load test on one `bentoml serve` over SQLite, then on
                                        # one over PostgreSQL, two over one throw-away PostgreSQL; prints the ratios
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.servers import BIN, free_port, start, stop, wait_healthy  # noqa: E402 — how the tests run servers
from tests.test_audio_bounds import flac, flac_bomb, set_total_samples, wav  # noqa: E402 — the tests' crafted files
from voicelock.audio import resample  # noqa: E402
from voicelock.errors import VoicelockError  # noqa: E402
from voicelock.features import load_split  # noqa: E402
from voicelock.params import load_params  # noqa: E402


def _wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


async def load(urls: str | list[str], headers: dict, user: str, probe: bytes, clients: int, seconds: float,
               route: str = "/unlock") -> list[float]:
    """Each client sends to one of `urls` in turn (client i to urls[i % len]): replicas share the load."""
    urls = [urls] if isinstance(urls, str) else urls
    latencies: list[float] = []
    failures: Counter = Counter()
    deadline = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient, url: str) -> None:
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
        await asyncio.gather(*(worker(c, urls[i % len(urls)]) for i in range(clients)))
    cpu = time.process_time() - cpu
    # The load generator shares the server's cores: say how much of them it took.
    print(f"load generator: {cpu / seconds:.2f} cores, {1000 * cpu / max(1, len(latencies)):.2f} ms CPU per request")
    if failures:
        print(f"non-200 answers under load: {dict(failures)}")
    return latencies


def hostile_blobs(good: bytes) -> list[bytes]:
    """The security probe's crafted files: overflowing float WAVs, FLAC bombs, odd and absurd rates."""
    x = sf.read(io.BytesIO(good), dtype="float32")[0]
    bomb = flac_bomb(30)  # 30 min of one constant sample in ~90 kB
    return [
        _wav(x * 1e20, subtype="FLOAT"), _wav(x * 1e30, subtype="FLOAT"), _wav(x * 1e37, subtype="FLOAT"),
        _wav(np.full(16000, 1e38, dtype=np.float32), subtype="FLOAT"),
        bomb, set_total_samples(bomb, 0), set_total_samples(bomb, 16000),  # honest, unknown, lying length
        set_total_samples(flac(np.zeros(800)), (1 << 36) - 1),  # 2^36 samples declared
        _wav(resample(x, 16000, 16001), rate=16001), _wav(resample(x, 16000, 48001), rate=48001),
        wav(1_000_003), wav(7999), wav(10_000_000), wav(16000, channels=64), wav(16000, channels=1024, frames=10),
    ]


def malformed_requests(user: str, good: bytes, n: int, seed: int = 0) -> list[dict]:
    """A mix of broken uploads, broken forms, broken HTTP and crafted attacks, each a kwargs dict for
    httpx."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    hostile = hostile_blobs(good)
    odd_users = ["123", "1e5", "true", "null", " bench ", "bench\n", "\tbench", '"bench"', "[1]"]
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
        kind = i % 16
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
        elif kind == 12:  # crafted audio under a long or odd file name
            name = rng.choice(["a" * 300 + ".wav", "é" * 200, "../../etc/passwd", "x.flac"])
            kinds.append(dict(method="POST", path="/unlock", data={"user": rng.choice([user, "nobody"])},
                              files={"file": (name, rng.choice(hostile))}))
        elif kind == 13:  # enrollment of crafted files, up to ten bombs at once
            kinds.append(dict(method="POST", path="/enroll", data={"user": f"fuzz{rng.randint(0, 10**6)}"},
                              files=[("files", (f"b{j}.flac", rng.choice(hostile))) for j in range(rng.randint(3, 10))]))
        elif kind == 14:  # odd and whitespace user names, on every route that takes one
            route = rng.choice(["/unlock", "/challenge", "/enroll"])
            files = {"file": ("f.wav", good)} if route == "/unlock" else \
                [("files", ("f.wav", good))] * 3 if route == "/enroll" else None
            kinds.append(dict(method="POST", path=route, data={"user": rng.choice(odd_users)}, files=files))
        elif kind == 15:  # takeover attempts: re-enroll or delete the bench user with no or forged proof
            forged = rng.choice([{}, {"X-Unlock-Token": "forged"}, {"X-Admin-Key": "guess"}, {"X-Unlock-Token": ""}])
            if rng.random() < 0.5:
                kinds.append(dict(method="POST", path="/enroll", data={"user": user}, headers=forged,
                                  files=[("files", (f"t{j}.wav", good)) for j in range(3)]))
            else:
                kinds.append(dict(method="DELETE", path=f"/users/{user}", headers=forged))
        else:
            kinds.append(dict(method="GET", path=rng.choice(["/nope", "/users", "/users/", "/%ff", "/docs.json"])))
    return kinds


def server_memory_kb(field: str = "VmRSS") -> dict[int, int]:
    """Resident memory of each `bentoml serve` process of this checkout (server and workers), in kB, by
    pid; empty when there is none to see (a service in another container). `field` is a line of
    /proc/PID/status: VmRSS (all resident pages), RssAnon (the heap: what the processes allocated) or
    RssFile (pages of mapped files — torch's shared libraries count here as their code is first run)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"bentoml" not in cmdline or not (b"serve" in cmdline or b"_bentoml_impl" in cmdline):
                continue
            if Path(f"/proc/{pid}/cwd").resolve() != REPO:  # another checkout's (or session's) server
                continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found[int(pid)] = next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field + ":"))
    return found


def server_rss_mb(field: str = "VmRSS") -> float | None:
    """All of this checkout's `bentoml serve` processes together, in MB (None: none visible)."""
    found = server_memory_kb(field)
    return sum(found.values()) / 1024 if found else None


def memory_mb() -> dict[str, float | None]:
    return {field: server_rss_mb(field) for field in ("VmRSS", "RssAnon", "RssFile")}


def largest_growth_mb(before: dict[int, int], after: dict[int, int]) -> float | None:
    """The most any one process (a worker) grew, in MB: the issue's bar is per worker."""
    grown = [after[pid] - before[pid] for pid in before.keys() & after.keys()]
    return max(grown) / 1024 if grown else None


def poll_health(url: str, stop_event, latencies) -> None:
    """In a process of its own (so the fuzzer's busy event loop and GIL are not in the figure): GET
    /healthz every 50 ms until stopped; a request that fails counts as 10 s."""
    with httpx.Client(timeout=10) as c:
        while not stop_event.is_set():
            t0 = time.perf_counter()
            try:
                ok = c.get(f"{url}/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0 if ok else 10.0)
            time.sleep(0.05)


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


def find_probe(c: httpx.Client, url: str, params) -> tuple[bytes, str, str] | None:
    """Enroll a bench user and return (a recording that unlocks it, what it is, the user).

    A user who keeps failing is locked out (429), which would end the load test early, so the load
    test times a probe that unlocked once (the whole path runs either way — decode, features, both
    embeddings, scoring, replay check, database — and its repeats are then refused as replays).
    Speakers in order: the owner, then the test speakers saying the password; each is enrolled as a
    user of its own from 3 takes and tried with at most lockout_failures - 1 other takes."""
    word = params.owner.password
    speakers = [(sorted((Path(params.owner.out_dir) / word).glob("*.wav")), "a held-out owner take")]
    try:  # the test split as the pipeline made it, for any corpus
        index = load_split(params.features.out_dir, "testing").index
    except VoicelockError:
        index = None
    if index is not None:
        takes = index[index["word"] == word].sort_values(["speaker", "utterance"]).groupby("speaker")["path"]
        speakers += [([Path(params.data.raw_dir) / p for p in paths], f"a held-out take of test speaker {s}")
                     for s, paths in takes]
    for i, (clips, what) in enumerate(speakers):
        if len(clips) < 4:
            continue
        user = f"bench-{i}-{random.randrange(10**9)}"
        r = c.post(f"{url}/enroll", data={"user": user},
                   files=[("files", (p.name, p.read_bytes(), "audio/wav")) for p in clips[:3]])
        if r.status_code != 200:
            continue
        for path in clips[3: 3 + min(3, params.service.lockout_failures - 1)]:
            answer = c.post(f"{url}/unlock", data={"user": user},
                            files={"file": ("p.wav", path.read_bytes(), "audio/wav")}).json()
            if answer.get("unlocked"):
                return path.read_bytes(), what, user
    return None


def serve_for_bench(params_path: Path, replicas: int = 1, database_url: str | None = None) -> tuple[list[str], list]:
    """`bentoml serve` of the promoted model — `replicas` of them on their own ports over one database
    (default: a scratch SQLite file) — with a lockout that never triggers (the load test repeats one
    probe; the fuzz guesses wrong thousands of times). Their URLs and processes."""
    root = Path(tempfile.mkdtemp(prefix="voicelock-bench-"))
    raw = yaml.safe_load(params_path.read_text())
    raw["service"].update(lockout_failures=10**9, database_url=database_url or f"sqlite:///{root / 'enrollments.db'}")
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    urls, procs = [], []
    for i in range(replicas):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = root / f"serve{i}.log"
        procs.append(start([str(BIN / "bentoml"), "serve", "service.service:VoiceLock", "--host", "127.0.0.1",
                            "--port", str(port)], log, cwd=REPO,
                           env={**os.environ, "BENTOML_DO_NOT_TRACK": "true",
                                "VOICELOCK_PARAMS": str(root / "params.yaml")}))
        wait_healthy(f"{url}/readyz", procs[-1], log)
        urls.append(url)
    return urls, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help="a running service (repeat for replicas sharing the load; "
                                                       "default http://127.0.0.1:3000)")
    parser.add_argument("--serve", action="store_true", help="start `bentoml serve` for the run, then stop it")
    parser.add_argument("--scaleout", action="store_true",
                        help="load test only: one replica over SQLite, then two over PostgreSQL, in one run")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fuzz", type=int, default=5000, help="hostile requests after the load test (0: none)")
    args = parser.parse_args()
    if args.scaleout:
        return scaleout(args)
    args.url = args.url or ["http://127.0.0.1:3000"]
    procs: list = []
    if args.serve:
        args.url, procs = serve_for_bench(args.params)
    try:
        run(args)
    finally:
        for proc in procs:
            stop(proc)


def scaleout(args: argparse.Namespace) -> None:
    """The same load generator against one replica over SQLite, one over PostgreSQL (the database's
    share) and two over one PostgreSQL (the replicas' share); ratios to the first."""
    from tests.servers import Postgres

    figures = {}
    for name, replicas, postgres in (("1 replica, SQLite", 1, False), ("1 replica, PostgreSQL", 1, True),
                                     ("2 replicas, one PostgreSQL", 2, True)):
        database = Postgres().start() if postgres else None
        urls, procs = serve_for_bench(args.params, replicas, database.url if database else None)
        try:
            print(f"--- {name}")
            figures[name] = load_test(args, urls)[:3]
        finally:
            for proc in procs:
                stop(proc)
            if database is not None:
                database.stop()
    base = next(iter(figures.values()))
    for name, (rate, p50, p99) in list(figures.items())[1:]:
        print(f"{name} / 1 replica, SQLite: {rate / base[0]:.2f}x req/s, p50 {p50 / base[1]:.2f}x, "
              f"p99 {p99 / base[2]:.2f}x")
    print(f"(one machine, {os.cpu_count()} cores for everything: replicas add processes, not cores)")


def load_test(args: argparse.Namespace, urls: list[str]) -> tuple[float, float, float, str, bytes]:
    """Enroll a probe's speaker (on the first URL) and load all URLs; (req/s, p50 ms, p99 ms, user, probe)."""
    params = load_params(args.params)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(headers=headers, timeout=60) as c:
        found = find_probe(c, urls[0], params)
    if found is None:
        sys.exit("no speaker's recording unlocks their own enrollment, so the load test would only measure "
                 "the lockout")
    probe, what, user = found
    print(f"probe: {what}")
    lat = asyncio.run(load(urls, headers, user, probe, args.clients, args.seconds))
    if not lat:
        sys.exit("no request succeeded under load")
    p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99])
    rate = len(lat) / args.seconds
    print(f"/unlock over {len(urls)} URL(s), {args.clients} concurrent clients, {args.seconds:g} s: {rate:.1f} req/s, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets: p50 <= 20 ms, p99 <= 60 ms)")
    return rate, p50, p99, user, probe


def run(args: argparse.Namespace) -> None:
    for url in args.url:
        if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("refusing to load anything but a service on this machine's loopback")
    *_, user, probe = load_test(args, args.url)
    if args.fuzz <= 0:
        return
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    url = args.url[0]
    baseline, baseline_parts, baseline_each = server_rss_mb(), memory_mb(), server_memory_kb()
    requests = malformed_requests(user, probe, args.fuzz)
    with multiprocessing.Manager() as manager:
        stop_event, shared = manager.Event(), manager.list()
        watcher = multiprocessing.Process(target=poll_health, args=(url, stop_event, shared))
        watcher.start()
        t0 = time.perf_counter()
        statuses = asyncio.run(fuzz(url, headers, requests, args.clients))
        elapsed = time.perf_counter() - t0
        stop_event.set()
        watcher.join()
        health = list(shared)
    time.sleep(2)  # let the workers finish abandoned work and free it
    after, after_parts, after_each = server_rss_mb(), memory_mb(), server_memory_kb()
    server_errors = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
    healthy = httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    worst = max(health) * 1000 if health else float("inf")
    print(f"fuzz: {sum(statuses.values())} malformed and hostile requests in {elapsed:.0f} s, answers "
          f"{dict(sorted(statuses.items(), key=str))}")
    print(f"fuzz: {server_errors} answers >= 500, server healthy afterwards: {healthy}")
    print(f"fuzz: /healthz polled {len(health)} times meanwhile: p50 {np.median(health) * 1000:.1f} ms, "
          f"max {worst:.1f} ms (target: max <= 100 ms)")
    grew = largest_growth_mb(baseline_each, after_each)
    print("fuzz: worker memory " + ("not visible from here" if grew is None else
                                     f"grew at most {grew:+.0f} MB in one process (target <= +200); all "
                                     f"{len(after_each)} processes together {baseline:.0f} MB before, {after:.0f} MB "
                                     f"after ({after - baseline:+.0f} MB)"))
    if grew is not None:
        print("fuzz: of which " + ", ".join(f"{k} {after_parts[k] - baseline_parts[k]:+.0f} MB"
                                            for k in ("RssAnon", "RssFile") if after_parts[k] is not None))
    if server_errors or not healthy or worst > 100 or (grew is not None and grew > 200):
        sys.exit(1)


if __name__ == "__main__":
    main()
