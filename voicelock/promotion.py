"""The promotion gate: a candidate becomes the production model only if it is not worse.

Production is re-evaluated on the candidate's validation and test splits (thresholds calibrated the
same way), so the comparison is always on the same speakers, whatever data production was trained
on. Each rule allows a small tolerance from params.yaml; a metric that is missing or not a number
counts as worse. Promotion copies the candidate into the production model name, which is what the
service loads (`service.model_tag`, e.g. `voicelock:latest`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voicelock.errors import VoicelockError
from voicelock.params import Params

log = logging.getLogger(__name__)

# metric → True when higher is better
RULES = {"keyword_accuracy": True, "speaker_eer": False, "speaker_eer_all_trials": False, "frr": False,
         "far_other_speaker_password": False, "far_owner_other_word": False, "far_other_speaker_other_word": False}


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    candidate: dict[str, float]
    production: dict[str, float] | None
    candidate_tag: str = ""
    production_tag: str | None = None
    compared: list[str] = field(default_factory=lambda: list(RULES))

    def table(self) -> list[dict]:
        """One row per gated metric (candidate next to production), for the Prefect artifact."""
        return [{"metric": metric, "candidate": self.candidate.get(metric),
                 "production": None if self.production is None else self.production.get(metric)}
                for metric in self.compared]


def compare(candidate: dict, production: dict | None, tolerance: dict[str, float]) -> tuple[bool, list[str]]:
    """Is `candidate` not worse than `production` on every rule (within tolerance)? With reasons."""
    if production is None:
        return True, ["no production model yet"]
    reasons, ok = [], True
    for metric, higher_is_better in RULES.items():
        c, p = candidate.get(metric), production.get(metric)
        tol = tolerance.get("far" if metric.startswith("far_") else metric, 0.0)  # one tolerance for every FAR
        if c is None or not isinstance(c, (int, float)) or math.isnan(c):
            ok = False
            reasons.append(f"{metric}: candidate has no value")
            continue
        if p is None or (isinstance(p, float) and math.isnan(p)):
            continue
        worse = (p - c) if higher_is_better else (c - p)
        if worse > tol:
            ok = False
            reasons.append(f"{metric}: {c:.4f} vs production {p:.4f} (worse by {worse:.4f} > tolerance {tol})")
    if ok:
        reasons.append("not worse than production on any rule")
    return ok, reasons


def production_model(name: str):
    """The newest model saved under the production name, or None."""
    import bentoml
    from bentoml.exceptions import NotFound as BentoNotFound

    try:
        return bentoml.models.get(f"{name}:latest")
    except BentoNotFound:
        return None


MODEL_TAG_ENV = "VOICELOCK_MODEL_TAG"


def served_model_tag(params: Params, environ: Mapping[str, str] = os.environ) -> str:
    """The production model's tag, as the service and the CLI both resolve it: `VOICELOCK_MODEL_TAG`
    when set, else `service.model_tag` (the newest promoted model)."""
    return environ.get(MODEL_TAG_ENV) or params.service.model_tag


def served_model_dir(params: Params, environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the production model in the BentoML store: what the CLI uses unless given --model."""
    import bentoml
    from bentoml.exceptions import NotFound as BentoNotFound

    tag = served_model_tag(params, environ)
    try:
        return Path(bentoml.models.get(tag).path)
    except BentoNotFound:
        raise VoicelockError(f"no model {tag} in the BentoML store — run `make repro` (or `voicelock promote` after "
                             f"`dvc repro`), or name a model folder with --model (e.g. models/release)") from None


def candidate_model(params: Params):
    """The candidate the package stage recorded in service.package_record."""
    import bentoml

    record = Path(params.service.package_record)
    if not record.exists():
        raise VoicelockError(f"{record}: no packaged candidate — run the package stage (dvc repro package)")
    tag = json.loads(record.read_text())["tag"]
    return bentoml.models.get(tag)


def decide(params: Params) -> GateDecision:
    """Compare the packaged candidate with production, both evaluated on the current splits."""
    from voicelock.evaluation import evaluate_model
    from voicelock.model.checkpoint import load_checkpoint

    candidate = candidate_model(params)
    cand_metrics = dict(candidate.info.metadata.get("metrics", {}))
    production = production_model(params.service.model_name)
    if production is not None and production.info.labels.get("candidate") == str(candidate.tag):
        return GateDecision(False, [f"{candidate.tag} is already in production as {production.tag}"], cand_metrics,
                            None, str(candidate.tag), str(production.tag))
    prod_metrics = None
    if production is not None:
        model, _ = load_checkpoint(production.path)
        prod_metrics, *_ = evaluate_model(model, params)
    ok, reasons = compare(cand_metrics, prod_metrics, params.promotion.tolerance)
    return GateDecision(ok, reasons, cand_metrics, prod_metrics, str(candidate.tag),
                        None if production is None else str(production.tag))


def promote(candidate_tag: str, production_name: str) -> str:
    """Copy a stored candidate into the production name; return the new production tag."""
    import bentoml

    candidate = bentoml.models.get(candidate_tag)
    with bentoml.models.create(
        production_name,
        labels={**candidate.info.labels, "stage": "production", "candidate": str(candidate.tag)},
        metadata=candidate.info.metadata,
    ) as model:
        for item in Path(candidate.path).iterdir():
            if item.is_file() and item.name not in ("model.yaml",):
                shutil.copy2(item, model.path_of(item.name))
        tag = str(model.tag)
    log.info("promoted %s to %s", candidate_tag, tag)
    return tag


def gate_and_promote(params: Params) -> GateDecision:
    """The whole gate: decide, and promote when the candidate is not worse."""
    decision = decide(params)
    if decision.promote:
        decision.production_tag = promote(decision.candidate_tag, params.service.model_name)
    return decision
