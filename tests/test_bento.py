"""Packaging for deployment: `voicelock promote` (promoted, then not promoted) and `bentoml build` of the
service — the CPU torch only, a model card, and the environment left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import BIN, REPO


def test_the_bento_installs_the_cpu_torch_carries_a_model_card_and_leaves_the_venv_alone(lenient_params_path: Path,
                                                                                          tmp_path: Path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "VOICELOCK_PARAMS": str(lenient_params_path),
           "VOICELOCK_DATABASE_URL": f"sqlite:///{tmp_path / 'build.db'}"}

    def run(*cmd: str) -> str:
        done = subprocess.run(list(cmd), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run(sys.executable, "stages/package.py", "--params", str(lenient_params_path))
    first = run(str(BIN / "voicelock"), "--params", str(lenient_params_path), "promote")
    assert first.startswith("promoted voicelock-candidate:") and "no production model yet" in first
    # The same candidate again: the CLI says why it is not promoted, and production stays (exit 0).
    again = run(str(BIN / "voicelock"), "--params", str(lenient_params_path), "promote")
    assert again.startswith("not promoted: voicelock-candidate:") and "already in production" in again
    installed = run(sys.executable, "-m", "pip", "freeze", "--all")
    run(str(BIN / "bentoml"), "build", "-f", "service/bentofile.yaml", ".")
    assert run(sys.executable, "-m", "pip", "freeze", "--all") == installed  # nothing installed into .venv

    bento = next((tmp_path / "bentoml" / "bentos" / "voicelock").glob("*/bento.yaml")).parent
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert "torch==2.13.0" in requirements and "torchaudio==2.11.0" in requirements
    for path in bento.rglob("*"):
        if path.is_file() and path.suffix in (".txt", ".yaml", ".sh", ".lock", ""):
            assert "nvidia" not in path.read_text(errors="replace").lower(), path
    card = (bento / "README.md").read_text()  # the Bento's description: `bentoml get` and BentoCloud show it
    assert "model card" in card and "**Intended use.**" in card and "**Limits.**" in card
    assert json.loads(run(str(BIN / "bentoml"), "get", "voicelock:latest", "-o", "json"))["labels"] == \
        {"project": "voicelock"}
