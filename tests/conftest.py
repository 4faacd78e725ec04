"""Shared fixtures: a tiny params file and a tiny generated corpus, made once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from voicelock.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Tests never touch the user's BentoML model store or Prefect home: both live in a throw-away folder.
_SCRATCH = Path(tempfile.mkdtemp(prefix="voicelock-tests-"))
os.environ["BENTOML_HOME"] = str(_SCRATCH / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ["PREFECT_HOME"] = str(_SCRATCH / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

# Small enough to generate in seconds, large enough that every split has speakers (checked below).
TINY_SYNTH = {
    "words": ["yes", "no", "dog", "seven"],
    "n_speakers": 16,
    "takes_per_word": 3,
    "background_files": 4,
    "background_seconds": 3,
    "workers": 2,
    "festival_voices": {"ked_diphone": 105, "czech_dita": 200},
    "festival_speaker_scales": [],  # tests/test_synth.py renders the scaled copies on their own
    "festival_extra_speakers": [],
    # MBROLA voices named in params.yaml stay out: the tiny model's tests lean on the tiny corpus as it is
    # (tests/test_synth.py renders MBROLA speakers in a corpus of their own, MBROLA_SYNTH below).
    "mbrola_voices": [],
}


def tiny_params_dict(root: Path, **overrides: dict) -> dict:
    """The repository's params.yaml, shrunk, with every output under `root`."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["seed"] = 4
    raw["data"]["raw_dir"] = str(root / "raw")
    raw["data"]["download_dir"] = str(root / "downloads")
    raw["data"]["validation_percentage"] = 20  # with seed 4: 10 training, 3 validation, 3 testing speakers
    raw["data"]["testing_percentage"] = 20
    raw["data"]["synth"].update(TINY_SYNTH)
    raw["prepare"]["out_dir"] = str(root / "prepared")
    raw["features"]["out_dir"] = str(root / "features")
    raw["features"]["batch_size"] = 16
    raw["model"].update({"channels": 32, "dilations": [1, 2], "attention_hidden": 16,
                         "word_embedding": 16, "speaker_embedding": 16, "backend_dims": 8})
    tiny_training = {"max_epochs": 2, "validate_from_epoch": 1, "batches_per_epoch": 3, "speakers_per_batch": 6, "words_per_batch": 4,
                     "patience": 2, "threads": 2}
    raw["pretrain"].update(out_dir=str(root / "pretrained"), **tiny_training)
    raw["finetune"].update(out_dir=str(root / "finetuned"), owner_clips_per_batch=8, **tiny_training)
    raw["owner"].update(out_dir=str(root / "owner"), takes_password=10, takes_other=2)
    raw["evaluate"].update(out_dir=str(root / "release"), metrics_file=str(root / "metrics.json"),
                           details_file=str(root / "metrics.details.json"),
                           plots_dir=str(root / "plots"), enroll_clips=2, keyword_enroll_clips=2)
    raw["augment"]["speaker_warps"] = []  # three times the classes is more than two tiny epochs can learn
    raw["ood"].update(out_dir=str(root / "ood"), metrics_file=str(root / "ood.json"),
                      details_file=str(root / "ood.details.json"), plots_dir=str(root / "plots_ood"),
                      espeak_speakers=4, flite_voices={"slt": 175, "awb": 115}, takes_per_word=4)
    # An untrained tiny network cannot be held to real agreement thresholds.
    raw["enroll"].update(min_word_agreement=-1.0, min_speaker_agreement=-1.0)
    raw["service"].update(database_url=f"sqlite:///{root / 'service' / 'enrollments.db'}",
                          package_record=str(root / "package.json"), lockout_failures=3, lockout_seconds=60)
    for section, values in overrides.items():
        raw[section].update(values)
    return raw


def write_params(root: Path, raw: dict) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_params_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return write_params(root, tiny_params_dict(root))


@pytest.fixture(scope="session")
def tiny_params(tiny_params_path: Path) -> Params:
    return load_params(tiny_params_path)


