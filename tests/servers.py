"""Starting and stopping the real servers the tests talk to (BentoML, Prefect), on 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
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


PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))  # Debian's postgresql package (scripts/setup.sh)


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster in a fresh temporary folder, listening on 127.0.0.1 only, with a
    trust-auth database `voicelock`; `stop` removes it. As root the server runs as the `postgres`
    user (initdb refuses root), so the folder is its own, outside pytest's root-only tmp_path."""

    root: Path | None = None
    port: int = 0

    def _run(self, *cmd: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(as_postgres + list(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://voicelock@127.0.0.1:{self.port}/voicelock"

    def start(self) -> "Postgres":
        if not PG_BIN:
            raise RuntimeError("PostgreSQL is not installed — run scripts/setup.sh (it installs Debian's postgresql)")
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="voicelock-pg-"))
        bin_dir, data = PG_BIN[-1], self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.port = free_port()
        self._run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "voicelock", "--no-sync")
        self._run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200", "start")
        self._run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "voicelock", "voicelock")
        return self

    def stop(self) -> None:
        if self.port:
            self._run(str(PG_BIN[-1] / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
            self.port = 0
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
