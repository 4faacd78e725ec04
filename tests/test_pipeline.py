"""`dvc repro` runs the real stages end to end, and re-runs only what a params change affects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_params_dict

BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GX_ANALYTICS_ENABLED": "false"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away git + DVC project with this repository's pipeline and a tiny params.yaml."""
    for name in ("dvc.yaml", "stages", "voicelock"):
        src = REPO / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, tmp_path / name))
    raw = tiny_params_dict(Path("data"))  # relative output paths, as in the real params.yaml
    raw["data"]["download_dir"] = ".cache/downloads"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["git", "init", "-q"], tmp_path)
    _run(["dvc", "init", "-q"], tmp_path)
    _run(["dvc", "config", "core.analytics", "false"], tmp_path)
    return tmp_path


@pytest.mark.slow
def test_repro_then_only_changed_stages_rerun(project: Path):
    _run(["dvc", "repro"], project)
    assert (project / "data" / "features" / "training.npy").exists()
    assert (project / "data" / "prepared" / "validation.json").exists()
    assert (project / "dvc.lock").exists()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["n_mels"] = 40
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], project)
    assert "Stage 'download' didn't change, skipping" in out
    assert "Stage 'prepare' didn't change, skipping" in out
    assert "Running stage 'features'" in out
    import numpy as np

    assert np.load(project / "data" / "features" / "training.npy", mmap_mode="r").shape[1] == 40


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