# The MBROLA voices the tests render (scripts/setup.sh installs them for `make test`): a man and a woman,
# and with seed 4 some of their ids hash into a held-out split (they must train all the same). Their own
# corpus, not the tiny one: the tiny model's other tests depend on the tiny corpus as it is.
MBROLA_SYNTH = {"mbrola_voices": ["mb-es1", "mb-us1"], "mbrola_copies": 1}


@pytest.fixture(scope="session")
def mbrola_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Params]:
    """A small corpus with MBROLA speakers next to a few espeak-ng and festival ones, and its params."""
    from voicelock.data.acquire import acquire_corpus

    root = tmp_path_factory.mktemp("mbrola")
    raw = tiny_params_dict(root)
    raw["data"]["synth"].update(n_speakers=4, takes_per_word=2, words=["yes", "seven"], **MBROLA_SYNTH)
    params = load_params(write_params(root, raw))
    return acquire_corpus(params), params


@pytest.fixture(scope="session")
def tiny_corpus(tiny_params: Params) -> Path:
    """A generated corpus in Speech Commands layout (read-only for tests: copy before changing it)."""
    from voicelock.data.acquire import acquire_corpus

    root = acquire_corpus(tiny_params)
    splits = {line.split(",")[-1] for line in (root / "speakers.csv").read_text().splitlines()[1:]}
    assert splits == {"training", "validation", "testing"}, "tiny corpus seed no longer fills every split"
    return root


def unseen_corpus_of(params: Params) -> Path:
    """The unseen-voices corpus of `params` (the unseen stage), generated once per location."""
    from voicelock.data.layout import SPEAKERS_FILE
    from voicelock.data.unseen import synthesize_unseen

    if (Path(params.ood.out_dir) / SPEAKERS_FILE).exists():
        return Path(params.ood.out_dir)
    return synthesize_unseen(params.data.synth, params.ood, params.seed, params.data.sample_rate,
                             params.features.clip_seconds)


def run_model_stages(params: Params, corpus: Path) -> Params:
    """Every stage from features to evaluate_unseen, in-process, on a generated corpus; returns `params`."""
    from voicelock.data.acquire import acquire_owner
    from voicelock.data.manifest import build_manifest
    from voicelock.evaluation import evaluate_unseen, run_evaluation
    from voicelock.features import build_feature_cache
    from voicelock.model.finetune import finetune
    from voicelock.model.pretrain import pretrain

    d = params.data
    manifest = build_manifest(corpus, d.validation_percentage, d.testing_percentage, threads=2)
    build_feature_cache(manifest, corpus, params.features, d.sample_rate, params.features.out_dir)
    acquire_owner(params)
    pretrain(params)
    finetune(params)
    run_evaluation(params, params.evaluate.metrics_file, params.evaluate.plots_dir)
    unseen_corpus_of(params)
    evaluate_unseen(params)  # the package stage and the promotion gate weigh these figures
    return params


@pytest.fixture(scope="session")
def trained(tiny_corpus: Path, tiny_params: Params) -> Params:
    """Every model stage run once on the tiny corpus; returns the params that locate the outputs."""
    return run_model_stages(tiny_params, tiny_corpus)


BIN = Path(sys.executable).parent


