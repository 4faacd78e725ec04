"""Prefect flows for real: `retrain` end to end on a tiny project, the gate, failures, the deployment."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests import servers

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def _production_tags() -> list[str]:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return sorted(str(m.tag) for m in bentoml.models.list("voicelock"))
    except NotFound:
        return []


def _set(project: Path, section: str, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_retrain_promotes_then_gates_then_survives_a_failing_stage(harness, project: Path):
    from pipelines.retrain import retrain

    from tests.conftest import run_in

    _set(project, "promotion", download_retries=1, retry_delay_s=0)
    remote = project.parent / "remote"
    run_in(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    before = _production_tags()
    state = retrain(repo=str(project), return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    assert "Everything is up to date" in run_in(["dvc", "push"], project)  # the flow pushed every output
    after_first = _production_tags()
    assert len(after_first) == len(before) + 1  # the first model has nothing to beat
    assert (project / "dvc.lock").exists()
    lock = (project / "dvc.lock").read_text()

    # Nothing changed: DVC skips every stage and the same candidate is not promoted twice.
    state = retrain(repo=str(project), return_state=True)
    assert state.is_completed() and state.name == "Not promoted" and "already in production" in state.message
    assert (project / "dvc.lock").read_text() == lock
    assert _production_tags() == after_first

    # A new candidate held to an impossible rule is not promoted, and production stays as it was. The
    # rule on the unseen voices fires too: production was measured on them (a rule without a
    # production figure is skipped, so its reason proves the measurement).
    _set(project, "promotion", tolerance={"keyword_accuracy": -1.0}, ood_tolerance={"keyword_accuracy": -1.0},
         candidate_name="voicelock-candidate-b")
    state = retrain(repo=str(project), return_state=True)
    assert state.is_completed() and state.name == "Not promoted"
    reasons = state.message.split("; ")
    assert any(r.startswith("keyword_accuracy: ") and "vs production" in r for r in reasons), reasons
    assert any(r.startswith("ood.keyword_accuracy: ") and "vs production" in r for r in reasons), reasons
    assert _production_tags() == after_first

    # A stage that fails fails the flow and never touches production.
    _set(project, "promotion", tolerance={})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = "folder"
    params["data"]["folder"]["path"] = str(project / "missing-corpus")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state = retrain(repo=str(project), return_state=True)
    assert state.is_failed()
    assert _production_tags() == after_first


@pytest.mark.slow
def test_serve_creates_scheduled_deployments_on_a_local_server(project: Path, tmp_path: Path):
    port = servers.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "server.log"
    server = servers.start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                           log, env=env)
    served = None
    try:
        servers.wait_healthy(f"{api}/health", server, log, timeout_s=90)
        served = servers.start([sys.executable, "-m", "pipelines.serve"], log, cwd=project,
                               env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        deployments = []
        deadline = time.time() + 90
        while time.time() < deadline and len(deployments) < 2:
            time.sleep(1)
            deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()
        by_name = {d["name"]: d for d in deployments}
        assert set(by_name) == {"weekly-retrain", "owner-recordings"}, deployments
        cron = yaml.safe_load((project / "params.yaml").read_text())["promotion"]["schedule_cron"]
        schedules = [s["schedule"] for s in by_name["weekly-retrain"]["schedules"]]
        assert any(s.get("cron") == cron and s.get("timezone") == "UTC" for s in schedules), schedules
        assert by_name["weekly-retrain"]["parameters"]["repo"] == str(project.resolve())
    finally:
        servers.stop(served)
        servers.stop(server)


def test_progress_bar_redraws_become_one_line_each():
    """tqdm redraws with \\r: each bar must reach the Prefect log once, in its final state, not once per
    redraw (a text-mode pipe split them into separate lines)."""
    from pipelines.tasks import log_lines

    out = [b"Running stage 'features':\n",
           b"train:   0%|  | 0/3\rtrain:  33%|# | 1/3\rtrain: 100%|##| 3/3\n", b"\n", b"done\r\n"]
    assert list(log_lines(out)) == ["Running stage 'features':", "train: 100%|##| 3/3", "done"]


def test_flows_run_the_stages_dvc_yaml_lists():
    import yaml

    from pipelines.tasks import dvc_stages
    from tests.conftest import REPO

    listed = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert dvc_stages(REPO) == listed and "evaluate_unseen" in listed
    assert dvc_stages(REPO, start="finetune") == listed[listed.index("finetune"):]
    with pytest.raises(ValueError, match="no stage 'nope'"):
        dvc_stages(REPO, start="nope")


@pytest.mark.parametrize("module", ["pipelines.retrain", "pipelines.enroll_data", "pipelines.serve"])
def test_help_describes_the_flow_and_runs_nothing(module: str, tmp_path: Path):
    """`python -m pipelines.retrain --help` used to start a full retrain (no argument parsing)."""
    import subprocess

    from tests.conftest import REPO

    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PREFECT_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module}") and "--repo" in result.stdout
    assert not any(tmp_path.iterdir())  # no Prefect server or database was started


def test_one_pipeline_run_holds_the_checkout(tmp_path: Path):
    from pipelines.tasks import CheckoutBusy, checkout_lock

    with checkout_lock(tmp_path, wait_s=0):
        started = time.monotonic()
        with pytest.raises(CheckoutBusy, match="promotion.checkout_wait_s"):
            with checkout_lock(tmp_path, wait_s=0.3, poll_s=0.1):
                pass
        assert time.monotonic() - started >= 0.3  # it waited as long as it was told
    with checkout_lock(tmp_path, wait_s=0):  # released when the holder is done
        pass


def test_enroll_data_runs_nothing_without_new_recordings_or_while_the_checkout_is_busy(harness, tmp_path: Path):
    from pipelines.enroll_data import enroll_data
    from pipelines.tasks import checkout_lock
    from tests.conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state = enroll_data(repo=str(tmp_path), return_state=True)  # synthetic owner: nothing arrives
    assert state.is_completed() and state.name == "No new recordings", state.message

    recordings = tmp_path / "mine" / "dog"
    recordings.mkdir(parents=True)
    (recordings / "me_nohash_0.wav").write_bytes(b"RIFF")
    params["owner"].update(source="folder", folder=str(tmp_path / "mine"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with checkout_lock(tmp_path, wait_s=0):  # a retrain is running: this poll steps aside
        state = enroll_data(repo=str(tmp_path), return_state=True)
    assert state.is_completed() and state.name == "Skipped", state.message
    assert not (tmp_path / "data").exists()  # no stage ran



@pytest.mark.slow
def test_a_process_work_pool_runs_retrain_from_its_deployment(project: Path, tmp_path: Path):
    """The README's path for other machines: a process work pool on a local `prefect server`, the flows
    deployed to it (`python -m pipelines.deploy`), a `prefect worker` polling it; a triggered retrain
    of a tiny project completes and promotes a model."""
    import subprocess

    from tests.conftest import REPO

    port = servers.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    log = tmp_path / "server.log"
    server = servers.start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                           log, env=env)
    worker = None

    def cli(*args: str, cwd: Path = REPO) -> str:
        done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{args}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    try:
        servers.wait_healthy(f"{api}/health", server, log, timeout_s=90)
        cli(str(BIN / "prefect"), "work-pool", "create", "voicelock-test", "--type", "process")
        out = cli(sys.executable, "-m", "pipelines.deploy", "--pool", "voicelock-test", "--repo", str(project))
        assert out.count("deployed") == 2, out
        worker = servers.start([str(BIN / "prefect"), "worker", "start", "--pool", "voicelock-test"],
                               tmp_path / "worker.log", env=env)
        run = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        retrain_id = next(d["id"] for d in run if d["name"] == "weekly-retrain")
        assert next(d for d in run if d["id"] == retrain_id)["work_pool_name"] == "voicelock-test"
        flow_run = httpx.post(f"{api}/deployments/{retrain_id}/create_flow_run", json={}, timeout=10).json()
        deadline, state = time.time() + 600, {}
        while time.time() < deadline:
            state = httpx.get(f"{api}/flow_runs/{flow_run['id']}", timeout=10).json()["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(2)
        assert state.get("type") == "COMPLETED", (state, (tmp_path / "worker.log").read_text()[-4000:])
        assert (project / "dvc.lock").exists() and (project / "data" / "release" / "model.pt").exists()
    finally:
        servers.stop(worker)
        servers.stop(server)
