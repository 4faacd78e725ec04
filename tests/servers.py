"""Starting and stopping the real servers the tests talk to (BentoML, Prefect), on 127.0.0.1 only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, **popen) -> subprocess.Popen:
    """Start a server in its own process group (so stopping it ends its workers too)."""
    return subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True, **popen)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or never does."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM the server's process group, SIGKILL if it has not ended in 20 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
