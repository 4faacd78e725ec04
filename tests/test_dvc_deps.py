"""dvc.yaml must list every module a stage runs: a change to an unlisted one would not re-run the stage,
and `dvc repro` would report results of code that no longer exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> Path | None:
    """voicelock.a.b → its .py file (or package __init__.py) under the repository, None if not ours."""
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """Every voicelock module `path` imports, at the top or inside a function."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == "voicelock" and (file := _module_file(name)) is not None:
                found.add(file)
    return found


# Imported by every stage for plumbing (arguments, logging, params loading, errors); changing them
# changes no result. Listing them would re-run the whole pipeline for a reworded log line.
PLUMBING = {"voicelock/__init__.py", "voicelock/cli.py", "voicelock/params.py", "voicelock/errors.py",
            "voicelock/runtime.py", "voicelock/fsutil.py"}


def closure(script: Path) -> set[Path]:
    """The voicelock modules `script` can run. Plumbing is a leaf: the CLI imports every command's
    module inside that command's function, and a stage only calls `run_stage`."""
    todo, seen = [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.relative_to(REPO).as_posix() not in PLUMBING:
            todo.extend(_imports(path) - seen)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(stage: str):
    spec = STAGES[stage]
    script = REPO / spec["cmd"].split()[-1]
    deps = [str(d) for d in spec.get("deps", [])]

    def listed(path: Path) -> bool:
        rel = path.relative_to(REPO).as_posix()
        return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)

    missing = sorted(p.relative_to(REPO).as_posix() for p in closure(script)
                     if not listed(p) and p.relative_to(REPO).as_posix() not in PLUMBING)
    assert not missing, f"dvc.yaml: stage {stage} runs {missing} without listing them in its deps"