def run_in(cmd: list[str], cwd: Path) -> str:
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
    run_in(["git", "init", "-q"], tmp_path)
    run_in(["dvc", "init", "-q"], tmp_path)
    run_in(["dvc", "config", "core.analytics", "false"], tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def lenient_params_path(trained: Params, tiny_params_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained model re-evaluated at FAR 0.3 into a release of its own, so that some genuine
    takes unlock — the security tests need real unlocks (tokens, replays) from a model trained in a
    minute. Only the evaluate stage runs again."""
    from voicelock.evaluation import evaluate_unseen, run_evaluation

    root = tmp_path_factory.mktemp("lenient")
    raw = yaml.safe_load(tiny_params_path.read_text())
    raw["evaluate"].update(target_far=0.3, raw_floor_far=0.6, out_dir=str(root / "release"),
                           metrics_file=str(root / "metrics.json"), details_file=str(root / "details.json"),
                           plots_dir=str(root / "plots"))
    raw["ood"].update(metrics_file=str(root / "ood.json"), details_file=str(root / "ood.details.json"),
                      plots_dir=str(root / "plots_ood"))  # the tiny unseen corpus, judged at these thresholds
    raw["service"].update(database_url=f"sqlite:///{root / 'service' / 'enrollments.db'}",
                          package_record=str(root / "package.json"))
    path = write_params(root, raw)
    params = load_params(path)
    run_evaluation(params, params.evaluate.metrics_file, params.evaluate.plots_dir)
    evaluate_unseen(params)
    return path


@pytest.fixture(scope="session")
def retrained_release(lenient_params_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lenient release with every weight nudged (relative noise 1e-3): a stand-in for next week's
    retrained model — other weights, so another `model_id` and other embeddings, that still knows the
    same voices. Used to test that a promotion keeps enrolled users working."""
    import torch

    from voicelock.release import Release

    release = Release.load(load_params(lenient_params_path).evaluate.out_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in release.model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 1e-3 * (tensor.abs().mean() + 1e-6))
    return release.save(tmp_path_factory.mktemp("retrained") / "release")


@dataclass
class UnlockCase:
    """Recordings whose decisions the verifier itself settled on the source files: `enroll` takes of
    one voice's password, `genuine` takes that unlock its template, `impostors` that do not."""

    enroll: list[Path]
    genuine: list[Path]
    impostors: list[Path]

    @staticmethod
    def read(paths: list[Path]) -> list[bytes]:
        return [p.read_bytes() for p in paths]


def full_band_judge(lock, take: np.ndarray, rate: int = 16000):
    """`new(copy, copy_rate)`: whether the replay rule *without* its band-limited view — `take`
    remembered as the service remembers it, less the view's rows — takes the copy for a new recording.
    The band-view tests send only such copies, so that what refuses them is the view."""
    from voicelock.replay import fingerprints

    heard = lock.prepare(take, rate, "take")
    word, speaker, band = lock.embed_views([heard], ["take"])
    full_band = lock.fingerprint_sets([heard], fingerprints(word, speaker), band, ["take"])[0]
    full_band = full_band[: len(lock.verifier.replay_shifts)]  # a set of S rows is read as the full band's

    def new(copy: np.ndarray, copy_rate: int) -> bool:
        fp = fingerprints(*lock.embed_here([lock.prepare(copy, copy_rate, "copy")]))
        return not lock.replays_take(fp, [full_band])

    return new


def find_unlock_case(params: Params, n_enroll: int = 3, min_genuine: int = 2) -> UnlockCase:
    """The voice (owner or test speaker) whose held-out password takes unlock most often, with the
    other voices' takes (password and other words) that its template rejects."""
    from voicelock.enrollment import Unlocker
    from voicelock.features import load_split

    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    takes: dict[str, list[Path]] = {"owner": sorted((Path(params.owner.out_dir) / params.owner.password).glob("*.wav"))}
    index = load_split(params.features.out_dir, "testing").index
    others: list[Path] = [Path(params.data.raw_dir) / p for p in index["path"]]
    for speaker, paths in index[index["word"] == params.owner.password].sort_values("utterance").groupby("speaker")["path"]:
        takes[speaker] = [Path(params.data.raw_dir) / p for p in paths]
    best: tuple[int, str, list[Path]] = (-1, "", [])
    for speaker, paths in takes.items():
        if len(paths) < n_enroll + min_genuine:
            continue
        template = lock.enroll_files(paths[:n_enroll])
        unlocking = [p for p in paths[n_enroll:] if lock.verify_file(template, p).unlocked]
        if len(unlocking) > best[0]:
            best = (len(unlocking), speaker, unlocking)
    n, speaker, genuine = best
    assert n >= min_genuine, f"the tiny model unlocks fewer than {min_genuine} held-out takes of any voice"
    template = lock.enroll_files(takes[speaker][:n_enroll])
    own = {p.name.split("_nohash_")[0] for p in takes[speaker]}
    impostors = [p for p in others if p.name.split("_nohash_")[0] not in own
                 and not lock.verify_file(template, p).unlocked]
    return UnlockCase(takes[speaker][:n_enroll], genuine, impostors)
