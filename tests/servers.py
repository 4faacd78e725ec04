"""Starting and stopping the real servers the tests talk to (BentoML, Prefect), on 127.0.0.1 only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


@dataclass
class Server:
    """`bentoml serve service.service:VoiceLock` on 127.0.0.1, as the README starts it."""

    url: str
    env: dict
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.proc = start(
            [str(BIN / "bentoml"), "serve", "service.service:VoiceLock", "--host", "127.0.0.1", "--port", port],
            self.log, cwd=REPO, env=self.env)
        wait_healthy(f"{self.url}/readyz", self.proc, self.log)

    def stop(self) -> None:
        stop(self.proc)


def serve_model(params_path: Path, home: Path, extra_env: dict | None = None) -> Server:
    """Package and promote the evaluated model of `params_path` into a BentoML home of its own (as
    `make repro` does), then start the service on it."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "VOICELOCK_PARAMS": str(params_path), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           **(extra_env or {})}
    for cmd in ([sys.executable, "stages/package.py", "--params", str(params_path)],
                [str(BIN / "voicelock"), "--params", str(params_path), "promote"]):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    server = Server(f"http://127.0.0.1:{free_port()}", env, home / "serve.log")
    server.start()
    return server
