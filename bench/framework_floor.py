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
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.service import _wav, load  # noqa: E402 — the same load generator and WAV writer as the real benchmark
from tests.servers import BIN, free_port, start, stop, wait_healthy  # noqa: E402 — how the tests run servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="voicelock-floor-")) / "serve.log"
    proc = start([str(BIN / "bentoml"), "serve", "bench.floor_service:Floor", "--host", "127.0.0.1",
                  "--port", str(port)], log, cwd=REPO,
                 env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})
    try:
        wait_healthy(f"{url}/readyz", proc, log)
        # One second of a 16 kHz 16-bit WAV: the size of a real unlock upload.
        probe = _wav(0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000))
        for route in ("/unlock", "/unlock_async"):
            lat = asyncio.run(load(url, {}, "floor", probe, args.clients, args.seconds, route=route))
            p50, p99 = np.percentile(np.array(lat) * 1000, [50, 99])
            print(f"floor {route}, {args.clients} concurrent clients, {args.seconds:g} s: "
                  f"{len(lat) / args.seconds:.1f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
