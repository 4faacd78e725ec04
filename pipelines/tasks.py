"""Prefect tasks: thin calls into DVC and the core package.

Each DVC stage runs as `dvc repro --single-item <stage>`, so DVC decides exactly as `dvc repro` would
whether the stage is up to date (and skips it), and dvc.lock stays the record of every run.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.states import Completed, State

from voicelock.params import load_params
from voicelock.promotion import GateDecision, decide, promote

BIN = Path(sys.executable).parent


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "GX_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "true"}


def dvc_stages(repo: str | Path, start: str | None = None) -> list[str]:
    """The pipeline's stages in `dvc.yaml` order, from `start` on: the flows never type the order again,
    so a stage added to dvc.yaml runs in them too."""
    stages = list(yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"])
    if start is not None and start not in stages:
        raise ValueError(f"dvc.yaml: no stage '{start}' (stages: {', '.join(stages)})")
    return stages[stages.index(start):] if start else stages


def log_lines(stream: Iterable[bytes]) -> Iterator[str]:
    """Whole lines of a subprocess's output, a progress bar's redraws (joined by \r) collapsed into its
    last state. Read as bytes: a text-mode pipe would already have split every redraw into a line."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\r\n").split("\r")[-1].rstrip()
        if line:
            yield line


@task(name="dvc-stage", task_run_name="dvc repro {stage}")
def dvc_stage(stage: str, repo: str, force: bool = False) -> None:
    """Run one DVC stage (skipped by DVC when nothing it depends on changed); fail with its output."""
    logger = get_run_logger()
    cmd = [str(BIN / "dvc"), "repro", "--single-item", stage] + (["--force"] if force else [])
    proc = subprocess.Popen(cmd, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail: list[str] = []
    for line in log_lines(proc.stdout):
        logger.info(line)
        tail = (tail + [line])[-20:]
    if proc.wait() != 0:
        raise RuntimeError(f"dvc repro {stage} failed (exit {proc.returncode}):\n" + "\n".join(tail))


@task(name="dvc-push")
def dvc_push(repo: str) -> bool:
    """Send the run's outputs (data, features, models, metrics) to the DVC remote, so another machine or
    a fresh clone gets them with `dvc pull` instead of re-training. Skipped, with a warning, when the
    checkout has no default remote; a failing push fails the run. True when pushed."""
    logger = get_run_logger()
    found = subprocess.run([str(BIN / "dvc"), "remote", "default"], cwd=repo, env=_env(), capture_output=True,
                           text=True)
    remote = found.stdout.strip() if found.returncode == 0 else ""  # none: exit 1, "No default remote set"
    if not remote:
        logger.warning("no default DVC remote in %s: outputs not pushed (dvc remote add -d …)", repo)
        return False
    timeout = load_params(Path(repo) / "params.yaml").promotion.push_timeout_s
    try:
        done = subprocess.run([str(BIN / "dvc"), "push"], cwd=repo, env=_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"dvc push to remote '{remote}' took longer than promotion.push_timeout_s "
                           f"({timeout:.0f} s)") from None
    if done.returncode != 0:
        raise RuntimeError(f"dvc push to remote '{remote}' failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    logger.info("pushed to DVC remote '%s': %s", remote, (done.stdout.strip().splitlines() or ["nothing new"])[-1])
    return True


@task(name="promotion-gate")
def gate(repo: str) -> GateDecision:
    """Compare the packaged candidate with production on the same test split (the checkout's files)."""
    return decide(load_params(Path(repo) / "params.yaml").under(repo))


@task(name="promote")
def promote_task(candidate_tag: str, production_name: str) -> str:
    return promote(candidate_tag, production_name)


def gate_and_report(repo: str, production_name: str) -> State:
    """Gate the packaged candidate, publish both metric sets, promote or end as "Not promoted"."""
    logger = get_run_logger()
    decision = gate(repo)
    create_table_artifact(key="candidate-vs-production", table=decision.table(),
                          description=f"candidate {decision.candidate_tag} vs production "
                                      f"{decision.production_tag or '(none)'}: " + "; ".join(decision.reasons))
    if not decision.promote:
        logger.warning("not promoted: %s", "; ".join(decision.reasons))
        return Completed(name="Not promoted", message="; ".join(decision.reasons),
                         data={"promoted": False, "candidate": decision.candidate_tag,
                               "production": decision.production_tag})
    tag = promote_task(decision.candidate_tag, production_name)
    logger.info("promoted %s as %s", decision.candidate_tag, tag)
    return Completed(message=f"promoted {tag}", data={"promoted": True, "candidate": decision.candidate_tag,
                                                      "production": tag})


def run_from_command_line(run: Callable[[str], object], prog: str, description: str) -> None:
    """`python -m pipelines.<flow>`: `--repo` (default: here) and `--help`, which describes and runs nothing."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--repo", default=".", help="the voicelock checkout to run in (default: here)")
    run(parser.parse_args().repo)


class CheckoutBusy(RuntimeError):
    """Another pipeline run holds the checkout."""


@contextmanager
def checkout_lock(repo: str | Path, wait_s: float, poll_s: float = 5.0) -> Iterator[None]:
    """Hold the checkout for one pipeline run: both flows run `dvc repro` in it, and two at once would
    fight over DVC's own lock and the outputs. Waits up to `wait_s`, then raises CheckoutBusy. An
    advisory lock on a file under .dvc/tmp: the kernel drops it when the holder dies."""
    path = Path(repo) / ".dvc" / "tmp" / "voicelock-pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CheckoutBusy(f"{repo}: another pipeline run holds the checkout ({path}); waited "
                                       f"{wait_s:.0f} s (promotion.checkout_wait_s)") from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

