"""The floor under bench/service.py: BentoML's own cost per /unlock request on these cores.

Starts bench/floor_service.py (the same multipart signature and request guard as the real service,
doing no work, 2 workers) on 127.0.0.1, drives it exactly as bench/service.py drives the real service,
and prints requests/s and p50/p99 per route. Latency the floor already spends is latency no model
change can win back.

    python bench/framework_floor.py [--clients 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.service import load  # noqa: E402 — the same load generator as the real benchmark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe() -> bytes:
    """One second of a 16 kHz 16-bit WAV: the size of a real unlock upload."""
    t = np.arange(16000) / 16000
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{_free_port()}"
    cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", "bench.floor_service:Floor",
           "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("the floor service did not start")
            time.sleep(0.5)
        probe = _probe()
        for route in ("/unlock", "/unlock_async"):
            lat = asyncio.run(load(url, {}, "floor", probe, args.clients, args.seconds, route=route))
            p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99])
            print(f"floor {route}, {args.clients} concurrent clients, {args.seconds:g} s: "
                  f"{len(lat) / args.seconds:.1f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
