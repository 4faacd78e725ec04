"""`dvc repro` runs the real stages end to end, and re-runs only what a params change affects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, run_in


@pytest.mark.slow
def test_repro_then_only_changed_stages_rerun(project: Path):
    run_in(["dvc", "repro"], project)
    assert (project / "data" / "features" / "training.npy").exists()
    assert (project / "data" / "prepared" / "validation.json").exists()
    assert (project / "dvc.lock").exists()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["n_mels"] = 40
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_in(["dvc", "repro"], project)
    assert "Stage 'download' didn't change, skipping" in out
    assert "Stage 'prepare' didn't change, skipping" in out
    assert "Running stage 'features'" in out
    import numpy as np

    assert np.load(project / "data" / "features" / "training.npy", mmap_mode="r").shape[1] == 40

    # Another machine: push to a remote, clone, pull — the released model and metrics arrive and DVC
    # finds nothing to re-run (no training on the second machine).
    remote = project.parent / "dvc-remote"
    run_in(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run_in(["dvc", "push"], project)
    run_in(["git", "add", "-A"], project)
    run_in(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], project)
    clone = project.parent / "clone"
    run_in(["git", "clone", "-q", str(project), str(clone)], project.parent)
    run_in(["dvc", "pull"], clone)
    release = clone / "data" / "release" / "model.pt"
    assert release.read_bytes() == (project / "data" / "release" / "model.pt").read_bytes()
    assert json.loads((clone / "data" / "metrics.json").read_text()).keys() >= {"speaker_eer", "frr"}
    status = run_in(["dvc", "status"], clone)
    assert "Data and pipelines are up to date" in status, status

    # A second machine that does re-run everything gets the same dvc.lock, but for the wall-clock
    # `seconds` column of the training histories: seeded stages, no timestamps or random ids in any
    # tracked file, and a candidate named by its release's digest.
    run_in(["dvc", "repro", "--force"], clone)

    def outputs(lock: Path) -> dict:
        stages = yaml.safe_load(lock.read_text())["stages"]
        return {(name, out["path"]): out.get("md5") for name, stage in stages.items()
                for out in stage.get("outs", []) if not out["path"].endswith("history.csv")}

    first, second = outputs(project / "dvc.lock"), outputs(clone / "dvc.lock")
    assert first == second, {k: (first.get(k), second.get(k)) for k in set(first) | set(second)
                             if first.get(k) != second.get(k)}
    for history in ("data/pretrained/history.csv", "data/finetuned/history.csv"):
        strip = [line.rsplit(",", 1)[0] for line in (project / history).read_text().splitlines()]
        assert strip == [line.rsplit(",", 1)[0] for line in (clone / history).read_text().splitlines()], history


@pytest.mark.slow
def test_bad_input_stops_a_stage_with_one_line(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = "folder"
    params["data"]["folder"]["path"] = str(project / "no-such-corpus")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "stages/download.py"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {project / 'no-such-corpus'}: corpus folder not found — check data.raw_dir / data.folder.path")
    assert "Traceback" not in result.stderr


def test_dvc_plots_show_lists_the_evaluation_images_and_keeps_losses_apart_from_rates(tmp_path: Path):
    """The probit DET curves, score histograms and confusion matrices are image plots (committed, so a
    fresh clone shows them); training losses (~3) and rates (0–1) are two charts, not one axis."""
    import json

    from tests.conftest import REPO

    out = subprocess.run([str(BIN / "dvc"), "plots", "show", "--json", "-o", str(tmp_path / "plots")], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    plots = json.loads(out)["data"]
    for image in ("plots/evaluate/det.png", "plots/ood/det.png", "plots/evaluate/scores.png",
                  "plots/evaluate/confusion.png"):
        assert plots[image][0]["type"] == "image", image
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    charts = {name: props for entry in spec if isinstance(entry, dict) for name, props in entry.items()}
    rates = {c for cols in charts["training-validation-rates"]["y"].values() for c in cols}
    losses = {c for cols in charts["training-losses"]["y"].values() for c in cols}
    assert all(c.startswith("val_") for c in rates) and all(c.startswith("loss_") for c in losses)
